(function () {
  const query = document.getElementById("unit-query");
  const measure = document.getElementById("unit-measure");
  const selectiveOnly = document.getElementById("unit-selective");
  const count = document.getElementById("unit-count");
  const rows = Array.from(document.querySelectorAll("#unit-table tbody tr"));
  function matches(row, text) {
    if (!text) return true;
    const id = text.replace(/^u(nit)?\s*/, "");
    if (/^\d+$/.test(id)) return row.dataset.unit === id;
    return row.dataset.concepts.includes(text);
  }
  function apply() {
    const text = query.value.trim().toLowerCase();
    const wanted = measure.value;
    let shown = 0;
    for (const row of rows) {
      const concepts = row.dataset.concepts ? row.dataset.concepts.split(" ") : [];
      const keep = matches(row, text) && (!wanted || concepts.includes(wanted))
        && (!selectiveOnly.checked || concepts.length > 0);
      row.hidden = !keep;
      if (keep) shown += 1;
    }
    count.textContent = String(shown);
  }
  const fromHash = new URLSearchParams(window.location.hash.slice(1));
  if (fromHash.has("q")) query.value = fromHash.get("q");
  if (fromHash.has("measure")) measure.value = fromHash.get("measure");
  for (const control of [query, measure, selectiveOnly]) control.addEventListener("input", apply);
  apply();
})();

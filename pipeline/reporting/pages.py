"""HTML of the report's pages: one layout, a stylesheet and the index's filter script.

Every page is a complete file with its style inline and relative links only, so the site
works from ``file://`` with no server and no network. Pages take plain values; all text
from artifacts is escaped here.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

STYLE = """
:root { --ink: #1d2430; --muted: #667085; --line: #e4e7ec; --accent: #1f77b4; --bg-soft: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, sans-serif; color: var(--ink); margin: 0; }
header { background: var(--ink); color: #fff; padding: 0.6rem 1.5rem; display: flex; gap: 1.2rem; align-items: baseline;
  flex-wrap: wrap; }
header a { color: #d0e4f5; text-decoration: none; }
header a.active, header a:hover { color: #fff; text-decoration: underline; }
header .title { font-weight: 600; color: #fff; margin-right: 1rem; }
main { padding: 1rem 1.5rem 3rem; max-width: 1200px; }
h1 { font-size: 1.5rem; margin: 0.4rem 0 0.8rem; }
h2 { font-size: 1.15rem; margin: 1.8rem 0 0.6rem; border-bottom: 1px solid var(--line); padding-bottom: 0.2rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 0.4rem; }
p.note, .muted { color: var(--muted); }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border-bottom: 1px solid var(--line); padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: var(--bg-soft); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
a { color: var(--accent); }
img.pixel { image-rendering: pixelated; }
.cards { display: flex; flex-wrap: wrap; gap: 1rem; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 0.5rem; background: #fff; max-width: 34rem; }
.card h3 { margin: 0 0 0.3rem; font-size: 0.95rem; }
.badge { display: inline-block; padding: 0 0.45rem; border-radius: 9px; font-size: 0.8rem; background: var(--bg-soft);
  border: 1px solid var(--line); }
.badge.yes { background: #e3f1fb; border-color: #a9cdea; }
.badge.no { background: #fdecea; border-color: #f3b8b1; }
.facts { display: grid; grid-template-columns: max-content auto; gap: 0.1rem 1rem; margin: 0.5rem 0 1rem; }
.facts dt { color: var(--muted); }
.facts dd { margin: 0; font-variant-numeric: tabular-nums; }
.filters { display: flex; gap: 0.8rem; align-items: center; flex-wrap: wrap; margin: 0.5rem 0; }
.filters input[type=search] { padding: 0.3rem 0.5rem; min-width: 18rem; }
.row { display: flex; gap: 2rem; flex-wrap: wrap; align-items: flex-start; }
"""

FILTER_SCRIPT = """
(function () {
  const query = document.getElementById("unit-query");
  const measure = document.getElementById("unit-measure");
  const selectiveOnly = document.getElementById("unit-selective");
  const count = document.getElementById("unit-count");
  const rows = Array.from(document.querySelectorAll("#unit-table tbody tr"));
  function matches(row, text) {
    if (!text) return true;
    const id = text.replace(/^u(nit)?\\s*/, "");
    if (/^\\d+$/.test(id)) return row.dataset.unit === id;
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
"""

NAVIGATION = (("index.html", "Overview"), ("measures.html", "Measures"), ("counterfactuals.html", "Counterfactuals"))


def layout(title: str, body: str, *, root: str, active: str = "", script: str = "") -> str:
    """A complete page. ``root`` is the relative path from the page to the report's root."""
    links = "".join(
        f"<a href='{root}{href}'{' class=active' if href == active else ''}>{html.escape(label)}</a>"
        for href, label in NAVIGATION
    )
    script_tag = f"<script>{script}</script>" if script else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><span class='title'>Unit report</span>{links}</header>"
        f"<main>{body}</main>{script_tag}</body></html>"
    )


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    numeric: Sequence[bool] = (),
    attrs: str = "",
    row_attrs: Sequence[str] | None = None,
) -> str:
    """An HTML table; cells are escaped unless wrapped in :class:`Raw`; ``row_attrs`` per body row."""
    numeric = list(numeric) + [False] * (len(header) - len(numeric))
    head = "".join(
        f"<th{' class=num' if n else ''}>{html.escape(h)}</th>" for h, n in zip(header, numeric, strict=True)
    )
    rows = list(rows)
    extra = row_attrs if row_attrs is not None else [""] * len(rows)
    body = "".join(
        f"<tr {attributes}>"
        + "".join(f"<td{' class=num' if n else ''}>{cell_html(c)}</td>" for c, n in zip(row, numeric, strict=True))
        + "</tr>"
        for row, attributes in zip(rows, extra, strict=True)
    )
    return f"<table {attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Raw(str):
    """Text that is already HTML."""


def cell_html(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    return html.escape(fmt(value))


def fmt(value: Any) -> str:
    """Numbers to 3 significant digits, missing values as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.3g}"
    if hasattr(value, "item"):
        return fmt(value.item())
    return str(value)


def link(href: str, text: str) -> Raw:
    return Raw(f"<a href='{html.escape(href)}'>{html.escape(text)}</a>")


def image(src: str, alt: str, *, width: int | None = None, height: int | None = None, lazy: bool = True) -> Raw:
    size = (f" width='{width}'" if width else "") + (f" height='{height}'" if height else "")
    loading = " loading='lazy'" if lazy else ""
    return Raw(f"<img class='pixel' src='{html.escape(src)}' alt='{html.escape(alt)}'{size}{loading}>")


def badge(text: str, kind: str = "") -> Raw:
    return Raw(f"<span class='badge {kind}'>{html.escape(text)}</span>")


def facts(items: Mapping[str, Any]) -> str:
    return (
        "<dl class='facts'>"
        + "".join(f"<dt>{html.escape(k)}</dt><dd>{cell_html(v)}</dd>" for k, v in items.items())
        + "</dl>"
    )


def unit_filter(measures: Sequence[str]) -> str:
    """The search box, measure filter and selective switch that :data:`FILTER_SCRIPT` drives."""
    options = "".join(f"<option value='{html.escape(m)}'>{html.escape(m)}</option>" for m in measures)
    return (
        "<div class='filters'>"
        "<input id='unit-query' type='search' placeholder='unit id (e.g. 12) or concept (e.g. object.hue)' "
        "aria-label='search units'>"
        f"<select id='unit-measure' aria-label='selective for measure'><option value=''>any measure</option>{options}"
        "</select>"
        "<label><input id='unit-selective' type='checkbox'> selective units only</label>"
        "<span class='muted'><span id='unit-count'></span> units shown</span></div>"
    )


def unit_rows_attrs(unit: int, concepts: Sequence[str]) -> str:
    return f"data-unit='{unit}' data-concepts='{html.escape(' '.join(concepts).lower())}'"

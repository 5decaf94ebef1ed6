"""Build the static report site of one run directory.

Layout of the site (every link relative, every page self-contained):

    index.html              overview: link quality, selective units, effect histograms,
                            validation, and the searchable unit table
    measures.html           every measure with its selective-unit count
    measures/<measure>.html gallery: the units with the largest effect on that measure
    units/<unit>.html       strips, effects with CIs, controllability, co-changing units
    counterfactuals.html    success per class pair, the concepts that move each class,
                            original / counterfactual / difference images
    img/                    PNG strips, figures and counterfactual triples
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline.reporting import figures, pages, svg
from pipeline.reporting.pages import Raw, badge, facts, fmt, image, link, table
from pipeline.reporting.strips import UnitSweep, strip_samples, thumbnail, unit_sweeps
from pipeline.stages.common import difference_image, load_models, prepare_device
from pipeline.stages.link import load_link
from pipeline.stages.units import probe_rows
from pipeline.stats import selective_counts
from pipeline.store import atomic_path, read_json, read_parquet, read_zarr

log = logging.getLogger(__name__)

CO_CHANGING_UNITS = 6
RESPONSE_SAMPLES = 8
SUMMARY_FIELDS = ("controllability", "slope", "specificity", "prob_change", "class_kept")
LINK_METRICS = (
    ("r2_train", "R² of w, training samples"),
    ("r2_test", "R² of w, held-out samples"),
    ("cycle_unit_corr", "cycle r → w → image → r: median unit correlation"),
    ("cycle_class_agreement", "cycle: re-renders classified as their class"),
    ("columns_beyond_noise", "units whose link column is more than fitting noise (p ≤ 0.05)"),
)
CONCEPT_MOVEMENT_ROWS = 8
# Displayed image sizes, in CSS pixels; small renders are scaled up without smoothing.
GALLERY_TILE = 64
UNIT_PAGE_TILE = 96
COUNTERFACTUAL_TILE = 96


def build_report(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    classifier: Mapping[str, Any],
    generator: Mapping[str, Any],
    device: str,
    max_units: int,
    samples: int,
    steps: int,
    top_units: int,
    counterfactual_examples: int,
    batch_size: int,
    class_names: Sequence[str] | None = None,
    validation_path: str | Path | None = None,
    segmentation_path: str | Path | None = None,
) -> Path:
    """Write the report of ``run_dir`` (a ``results/{run}`` folder) into ``out_dir``; return its index.

    Units get a page in the order of their strongest selective effect, at most ``max_units``
    of them; each measure's gallery shows its ``top_units`` units by |effect|. Strips show
    ``samples`` probe samples at ``steps`` values over each unit's range, rendered again from
    the link and generator. Optional artifacts (the activation-change table,
    counterfactuals) add their sections when present; ``validation_path`` names a
    ``validation.json`` (the run's own, or that of the planted-unit run beside it) to show;
    ``segmentation_path`` the part segmenter the regions came from (None: saliency).
    """
    run = Path(run_dir)
    concepts = read_parquet(run / "concepts/unit_concepts.parquet")
    summary = read_parquet(run / "concepts/unit_summary.parquet").set_index("unit")
    ranges = read_parquet(run / "units/ranges.parquet").set_index("unit")
    metrics = read_json(run / "link/metrics.json")
    names = _class_namer(class_names)

    ranked = rank_units(concepts)
    page_units = ranked[:max_units]
    galleries = {measure: top_units_for(concepts, measure, top_units) for measure in measure_order(concepts)}
    swept = list(dict.fromkeys([*page_units, *(u for units in galleries.values() for u in units)]))

    rows = probe_rows(run / "latents.zarr", run / "activations.zarr")
    latents, _ = read_zarr(run / "latents.zarr", ["class"])
    activations, _ = read_zarr(run / "activations.zarr", ["r"])
    chosen = rows[strip_samples(latents["class"][rows], samples)]
    torch_device = prepare_device(device)
    clf, gen = load_models(classifier, generator, torch_device)

    with atomic_path(out_dir) as site:
        for folder in ("units", "measures", "img/strips", "img/figures", "img/counterfactuals"):
            (site / folder).mkdir(parents=True, exist_ok=True)
        sweeps: dict[int, UnitSweep] = {}
        for sweep in unit_sweeps(
            clf,
            gen,
            load_link(run / "link/model.pt"),
            activations["r"][chosen],
            swept,
            ranges,
            steps=steps,
            batch_size=batch_size,
            device=torch_device,
        ):
            (site / "img/strips" / f"u{sweep.unit}.png").write_bytes(sweep.strip.png)
            sweeps[sweep.unit] = sweep
        log.info("report: %d tuning strips of %d samples x %d steps", len(sweeps), len(chosen), steps)

        strip_caption = "Rows: probe samples (" + ", ".join(names(c) for c in latents["class"][chosen]) + ")"
        context = _Context(
            concepts=concepts,
            summary=summary,
            ranges=ranges,
            sweeps=sweeps,
            pages=set(page_units),
            strip_caption=strip_caption,
            names=names,
        )
        _write(site / "index.html", index_page(site, run, metrics, context, ranked, validation_path, segmentation_path))
        _write(site / "measures.html", measures_page(concepts, galleries))
        for measure, units in galleries.items():
            _write(site / "measures" / f"{slug(measure)}.html", gallery_page(measure, units, context))
        changes = _activation_changes(run)
        for position, unit in enumerate(page_units):
            neighbours = (
                page_units[position - 1] if position else None,
                page_units[position + 1] if position + 1 < len(page_units) else None,
            )
            _write(site / "units" / f"{unit}.html", unit_page(unit, context, changes[unit], neighbours))
        _write(site / "counterfactuals.html", counterfactual_page(site, run, context, counterfactual_examples))
    log.info("report: %d unit pages, %d measure galleries", len(page_units), len(galleries))
    return Path(out_dir) / "index.html"


@dataclass
class _Context:
    """What every page needs to know about the run, looked up once."""

    concepts: pd.DataFrame
    summary: pd.DataFrame  # indexed by unit
    ranges: pd.DataFrame  # indexed by unit
    sweeps: dict[int, UnitSweep]
    pages: set[int]
    strip_caption: str
    names: Callable[[Any], str]
    selective_measures: dict[int, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        selective = self.concepts[self.concepts["selective"]]
        self.selective_measures = selective.groupby("unit")["measure"].agg(list).to_dict()

    def top_concept(self, unit: int) -> str:
        value = self.summary["unique_measure"].get(unit)
        return value if isinstance(value, str) else ""

    def unit_link(self, unit: int, root: str) -> Raw:
        text = f"unit {unit}"
        return link(f"{root}units/{unit}.html", text) if unit in self.pages else Raw(text)

    def strip(self, unit: int, root: str, tile: int) -> Raw:
        """The unit's strip, shown with each image ``tile`` CSS pixels high."""
        width = self.sweeps[unit].strip.display_width(tile)
        return image(f"{root}img/strips/u{unit}.png", f"tuning strip of unit {unit}", width=width)


def rank_units(concepts: pd.DataFrame) -> list[int]:
    """Units with selective measures first, each group by decreasing largest |effect|, ties by id."""
    strength = concepts.assign(
        magnitude=concepts["effect"].abs().fillna(0.0),
        selective_magnitude=concepts["effect"].abs().where(concepts["selective"], 0.0),
    )
    per_unit = strength.groupby("unit").agg(selective=("selective_magnitude", "max"), any=("magnitude", "max"))
    order = per_unit.reset_index().sort_values(
        ["selective", "any", "unit"], ascending=[False, False, True], kind="stable"
    )
    return [int(u) for u in order["unit"]]


def measure_order(concepts: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(concepts["measure"]))


def top_units_for(concepts: pd.DataFrame, measure: str, count: int) -> list[int]:
    """The ``count`` units with the largest |effect| on ``measure``, selective ones first."""
    rows = concepts[concepts["measure"] == measure].assign(magnitude=lambda f: f["effect"].abs())
    rows = rows.dropna(subset=["magnitude"]).sort_values(["selective", "magnitude"], ascending=False, kind="stable")
    return [int(u) for u in rows["unit"].head(count)]


def slug(measure: str) -> str:
    """A file name for a measure (``part:ear.hue`` -> ``part_ear.hue``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", measure)


def index_page(
    site: Path,
    run: Path,
    metrics: Mapping[str, Any],
    context: _Context,
    ranked: Sequence[int],
    validation_path: str | Path | None,
    segmentation_path: str | Path | None = None,
) -> str:
    concepts = context.concepts
    counts = selective_counts(concepts)
    figures.effect_histograms(concepts, site / "img/figures/effects.png")
    n_units = concepts["unit"].nunique()
    n_selective_units = len(context.selective_measures)
    if n_selective_units:
        figures.selective_counts_chart(counts, site / "img/figures/selective_counts.png")

    body = [
        f"<h1>What the units of run {pages.cell_html(run.name)} encode</h1>",
        pages.facts(
            {
                "units tested": n_units,
                "units selective for at least one measure": n_selective_units,
                "measures": concepts["measure"].nunique(),
                "unit pages": len(context.pages),
            }
        ),
        f"<p class='note'>Regions: {html.escape(region_source(segmentation_path))}.</p>",
        "<h2>Link quality</h2>",
        "<p class='note'>The link maps classifier activations r to generator latents w. Held-out samples were "
        "not used to fit it. The cycle renders the linked latent and classifies it again.</p>",
        link_table(metrics),
        "<h2>Two labels per unit</h2>",
        f"<p class='note'>{TWO_LABELS_NOTE}</p>",
        "<h2>Selective units per measure</h2>",
        "<p class='note'>A unit is selective for a measure when its sweep changes the measure across its "
        "samples and its link column is more than fitting noise, after Benjamini–Hochberg correction, and "
        "it moves the measure by enough random directions' spreads (as they are or distance in w for "
        "distance).</p>",
        "<div class='row'>",
        table(
            ["measure", "selective", "of units", "increase", "decrease"],
            (
                (link(f"measures/{slug(m)}.html", m), s, f"{f:.0%}", i, d)
                for m, s, f, i, d in counts[["measure", "selective", "fraction", "increase", "decrease"]].itertuples(
                    index=False
                )
            ),
            numeric=(False, True, True, True, True),
        ),
        str(image("img/figures/selective_counts.png", "selective units per measure", lazy=False))
        if n_selective_units
        else "<p class='note'>No unit is selective for any measure.</p>",
        "</div>",
        "<h2>Effects over units</h2>",
        "<p class='note'>Per measure, the distribution of the units' effects (in spreads of random directions, "
        "as they are or per unit of distance in w, whichever tests stronger); "
        "selective units in dark blue.</p>",
        str(image("img/figures/effects.png", "histograms of effects per measure", lazy=False)),
        validation_section(site, validation_path, context) if validation_path else "",
        "<h2 id='units'>Units</h2>",
        pages.unit_filter(measure_order(concepts)),
        "<p class='note'>Strongest units first: those with selective measures, by their largest effect.</p>",
        unit_table(context, ranked),
    ]
    return pages.layout("Unit report", "".join(body), root="", active="index.html", script=pages.FILTER_SCRIPT)


def region_source(segmentation_path: str | Path | None) -> str:
    """Where the measured regions came from: a part segmenter on the generator, or the classifier's saliency."""
    if not segmentation_path:
        return "the object from the classifier's saliency (no segmentation configured)"
    from pipeline.segmentation import load_pixel_classifier

    _, parts, record = load_pixel_classifier(segmentation_path)
    iou = record.get("mean_iou")
    score = "no held-out renders" if iou is None else f"held-out mean IoU {iou:.2f} on {record['held_out']} renders"
    return f"parts {', '.join(parts)} from the generator's features (K = {record['train']} labelled renders; {score})"


def link_table(metrics: Mapping[str, Any]) -> str:
    has_mlp = any(key.startswith("mlp_") for key in metrics)
    rows = []
    for key, label in LINK_METRICS:
        row = [label, metrics.get(key)]
        if has_mlp:
            row.append(metrics.get(f"mlp_{key}"))
        rows.append(row)
    header = ["metric", "linear (ridge)"] + (["MLP"] if has_mlp else [])
    note = f"<p class='note'>Ridge alpha {fmt(metrics.get('alpha'))} ({metrics.get('alpha_source', 'config')}); "
    note += f"{fmt(metrics.get('n_train'))} training and {fmt(metrics.get('n_test'))} held-out samples.</p>"
    return table(header, rows, numeric=[False] + [True] * (len(header) - 1)) + note


TWO_LABELS_NOTE = (
    "Every unit gets two labels. Its unique label comes from sweeping the unit alone with the rest of the "
    "layer held, as in the paper: what it adds beyond the other units, given only where the sweep moves its "
    "own re-encoded activation. Its tuning label comes from natural samples: the measure its activation "
    "follows most closely within each class, whether or not other units carry the same."
)


def validation_section(site: Path, path: str | Path, context: _Context) -> str:
    """Ground truth from a ``validation.json`` (see :func:`pipeline.validation.score_validation`).

    Its scalar figures as a table, marked as a development set where the statistics were
    developed on it; its per-unit rows (planted unit, true measure, both labels) as a
    figure of hits per true measure and a table.
    """
    validation = read_json(path)
    scalars = {k: v for k, v in validation.items() if not isinstance(v, (list, dict))}
    if validation.get("development_set"):
        heading = f"Validation on planted units (development set {pages.cell_html(validation.get('function_set'))})"
        caveat = (
            "The statistics were developed on this planted set, so these figures are not a held-back estimate "
            "of how well they label units. "
        )
    else:
        heading = f"Validation on planted units (held-back set {pages.cell_html(validation.get('function_set'))})"
        caveat = ""
    parts = [
        f"<h2>{heading}</h2>",
        f"<p class='note'>{caveat}Planted units are known functions of the image; null units are noise. "
        "Precision and recall are those of each label against the planted function's dominant statistic; "
        "the null false-positive rate is the share of null-unit tests that came out selective (per test, "
        "not a false discovery rate).</p>",
        table(["figure", "value"], scalars.items(), numeric=[False, True]),
    ]
    planted = pd.DataFrame(validation.get("units") or [])
    if not planted.empty:
        figures.validation_hits(planted, site / "img/figures/validation.png")
        parts.append(str(image("img/figures/validation.png", "planted units per true measure", lazy=False)))
        rows = [
            (
                context.unit_link(int(r["unit"]), ""),
                r["truth"],
                r.get("unique_measure") or "–",
                _verdict(r.get("unique_correct")),
                r.get("tuning_measure") or "–",
                _verdict(r.get("tuning_correct")),
            )
            for r in planted.to_dict("records")
        ]
        parts.append(
            table(["planted unit", "true measure", "unique label", "correct", "tuning label", "correct"], rows)
        )
    return "".join(parts)


def _verdict(correct: Any) -> Raw:
    return badge("yes", "yes") if correct else badge("no", "no")


def label_text(summary: pd.DataFrame, unit: int, label: str) -> str:
    """A unit's ``label`` label as read in the report: ``object.x (+)``, ``not controllable`` or ``none (q)``."""
    measure = summary[f"{label}_measure"].get(unit) if f"{label}_measure" in summary else None
    if isinstance(measure, str):
        sign = summary[f"{label}_sign"].get(unit)
        return f"{measure} ({'+' if sign > 0 else '−'})"
    gate = summary[f"{label}_gate"].get(unit) if f"{label}_gate" in summary else None
    if gate == "controllability":
        return "not controllable"
    return f"none ({gate})" if isinstance(gate, str) else "none"


def unit_table(context: _Context, ranked: Sequence[int]) -> str:
    summary = context.summary
    rows, attributes = [], []
    for unit in ranked:
        measures = context.selective_measures.get(unit, [])
        rows.append(
            [
                context.unit_link(unit, ""),
                label_text(summary, unit, "unique"),
                _summary_value(summary, unit, "unique_effect"),
                label_text(summary, unit, "tuning"),
                _summary_value(summary, unit, "tuning_association"),
                len(measures),
                _summary_value(summary, unit, "slope"),
                _summary_value(summary, unit, "redundancy_r2"),
            ]
        )
        attributes.append(pages.unit_rows_attrs(unit, measures))
    return table(
        [
            "unit",
            "unique label",
            "effect",
            "tuning label",
            "association",
            "selective measures",
            "control slope",
            "redundancy R²",
        ],
        rows,
        numeric=(False, False, True, False, True, True, True, True),
        attrs="id='unit-table'",
        row_attrs=attributes,
    )


def _class_range(rows: pd.DataFrame) -> str:
    """The per-class effects of a unit's strongest measure (``rows`` by decreasing |effect|)."""
    if rows.empty or "class_effect_min" not in rows or pd.isna(rows["class_effect_min"].iloc[0]):
        return "–"
    top = rows.iloc[0]
    verdict = "" if top["classes_agree"] else " (opposite signs: not pooled into a label)"
    return f"{top['measure']}: {fmt(float(top['class_effect_min']))} to {fmt(float(top['class_effect_max']))}{verdict}"


def _optional_value(summary: pd.DataFrame, unit: int, column: str) -> float | None:
    return _summary_value(summary, unit, column) if column in summary else None


def _optional_text(summary: pd.DataFrame, unit: int, column: str) -> str:
    value = summary[column].get(unit) if column in summary else None
    return value if isinstance(value, str) else "–"


def _summary_value(summary: pd.DataFrame, unit: int, column: str) -> float | None:
    value = summary.at[unit, column]
    return None if pd.isna(value) else float(value)


def measures_page(concepts: pd.DataFrame, galleries: Mapping[str, list[int]]) -> str:
    counts = selective_counts(concepts).set_index("measure")
    rows = [(link(f"measures/{slug(m)}.html", m), counts.at[m, "selective"], counts.at[m, "units"]) for m in galleries]
    body = "<h1>Measures</h1>" + table(
        ["measure", "selective units", "units tested"], rows, numeric=(False, True, True)
    )
    return pages.layout("Measures", body, root="", active="measures.html")


def gallery_page(measure: str, units: Sequence[int], context: _Context) -> str:
    rows = context.concepts[context.concepts["measure"] == measure].set_index("unit")
    cards = []
    for unit in units:
        row = rows.loc[unit]
        verdict = badge("selective", "yes") if row["selective"] else badge("not selective")
        cards.append(
            "<div class='card'>"
            f"<h3>{context.unit_link(unit, '../')} {verdict}</h3>"
            f"<div class='muted'>effect {fmt(float(row['effect']))} "
            f"[{fmt(float(row['ci_low']))}, {fmt(float(row['ci_high']))}], q = {fmt(float(row['q']))}</div>"
            f"{context.strip(unit, '../', GALLERY_TILE)}</div>"
        )
    body = (
        f"<h1>{pages.cell_html(measure)}</h1>"
        f"<p class='note'>The {len(units)} units with the largest |effect| on {pages.cell_html(measure)}. "
        f"{pages.cell_html(context.strip_caption)}; columns: the unit's activation from low to high.</p>"
        f"<div class='cards'>{''.join(cards)}</div>"
    )
    return pages.layout(measure, body, root="../", active="measures.html")


def unit_page(unit: int, context: _Context, changes: pd.DataFrame, neighbours: tuple[int | None, int | None]) -> str:
    rows = context.concepts[context.concepts["unit"] == unit]
    rows = rows.assign(magnitude=rows["effect"].abs()).sort_values("magnitude", ascending=False, na_position="last")
    top = context.top_concept(unit)
    known = {
        "unique label": link(f"../measures/{slug(top)}.html", label_text(context.summary, unit, "unique"))
        if top
        else label_text(context.summary, unit, "unique"),
        "unique effect": _summary_value(context.summary, unit, "unique_effect"),
        "unique q": _optional_value(context.summary, unit, "unique_q"),
        "unique label decided by": _optional_text(context.summary, unit, "unique_gate"),
        "tuning label": label_text(context.summary, unit, "tuning"),
        "tuning association": _optional_value(context.summary, unit, "tuning_association"),
        "tuning q": _optional_value(context.summary, unit, "tuning_q"),
        "tuning label decided by": _optional_text(context.summary, unit, "tuning_gate"),
        "redundancy R²": _optional_value(context.summary, unit, "redundancy_r2"),
        "per-class effects of the strongest measure": _class_range(rows),
        "selective measures": len(context.selective_measures.get(unit, [])),
        **{field.replace("_", " "): _summary_value(context.summary, unit, field) for field in SUMMARY_FIELDS},
    }
    low, high = (fmt(float(context.ranges.at[unit, end])) for end in ("low", "high"))
    known["range swept"] = f"{low} to {high}"
    values = ", ".join(fmt(float(v)) for v in context.sweeps[unit].values)
    body = [
        f"<h1>Unit {unit}</h1>",
        _neighbour_links(neighbours),
        facts(known),
        "<h2>Tuning strip</h2>",
        str(context.strip(unit, "../", UNIT_PAGE_TILE)),
        f"<p class='note'>{pages.cell_html(context.strip_caption)}. Columns: the unit set to {values}.</p>",
        "<h2>Measure changes</h2>",
        "<p class='note'>Effect of sweeping the unit on each image measure, with the bootstrap 95% CI; "
        "selective measures in dark blue.</p>",
        svg.effect_bars(
            list(rows["measure"]),
            rows["effect"].to_numpy(),
            rows["ci_low"].to_numpy(),
            rows["ci_high"].to_numpy(),
            rows["selective"].to_numpy(dtype=bool),
        ),
        "<h2>Controllability</h2>",
        "<p class='note'>The re-encoded activation of the unit against the requested one, per probe sample; "
        "the dashed line is perfect control.</p>",
        response_plot(changes, context),
        "<h2>Co-changing units</h2>",
        co_changing_table(unit, context),
    ]
    return pages.layout(f"Unit {unit}", "".join(body), root="../")


def _neighbour_links(neighbours: tuple[int | None, int | None]) -> str:
    previous, following = neighbours
    parts = []
    if previous is not None:
        parts.append(f"<a href='{previous}.html'>← unit {previous}</a>")
    parts.append("<a href='../index.html#units'>all units</a>")
    if following is not None:
        parts.append(f"<a href='{following}.html'>unit {following} →</a>")
    return "<p>" + " · ".join(parts) + "</p>"


def response_plot(changes: pd.DataFrame, context: _Context) -> str:
    frame = changes.sort_values(["sample", "step"])
    samples = frame["sample"].drop_duplicates().head(RESPONSE_SAMPLES).tolist()
    frame = frame[frame["sample"].isin(samples)]
    requested = frame.pivot(index="sample", columns="step", values="requested").loc[samples].to_numpy()
    achieved = frame.pivot(index="sample", columns="step", values="achieved").loc[samples].to_numpy()
    classes = frame.groupby("sample")["class"].first()
    labels = [f"sample {s} ({context.names(classes[s])})" for s in samples]
    return svg.response_lines(requested, achieved, labels)


def co_changing_table(unit: int, context: _Context) -> str:
    change = context.sweeps[unit].co_change.copy()
    own = change[unit]
    change[unit] = np.nan
    order = np.argsort(-np.nan_to_num(np.abs(change), nan=-1.0), kind="stable")[:CO_CHANGING_UNITS]
    rows = [(context.unit_link(int(u), "../"), float(change[u]), context.top_concept(int(u)) or "–") for u in order]
    note = (
        "<p class='note'>Mean change of other units' re-encoded activations from the first to the last step of the "
        f"sweep, in standard deviations over probe samples. The unit itself moved {fmt(float(own))}.</p>"
    )
    return note + table(["unit", "change (std)", "top concept"], rows, numeric=(False, True, False))


def counterfactual_page(site: Path, run: Path, context: _Context, examples: int) -> str:
    folder = run / "counterfactuals"
    if not (folder / "summary.json").exists():
        body = (
            "<h1>Counterfactuals</h1><p class='note'>This run computed no counterfactuals "
            "(config key <code>counterfactuals.pairs</code>).</p>"
        )
        return pages.layout("Counterfactuals", body, root="", active="counterfactuals.html")
    summary = read_json(folder / "summary.json")
    movement = read_parquet(folder / "summary.parquet")
    carriers = read_parquet(folder / "summary_units.parquet")
    names = context.names
    method = summary["method"]
    body = [
        "<h1>Counterfactuals</h1>",
        f"<p class='note'>For held-out samples of the origin class, the <em>{pages.cell_html(method)}</em> search "
        f"({COUNTERFACTUAL_METHODS.get(method, method)}) looks for a shift of the sample's activations whose "
        "render the classifier calls the target class. A flip is judged on the re-encoded render. It counts as in "
        "the generator's domain when its latent is no farther from the training latents' mean, in their standard "
        "deviations, than 99% of them: a flip outside it is a render the generator was never trained to make, "
        "which the classifier may call anything.</p>",
        "<h2>Methods side by side</h2>",
        method_comparison_table(summary["methods"]),
        f"<h2>{pages.cell_html(method)}: per pair</h2>",
        table(
            [
                "origin → target",
                "samples",
                "flipped",
                "flipped in domain",
                "median steps",
                "median shift (Mahalanobis)",
                "median latent distance (domain)",
                "mean p(target)",
                "ground truth",
            ],
            (
                (
                    link(f"#pair-{p['origin']}-{p['target']}", f"{names(p['origin'])} → {names(p['target'])}"),
                    p["n"],
                    f"{p['success_rate']:.0%}",
                    f"{p['success_in_domain_rate']:.0%}",
                    p["median_steps"],
                    p["median_shift_mahalanobis"],
                    f"{p['median_latent_distance']:.1f} ({p['latent_domain_radius']:.1f})",
                    p["mean_prob_target"],
                    None if p["ground_truth_share"] is None else f"{p['ground_truth_share']:.0%}",
                )
                for p in summary["pairs"]
            ),
            numeric=(False, True, True, True, True, True, True, True, True),
        ),
        f"<p class='note'>Ground truth: {pages.cell_html(summary['ground_truth'])}. Where a world has a manifest of "
        "the factors that separate its classes, the column gives the share of the moved measures (below) that "
        "read such a factor and move toward the target's values.</p>",
    ]
    for pair in summary["pairs"]:
        origin, target = pair["origin"], pair["target"]
        body.append(
            f"<h2 id='pair-{origin}-{target}'>{pages.cell_html(names(origin))} → {pages.cell_html(names(target))}</h2>"
        )
        in_pair = (movement["origin"] == origin) & (movement["target"] == target)
        body.append("<h3>Measures that change</h3>")
        body.append(concept_movement_table(movement[in_pair].head(CONCEPT_MOVEMENT_ROWS), context))
        body.append("<h3>Units that carry the shift</h3>")
        body.append(
            shift_units_table(carriers[(carriers["origin"] == origin) & (carriers["target"] == target)], context)
        )
        body.append(counterfactual_gallery(site, folder, origin, target, examples, context))
    return pages.layout("Counterfactuals", "".join(body), root="", active="counterfactuals.html")


COUNTERFACTUAL_METHODS = {
    "mahalanobis": "the smallest shift under a Gaussian prior of the training activations, its length found by "
    "rendering and re-encoding",
    "paper": "the paper's gradient search on the head's logits with a latent cosine term",
}


def method_comparison_table(methods: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        (
            m["method"],
            m["n"],
            None if m["success_rate"] is None else f"{m['success_rate']:.0%}",
            None if m["success_in_domain_rate"] is None else f"{m['success_in_domain_rate']:.0%}",
            m["median_latent_distance"],
            " · ".join(
                f"{p['origin']}→{p['target']} {p['success_in_domain_rate']:.0%}, {p['median_latent_distance']:.1f}"
                for p in m["pairs"]
            ),
        )
        for m in methods
    ]
    note = (
        "<p class='note'>Every method searched the same samples. <em>Flipped</em>: the re-encoded render is "
        "classified as the target; <em>in domain</em>: flipped with the latent in the generator's domain; the "
        "median latent distance is in the training latents' standard deviations, over all samples.</p>"
    )
    return note + table(
        [
            "method",
            "samples",
            "flipped",
            "flipped in domain",
            "median latent distance",
            "per pair: in domain, distance",
        ],
        rows,
        numeric=(False, True, True, True, True, False),
    )


def concept_movement_table(moved: pd.DataFrame, context: _Context) -> str:
    if moved.empty or moved["n_success"].iloc[0] == 0:
        return "<p class='note'>No sample flipped, so no concept is attributed.</p>"
    galleries = set(context.concepts["measure"])
    with_truth = moved["expected_sign"].notna().any()
    rows = [
        (
            link(f"measures/{slug(r.measure)}.html", r.measure) if r.measure in galleries else r.measure,
            f"{fmt(r.image_change)} [{fmt(r.image_ci_low)}, {fmt(r.image_ci_high)}]",
            r.image_effect,
            badge("moved", "yes") if r.moved else "",
            f"{r.consistency:.0%}" if np.isfinite(r.consistency) else None,
            f"{r.unit_share:.0%}",
            r.unit_direction,
            *([None if np.isnan(r.toward_target) else ("toward" if r.toward_target else "away")] if with_truth else []),
        )
        for r in moved.itertuples(index=False)
    ]
    note = (
        "<p class='note'>What changes from the original to the counterfactual, over the successful samples: the "
        "mean change of each image measure with its bootstrap 95% CI over samples, the standardised effect (mean "
        "over standard deviation), and the share of samples changing in that direction. <em>Moved</em>: among the "
        "largest |effect| of the measures whose CI excludes 0. <em>Unit share</em> is the share of the "
        "most-shifted units whose top concept is the measure; <em>unit direction</em> is +1 when they all push "
        "the measure up.</p>"
    )
    header = ["measure", "change [95% CI]", "effect", "moved", "consistent", "unit share", "unit direction"]
    header += ["vs. the target's factors"] if with_truth else []
    return note + table(header, rows, numeric=(False, True, True, False, True, True, True, False)[: len(header)])


def shift_units_table(carriers: pd.DataFrame, context: _Context) -> str:
    if carriers.empty:
        return "<p class='note'>No sample flipped, so no unit is attributed.</p>"
    rows = [
        (context.unit_link(int(r.unit), ""), f"{r.mean_share:.1%}", r.n_top, r.unique_measure or "–")
        for r in carriers.itertuples(index=False)
    ]
    note = (
        "<p class='note'>Each unit's share of the squared shift (measured per unit in standard deviations over "
        "the accepted samples), averaged over the successful samples, and in how many of them it is among the "
        "most-shifted units.</p>"
    )
    header = ["unit", "mean share", "samples with it on top", "top concept"]
    return note + table(header, rows, numeric=(False, True, True, False))


def counterfactual_gallery(site: Path, folder: Path, origin: int, target: int, examples: int, context: _Context) -> str:
    samples = read_parquet(folder / f"{origin}-{target}.parquet").head(examples)
    arrays, _ = read_zarr(folder / f"{origin}-{target}.zarr", ["original", "counterfactual"])
    names = context.names
    cards = []
    for k, row in enumerate(samples.itertuples(index=False)):
        original, counterfactual = arrays["original"][k], arrays["counterfactual"][k]
        triple = thumbnail(
            np.stack([original, counterfactual, difference_image(original, counterfactual)])[None], gap=4
        )
        name = f"{origin}-{target}-{k}.png"
        (site / "img/counterfactuals" / name).write_bytes(triple.png)
        top = ", ".join(
            f"{context.unit_link(int(u), '')} ({share:.1%}, {fmt(float(c))}{' · ' + pages.cell_html(t) if t else ''})"
            for u, share, c, t in zip(row.top_units, row.top_shares, row.top_changes, row.top_concepts, strict=True)
        )
        outcome = badge("flipped", "yes") if row.success else badge("not flipped", "no")
        domain = "" if row.in_domain else " " + badge("latent outside the domain", "no")
        alt = f"sample {row.sample}: original, counterfactual, difference"
        cards.append(
            "<div class='card'>"
            f"<h3>sample {row.sample} {outcome}{domain}</h3>"
            f"{image(f'img/counterfactuals/{name}', alt, width=triple.display_width(COUNTERFACTUAL_TILE))}"
            f"<div class='muted'>original · counterfactual · difference</div>"
            f"<div>p({pages.cell_html(names(origin))}) {_change(row.start_prob_origin, row.prob_origin)}, "
            f"p({pages.cell_html(names(target))}) {_change(row.start_prob_target, row.prob_target)}</div>"
            f"<div>{row.steps} steps, shift L2 {fmt(float(row.shift_l2))}, Mahalanobis "
            f"{fmt(float(row.shift_mahalanobis))}, latent distance {fmt(float(row.latent_distance))}</div>"
            f"<div>units carrying the shift (share, change in std): {top}</div>"
            "</div>"
        )
    return f"<div class='cards'>{''.join(cards)}</div>"


def _change(before: float, after: float) -> str:
    return f"{fmt(float(before))} → {fmt(float(after))}"


def _activation_changes(run: Path) -> dict[int, pd.DataFrame]:
    """Per unit, the requested and achieved activation of every sweep step."""
    table = pq.read_table(
        run / "tables/activation_changes.parquet", columns=["unit", "class", "sample", "step", "requested", "achieved"]
    ).to_pandas()
    return {int(unit): group for unit, group in table.groupby("unit")}


def _class_namer(class_names: Sequence[str] | None):
    def name(class_id: Any) -> str:
        class_id = int(class_id)
        if class_names is not None and 0 <= class_id < len(class_names):
            return str(class_names[class_id])
        return f"class {class_id}"

    return name


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")

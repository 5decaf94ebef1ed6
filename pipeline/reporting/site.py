"""Build the static report site of one run directory from its artifacts, on the CPU.

Layout of the site (every link relative, every page self-contained):

    index.html              overview: link quality, selective units, units labelled for part
                            measures, effect histograms, validation, factor encoding, and the
                            searchable unit table
    measures.html           every measure with its selective-unit count
    measures/<measure>.html gallery: the units with the largest effect on that measure
    units/<unit>.html       strips (with part outlines), effects with CIs, controllability,
                            co-changing units
    counterfactuals.html    success per class pair, the concepts that move each class,
                            original / counterfactual / difference images
    img/                    PNG strips, part outlines, figures and counterfactual triples

This module reads artifacts, writes files and gathers each page's values; the strips come
rendered from the strips stage (:mod:`pipeline.stages.strips`), the figures from
:mod:`pipeline.reporting.figures`, the markup from the templates (:mod:`pipeline.reporting.render`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline.reporting import figures, svg
from pipeline.reporting.images import OUTLINE_PALETTE, Thumbnail, part_outlines, thumbnail
from pipeline.reporting.render import Badge, Link, Picture, fmt, percent, render
from pipeline.reporting.selection import measure_order, shown_units, slug
from pipeline.stages.common import difference_image
from pipeline.stats import NOT_IN_RESIDUAL, selective_counts
from pipeline.store import atomic_path, read_json, read_parquet, read_zarr

log = logging.getLogger(__name__)

CO_CHANGING_UNITS = 6
RESPONSE_SAMPLES = 8
PART_PREFIX = "part:"
SUMMARY_FIELDS = ("controllability", "slope", "specificity", "prob_change", "class_kept")
LINK_METRICS = (
    ("r2_train", "R² of w, training samples"),
    ("r2_test", "R² of w, held-out samples"),
    ("cycle_unit_corr", "cycle r → w → image → r: median unit correlation"),
    ("cycle_class_agreement", "cycle: re-renders classified as their class"),
    ("columns_beyond_noise", "units whose link column is more than fitting noise (p ≤ 0.05)"),
)
# The figures of the labels against a world's manifest, when validation.json has them.
MANIFEST_FIGURES = (
    ("breed_defining_share", "share of labelled units whose label is a breed-defining part measure"),
    ("breed_defining_labelled", "labelled units whose label is a breed-defining part measure"),
    ("labelled_units", "labelled units"),
)
FACTOR_ENCODING_COLUMNS = ("factor", "kind", "layer_r2", "units_encoding", "best_unit", "best_unit_r2")
CONCEPT_MOVEMENT_ROWS = 8
# Displayed image sizes, in CSS pixels; small renders are scaled up without smoothing.
GALLERY_TILE = 64
UNIT_PAGE_TILE = 96
COUNTERFACTUAL_TILE = 96
COUNTERFACTUAL_METHODS = {
    "mahalanobis": "the smallest shift under a Gaussian prior of the training activations, its length found by "
    "rendering and re-encoding",
    "paper": "the paper's gradient search on the head's logits with a latent cosine term",
}


def build_report(
    run_dir: str | Path,
    strips_path: str | Path,
    out_dir: str | Path,
    *,
    max_units: int,
    top_units: int,
    counterfactual_examples: int,
    class_names: Sequence[str] | None = None,
    validation_path: str | Path | None = None,
) -> Path:
    """Write the report of ``run_dir`` (a ``results/{run}`` folder) into ``out_dir``; return its index.

    Units get a page in the order of their strongest selective effect, at most ``max_units``
    of them; each measure's gallery shows its ``top_units`` units by |effect|. The strips
    come from ``strips_path`` (``report_strips.zarr`` of the strips stage, made with the same
    ``max_units`` and ``top_units``). Optional artifacts (counterfactuals, the factor encoding)
    add their sections when present; ``validation_path`` names a ``validation.json`` (the
    run's own, or that of the planted-unit run beside it) to show.
    """
    run = Path(run_dir)
    concepts = read_parquet(run / "concepts/unit_concepts.parquet")
    summary = read_parquet(run / "concepts/unit_summary.parquet").set_index("unit")
    ranges = read_parquet(run / "units/ranges.parquet").set_index("unit")
    metrics = read_json(run / "link/metrics.json")
    names = _class_namer(class_names)
    shown = shown_units(concepts, max_units=max_units, top_units=top_units)
    strips = Strips.read(strips_path, shown.swept)

    with atomic_path(out_dir) as site:
        for folder in ("units", "measures", "img/strips", "img/figures", "img/counterfactuals"):
            (site / folder).mkdir(parents=True, exist_ok=True)
        thumbnails = strips.write_images(site / "img/strips")
        context = _Context(
            concepts=concepts,
            summary=summary,
            ranges=ranges,
            strips=strips,
            thumbnails=thumbnails,
            pages=set(shown.pages),
            strip_caption="Rows: probe samples (" + ", ".join(names(c) for c in strips.classes) + ")",
            names=names,
        )
        counts = selective_counts(concepts)
        figures.effect_histograms(concepts, site / "img/figures/effects.png")
        if context.selective_measures:
            figures.selective_counts_chart(counts, site / "img/figures/selective_counts.png")
        validation = read_json(validation_path) if validation_path else None
        planted = pd.DataFrame((validation or {}).get("units") or [])
        if not planted.empty:
            figures.validation_hits(planted, site / "img/figures/validation.png")
        factors = run / "concepts/factor_encoding.parquet"
        index = index_values(run, metrics, context, counts, shown.ranked, validation, planted, factors)
        _write(site / "index.html", render("index.html", **index))
        _write(site / "measures.html", render("measures.html", rows=measure_rows(counts, shown.galleries)))
        for measure, units in shown.galleries.items():
            page = gallery_values(measure, units, context)
            _write(site / "measures" / f"{slug(measure)}.html", render("gallery.html", **page))
        changes = _activation_changes(run)
        for position, unit in enumerate(shown.pages):
            neighbours = (
                shown.pages[position - 1] if position else None,
                shown.pages[position + 1] if position + 1 < len(shown.pages) else None,
            )
            page = unit_values(unit, context, changes[unit], neighbours)
            _write(site / "units" / f"{unit}.html", render("unit.html", **page))
        page = counterfactual_values(site, run, context, counterfactual_examples)
        _write(site / "counterfactuals.html", render("counterfactuals.html", **page))
    log.info("report: %d unit pages, %d measure galleries", len(shown.pages), len(shown.galleries))
    return Path(out_dir) / "index.html"


@dataclass(frozen=True)
class Strips:
    """The arrays of ``report/strips.zarr`` (:func:`pipeline.stages.strips.render_strips`)."""

    units: list[int]
    images: np.ndarray  # uint8 [K, P, S, h, w, 3]
    values: np.ndarray  # float [K, S]
    co_change: np.ndarray  # float [K, U]
    classes: np.ndarray  # int [P]
    parts: np.ndarray | None  # uint8 [K, P, S, h, w], or None without a segmenter
    part_names: list[str]
    segmenter: Mapping[str, Any] | None

    @classmethod
    def read(cls, path: str | Path, needed: Sequence[int]) -> Strips:
        arrays, attrs = read_zarr(path)
        units = [int(u) for u in arrays["unit"]]
        missing = sorted(set(needed) - set(units))
        if missing:
            raise ValueError(f"{path}: no strip of unit {missing[0]}; the strips were made with other report settings")
        return cls(
            units=units,
            images=arrays["images"],
            values=arrays["values"],
            co_change=arrays["co_change"],
            classes=arrays["class"],
            parts=arrays.get("parts"),
            part_names=list(attrs.get("part_names", [])),
            segmenter=attrs.get("segmenter"),
        )

    def position(self, unit: int) -> int:
        return self.units.index(unit)

    def write_images(self, folder: Path) -> dict[int, Thumbnail]:
        """Each unit's strip as ``u{unit}.png``, with its part outlines as ``u{unit}.parts.png``."""
        thumbnails = {}
        for position, unit in enumerate(self.units):
            strip = thumbnail(self.images[position])
            (folder / f"u{unit}.png").write_bytes(strip.png)
            if self.parts is not None:
                (folder / f"u{unit}.parts.png").write_bytes(part_outlines(self.parts[position]).png)
            thumbnails[unit] = strip
        return thumbnails


@dataclass
class _Context:
    """What every page needs to know about the run, looked up once."""

    concepts: pd.DataFrame
    summary: pd.DataFrame  # indexed by unit
    ranges: pd.DataFrame  # indexed by unit
    strips: Strips
    thumbnails: dict[int, Thumbnail]
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

    def unit_link(self, unit: int, root: str) -> Link | str:
        text = f"unit {unit}"
        return Link(f"{root}units/{unit}.html", text) if unit in self.pages else text

    def strip(self, unit: int, root: str, tile: int, outlines: bool = False) -> dict[str, Any]:
        """The unit's strip shown with each image ``tile`` CSS pixels high; with ``outlines``, and
        when the run has part maps, the part outlines over it."""
        width = self.thumbnails[unit].display_width(tile)
        return {
            "picture": Picture(f"{root}img/strips/u{unit}.png", f"tuning strip of unit {unit}", width=width),
            "outlines": Picture(f"{root}img/strips/u{unit}.parts.png", f"part outlines of unit {unit}", width=width)
            if outlines and self.strips.parts is not None
            else None,
        }


def index_values(
    run: Path,
    metrics: Mapping[str, Any],
    context: _Context,
    counts: pd.DataFrame,
    ranked: Sequence[int],
    validation: Mapping[str, Any] | None,
    planted: pd.DataFrame,
    factors_path: Path,
) -> dict[str, Any]:
    concepts = context.concepts
    part_labels = part_label_values(context)
    return {
        "run": run.name,
        "facts": {
            "units tested": concepts["unit"].nunique(),
            "units selective for at least one measure": len(context.selective_measures),
            "measures": concepts["measure"].nunique(),
            "unit pages": len(context.pages),
            **domain_facts(context.summary),
        },
        "regions": region_source(context.strips),
        "link": link_values(metrics),
        "selective_rows": [
            (Link(f"measures/{slug(m)}.html", m), s, f"{f:.0%}", i, d)
            for m, s, f, i, d in counts[["measure", "selective", "fraction", "increase", "decrease"]].itertuples(
                index=False
            )
        ],
        "any_selective": bool(context.selective_measures),
        "part_labels": part_labels if _has_parts(concepts) or any(part_labels.values()) else None,
        "validation": validation_values(validation, planted, context) if validation is not None else None,
        "manifest": manifest_values(validation),
        "factors": factor_values(factors_path, context),
        "measures": measure_order(concepts),
        "units": unit_rows(context, ranked),
    }


def domain_facts(summary: pd.DataFrame) -> dict[str, str]:
    """How well the sweeps can determine unique labels, when the summary says: how many units
    got one, and how many were stopped because their residual reads none of their sweep's
    changes, where the sweeps end against the generator's latent domain, and how much of each
    unit the rest of the layer predicts (near 1 for every unit, any unit's unique
    contribution is a sliver)."""
    facts = {}
    if "unique_gate" in summary:
        labelled = int(summary["unique_measure"].notna().sum())
        facts["units with a unique label"] = f"{labelled} of {len(summary)}"
        unread = int((summary["unique_gate"] == NOT_IN_RESIDUAL).sum())
        facts["units whose sweep moved only what their residual does not read"] = f"{unread} of {len(summary)}"
    if "sweep_in_domain" in summary:
        inside = int((summary["sweep_in_domain"] == 1.0).sum())
        facts["units whose sweeps all stay in the generator's latent domain"] = f"{inside} of {len(summary)}"
        median_end = float(summary["sweep_end_distance"].median())
        facts["median sweep end (latent domain radii; 1 = its edge)"] = fmt(median_end)
    if "redundancy_r2" in summary:
        median_r2 = float(summary["redundancy_r2"].median())
        facts["median redundancy R² (each unit from the others, held out)"] = redundancy_text(median_r2)
        residual_share = math.sqrt(max(1.0 - median_r2, 0.0))
        facts["median share of a unit's spread the others do not predict"] = percent(residual_share, 1)
    return facts


def redundancy_text(r2: float | None) -> str:
    """A redundancy R² to four decimals: 0.9999 and 0.95 say different things, and fmt would
    round both to 1."""
    return "–" if pd.isna(r2) else f"{r2:.4f}"


def region_source(strips: Strips) -> str:
    """Where the measured regions came from: a part segmenter on the generator, or the classifier's saliency."""
    if strips.segmenter is None:
        return "the object from the classifier's saliency (no segmentation configured)"
    record = strips.segmenter
    iou = record.get("mean_iou")
    score = "no held-out renders" if iou is None else f"held-out mean IoU {iou:.2f} on {record['held_out']} renders"
    parts = ", ".join(strips.part_names)
    return f"parts {parts} from the generator's features (K = {record['train']} labelled renders; {score})"


def link_values(metrics: Mapping[str, Any]) -> dict[str, Any]:
    has_mlp = any(key.startswith("mlp_") for key in metrics)
    rows = []
    for key, label in LINK_METRICS:
        row = [label, metrics.get(key)]
        if has_mlp:
            row.append(metrics.get(f"mlp_{key}"))
        rows.append(row)
    header = ["metric", "linear (ridge)"] + (["MLP"] if has_mlp else [])
    return {
        "header": header,
        "rows": rows,
        "numeric": [False] + [True] * (len(header) - 1),
        "alpha": metrics.get("alpha"),
        "alpha_source": metrics.get("alpha_source", "config"),
        "n_train": metrics.get("n_train"),
        "n_test": metrics.get("n_test"),
    }


def _has_parts(concepts: pd.DataFrame) -> bool:
    return bool(concepts["measure"].str.startswith(PART_PREFIX).any())


def part_label_values(context: _Context) -> dict[str, list[tuple]]:
    """Per label (unique, tuning), the units whose label is a part measure, strongest first."""
    summary = context.summary
    galleries = set(context.concepts["measure"])
    labelled = {}
    for label, strength in (("unique", "unique_effect"), ("tuning", "tuning_association")):
        column = f"{label}_measure"
        if column not in summary:
            labelled[label] = []
            continue
        measures = summary[column]
        units = summary.index[measures.fillna("").astype(str).str.startswith(PART_PREFIX)]
        order = sorted(units, key=lambda u: (-abs(_optional_value(summary, u, strength) or 0.0), int(u)))
        labelled[label] = [
            (
                context.unit_link(int(u), ""),
                Link(f"measures/{slug(summary.at[u, column])}.html", label_text(summary, u, label))
                if summary.at[u, column] in galleries
                else label_text(summary, u, label),
                _optional_value(summary, u, strength),
            )
            for u in order
        ]
    return labelled


def manifest_values(validation: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """The figures of each label against the world's manifest, from ``validation["world"]``
    (see :mod:`pipeline.stages.world_truth`), where the world has a manifest."""
    world = (validation or {}).get("world") or {}
    rows = []
    for label in ("unique", "tuning"):
        figures = world.get(label) or {}
        if figures.get("breed_defining_labelled") is None:
            continue
        rows += [(f"{label} label: {text}", figures[key]) for key, text in MANIFEST_FIGURES if key in figures]
    return rows


def factor_values(path: Path, context: _Context) -> dict[str, Any] | None:
    """The table of how the layer encodes each factor of the world, when the run wrote one."""
    if not path.exists():
        return None
    table = read_parquet(path)
    columns = [c for c in FACTOR_ENCODING_COLUMNS if c in table.columns]
    return {
        "header": [c.replace("_", " ").replace("r2", "R²") for c in columns],
        "rows": [
            [context.unit_link(int(v), "") if c == "best_unit" and _is_unit(v) else v for c, v in row.items()]
            for row in table[columns].to_dict("records")
        ],
        "numeric": [c not in ("factor", "kind") for c in columns],
    }


def _is_unit(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and not np.isfinite(value))


def validation_values(validation: Mapping[str, Any], planted: pd.DataFrame, context: _Context) -> dict[str, Any]:
    """Ground truth from a ``validation.json`` (see :func:`pipeline.validation.score_validation`).

    Its scalar figures as a table, marked as a development set where the statistics were
    developed on it; its per-unit rows (planted unit, true measure, both labels) as a
    figure of hits per true measure and a table.
    """
    return {
        "development": bool(validation.get("development_set")),
        "function_set": validation.get("function_set"),
        "scalars": [(k, v) for k, v in validation.items() if not isinstance(v, (list, dict))],
        "planted": [
            (
                context.unit_link(int(r["unit"]), ""),
                r["truth"],
                _truth_text(r.get("unique_truth", r["truth"])),
                r.get("unique_measure") or "–",
                _verdict(r.get("unique_correct")),
                _truth_text(r.get("tuning_truth", r["truth"])),
                r.get("tuning_measure") or "–",
                _verdict(r.get("tuning_correct")),
            )
            for r in planted.to_dict("records")
        ],
    }


def _truth_text(truth: Any) -> str:
    return "none" if pd.isna(truth) else str(truth)


def _verdict(correct: Any) -> Badge | str:
    """yes or no; a dash where the label has no truth to be scored against."""
    if pd.isna(correct):
        return "–"
    return Badge("yes", "yes") if correct else Badge("no", "no")


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


def unit_rows(context: _Context, ranked: Sequence[int]) -> list[dict[str, Any]]:
    summary = context.summary
    rows = []
    for unit in ranked:
        measures = context.selective_measures.get(unit, [])
        rows.append(
            {
                "unit": unit,
                "concepts": " ".join(measures).lower(),
                "cells": [
                    context.unit_link(unit, ""),
                    label_text(summary, unit, "unique"),
                    _summary_value(summary, unit, "unique_effect"),
                    label_text(summary, unit, "tuning"),
                    _summary_value(summary, unit, "tuning_association"),
                    len(measures),
                    _summary_value(summary, unit, "slope"),
                    _summary_value(summary, unit, "redundancy_r2"),
                ],
            }
        )
    return rows


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


def measure_rows(counts: pd.DataFrame, galleries: Mapping[str, list[int]]) -> list[tuple]:
    counts = counts.set_index("measure")
    return [(Link(f"measures/{slug(m)}.html", m), counts.at[m, "selective"], counts.at[m, "units"]) for m in galleries]


def gallery_values(measure: str, units: Sequence[int], context: _Context) -> dict[str, Any]:
    rows = context.concepts[context.concepts["measure"] == measure].set_index("unit")
    cards = []
    for unit in units:
        row = rows.loc[unit]
        cards.append(
            {
                "unit": context.unit_link(unit, "../"),
                "verdict": Badge("selective", "yes") if row["selective"] else Badge("not selective"),
                "effect": float(row["effect"]),
                "ci": (float(row["ci_low"]), float(row["ci_high"])),
                "q": float(row["q"]),
                "strip": context.strip(unit, "../", GALLERY_TILE),
            }
        )
    return {"measure": measure, "caption": context.strip_caption, "cards": cards}


def unit_values(
    unit: int, context: _Context, changes: pd.DataFrame, neighbours: tuple[int | None, int | None]
) -> dict[str, Any]:
    rows = context.concepts[context.concepts["unit"] == unit]
    rows = rows.assign(magnitude=rows["effect"].abs()).sort_values("magnitude", ascending=False, na_position="last")
    top = context.top_concept(unit)
    summary = context.summary
    known = {
        "unique label": Link(f"../measures/{slug(top)}.html", label_text(summary, unit, "unique"))
        if top
        else label_text(summary, unit, "unique"),
        "unique effect": _summary_value(summary, unit, "unique_effect"),
        "unique q": _optional_value(summary, unit, "unique_q"),
        "unique label decided by": _optional_text(summary, unit, "unique_gate"),
        "tuning label": label_text(summary, unit, "tuning"),
        "tuning association": _optional_value(summary, unit, "tuning_association"),
        "tuning q": _optional_value(summary, unit, "tuning_q"),
        "tuning label decided by": _optional_text(summary, unit, "tuning_gate"),
        "unique label's residual association": _optional_value(summary, unit, "unique_residual_association"),
        "redundancy R²": redundancy_text(_optional_value(summary, unit, "redundancy_r2")),
        "sweep end (latent domain radii; 1 = its edge)": _optional_value(summary, unit, "sweep_end_distance"),
        "sweeps inside the latent domain": _optional_value(summary, unit, "sweep_in_domain"),
        "per-class effects of the strongest measure": _class_range(rows),
        "selective measures": len(context.selective_measures.get(unit, [])),
        **{name.replace("_", " "): _summary_value(summary, unit, name) for name in SUMMARY_FIELDS},
    }
    low, high = (fmt(float(context.ranges.at[unit, end])) for end in ("low", "high"))
    known["range swept"] = f"{low} to {high}"
    position = context.strips.position(unit)
    strips = context.strips
    return {
        "unit": unit,
        "neighbours": neighbours,
        "facts": known,
        "strip": context.strip(unit, "../", UNIT_PAGE_TILE, outlines=True),
        "parts": [(name, OUTLINE_PALETTE[k % len(OUTLINE_PALETTE)]) for k, name in enumerate(strips.part_names)]
        if strips.parts is not None
        else [],
        "caption": context.strip_caption,
        "values": ", ".join(fmt(float(v)) for v in strips.values[position]),
        "effects": svg.effect_bars(
            list(rows["measure"]),
            rows["effect"].to_numpy(),
            rows["ci_low"].to_numpy(),
            rows["ci_high"].to_numpy(),
            rows["selective"].to_numpy(dtype=bool),
        ),
        "response": response_values(changes, context),
        "co_changing": co_changing_values(unit, context),
    }


def response_values(changes: pd.DataFrame, context: _Context) -> svg.Lines:
    frame = changes.sort_values(["sample", "step"])
    samples = frame["sample"].drop_duplicates().head(RESPONSE_SAMPLES).tolist()
    frame = frame[frame["sample"].isin(samples)]
    requested = frame.pivot(index="sample", columns="step", values="requested").loc[samples].to_numpy()
    achieved = frame.pivot(index="sample", columns="step", values="achieved").loc[samples].to_numpy()
    classes = frame.groupby("sample")["class"].first()
    labels = [f"sample {s} ({context.names(classes[s])})" for s in samples]
    return svg.response_lines(requested, achieved, labels)


def co_changing_values(unit: int, context: _Context) -> dict[str, Any]:
    change = context.strips.co_change[context.strips.position(unit)].astype(np.float64)
    own = change[unit]
    change[unit] = np.nan
    order = np.argsort(-np.nan_to_num(np.abs(change), nan=-1.0), kind="stable")[:CO_CHANGING_UNITS]
    rows = [(context.unit_link(int(u), "../"), float(change[u]), context.top_concept(int(u)) or "–") for u in order]
    return {"own": float(own), "rows": rows}


def counterfactual_values(site: Path, run: Path, context: _Context, examples: int) -> dict[str, Any]:
    folder = run / "counterfactuals"
    if not (folder / "summary.json").exists():
        return {"summary": None}
    summary = read_json(folder / "summary.json")
    movement = read_parquet(folder / "summary.parquet")
    carriers = read_parquet(folder / "summary_units.parquet")
    names = context.names
    method = summary["method"]
    pairs = []
    for pair in summary["pairs"]:
        origin, target = pair["origin"], pair["target"]
        in_pair = (movement["origin"] == origin) & (movement["target"] == target)
        pairs.append(
            {
                "origin": origin,
                "target": target,
                "title": f"{names(origin)} → {names(target)}",
                "origin_name": names(origin),
                "target_name": names(target),
                "row": pair,
                "movement": concept_movement_values(movement[in_pair].head(CONCEPT_MOVEMENT_ROWS), context),
                "carriers": shift_unit_rows(
                    carriers[(carriers["origin"] == origin) & (carriers["target"] == target)], context
                ),
                "cards": counterfactual_cards(site, folder, origin, target, examples, context),
            }
        )
    return {
        "summary": summary,
        "method": method,
        "method_text": COUNTERFACTUAL_METHODS.get(method, method),
        "method_rows": method_rows(summary["methods"]),
        "pair_rows": [
            (
                Link(f"#pair-{p['origin']}-{p['target']}", f"{names(p['origin'])} → {names(p['target'])}"),
                p["n"],
                percent(p["success_rate"]),
                percent(p["success_in_domain_rate"]),
                p["median_steps"],
                p["median_shift_mahalanobis"],
                f"{p['median_latent_distance']:.1f} ({p['latent_domain_radius']:.1f})",
                p["mean_prob_target"],
                None if p["ground_truth_share"] is None else percent(p["ground_truth_share"]),
            )
            for p in summary["pairs"]
        ],
        "pairs": pairs,
    }


def method_rows(methods: Sequence[Mapping[str, Any]]) -> list[tuple]:
    return [
        (
            m["method"],
            m["n"],
            None if m["success_rate"] is None else percent(m["success_rate"]),
            None if m["success_in_domain_rate"] is None else percent(m["success_in_domain_rate"]),
            m["median_latent_distance"],
            " · ".join(
                f"{p['origin']}→{p['target']} {p['success_in_domain_rate']:.0%}, {p['median_latent_distance']:.1f}"
                for p in m["pairs"]
            ),
        )
        for m in methods
    ]


def concept_movement_values(moved: pd.DataFrame, context: _Context) -> dict[str, Any] | None:
    if moved.empty or moved["n_success"].iloc[0] == 0:
        return None
    galleries = set(context.concepts["measure"])
    with_truth = bool(moved["expected_sign"].notna().any())
    rows = [
        (
            Link(f"measures/{slug(r.measure)}.html", r.measure) if r.measure in galleries else r.measure,
            f"{fmt(r.image_change)} [{fmt(r.image_ci_low)}, {fmt(r.image_ci_high)}]",
            r.image_effect,
            Badge("moved", "yes") if r.moved else "",
            f"{r.consistency:.0%}" if np.isfinite(r.consistency) else None,
            f"{r.unit_share:.0%}",
            r.unit_direction,
            *([None if np.isnan(r.toward_target) else ("toward" if r.toward_target else "away")] if with_truth else []),
        )
        for r in moved.itertuples(index=False)
    ]
    header = ["measure", "change [95% CI]", "effect", "moved", "consistent", "unit share", "unit direction"]
    header += ["vs. the target's factors"] if with_truth else []
    numeric = (False, True, True, False, True, True, True, False)[: len(header)]
    return {"header": header, "rows": rows, "numeric": numeric}


def shift_unit_rows(carriers: pd.DataFrame, context: _Context) -> list[tuple]:
    return [
        (context.unit_link(int(r.unit), ""), f"{r.mean_share:.1%}", r.n_top, r.unique_measure or "–")
        for r in carriers.itertuples(index=False)
    ]


def counterfactual_cards(
    site: Path, folder: Path, origin: int, target: int, examples: int, context: _Context
) -> list[dict[str, Any]]:
    samples = read_parquet(folder / f"{origin}-{target}.parquet").head(examples)
    arrays, _ = read_zarr(folder / f"{origin}-{target}.zarr", ["original", "counterfactual"])
    cards = []
    for k, row in enumerate(samples.itertuples(index=False)):
        original, counterfactual = arrays["original"][k], arrays["counterfactual"][k]
        triple = thumbnail(
            np.stack([original, counterfactual, difference_image(original, counterfactual)])[None], gap=4
        )
        name = f"{origin}-{target}-{k}.png"
        (site / "img/counterfactuals" / name).write_bytes(triple.png)
        cards.append(
            {
                "row": row,
                "picture": Picture(
                    f"img/counterfactuals/{name}",
                    f"sample {row.sample}: original, counterfactual, difference",
                    width=triple.display_width(COUNTERFACTUAL_TILE),
                ),
                "top": [
                    (context.unit_link(int(u), ""), share, float(c), t)
                    for u, share, c, t in zip(
                        row.top_units, row.top_shares, row.top_changes, row.top_concepts, strict=True
                    )
                ],
                "probabilities": (
                    (float(row.start_prob_origin), float(row.prob_origin)),
                    (float(row.start_prob_target), float(row.prob_target)),
                ),
            }
        )
    return cards


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

"""Stage 8: a self-contained HTML report: link metrics, selective units, and tuning strips.

Renders are temporary, so the strips are rendered again here from the link, a few probe
samples and each unit's range (cheap: no re-encoding). Images are embedded as PNG data
URIs, so the page needs no server and no network.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from pipeline.models import load_generator
from pipeline.models.protocols import Generator
from pipeline.stages.common import prepare_device, render_images, tile
from pipeline.stages.link import AffineLink, load_link
from pipeline.stages.perturb import sweep_latents, sweep_values
from pipeline.stages.units import probe_rows
from pipeline.stats import selective_counts
from pipeline.store import atomic_path, read_json, read_parquet, read_zarr

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ("top_measure", "top_effect", "n_selective", "controllability")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.75rem; text-align: left; vertical-align: middle; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.strip { image-rendering: pixelated; }
"""


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def strip_samples(classes: np.ndarray, count: int) -> np.ndarray:
    """Positions of ``count`` samples that cycle through the classes (first of each, then second, ...)."""
    rank_in_class = pd.Series(classes).groupby(classes).cumcount().to_numpy()
    return np.lexsort((classes, rank_in_class))[:count]


def rank_units(units: Sequence[int], summary: pd.DataFrame) -> list[int]:
    """``units`` by decreasing |top_effect| (units without one last), ties by unit id."""
    if "top_effect" not in summary.columns:
        return sorted(units)
    strength = summary["top_effect"].abs().reindex(list(units)).fillna(-1.0).to_numpy()
    return [int(units[i]) for i in np.lexsort((np.asarray(units), -strength))]


def tuning_strips(
    generator: Generator,
    link: AffineLink,
    r: np.ndarray,
    units: Sequence[int],
    low: np.ndarray,
    high: np.ndarray,
    steps: int,
    *,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """uint8 [K, P, S, H, W, 3]: each unit swept from low to high on each base sample."""
    values = torch.from_numpy(sweep_values(low, high, steps))
    w = sweep_latents(link, torch.from_numpy(r), units, values)
    images = render_images(generator, w.reshape(-1, w.shape[-1]), batch_size=batch_size, device=device)
    return images.reshape(*w.shape[:3], *images.shape[1:])


def _format(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}" if np.isfinite(value) else "–"
    return html.escape(str(value))


def _metrics_table(metrics: Mapping[str, Any]) -> str:
    names = ("r2_train", "r2_test", "cycle_unit_corr", "cycle_class_agreement")
    rows = [f"<tr><th>alpha</th><td class='num'>{_format(metrics.get('alpha'))}</td><td></td></tr>"]
    rows += [
        f"<tr><th>{name}</th><td class='num'>{_format(metrics.get(name))}</td>"
        f"<td class='num'>{_format(metrics.get('mlp_' + name))}</td></tr>"
        for name in names
    ]
    counts = f"n_train {metrics.get('n_train')}, n_test {metrics.get('n_test')}"
    return (
        f"<h2>Link</h2><p>Ridge regression r &rarr; w ({html.escape(counts)}); held-out figures on the test split.</p>"
        "<table><tr><th>metric</th><th>linear</th><th>MLP</th></tr>" + "".join(rows) + "</table>"
    )


def _selective_table(concepts: pd.DataFrame) -> str:
    counts = selective_counts(concepts).sort_values("selective", ascending=False, kind="stable")
    header = "<tr><th>measure</th><th>units tested</th><th>selective</th><th>increase</th><th>decrease</th></tr>"
    rows = "".join(
        f"<tr><td>{html.escape(str(row['measure']))}</td><td class='num'>{int(row['units'])}</td>"
        f"<td class='num'>{int(row['selective'])}</td><td class='num'>{int(row['increase'])}</td>"
        f"<td class='num'>{int(row['decrease'])}</td></tr>"
        for _, row in counts.iterrows()
    )
    return f"<h2>Selective units per measure</h2><table>{header}{rows}</table>"


def _units_table(summary: pd.DataFrame, strips: Mapping[int, bytes], steps: int) -> str:
    columns = [c for c in SUMMARY_COLUMNS if c in summary.columns]
    header = "".join(f"<th>{c}</th>" for c in ["unit", *columns])
    header += f"<th>tuning strip (rows: samples; low &rarr; high over {steps} steps)</th>"
    rows = []
    for unit, png in strips.items():
        known = unit in summary.index
        cells = "".join(f"<td class='num'>{_format(summary.at[unit, c]) if known else '–'}</td>" for c in columns)
        image = base64.b64encode(png).decode("ascii")
        rows.append(
            f"<tr id='unit-{unit}'><td class='num'>{unit}</td>{cells}"
            f"<td><img class='strip' alt='unit {unit}' src='data:image/png;base64,{image}'></td></tr>"
        )
    return "<h2>Units</h2><table><tr>" + header + "</tr>" + "".join(rows) + "</table>"


def write_report(
    out_path: str | Path,
    *,
    metrics_path: str | Path,
    ranges_path: str | Path,
    concepts_path: str | Path,
    summary_path: str | Path,
    latents_path: str | Path,
    activations_path: str | Path,
    link_path: str | Path,
    units: list[int],
    generator: Mapping[str, Any],
    device: str,
    max_units: int,
    samples: int,
    steps: int,
    batch_size: int,
) -> None:
    """Write ``report/index.html`` for the swept ``units``, strongest concept first."""
    metrics = read_json(metrics_path)
    ranges = read_parquet(ranges_path).set_index("unit")
    concepts = read_parquet(concepts_path)
    summary = read_parquet(summary_path).set_index("unit")
    shown = rank_units(units, summary)[:max_units]

    rows = probe_rows(latents_path, activations_path)
    latents, attrs = read_zarr(latents_path, ["class"])
    activations, _ = read_zarr(activations_path, ["r"])
    chosen = rows[strip_samples(latents["class"][rows], samples)]
    torch_device = prepare_device(device)
    images = tuning_strips(
        load_generator(generator).to(torch_device),
        load_link(link_path),
        activations["r"][chosen],
        shown,
        ranges.loc[shown, "low"].to_numpy(),
        ranges.loc[shown, "high"].to_numpy(),
        steps,
        batch_size=batch_size,
        device=torch_device,
    )
    strips = {unit: png_bytes(tile(images[k])) for k, unit in enumerate(shown)}
    log.info("report: %d tuning strips of %d samples x %d steps", len(strips), len(chosen), steps)

    facts = (
        f"Classes {attrs.get('classes')}; {len(rows)} probe samples; {len(units)} units swept, "
        f"{len(shown)} shown; strips use samples {chosen.tolist()}."
    )
    page = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Unit report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>What the units encode</h1>",
        f"<p>{html.escape(facts)}</p>",
        _metrics_table(metrics),
        _selective_table(concepts),
        _units_table(summary, strips, steps),
        "</body></html>",
    ]
    with atomic_path(out_path) as tmp:
        tmp.write_text("\n".join(page), encoding="utf-8")

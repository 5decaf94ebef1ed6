"""The HTML report built from a real run of the tiny workflow (the ``finished_run`` fixture),
with counterfactuals added by the real counterfactual stage."""

from __future__ import annotations

import re
import shutil
import zipfile
from html.parser import HTMLParser
from io import BytesIO
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from pipeline.reporting.images import OUTLINE_PALETTE, part_outlines
from pipeline.reporting.render import environment, fmt
from pipeline.reporting.selection import rank_units, slug, top_units_for
from pipeline.reporting.site import CO_CHANGING_UNITS, build_report
from pipeline.reporting.svg import SELECTIVE_COLOUR, effect_bars
from pipeline.stages.common import ModelSetup
from pipeline.stages.config import load_schema, validate_config
from pipeline.stages.counterfactuals import counterfactual_pair, summarise_pairs
from pipeline.stages.samples import Samples
from pipeline.stages.strips import render_strips
from pipeline.store import read_json, read_parquet, read_zarr, write_json, write_parquet, write_zarr
from tests.conftest import snakemake

SCHEMA = load_schema(Path(__file__).resolve().parent.parent / "workflow/schemas/config.schema.yaml")
PAIRS = ((0, 1), (1, 0))
STRIP_SAMPLES = 2
STRIP_STEPS = 3
EXAMPLES = 2


def built_report(workdir: Path, dest: Path, validation: dict | None = None, **settings) -> Path:
    """Copy the run of ``workdir`` into ``dest``, add counterfactuals (and ``validation``), render its
    strips with the strips stage and build its report with the site builder.

    Returns the site's folder.
    """
    config = validate_config(yaml.safe_load((workdir / "config.yaml").read_text()), SCHEMA)
    run = dest / config["run"]
    shutil.copytree(workdir / "results" / config["run"], run, ignore=shutil.ignore_patterns("report*"))
    if not (run / "counterfactuals/summary.json").exists():
        add_counterfactuals(run, config)
    validation_path = None
    if validation is not None:
        validation_path = run / "concepts/validation.json"
        write_json(validation_path, validation)
    site = dest / "report"
    chosen = config["report"] | {"counterfactual_examples": EXAMPLES, "top_units": 3} | settings
    render_strips(
        run / "report_strips.zarr",
        samples=Samples(run / "latents.zarr", run / "activations.zarr"),
        link_path=run / "link/model.pt",
        ranges_path=run / "units/ranges.parquet",
        concepts_path=run / "concepts/unit_concepts.parquet",
        models=ModelSetup(config["classifier"], config["generator"], device="cpu"),
        max_units=chosen["max_units"],
        top_units=chosen["top_units"],
        strip_samples_count=STRIP_SAMPLES,
        steps=STRIP_STEPS,
        batch_size=chosen["batch_size"],
    )
    index = build_report(
        run,
        run / "report_strips.zarr",
        site,
        max_units=chosen["max_units"],
        top_units=chosen["top_units"],
        counterfactual_examples=chosen["counterfactual_examples"],
        validation_path=validation_path,
    )
    assert index == site / "index.html"
    return site


def add_counterfactuals(run: Path, config: dict) -> None:
    folder = run / "counterfactuals"
    for origin, target in PAIRS:
        counterfactual_pair(
            folder / f"{origin}-{target}.parquet",
            folder / f"{origin}-{target}.zarr",
            folder / f"{origin}-{target}.png",
            latents_path=run / "latents.zarr",
            activations_path=run / "activations.zarr",
            link_path=run / "link/model.pt",
            unit_summary_path=run / "concepts/unit_summary.parquet",
            models=ModelSetup(config["classifier"], config["generator"], device="cpu"),
            origin=origin,
            target=target,
            method="mahalanobis",
            search={"max_distance": 20.0, "bisection_steps": 3},
            samples=3,
            top_units=3,
            batch_size=8,
        )
    summarise_pairs(
        [folder / f"{o}-{t}.parquet" for o, t in PAIRS],
        [folder / f"{o}-{t}.zarr" for o, t in PAIRS],
        {},
        run / "concepts/unit_summary.parquet",
        folder / "summary.parquet",
        folder / "summary_units.parquet",
        folder / "summary.json",
        n_boot=50,
        seed=0,
        top_measures=3,
        top_units=3,
        world=None,
    )


class References(HTMLParser):
    """Every href and src of a page, the ids it defines, and its table rows' data attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.ids: set[str] = set()
        self.rows: list[dict[str, str]] = []
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        attributes = {k: v or "" for k, v in attrs}
        self.tags.append((tag, attributes))
        for key in ("href", "src"):
            if key in attributes:
                self.references.append(attributes[key])
        if "id" in attributes:
            self.ids.add(attributes["id"])
        if tag == "tr" and "data-unit" in attributes:
            self.rows.append(attributes)


def parse(path: Path) -> References:
    parser = References()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


VALIDATION = {
    "unique_precision": 0.5,
    "unique_recall": 0.5,
    "unique_null_false_positive_rate": 0.0,
    "tuning_precision": 1.0,
    "tuning_recall": 1.0,
    "tuning_null_false_positive_rate": 0.0,
    "n_planted": 2,
    "function_set": "planted",
    "development_set": True,
    "units": [
        {"unit": 0, "truth": "object.area", "unique_measure": "object.area", "unique_correct": True,
         "tuning_measure": "object.area", "tuning_correct": True},
        {"unit": 1, "truth": "object.hue", "unique_measure": None, "unique_correct": False,
         "tuning_measure": "object.hue", "tuning_correct": True},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def report(finished_run, tmp_path_factory) -> tuple[Path, Path]:
    """(run folder with counterfactuals and a validation file, its report site)."""
    dest = tmp_path_factory.mktemp("report")
    site = built_report(finished_run, dest, validation=VALIDATION)
    config = yaml.safe_load((finished_run / "config.yaml").read_text())
    return dest / config["run"], site


def test_every_page_exists_and_every_reference_resolves_offline(report):
    run, site = report
    concepts = read_parquet(run / "concepts/unit_concepts.parquet")
    expected = {"index.html", "measures.html", "counterfactuals.html"}
    expected |= {f"measures/{slug(m)}.html" for m in concepts["measure"].unique()}
    expected |= {f"units/{u}.html" for u in concepts["unit"].unique()}
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    assert pages == expected

    for page in site.rglob("*.html"):
        parsed = parse(page)
        for reference in parsed.references:
            target = urlparse(reference)
            assert not target.scheme and not target.netloc, f"{page.name}: {reference} is not a relative link"
            if target.path:
                assert (page.parent / target.path).resolve().is_file(), f"{page.name}: {reference} is missing"
                assert (page.parent / target.path).resolve().is_relative_to(site.resolve())
            if target.fragment and not target.path:
                assert target.fragment in parsed.ids, f"{page.name}: no element #{target.fragment}"


def test_index_lists_every_unit_with_its_selective_concepts_and_the_link_metrics(report):
    run, site = report
    concepts = read_parquet(run / "concepts/unit_concepts.parquet")
    metrics = read_json(run / "link/metrics.json")
    index = parse(site / "index.html")
    text = (site / "index.html").read_text(encoding="utf-8")

    rows = {int(row["data-unit"]): row["data-concepts"] for row in index.rows}
    assert sorted(rows) == sorted(concepts["unit"].unique())
    for unit, group in concepts.groupby("unit"):
        assert rows[unit].split() == [m.lower() for m in group.loc[group["selective"], "measure"]]
    for key in ("r2_test", "cycle_unit_corr", "cycle_class_agreement", "mlp_r2_test"):
        assert f">{fmt(metrics[key])}<" in text
    assert "img/figures/effects.png" in index.references
    assert "img/figures/validation.png" in index.references
    assert "Validation on planted units (development set planted)" in text
    assert re.search(r">object.hue</td>\s*<td>–</td>", text) and "A unit can carry two labels" in text
    assert {"unit-query", "unit-measure", "unit-selective"} <= index.ids


def test_unit_page_shows_the_strip_effect_bars_controllability_and_co_changing_units(report):
    run, site = report
    concepts = read_parquet(run / "concepts/unit_concepts.parquet")
    unit = int(concepts["unit"].iloc[0])
    page = parse(site / "units" / f"{unit}.html")
    own = concepts[concepts["unit"] == unit]

    width, height = Image.open(site / "img/strips" / f"u{unit}.png").size
    assert (width + 2) % STRIP_STEPS == 0 and (width + 2) // STRIP_STEPS == (height + 2) // STRIP_SAMPLES
    bars = [attrs for tag, attrs in page.tags if tag == "rect" and attrs.get("fill") != "none"]
    assert len(bars) == int(np.isfinite(own["effect"]).sum())
    assert sum(attrs["fill"] == SELECTIVE_COLOUR for attrs in bars) == int(own["selective"].sum())
    samples = read_parquet(run / "tables/activation_changes.parquet").query("unit == @unit")["sample"].nunique()
    lines = [attrs for tag, attrs in page.tags if tag == "polyline"]
    assert len(lines) == 1 + samples  # the dashed diagonal, then one line per probe sample
    co_changing = (site / "units" / f"{unit}.html").read_text(encoding="utf-8").split("Co-changing units")[1]
    listed = re.findall(r"unit (\d+)</", co_changing)
    assert len(listed) == CO_CHANGING_UNITS and str(unit) not in listed
    # Redundancy to four decimals, which tells 0.9999 from 0.95.
    redundancy = read_parquet(run / "concepts/unit_summary.parquet").set_index("unit").at[unit, "redundancy_r2"]
    text = (site / "units" / f"{unit}.html").read_text(encoding="utf-8")
    assert f"redundancy R²</dt><dd>{redundancy:.4f}</dd>" in text


def test_measure_gallery_shows_the_top_units_by_effect(report):
    run, site = report
    concepts = read_parquet(run / "concepts/unit_concepts.parquet")
    measure = concepts["measure"].iloc[0]
    page = parse(site / "measures" / f"{slug(measure)}.html")
    strips = [ref for ref in page.references if ref.startswith("../img/strips/")]
    assert strips == [f"../img/strips/u{u}.png" for u in top_units_for(concepts, measure, 3)]


def test_counterfactual_page_shows_every_pair_with_its_images(report):
    run, site = report
    summary = read_json(run / "counterfactuals/summary.json")
    page = parse(site / "counterfactuals.html")
    text = (site / "counterfactuals.html").read_text(encoding="utf-8")

    assert [(p["origin"], p["target"]) for p in summary["pairs"]] == list(PAIRS)
    for origin, target in PAIRS:
        assert f"pair-{origin}-{target}" in page.ids
        triples = [ref for ref in page.references if ref.startswith(f"img/counterfactuals/{origin}-{target}-")]
        assert len(triples) == EXAMPLES
        assert Image.open(site / triples[0]).size[0] > 3 * Image.open(site / triples[0]).size[1] - 12
    assert f"{summary['pairs'][0]['success_rate']:.0%}" in text


def test_max_units_caps_the_unit_pages_to_the_strongest(finished_run, tmp_path):
    site = built_report(finished_run, tmp_path, max_units=1)
    config = yaml.safe_load((finished_run / "config.yaml").read_text())
    concepts = read_parquet(tmp_path / config["run"] / "concepts/unit_concepts.parquet")
    assert [p.stem for p in (site / "units").glob("*.html")] == [str(rank_units(concepts)[0])]
    index = parse(site / "index.html")
    assert [r for r in index.references if r.startswith("units/")] == [f"units/{rank_units(concepts)[0]}.html"]


def test_snakemakes_report_carries_the_site(finished_run, tmp_path):
    archive = tmp_path / "report.zip"
    snakemake(finished_run, "--report", str(archive))
    with zipfile.ZipFile(archive) as packed:
        names = packed.namelist()
    config = yaml.safe_load((finished_run / "config.yaml").read_text())
    site = finished_run / "results" / config["run"] / "report"
    # Snakemake's own marker of a directory output stays out of the archive.
    expected = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()} - {".snakemake_timestamp"}
    assert {"index.html", "measures.html", "counterfactuals.html"} <= expected
    folders = {name.split("/data/raw/")[1].split("/", 1)[0] for name in names if name.endswith("/index.html")}
    assert len(folders) == 1, "one registered folder holds the site's index"
    prefix = f"/data/raw/{folders.pop()}/"
    assert expected <= {name.split(prefix, 1)[1] for name in names if prefix in name}


def test_ranking_puts_selective_units_first_then_by_largest_effect():
    concepts = pd.DataFrame(
        {
            "unit": [0, 0, 1, 1, 2, 2, 3, 3],
            "measure": ["a", "b"] * 4,
            "effect": [9.0, 0.1, 3.0, -4.0, -2.5, 0.2, np.nan, 1.0],
            "selective": [False, False, True, False, True, False, False, False],
        }
    )
    assert rank_units(concepts) == [1, 2, 0, 3]
    assert top_units_for(concepts, "a", 2) == [1, 2]
    assert top_units_for(concepts, "a", 4) == [1, 2, 0]  # NaN effects are not ranked
    assert slug("part:left ear.hue") == "part_left_ear.hue"


def test_effect_bars_draw_one_bar_per_finite_effect_and_escape_names():
    chart = effect_bars(
        ["object.hue", "<b>", "object.x"],
        np.array([1.5, np.nan, -0.5]),
        np.array([1.0, np.nan, -1.0]),
        np.array([2.0, np.nan, 0.1]),
        np.array([True, False, False]),
    )
    template = environment().from_string("{% import 'svg.html' as plots %}{{ plots.effect_bars(chart) }}")
    drawn = template.render(chart=chart)
    assert drawn.count("<rect") == 2
    assert drawn.count(f"fill='{SELECTIVE_COLOUR}'") == 1
    assert "<b>" not in drawn and "&lt;b&gt;" in drawn


def test_part_outlines_trace_each_part_in_its_palette_colour():
    parts = np.zeros((1, 1, 6, 6), dtype=np.uint8)
    parts[0, 0, 1:4, 1:4] = 1  # a 3x3 square: its ring is outline, its centre is not
    parts[0, 0, 4:6, 0:6] = 2  # a band at the bottom edge
    overlay = np.asarray(Image.open(BytesIO(part_outlines(parts).png)))
    assert overlay.shape == (6, 6, 4)
    colour = {k: tuple(int(OUTLINE_PALETTE[k - 1][i : i + 2], 16) for i in (1, 3, 5)) for k in (1, 2)}
    assert overlay[2, 2, 3] == 0 and overlay[0, 0, 3] == 0  # inside a part, and background
    assert tuple(overlay[1, 1, :3]) == colour[1] and overlay[1, 1, 3] == 255
    assert tuple(overlay[4, 3, :3]) == colour[2]  # the band's top row borders part 1 and background
    assert tuple(overlay[5, 2, :3]) == colour[2]  # the frame's edge counts as background


def test_parts_appear_when_the_run_has_them(report, tmp_path):
    """A run with part maps in its strips, units labelled for part measures, the manifest figures
    in validation.json and a factor-encoding table (hand-written files) gets all four shown."""
    source, _ = report
    run = tmp_path / source.name
    shutil.copytree(source, run)
    arrays, attrs = read_zarr(run / "report_strips.zarr")
    shape = arrays["images"].shape[:-1]
    parts = np.zeros(shape, dtype=np.uint8)
    parts[..., 2:8, 2:8] = 1
    parts[..., 10:14, 4:12] = 2
    write_zarr(
        run / "report_strips.zarr",
        arrays | {"parts": parts},
        attrs=attrs | {"part_names": ["ear", "<snout>"], "segmenter": {"train": 8, "held_out": 200, "mean_iou": 0.83}},
    )
    summary = read_parquet(run / "concepts/unit_summary.parquet")
    concepts = read_parquet(run / "concepts/unit_concepts.parquet")
    unit = rank_units(concepts)[0]
    labelled = summary["unit"] == unit
    summary.loc[labelled, ["unique_measure", "unique_sign", "unique_effect"]] = ["part:ear.area", 1.0, 3.5]
    summary.loc[labelled, ["tuning_measure", "tuning_sign"]] = ["part:<snout>.hue", -1.0]
    write_parquet(run / "concepts/unit_summary.parquet", summary)
    concepts.loc[concepts.index[0], "measure"] = "part:ear.area"
    write_parquet(run / "concepts/unit_concepts.parquet", concepts)
    factors = pd.DataFrame(
        {
            "factor": ["ear_length", "tail_angle"],
            "kind": ["part", "part"],
            "layer_r2": [0.91, 0.12],
            "units_encoding": [14, 0],
            "best_unit": [unit, None],
            "best_unit_r2": [0.55, np.nan],
        }
    )
    write_parquet(run / "concepts/factor_encoding.parquet", factors)
    world = {
        "name": "breeds",
        "regions": "segmentation",
        "defining_measures": ["part:ear.area"],
        "unique": {"breed_defining_share": 0.75, "breed_defining_labelled": 3, "labelled_units": 4},
        "tuning": {"breed_defining_share": 0.5, "breed_defining_labelled": 5, "labelled_units": 10},
    }
    validation = VALIDATION | {"world": world}
    write_json(run / "concepts/validation.json", validation)

    site = tmp_path / "site"
    build_report(
        run,
        run / "report_strips.zarr",
        site,
        max_units=512,
        top_units=3,
        counterfactual_examples=EXAMPLES,
        validation_path=run / "concepts/validation.json",
    )
    page = (site / "units" / f"{unit}.html").read_text(encoding="utf-8")
    assert f"img/strips/u{unit}.parts.png" in page and "&lt;snout&gt;" in page and "<snout>" not in page
    assert f"border-color: {OUTLINE_PALETTE[0]}" in page and f"border-color: {OUTLINE_PALETTE[1]}" in page
    overlay = Image.open(site / "img/strips" / f"u{unit}.parts.png")
    assert overlay.mode == "RGBA" and overlay.size == Image.open(site / "img/strips" / f"u{unit}.png").size

    index = (site / "index.html").read_text(encoding="utf-8")
    parts_section = index.split("id='parts'")[1].split("<h2")[0]
    assert f"units/{unit}.html" in parts_section
    assert "part:ear.area (+)" in parts_section and "part:&lt;snout&gt;.hue (−)" in parts_section
    assert "K = 8 labelled renders; held-out mean IoU 0.83 on 200 renders" in index
    manifest = index.split("id='manifest'")[1].split("<h2")[0]
    assert ">0.75<" in manifest and ">3<" in manifest and ">4<" in manifest
    assert "tuning label: labelled units" in manifest and ">10<" in manifest
    assert "breed_defining_share" not in index.split("Validation on planted units")[1]
    table = index.split("id='factors'")[1].split("<h2")[0]
    assert "ear_length" in table and ">0.91<" in table and f"units/{unit}.html" in table and ">14<" in table


def test_the_site_builder_loads_no_model(report, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the site builder loaded a model")

    for module in ("pipeline.models.registry", "pipeline.models"):
        monkeypatch.setattr(f"{module}.load_classifier", refuse)
        monkeypatch.setattr(f"{module}.load_generator", refuse)
    monkeypatch.setattr("pipeline.stages.common.load_models", refuse)
    run, _ = report
    site = tmp_path / "site"
    build_report(run, run / "report_strips.zarr", site, max_units=512, top_units=3, counterfactual_examples=1)
    assert (site / "index.html").is_file()


def test_optional_sections_stay_away_without_their_files(report):
    _, site = report
    index = (site / "index.html").read_text(encoding="utf-8")
    assert all(f"id='{section}'" not in index for section in ("parts", "manifest", "factors"))
    assert not list((site / "img/strips").glob("*.parts.png"))

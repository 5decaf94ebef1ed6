"""Few-shot part segmentation on generator features: hooks, training, labels folders, part measures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.measures import measure_sweeps, regions_from_labels
from pipeline.measures import tested_measures as measures_to_test
from pipeline.models import load_generator
from pipeline.segmentation import (
    PALETTE,
    GeneratorFeatures,
    GeneratorSegmenter,
    LabelsError,
    read_labels,
    train_segmenter,
    world_labels,
    write_labels_folder,
)
from pipeline.segmentation.config import check_segmentation
from pipeline.segmentation.labels import write_map
from pipeline.segmentation.model import CPU_CHUNK, PixelClassifier
from pipeline.segmentation.train import render_for_labelling
from pipeline.stages.config import ConfigError, load_schema, validate_config
from pipeline.world import part_map, part_names, render, sample_factors
from tests.stylegan_fixture.make_pickle import CODE_DIR, forget_fixture_modules, write_network_pickle

BUILTIN = {"kind": "builtin", "name": "shapes-generator"}
SETTINGS = {
    "parts": [],
    "train": 8,
    "held_out": 32,
    "size": 128,
    "width": 16,
    "epochs": 60,
    "lr": 1e-2,
    "weight_decay": 1e-3,
    "seed": 0,
    "batch_size": 16,
}


@pytest.fixture
def stylegan(tmp_path):
    forget_fixture_modules()
    path = write_network_pickle(tmp_path / "g.pkl", img_resolution=16)
    yield {"kind": "stylegan_pkl", "path": str(path), "code_dir": str(CODE_DIR)}
    forget_fixture_modules()


def brightness_labels(generator, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Latents and 3-label maps of the renders' own brightness: dark, middle, bright thirds."""
    z = torch.randn(count, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    c = torch.nn.functional.one_hot(torch.arange(count) % generator.c_dim, generator.c_dim).float()
    with torch.no_grad():
        ws = generator.mapping(z, c)
        luminance = generator.synthesis(ws).mean(dim=1)
    cuts = torch.quantile(luminance.flatten(), torch.tensor([1 / 3, 2 / 3]))
    return ws.numpy(), torch.bucketize(luminance, cuts).numpy().astype(np.uint8)


def test_stylegan_hooks_keep_every_second_synthesis_layer_per_batch(stylegan):
    generator = load_generator(stylegan)
    ws = generator.mapping(torch.randn(5, 8), torch.eye(4)[[0, 1, 2, 3, 0]])
    with GeneratorFeatures(generator) as features:
        with torch.no_grad():
            generator.synthesis(ws)
        maps = features.take()
        assert [list(m.shape) for m in maps] == [[5, 8, 16, 16], [5, 8, 16, 16]]  # layers 0 and 2 of 3
        with pytest.raises(RuntimeError, match="no synthesis ran"):
            features.take()
    with torch.no_grad():
        generator.synthesis(ws)
    assert not any(layer._forward_hooks for layer in generator.network.synthesis.layers)


def test_builtin_hooks_bring_the_coordinate_network_into_the_image():
    generator = load_generator(BUILTIN)
    labels, factors = sample_factors(6, seed=1, classes=[0, 2])
    z = torch.randn(6, generator.z_dim, generator=torch.Generator().manual_seed(0))
    ws = generator.mapping(z, torch.eye(generator.c_dim)[labels], truncation_psi=0.7)
    with GeneratorFeatures(generator) as features, torch.no_grad():
        images = generator.synthesis(ws)
        maps = features.take()
    assert [m.shape[1] for m in maps] == [32, 32, 1, 1]
    assert all(m.shape[0] == 6 and m.shape[2:] == images.shape[2:] for m in maps)
    # Far from every object the frame leaves the canvas: the "inside" channel is 0 at the corners.
    inside = maps[-1][:, 0]
    assert inside[:, 0, 0].eq(0).all() and inside[:, 32, 32].eq(1).any()


def test_segmentation_stage_on_the_stylegan_fixture(stylegan, tmp_path):
    generator = load_generator(stylegan)
    latents, maps = brightness_labels(generator, 40, seed=0)
    folder = tmp_path / "labels"
    write_labels_folder(folder, latents, ["middle", "bright"], maps=maps)
    record = train_segmenter(
        tmp_path / "seg/model.pt",
        tmp_path / "seg/metrics.json",
        labels_dir=folder,
        generator=stylegan,
        segmentation={**SETTINGS, "parts": ["middle", "bright"]},
        device="cpu",
    )
    metrics = json.loads((tmp_path / "seg/metrics.json").read_text())
    assert metrics == json.loads(json.dumps(record))
    assert (metrics["train"], metrics["held_out"], metrics["size"]) == (8, 32, 16)
    assert set(metrics["part_iou"]) == {"middle", "bright"}
    # Brightness is a function of the last hooked layer, so eight renders teach it well.
    assert metrics["mean_iou"] > 0.6, metrics
    with GeneratorSegmenter(generator, tmp_path / "seg/model.pt", torch.device("cpu")) as segmenter:
        with torch.no_grad():
            generator.synthesis(torch.from_numpy(latents[8:12]))
        predicted = segmenter.label_maps((16, 16))
    assert predicted.dtype == torch.uint8 and predicted.shape == (4, 16, 16)
    assert (predicted.numpy() == maps[8:12]).mean() > 0.7


@pytest.mark.parametrize("image_size", [(12, 12), (20, 20)])
def test_label_maps_in_passes_are_the_argmax_of_one_pass_over_the_batch(image_size):
    torch.manual_seed(0)
    model = PixelClassifier([5, 3], num_labels=4, size=12, width=8)
    for norm in (model.body[1], model.body[4]):
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
    model.set_standardisation([(torch.randn(5), torch.rand(5) + 0.5), (torch.randn(3), torch.rand(3) + 0.5)])
    model.eval()
    features = [torch.randn(2 * CPU_CHUNK + 5, 5, 6, 6), torch.randn(2 * CPU_CHUNK + 5, 3, 12, 12)]
    with torch.no_grad():
        scores = torch.nn.functional.interpolate(model(features), size=image_size, mode="bilinear", align_corners=False)
        expected = scores.argmax(dim=1).to(torch.uint8)
        channels_last = model.to(memory_format=torch.channels_last)
        labels = channels_last.label_maps(features, image_size)
    assert labels.dtype == torch.uint8
    assert torch.equal(labels, expected)


def test_world_labels_stand_in_for_a_person_on_the_builtin_generator(tmp_path):
    folder = tmp_path / "labels"
    world_labels(folder, generator=BUILTIN, classes=[0, 1, 2], truncation=0.7, count=6, seed=3)
    labels = read_labels(folder, list(part_names()))
    assert labels.latents.shape == (6, 128) and labels.maps.shape == (6, 64, 64)
    generator = load_generator(BUILTIN)
    with torch.no_grad():
        rendered = generator.synthesis(torch.from_numpy(labels.latents)[:, None].expand(-1, 3, -1))
    # The generator renders the world image, so the true object is where the render leaves the background.
    corner = rendered[:, :, :1, :1]
    differs = ((rendered - corner).abs().amax(dim=1) > 0.1).numpy()
    agreement = (differs & (labels.maps > 0)).sum() / (differs | (labels.maps > 0)).sum()
    assert agreement > 0.8


def test_world_part_map_is_the_rendered_object():
    labels, factors = sample_factors(20, seed=0)
    images = render(labels, factors)
    maps = part_map(labels, factors).numpy()
    background = images[:, :, 0, 0][:, :, None, None]
    differs = ((images - background).abs().amax(dim=1) > 0.05).numpy()
    assert set(np.unique(maps)) <= {0, 1}
    assert (differs == (maps == 1)).mean() > 0.98


def test_label_folders_round_trip_through_png_and_npy(tmp_path):
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(3, 2, 5)).astype(np.float32)
    maps = rng.integers(0, 4, size=(3, 7, 9)).astype(np.uint8)
    write_labels_folder(tmp_path / "png", latents, ["ear", "eye", "nose"], maps=maps)
    labels = read_labels(tmp_path / "png", ["ear", "eye", "nose"])
    np.testing.assert_array_equal(labels.maps, maps)
    np.testing.assert_array_equal(labels.latents, latents)
    (tmp_path / "png/maps/00001.png").unlink()
    np.save(tmp_path / "png/maps/00001.npy", maps[1].astype(np.int64))
    np.testing.assert_array_equal(read_labels(tmp_path / "png").maps, maps)
    assert len({tuple(c) for c in PALETTE}) == len(PALETTE) and tuple(PALETTE[0]) == (0, 0, 0)


def _folder(tmp_path, count=4, parts=("ear", "eye")):
    maps = np.zeros((count, 8, 8), dtype=np.uint8)
    maps[:, 2:5, 2:5] = 1
    write_labels_folder(tmp_path / "labels", np.zeros((count, 4), np.float32), list(parts), maps=maps)
    return tmp_path / "labels"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "latents.npy").unlink(), r"latents.npy: not found"),
        (lambda f: (f / "maps/00002.png").unlink(), r"maps/00002.png: missing"),
        (lambda f: write_map(f / "maps/00004.png", np.zeros((8, 8))), r"00004.png: no latent for render 4"),
        (lambda f: write_map(f / "maps/00001.png", np.zeros((8, 6))), r"00001.png: map is \[8, 6\]"),
        (lambda f: write_map(f / "maps/00003.png", np.full((8, 8), 5)), r"00003.png: unknown label colour"),
        (lambda f: np.save(f / "maps/00000.npy", np.full((8, 8), 3)), r"render 0 has two maps"),
        (lambda f: (f / "parts.yaml").write_text("parts: [ear]\n"), r"does not match"),
    ],
)
def test_bad_label_folders_stop_with_one_line_naming_the_file(tmp_path, damage, message):
    folder = _folder(tmp_path)
    damage(folder)
    with pytest.raises(LabelsError, match=message) as error:
        check_segmentation({"labels": str(folder), "parts": ["ear", "eye"], "train": 2}, {"kind": "python"})
    assert "\n" not in str(error.value)


def test_bad_segmentation_settings_name_their_key(tmp_path):
    folder = _folder(tmp_path)
    with pytest.raises(LabelsError, match=r"'segmentation.train': 9 renders asked"):
        check_segmentation({"labels": str(folder), "parts": ["ear", "eye"], "train": 9}, {"kind": "python"})
    with pytest.raises(LabelsError, match=r"'segmentation.parts': name the parts"):
        check_segmentation({"labels": str(folder), "parts": [], "train": 2}, {"kind": "python"})
    with pytest.raises(LabelsError, match=r"'segmentation.labels': 'world'"):
        check_segmentation({"labels": "world", "parts": [], "train": 2}, {"kind": "stylegan_pkl"})
    assert check_segmentation({"labels": "auto", "parts": [], "train": 2}, {"kind": "stylegan_pkl"}) is None
    assert check_segmentation({"labels": "auto", "parts": [], "train": 2}, BUILTIN) == "world"
    schema = load_schema("workflow/schemas/config.schema.yaml")
    with pytest.raises(ConfigError, match="segmentation.train"):
        validate_config({"segmentation": {"train": 0}}, schema)


def test_stage_rejects_maps_that_do_not_fit_the_generator(stylegan, tmp_path):
    folder = _folder(tmp_path, parts=("middle", "bright"))
    with pytest.raises(LabelsError, match=r"latents.npy: latents of shape \[4, 4\] do not fit"):
        train_segmenter(
            tmp_path / "seg/model.pt",
            tmp_path / "seg/metrics.json",
            labels_dir=folder,
            generator=stylegan,
            segmentation={**SETTINGS, "parts": ["middle", "bright"]},
            device="cpu",
        )
    assert not (tmp_path / "seg/model.pt").exists() and not (tmp_path / "seg/metrics.json").exists()


def test_labelling_renders_the_generator_with_its_latents(stylegan, tmp_path):
    files = render_for_labelling(
        tmp_path / "mine", generator=stylegan, classes=[1, 2], truncation=0.7, count=3, part_names=["a"], seed=0
    )
    assert [f.name for f in files] == ["00000.png", "00001.png", "00002.png"] and all(f.is_file() for f in files)
    assert np.load(tmp_path / "mine/latents.npy").shape == (3, 3, 8)
    with pytest.raises(LabelsError, match="maps/00000.png: missing"):
        read_labels(tmp_path / "mine")
    with pytest.raises(LabelsError, match="latents.npy: exists"):
        render_for_labelling(
            tmp_path / "mine", generator=stylegan, classes=[1], truncation=0.7, count=3, part_names=["a"], seed=0
        )


def test_parts_are_measured_with_their_geometry_and_the_object_is_their_union():
    labels = np.zeros((1, 2, 40, 40), dtype=np.uint8)
    labels[..., 10:20, 10:30] = 1  # a 10 x 20 bar: its ellipse lies along x
    labels[..., 20:30, 18:22] = 2  # a 10 x 4 stem below it
    images = np.full((1, 2, 40, 40, 3), 90, dtype=np.uint8)
    whole, parts = regions_from_labels(labels, ["bar", "stem"])
    np.testing.assert_array_equal(whole, labels > 0)
    table = measure_sweeps(images, whole, parts)
    row = table.iloc[0]
    assert row["part:bar.area"] == pytest.approx(200 / 1600)
    assert row["object.area"] == pytest.approx(240 / 1600)
    # n pixels in a row have variance (n^2 - 1) / 12 pixels^2; the axes are 4 sigma over the side of 40.
    assert row["part:bar.major"] == pytest.approx(4 * np.sqrt((20**2 - 1) / 12) / 40, rel=1e-4)
    assert row["part:bar.minor"] == pytest.approx(4 * np.sqrt((10**2 - 1) / 12) / 40, rel=1e-4)
    assert row["part:bar.orientation"] == pytest.approx(0.0, abs=1e-6)
    assert row["part:stem.orientation"] == pytest.approx(-np.pi / 2, abs=1e-6)
    object_y = (200 * 15 + 40 * 25) / 240 / 40
    assert row["part:stem.dy"] == pytest.approx(25 / 40 - object_y, abs=1e-6)
    assert row["part:stem.dx"] == pytest.approx(0.0, abs=1e-6)
    assert {"part:stem.dx", "part:bar.major"} <= set(measures_to_test(table.columns))
    assert "object.major" not in table.columns
    single_whole, single_parts = regions_from_labels(labels, ["object"])
    assert single_parts == {} and single_whole.sum() == (labels > 0).sum()


def test_workflow_measures_parts_of_stylegan_renders_and_stops_on_bad_labels(tmp_path):
    from tests.workflow_harness import TINY_CONFIG, copy_project, results_dir, run_snakemake, write_config

    forget_fixture_modules()
    project = copy_project(tmp_path / "project")
    pickle_path = write_network_pickle(project / "g.pkl", img_resolution=16)
    forget_fixture_modules()
    stylegan = {"kind": "stylegan_pkl", "path": "g.pkl", "code_dir": str(CODE_DIR)}
    generator = load_generator(stylegan | {"path": str(pickle_path)})
    latents, maps = brightness_labels(generator, 24, seed=1)
    forget_fixture_modules()
    write_labels_folder(project / "labels", latents, ["middle", "bright"], maps=maps)
    config = {
        **TINY_CONFIG,
        "generator": stylegan,
        "samples": {**TINY_CONFIG["samples"], "require_correct": False},
        "segmentation": {**SETTINGS, "labels": "labels", "parts": ["middle", "bright"], "held_out": 16},
        "counterfactuals": {"pairs": [[0, 1]], "samples": 2, "compare": []},
    }
    write_config(project, config)
    tables = ("tables/activation_changes.parquet", "tables/null_controls.parquet", "counterfactuals/0-1.parquet")
    run_snakemake(project, *(f"results/tiny/{name}" for name in tables))
    results = results_dir(project)
    metrics = json.loads((results / "segmentation/metrics.json").read_text())
    assert (metrics["train"], metrics["held_out"]) == (8, 16)
    import pandas as pd
    import pyarrow.parquet

    changes = pd.read_parquet(results / "tables/activation_changes.parquet")
    nulls = pd.read_parquet(results / "tables/null_controls.parquet")
    counterfactuals = pd.read_parquet(results / "counterfactuals/0-1.parquet")
    assert {"part:middle.area", "part:bright.luminance"} <= set(counterfactuals.columns)
    observed = pyarrow.parquet.read_schema(results / "tables/sample_measures.parquet").metadata
    assert observed[b"regions"] == b"segmentation"
    for table in (changes, nulls):
        assert {"part:middle.area", "part:bright.dx", "part:bright.major"} <= set(table.columns)
        union = table["part:middle.area"] + table["part:bright.area"]
        np.testing.assert_allclose(table["object.area"], union, atol=1e-9)

    write_map(project / "labels/maps/00003.png", np.full((16, 16), 7))
    (results / "segmentation/metrics.json").unlink()
    failed = run_snakemake(project, "--dry-run", check=False)
    assert failed.returncode != 0
    assert "labels/maps/00003.png: unknown label colour (128, 128, 128)" in failed.stdout + failed.stderr
    assert not (results / "segmentation/metrics.json").exists()


def test_label_command_reads_painted_maps_back(tmp_path, capsys):
    from pipeline.cli import main

    folder = _folder(tmp_path)
    assert main(["label", "--out", str(folder), "--parts", "ear", "eye", "--check"]) == 0
    assert "4 labelled renders [8, 8]; pixel share ear 0.141, eye 0.000" in capsys.readouterr().out
    assert main(["label", "--out", str(folder), "--parts", "ear", "--check"]) == 2
    assert "does not match" in capsys.readouterr().err

"""Counterfactual searches on a colour world whose decision rule and latent domain are known.

The generator paints a flat colour that is linear in w (clamped only at the ends of the
colour range); training latents sit near 2 on their class's channel. The classifier's six
units are each channel's intensity twice over, so the training activations occupy a
3-dimensional subspace of the six, and its head scores class c as ``2 r_c - r_(c+3)``: on
images that is the channel's intensity, but its weights point partly off that subspace.
The link is what a poorly determined ridge fit gives such data: right on the subspace, and
large along the directions the data never spans (``e_c - e_(c+3)``).

So a search along the head's weights (the paper's loss) turns the off-subspace part of its
shift into a long latent move and ends far outside the training latents, while the smallest
shift under the activations' prior moves along the data and stays in the domain. The class
is the brightest channel, so flipping red to green must make the image greener.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from pipeline import measures
from pipeline.counterfactual import ActivationPrior, LatentDomain, paper_loss, search_mahalanobis, search_paper
from pipeline.models.builtin import builtin_world
from pipeline.models.registry import ModelSpecError
from pipeline.stages.common import ModelSetup, difference_image
from pipeline.stages.counterfactuals import (
    concept_movement,
    counterfactual_pair,
    ground_truth_share,
    pair_measure_changes,
    summarise_pairs,
    unit_movement,
    unit_shares,
)
from pipeline.store import read_json, read_parquet, read_zarr
from pipeline.world import ClassManifest, register_manifest
from tests.conftest import snakemake, write_config

RED, GREEN, BLUE = 0, 1, 2
OFF_DATA_GAIN = 20.0
PAPER = {"lr": 0.5, "max_steps": 200, "w_origin": 0.6, "w_cos": 10.0, "check_every": 2, "optimizer": "sgd"}
MAHALANOBIS = {"max_distance": 20.0, "bisection_steps": 8}


class ColourGenerator:
    z_dim = 3
    c_dim = 3
    w_dim = 3
    num_ws = 2
    size = 8

    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        w = truncation_psi * (z + 2.0 * c.float())
        return w.unsqueeze(1).repeat(1, self.num_ws, 1)

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        colour = 0.5 + 0.1 * ws[:, 0]  # linear; the clamp to [0, 1] comes only far outside the training latents
        return (2 * colour - 1)[:, :, None, None].expand(-1, -1, self.size, self.size).contiguous()

    def to(self, device: torch.device) -> ColourGenerator:
        return self


class ColourClassifier(nn.Module):
    num_units = 6
    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 3)
        with torch.no_grad():
            self.linear.weight.copy_(torch.cat([2 * torch.eye(3), -torch.eye(3)], dim=1))
            self.linear.bias.zero_()
        self.requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        intensity = 10 * x.mean(dim=(2, 3))
        return torch.cat([intensity, intensity], dim=1)

    @property
    def head(self) -> nn.Linear:
        return self.linear


def data_link() -> nn.Linear:
    """r -> w: exact on the data's subspace (w = (r_c - 5) / 1 per channel, halved over the two copies),
    and ``OFF_DATA_GAIN`` along each ``e_c - e_(c+3)``, which no training sample spans."""
    on_data = torch.cat([torch.eye(3), torch.eye(3)], dim=1) / 2
    off_data = torch.cat([torch.eye(3), -torch.eye(3)], dim=1) * OFF_DATA_GAIN
    link = nn.Linear(6, 3)
    with torch.no_grad():
        link.weight.copy_(on_data + off_data)
        link.bias.fill_(-5.0)
    return link.requires_grad_(False)


def on_data_link() -> nn.Linear:
    """The link without its off-data part: only shifts along the data move the render."""
    link = data_link()
    with torch.no_grad():
        link.weight.copy_(torch.cat([torch.eye(3), torch.eye(3)], dim=1) / 2)
    return link


def encode(generator: ColourGenerator, classifier: ColourClassifier, ws: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return classifier.features((generator.synthesis(ws) + 1) / 2)


@pytest.fixture(scope="module")
def world():
    generator, classifier = ColourGenerator(), ColourClassifier()
    torch.manual_seed(0)
    classes = torch.arange(600) % 3
    train_ws = generator.mapping(torch.randn(600, 3), nn.functional.one_hot(classes, 3))
    train_r = encode(generator, classifier, train_ws).numpy()
    domain = LatentDomain.fit(train_ws[:, 0].numpy())
    prior = ActivationPrior.fit(train_r)
    ws = generator.mapping(torch.randn(64, 3), nn.functional.one_hot(torch.full((64,), RED), 3))
    r = encode(generator, classifier, ws)
    with torch.no_grad():
        red = classifier.head(r).argmax(1) == RED
    return generator, classifier, data_link(), r[red][:24], domain, prior


def classify_uint8(classifier: ColourClassifier, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        return classifier.head(classifier.features(x)).argmax(1).numpy()


def latent_distances(link: nn.Linear, domain: LatentDomain, r_counterfactual: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return domain.distances(link(torch.from_numpy(r_counterfactual)).numpy())


def test_the_prior_search_flips_inside_the_domain_where_the_paper_search_runs_out_of_it(world):
    generator, classifier, link, r, domain, prior = world
    minimal = search_mahalanobis(classifier, generator, link, r, RED, GREEN, prior=prior, batch=64, **MAHALANOBIS)
    paper = search_paper(classifier, generator, link, r, RED, GREEN, batch=64, **PAPER)

    # Both flip the class of the re-encoded render.
    for result in (minimal, paper):
        assert result.success.mean() >= 0.9
        assert (classify_uint8(classifier, result.counterfactual[result.success]) == GREEN).all()
    assert (latent_distances(link, domain, minimal.r_counterfactual) <= domain.radius).mean() >= 0.9
    assert (latent_distances(link, domain, paper.r_counterfactual[paper.success]) > 3 * domain.radius).all()
    assert np.median(prior.lengths(minimal.shift)) < np.median(prior.lengths(paper.shift)) / 10

    green_gain = minimal.counterfactual[..., GREEN].mean((1, 2)) - minimal.original[..., GREEN].mean((1, 2))
    assert (green_gain[minimal.success] > 0).all()
    assert (minimal.prob_target[minimal.success] > minimal.prob_origin[minimal.success]).all()
    assert (minimal.start_prob_origin > minimal.start_prob_target).all()
    np.testing.assert_allclose(minimal.r_counterfactual, r.numpy() + minimal.shift, atol=1e-5)
    assert minimal.original.dtype == np.uint8 and minimal.original.shape == (len(r), 8, 8, 3)


def test_the_prior_search_is_judged_on_the_render_and_stops_at_the_first_flipping_length(world):
    generator, classifier, link, r, _, prior = world
    # A link that renders green a shade darker than the activation says: the head on r'
    # flips a whole unit of margin before the render does.
    darker = on_data_link()
    with torch.no_grad():
        darker.bias[GREEN] -= 1.0
    result = search_mahalanobis(classifier, generator, darker, r, RED, GREEN, prior=prior, batch=64, **MAHALANOBIS)

    assert result.success.all()
    assert (classify_uint8(classifier, result.counterfactual) == GREEN).all()
    with torch.no_grad():
        logits = classifier.head(torch.from_numpy(result.r_counterfactual))
    assert ((logits[:, GREEN] - logits[:, RED]).numpy() > 0.9).all()
    # A tenth shorter along the same ray the render is not green (the walk alone overshoots by up to half).
    shorter = torch.from_numpy(r.numpy() + 0.9 * result.shift)
    with torch.no_grad():
        images = (generator.synthesis(darker(shorter).unsqueeze(1).repeat(1, 2, 1)) + 1) / 2
        assert (classifier.head(classifier.features(images)).argmax(1) != GREEN).all()


def test_batches_do_not_interact(world):
    generator, classifier, link, r, _, prior = world
    together = search_mahalanobis(classifier, generator, link, r, RED, GREEN, prior=prior, batch=64, **MAHALANOBIS)
    in_pieces = search_mahalanobis(classifier, generator, link, r, RED, GREEN, prior=prior, batch=5, **MAHALANOBIS)
    np.testing.assert_allclose(together.shift, in_pieces.shift, atol=1e-5)
    np.testing.assert_array_equal(together.steps, in_pieces.steps)


def test_each_paper_sample_stops_at_its_own_success_and_batches_do_not_interact(world):
    generator, classifier, _, r, _, _ = world
    link = on_data_link()
    settings = {**PAPER, "max_steps": 60, "check_every": 3}
    together = search_paper(classifier, generator, link, r, RED, GREEN, batch=64, **settings)
    in_pieces = search_paper(classifier, generator, link, r, RED, GREEN, batch=5, **settings)

    np.testing.assert_allclose(together.shift, in_pieces.shift, atol=1e-5)
    np.testing.assert_array_equal(together.steps, in_pieces.steps)
    assert len(set(together.steps[together.success].tolist())) > 1, "the samples should need different step counts"
    assert (together.steps[together.success] % 3 == 0).all()
    assert_stopped_at_its_success(generator, classifier, link, r, together, settings)


def test_adam_momentum_does_not_move_a_finished_sample(world):
    generator, classifier, link, r, _, _ = world
    settings = {**PAPER, "max_steps": 60, "check_every": 3, "optimizer": "adam", "lr": 0.05}
    result = search_paper(classifier, generator, link, r, RED, GREEN, batch=64, **settings)
    assert result.success.any() and not result.success.all()
    assert_stopped_at_its_success(generator, classifier, link, r, result, settings)


def assert_stopped_at_its_success(generator, classifier, link, r, together, settings) -> None:
    """A finished sample's shift is the one it had when it succeeded, not a later one."""
    early = int(np.argmin(np.where(together.success, together.steps, 10**9)))
    one = r[early : early + 1]
    alone = search_paper(classifier, generator, link, one, RED, GREEN, batch=1, **settings)
    stopped_there = search_paper(
        classifier, generator, link, one, RED, GREEN, batch=1, **{**settings, "max_steps": int(together.steps[early])}
    )
    np.testing.assert_allclose(alone.shift[0], together.shift[early], atol=1e-5)
    np.testing.assert_allclose(stopped_there.shift[0], together.shift[early], atol=1e-5)


def test_the_paper_loss_scores_the_rectified_activation_it_renders(world):
    _, classifier, link, r, _, _ = world
    # Pushing a unit below zero changes nothing that is rendered, so it must change nothing in the loss.
    shift = torch.zeros_like(r)
    beyond = shift.clone()
    beyond[:, RED + 3] = r[:, RED + 3] + 5.0  # r - shift: -5 in the red copy unit, rendered as 0
    at_zero = shift.clone()
    at_zero[:, RED + 3] = r[:, RED + 3]
    settings = {"w_origin": 0.6, "w_cos": 10.0}
    with torch.no_grad():
        w_reference = link(r)
        rendered = paper_loss(classifier, link, r, at_zero, w_reference, RED, GREEN, **settings)
        below = paper_loss(classifier, link, r, beyond, w_reference, RED, GREEN, **settings)
        unshifted = paper_loss(classifier, link, r, shift, w_reference, RED, GREEN, **settings)
    torch.testing.assert_close(below, rendered)
    assert (rendered != unshifted).all()


def test_the_step_limit_ends_the_paper_search_with_a_rendered_failure(world):
    generator, classifier, link, r, _, _ = world
    settings = {**PAPER, "lr": 1e-4, "max_steps": 5, "check_every": 2}
    result = search_paper(classifier, generator, link, r[:4], RED, BLUE, batch=64, **settings)

    assert not result.success.any()
    np.testing.assert_array_equal(result.steps, [5, 5, 5, 5])
    assert (classify_uint8(classifier, result.counterfactual) == RED).all()
    assert (result.shift_l2 > 0).all()


def test_the_prior_search_ends_at_max_distance_when_nothing_flips(world):
    generator, classifier, link, r, _, prior = world
    result = search_mahalanobis(
        classifier, generator, link, r[:4], RED, GREEN, prior=prior, batch=64, max_distance=0.05, bisection_steps=4
    )
    assert not result.success.any()
    np.testing.assert_allclose(prior.lengths(result.shift), 0.05, rtol=1e-3)
    assert (classify_uint8(classifier, result.counterfactual) == RED).all()


def test_bad_requests_fail_with_one_line(world):
    generator, classifier, link, r, _, prior = world
    with pytest.raises(ValueError, match="origin and target are the same"):
        search_paper(classifier, generator, link, r, RED, RED, batch=8, **PAPER)
    with pytest.raises(ValueError, match="counterfactuals.target"):
        search_mahalanobis(classifier, generator, link, r, RED, 7, prior=prior, batch=8, **MAHALANOBIS)
    with pytest.raises(ValueError, match="counterfactuals.optimizer"):
        search_paper(classifier, generator, link, r, RED, GREEN, batch=8, **{**PAPER, "optimizer": "lbfgs"})
    headless = ColourClassifier()
    headless.__class__ = type("Headless", (ColourClassifier,), {"head": None})
    with pytest.raises(ValueError, match="with a head"):
        search_mahalanobis(headless, generator, link, r, RED, GREEN, prior=prior, batch=8, **MAHALANOBIS)


def test_the_prior_shrinks_toward_a_sphere_as_far_as_the_samples_cannot_tell():
    rng = np.random.default_rng(0)
    spherical = ActivationPrior.fit(rng.normal(size=(20, 50)))
    assert spherical.shrinkage > 0.8  # 20 samples of 50 units: the sample covariance is mostly noise
    mixing = rng.normal(size=(50, 50))
    structured = ActivationPrior.fit(rng.normal(size=(5000, 50)) @ mixing)
    assert structured.shrinkage < 0.05
    truth = mixing.T @ mixing
    assert np.linalg.norm(structured.covariance - truth) < 0.1 * np.linalg.norm(truth)

    few = ActivationPrior.fit(rng.normal(size=(10, 30)))  # fewer samples than units: still invertible
    shift = rng.normal(size=(3, 30))
    expected = np.sqrt(np.einsum("nu,uv,nv->n", shift, np.linalg.inv(few.covariance), shift))
    np.testing.assert_allclose(few.lengths(shift), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="do not vary"):
        ActivationPrior.fit(np.ones((5, 3)))


def test_difference_image_is_grey_where_nothing_changed():
    original = np.array([[[[10, 200, 128]]]], dtype=np.uint8)
    changed = np.array([[[[250, 200, 0]]]], dtype=np.uint8)
    np.testing.assert_array_equal(difference_image(original, original), np.full_like(original, 128))
    np.testing.assert_array_equal(difference_image(original, changed)[0, 0, 0], [248, 128, 64])


def test_unit_shares_and_the_units_that_carry_the_shift():
    shares = unit_shares(np.array([[3.0, 0.0, 4.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]), np.array([1.0, 1.0, 2.0]))
    np.testing.assert_allclose(shares, [[9 / 13, 0, 4 / 13], [0, 0, 0], [0.5, 0.5, 0]])
    summary = pd.DataFrame({"unit": [0, 2], "unique_measure": ["object.area", None]})
    carried = unit_movement(shares[[0, 2]], summary, top=2)
    assert carried["unit"].tolist() == [0, 1]
    np.testing.assert_allclose(carried["mean_share"], [(9 / 13 + 0.5) / 2, 0.25])
    assert carried["n_top"].tolist() == [2, 1] and carried["unique_measure"].tolist() == ["object.area", ""]


def flipped_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "object.area": [0.1, 0.2, 0.3, -0.1],
            "object.hue": [np.nan, np.nan, np.nan, np.nan],
            "object.redness": [-0.5, -0.6, -0.55, -0.52],
            "background.luminance": [0.01, -0.01, 0.02, -0.02],
            "object.x": [0.30, 0.31, 0.29, 0.30],
            "image.motion": [2.0, 2.1, 1.9, 2.0],
            "top_units": [np.array([1, 2]), np.array([1, 3]), np.array([2, 1]), np.array([4, 1])],
            "top_changes": [np.array([-2.0, 1.0]), np.array([-1.0, 0.5]), np.array([3.0, -1.0]), np.array([1.0, -4.0])],
            "top_concepts": [["object.area", "object.hue"], ["object.area", ""], ["object.hue", "object.area"],
                             ["", "object.area"]],
        }
    )  # fmt: skip


def test_concept_movement_reads_changes_and_unit_labels_of_successful_samples():
    unit_summary = pd.DataFrame({"unit": [1, 2, 3, 4], "unique_effect": [-1.5, 2.0, np.nan, np.nan]})
    changes = flipped_table()
    moved = concept_movement(changes, unit_summary, n_boot=200, seed=0, top=5, expected=None).set_index("measure")

    area = moved.loc["object.area"]
    assert area["image_change"] == pytest.approx(0.125)
    assert area["consistency"] == pytest.approx(0.75)
    assert area["image_effect"] == pytest.approx(0.125 / np.std([0.1, 0.2, 0.3, -0.1], ddof=1))
    assert area["image_ci_low"] < 0.125 < area["image_ci_high"]
    # Unit 1 (top effect < 0) is pushed down four times: each push raises the area.
    assert area["unit_share"] == pytest.approx(4 / 8)
    assert area["unit_direction"] == pytest.approx(1.0)
    hue = moved.loc["object.hue"]
    assert np.isnan(hue["image_change"]) and hue["unit_share"] == pytest.approx(2 / 8)
    assert hue["unit_direction"] == pytest.approx(1.0)  # unit 2 (top effect > 0) pushed up
    # Moved: CI excludes 0 (redness and x, not area with its sign flip or the noisy luminance),
    # and not a magnitude, which any change raises.
    assert moved.index[moved["moved"]].tolist() == ["object.x", "object.redness"]
    assert moved["expected_sign"].isna().all() and moved["toward_target"].isna().all()


def test_the_ground_truth_share_counts_moved_measures_of_separating_factors_toward_the_target():
    manifest = ClassManifest(
        classes=("pale", "red", "left"),
        factor_means={"redness": (0.0, 1.0, 0.0), "position": (0.5, 0.5, 0.2)},
        defining={(0, 1): ("redness",), (1, 2): ("redness", "position")},
        factor_measures={"redness": {"object.redness": 1}, "position": {"object.x": 1}},
    )
    unit_summary = pd.DataFrame({"unit": [1, 2, 3, 4], "unique_effect": [1.0, 1.0, 1.0, 1.0]})
    # red -> left: redness should fall (it does) and x should fall (it rises).
    expected = manifest.expected_measure_moves(1, 2)
    assert expected == {"object.redness": -1, "object.x": -1}
    moved = concept_movement(flipped_table(), unit_summary, n_boot=200, seed=0, top=5, expected=expected)
    assert ground_truth_share(moved) == pytest.approx(0.5)
    by_measure = moved.set_index("measure")
    assert (
        by_measure.loc["object.redness", "toward_target"] == 1.0 and by_measure.loc["object.x", "toward_target"] == 0.0
    )
    assert np.isnan(by_measure.loc["object.area", "toward_target"])  # no separating factor reads it
    # Only the single largest move counts with top=1: |effect| of x beats redness.
    top_one = concept_movement(flipped_table(), unit_summary, n_boot=200, seed=0, top=1, expected=expected)
    assert ground_truth_share(top_one) == 0.0
    # pale -> red: only redness separates them, and it should rise; nothing moved toward it here.
    pale_to_red = manifest.expected_measure_moves(0, 1)
    toward_red = concept_movement(flipped_table(), unit_summary, n_boot=200, seed=0, top=5, expected=pale_to_red)
    assert ground_truth_share(toward_red) == 0.0
    assert ground_truth_share(moved.assign(moved=False)) is None


def test_builtin_world_names_the_builtin_world_only():
    assert builtin_world({"kind": "builtin", "name": "shapes-classifier"}) == "shapes"
    assert builtin_world({"kind": "torchvision", "name": "resnet50"}) is None
    with pytest.raises(ModelSpecError, match="shapes-painter"):
        builtin_world({"kind": "builtin", "name": "shapes-painter"})


def test_a_pair_writes_the_contracted_artifacts_on_a_real_run(finished_run, tmp_path):
    config = yaml.safe_load((finished_run / "config.yaml").read_text())
    run = finished_run / "results" / config["run"]
    out = tmp_path / "counterfactuals"
    common = {
        "latents_path": run / "latents.zarr", "activations_path": run / "activations.zarr",
        "link_path": run / "link/model.pt", "unit_summary_path": run / "concepts/unit_summary.parquet",
        "models": ModelSetup(config["classifier"], config["generator"], device="cpu"), "origin": 0,
        "target": 1, "samples": 3, "top_units": 4, "batch_size": 2,
    }  # fmt: skip
    counterfactual_pair(
        out / "0-1.parquet", out / "0-1.zarr", out / "0-1.png", method="mahalanobis",
        search={"max_distance": 20.0, "bisection_steps": 3}, **common,
    )  # fmt: skip
    counterfactual_pair(
        out / "paper/0-1.parquet", out / "paper/0-1.zarr", out / "paper/0-1.png", method="paper",
        search={**PAPER, "max_steps": 4, "optimizer": "adam"}, **common,
    )  # fmt: skip
    world = "counterfactual-test-world"
    register_manifest(
        world,
        ClassManifest(
            classes=("a", "b"),
            factor_means={"size": (1.0, 2.0)},
            defining={(0, 1): ("size",)},
            factor_measures={"size": {"object.area": 1}},
        ),
    )
    summarise_pairs(
        [out / "0-1.parquet"], [out / "0-1.zarr"], {"paper": [out / "paper/0-1.parquet"]},
        run / "concepts/unit_summary.parquet", out / "summary.parquet", out / "summary_units.parquet",
        out / "summary.json", n_boot=20, seed=0, top_measures=3, top_units=2, world=world,
    )  # fmt: skip

    table = read_parquet(out / "0-1.parquet")
    latents, _ = read_zarr(run / "latents.zarr", ["class", "split"])
    assert len(table) == 3
    assert (latents["class"][table["sample"]] == 0).all() and (latents["split"][table["sample"]] == "test").all()
    assert {"success", "steps", "prob_origin", "prob_target", "start_prob_origin", "shift_l2", "predicted"} <= set(
        table.columns
    )
    assert table["top_units"].map(len).eq(4).all() and table["top_concepts"].map(len).eq(4).all()
    assert table["top_shares"].map(lambda s: bool(np.all(np.diff(s) <= 0) and s.sum() <= 1 + 1e-6)).all()
    assert measures.tested_measures(table.columns) and "object.area" in table.columns
    # The latents these flips render are placed against the training latents.
    metadata = pq.read_schema(out / "0-1.parquet").metadata
    radius = json.loads(metadata[b"latent_domain_radius"])
    assert json.loads(metadata[b"method"]) == "mahalanobis" and json.loads(metadata[b"bisection_steps"]) == 3
    assert radius > 0 and (table["latent_distance"] > 0).all()
    assert table["in_domain"].equals(table["latent_distance"] <= radius)
    assert (table["shift_mahalanobis"] > 0).all()

    images, attrs = read_zarr(out / "0-1.zarr")
    assert attrs["origin"] == 0 and attrs["target"] == 1 and attrs["method"] == "mahalanobis"
    n, height, width, _ = images["original"].shape
    assert n == 3 and images["counterfactual"].shape == images["difference"].shape == (n, height, width, 3)
    assert images["original"].dtype == images["difference"].dtype == np.uint8
    np.testing.assert_allclose(np.linalg.norm(images["shift"], axis=1), table["shift_l2"], rtol=1e-5)
    np.testing.assert_allclose(images["unit_share"].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(images["sample"], table["sample"])
    assert Image.open(out / "0-1.png").size == (3 * (width + 2) - 2, n * (height + 2) - 2)
    paper = read_parquet(out / "paper/0-1.parquet")
    assert paper["sample"].tolist() == table["sample"].tolist() and paper["steps"].between(1, 4).all()

    summary = read_json(out / "summary.json")
    assert (
        summary["method"] == "mahalanobis"
        and summary["pairs"][0] | {"n": 3, "origin": 0, "target": 1} == summary["pairs"][0]
    )
    assert summary["success_rate"] == pytest.approx(table["success"].mean())
    assert summary["success_in_domain_rate"] == pytest.approx((table["success"] & table["in_domain"]).mean())
    assert summary["pairs"][0]["latent_domain_radius"] == pytest.approx(radius)
    assert [m["method"] for m in summary["methods"]] == ["mahalanobis", "paper"]
    assert summary["methods"][1]["success_rate"] == pytest.approx(paper["success"].mean())
    assert summary["methods"][1]["median_latent_distance"] == pytest.approx(paper["latent_distance"].median())
    moved = read_parquet(out / "summary.parquet")
    assert list(moved.columns[:3]) == ["origin", "target", "measure"]
    assert set(moved["measure"]) == set(measures.tested_measures(table.columns))
    assert summary["pairs"][0]["moved_measures"] == moved.loc[moved["moved"], "measure"].tolist()
    assert summary["pairs"][0]["ground_truth_share"] == ground_truth_share(moved)
    units = read_parquet(out / "summary_units.parquet")
    assert list(units.columns[:3]) == ["origin", "target", "unit"] and len(units) == (
        2 if table["success"].any() else 0
    )


def test_a_world_without_a_manifest_gets_no_ground_truth_share(finished_run, tmp_path):
    config = yaml.safe_load((finished_run / "config.yaml").read_text())
    run = finished_run / "results" / config["run"]
    out = tmp_path / "counterfactuals"
    counterfactual_pair(
        out / "1-0.parquet", out / "1-0.zarr", out / "1-0.png",
        latents_path=run / "latents.zarr", activations_path=run / "activations.zarr", link_path=run / "link/model.pt",
        unit_summary_path=run / "concepts/unit_summary.parquet",
        models=ModelSetup(config["classifier"], config["generator"], device="cpu"), origin=1, target=0,
        method="mahalanobis",
        search={"max_distance": 20.0, "bisection_steps": 2}, samples=2, top_units=2, batch_size=4,
    )  # fmt: skip
    summarise_pairs(
        [out / "1-0.parquet"], [out / "1-0.zarr"], {}, run / "concepts/unit_summary.parquet",
        out / "summary.parquet", out / "summary_units.parquet", out / "summary.json",
        n_boot=20, seed=0, top_measures=3, top_units=2, world="shapes",
    )  # fmt: skip
    summary = read_json(out / "summary.json")
    assert summary["pairs"][0]["ground_truth_share"] is None and "no class manifest" in summary["ground_truth"]
    assert [m["method"] for m in summary["methods"]] == ["mahalanobis"]


def test_latent_domain_holds_the_training_latents_and_not_a_runaway() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(2.0, [0.5, 3.0, 1.0, 0.1], size=(2000, 4))
    domain = LatentDomain.fit(w)
    # Standardised per dim, so the narrow dim counts as much as the wide one.
    assert (domain.distances(w) <= domain.radius).mean() == pytest.approx(0.99, abs=0.002)
    assert domain.radius == pytest.approx(np.sqrt(13.28), rel=0.1)  # chi(4)'s 99th percentile
    runaway = domain.mean + 10 * domain.std  # ten standard deviations out in every dim
    assert domain.distances(runaway[None])[0] == pytest.approx(20.0)
    with pytest.raises(ValueError, match="at least 2 latents"):
        LatentDomain.fit(w[:1])


def test_the_rules_search_both_methods_and_rerun_only_what_a_setting_touches(finished_run, tmp_path):
    shutil.copytree(finished_run, tmp_path, dirs_exist_ok=True)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["counterfactuals"] = {
        "pairs": [[0, 1], [1, 0]],
        "samples": 2,
        "compare": ["paper"],
        "mahalanobis": {"bisection_steps": 2},
        "paper": {"max_steps": 4, "check_every": 2},
    }
    write_config(tmp_path, config)
    run = tmp_path / "results" / config["run"] / "counterfactuals"
    snakemake(tmp_path, "--cores", "2", str(run.relative_to(tmp_path) / "summary.json"))

    summary = read_json(run / "summary.json")
    assert [m["method"] for m in summary["methods"]] == ["mahalanobis", "paper"]
    assert all(m["n"] == 4 for m in summary["methods"])
    for pair in ("0-1", "1-0"):
        main, compared = read_parquet(run / f"{pair}.parquet"), read_parquet(run / f"compare/paper/{pair}.parquet")
        assert main["sample"].tolist() == compared["sample"].tolist()

    def scheduled(setting: str) -> list[str]:
        process = snakemake(tmp_path, "--dry-run", str(run.relative_to(tmp_path) / "summary.json"), "--config", setting)
        return sorted(re.findall(r"^(?:local)?rule (\w+):$", process.stdout, flags=re.MULTILINE))

    # The paper's settings re-run only its searches; the summary's only the summary.
    assert scheduled("counterfactuals={'paper': {'lr': 0.1}}") == ["counterfactual_comparison"] * 2 + [
        "counterfactual_summary"
    ]
    assert scheduled("counterfactuals={'top_measures': 2}") == ["counterfactual_summary"]


def test_part_label_maps_give_the_measured_changes_their_parts():
    from tests.tiny_models import tiny_classifier

    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    brighter_left = original.copy()
    brighter_left[:, :, :16] = np.minimum(original[:, :, :16].astype(int) + 60, 255).astype(np.uint8)
    labels = np.ones((3, 2, 32, 32), dtype=np.uint8)  # left half part 1, right half part 2
    labels[..., 16:] = 2
    changes = pair_measure_changes(
        tiny_classifier(), original, brighter_left, np.zeros(3, int), np.zeros(3, int), torch.device("cpu"),
        labels=labels, part_names=["left", "right"],
    )  # fmt: skip
    assert {"part:left.luminance", "part:right.luminance"} <= set(changes.columns) and len(changes) == 3
    assert (changes["part:left.luminance"] > 0).all()
    np.testing.assert_allclose(changes["part:right.luminance"], 0, atol=1e-6)
    np.testing.assert_allclose(changes["object.area"], 0, atol=1e-6)

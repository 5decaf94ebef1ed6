"""Counterfactual search on a colour world whose decision rule is known.

The generator paints a flat colour (w is the colour before a sigmoid), the classifier's six
units are the positive and negative parts of each channel's offset from grey, and the class
is the strongest channel. Flipping red to green must therefore make the image greener.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from pipeline import measures
from pipeline.counterfactual import (
    LatentDomain,
    concept_movement,
    counterfactual_pair,
    difference_image,
    search,
    summarise_pairs,
)
from pipeline.store import read_json, read_parquet, read_zarr

RED, GREEN, BLUE = 0, 1, 2


class ColourGenerator:
    z_dim = 3
    c_dim = 3
    w_dim = 3
    num_ws = 2
    size = 8

    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        w = truncation_psi * (0.5 * z + 2.0 * c.float())
        return w.unsqueeze(1).repeat(1, self.num_ws, 1)

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        colour = torch.sigmoid(ws[:, 0])
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
            self.linear.weight.copy_(torch.cat([torch.eye(3), -torch.eye(3)], dim=1))
            self.linear.bias.zero_()
        self.requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        offset = 4 * (x.mean(dim=(2, 3)) - 0.5)
        return torch.relu(torch.cat([offset, -offset], dim=1))

    @property
    def head(self) -> nn.Linear:
        return self.linear


def fitted_link(generator: ColourGenerator, classifier: ColourClassifier, n: int = 600) -> nn.Linear:
    """Least-squares map r -> w on random colours, as the link stage fits it."""
    torch.manual_seed(0)
    w = 2 * torch.randn(n, 3)
    with torch.no_grad():
        r = classifier.features((generator.synthesis(w.unsqueeze(1).repeat(1, 2, 1)) + 1) / 2)
    design = torch.cat([r, torch.ones(n, 1)], dim=1)
    solution = torch.linalg.lstsq(design, w).solution
    link = nn.Linear(6, 3)
    with torch.no_grad():
        link.weight.copy_(solution[:-1].T)
        link.bias.copy_(solution[-1])
    return link.requires_grad_(False)


@pytest.fixture(scope="module")
def world():
    generator, classifier = ColourGenerator(), ColourClassifier()
    link = fitted_link(generator, classifier)
    torch.manual_seed(1)
    z = torch.randn(64, 3)
    ws = generator.mapping(z, nn.functional.one_hot(torch.full((64,), RED), 3))
    with torch.no_grad():
        r = classifier.features((generator.synthesis(ws) + 1) / 2)
        red = classifier.head(r).argmax(1) == RED
    return generator, classifier, link, r[red][:24]


def classify_uint8(classifier: ColourClassifier, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        return classifier.head(classifier.features(x)).argmax(1).numpy()


def test_red_samples_flip_to_green_and_the_images_turn_green(world):
    generator, classifier, link, r = world
    result = search(classifier, generator, link, r, RED, GREEN, max_steps=200, check_every=2, batch=64)

    assert result.success.mean() >= 0.9
    assert (classify_uint8(classifier, result.counterfactual[result.success]) == GREEN).all()
    assert (classify_uint8(classifier, result.original) == RED).all()
    green_gain = result.counterfactual[..., GREEN].astype(float).mean((1, 2)) - result.original[..., GREEN].mean((1, 2))
    assert (green_gain[result.success] > 0).all()
    assert (result.prob_target[result.success] > result.prob_origin[result.success]).all()
    assert (result.start_prob_origin > result.start_prob_target).all()
    np.testing.assert_allclose(result.shift_l2, np.linalg.norm(result.shift, axis=1), rtol=1e-5)
    np.testing.assert_allclose(result.r_counterfactual, np.maximum(r.numpy() - result.shift, 0), atol=1e-6)
    assert result.original.dtype == np.uint8 and result.original.shape == (len(r), 8, 8, 3)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_each_sample_stops_at_its_own_success_and_batches_do_not_interact(world, optimizer):
    generator, classifier, link, r = world
    settings = {"max_steps": 60, "check_every": 3, "optimizer": optimizer, "lr": 0.5}
    together = search(classifier, generator, link, r, RED, GREEN, batch=64, **settings)
    in_pieces = search(classifier, generator, link, r, RED, GREEN, batch=5, **settings)

    np.testing.assert_allclose(together.shift, in_pieces.shift, atol=1e-5)
    np.testing.assert_array_equal(together.steps, in_pieces.steps)
    assert len(set(together.steps[together.success].tolist())) > 1, "the samples should need different step counts"
    assert (together.steps[together.success] % 3 == 0).all()

    # A finished sample's shift is the one it had when it succeeded, not a later one.
    early = int(np.argmin(np.where(together.success, together.steps, 10**9)))
    alone = search(classifier, generator, link, r[early : early + 1], RED, GREEN, batch=1, **settings)
    stopped_there = search(
        classifier,
        generator,
        link,
        r[early : early + 1],
        RED,
        GREEN,
        batch=1,
        **{**settings, "max_steps": int(together.steps[early])},
    )
    np.testing.assert_allclose(alone.shift[0], together.shift[early], atol=1e-5)
    np.testing.assert_allclose(stopped_there.shift[0], together.shift[early], atol=1e-5)


def test_the_step_limit_ends_the_search_with_a_rendered_failure(world):
    generator, classifier, link, r = world
    result = search(classifier, generator, link, r[:4], RED, BLUE, lr=1e-4, max_steps=5, check_every=2)

    assert not result.success.any()
    np.testing.assert_array_equal(result.steps, [5, 5, 5, 5])
    assert (classify_uint8(classifier, result.counterfactual) == RED).all()
    assert (result.shift_l2 > 0).all()


def test_bad_requests_fail_with_one_line(world):
    generator, classifier, link, r = world
    with pytest.raises(ValueError, match="origin and target are the same"):
        search(classifier, generator, link, r, RED, RED, max_steps=1)
    with pytest.raises(ValueError, match="counterfactuals.target"):
        search(classifier, generator, link, r, RED, 7, max_steps=1)
    with pytest.raises(ValueError, match="counterfactuals.optimizer"):
        search(classifier, generator, link, r, RED, GREEN, max_steps=1, optimizer="lbfgs")
    headless = ColourClassifier()
    headless.__class__ = type("Headless", (ColourClassifier,), {"head": None})
    with pytest.raises(ValueError, match="with a head"):
        search(headless, generator, link, r, RED, GREEN, max_steps=1)


def test_difference_image_is_grey_where_nothing_changed():
    original = np.array([[[[10, 200, 128]]]], dtype=np.uint8)
    changed = np.array([[[[250, 200, 0]]]], dtype=np.uint8)
    np.testing.assert_array_equal(difference_image(original, original), np.full_like(original, 128))
    np.testing.assert_array_equal(difference_image(original, changed)[0, 0, 0], [248, 128, 64])


def test_concept_movement_reads_changes_and_unit_labels_of_successful_samples():
    flipped = pd.DataFrame(
        {
            "object.area": [0.1, 0.2, 0.3, -0.1],
            "object.hue": [np.nan, np.nan, np.nan, np.nan],
            "top_units": [np.array([1, 2]), np.array([1, 3]), np.array([2, 1]), np.array([4, 1])],
            "top_changes": [np.array([-2.0, 1.0]), np.array([-1.0, 0.5]), np.array([3.0, -1.0]), np.array([1.0, -4.0])],
            "top_concepts": [["object.area", "object.hue"], ["object.area", ""], ["object.hue", "object.area"],
                             ["", "object.area"]],
        }
    )  # fmt: skip
    unit_summary = pd.DataFrame({"unit": [1, 2, 3, 4], "unique_effect": [-1.5, 2.0, np.nan, np.nan]})
    moved = concept_movement(flipped, unit_summary, n_boot=200, seed=0).set_index("measure")

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
    assert list(moved.index) == ["object.area", "object.hue"]


def test_a_pair_writes_the_contracted_artifacts_on_a_real_run(finished_run, tmp_path):
    config = yaml.safe_load((finished_run / "config.yaml").read_text())
    run = finished_run / "results" / config["run"]
    out = tmp_path / "counterfactuals"
    settings = {"max_steps": 4, "lr": 0.5, "w_origin": 0.6, "w_cos": 10.0, "check_every": 2, "optimizer": "adam"}
    counterfactual_pair(
        out / "0-1.parquet", out / "0-1.zarr", out / "0-1.png",
        latents_path=run / "latents.zarr", activations_path=run / "activations.zarr", link_path=run / "link/model.pt",
        unit_summary_path=run / "concepts/unit_summary.parquet", classifier=config["classifier"],
        generator=config["generator"], device="cpu", origin=0, target=1, samples=3, top_units=4, batch_size=2,
        **settings,
    )  # fmt: skip
    summarise_pairs(
        [out / "0-1.parquet"], run / "concepts/unit_summary.parquet", out / "summary.parquet", out / "summary.json",
        n_boot=20, seed=0,
    )  # fmt: skip

    table = read_parquet(out / "0-1.parquet")
    latents, _ = read_zarr(run / "latents.zarr", ["class", "split"])
    assert len(table) == 3
    assert (latents["class"][table["sample"]] == 0).all() and (latents["split"][table["sample"]] == "test").all()
    assert {"success", "steps", "prob_origin", "prob_target", "start_prob_origin", "shift_l2", "predicted"} <= set(
        table.columns
    )
    assert table["top_units"].map(len).eq(4).all() and table["top_concepts"].map(len).eq(4).all()
    assert measures.tested_measures(table.columns) and "object.area" in table.columns
    assert table["steps"].between(1, 4).all()
    # The latents these flips render are placed against the training latents.
    radius = json.loads(pq.read_schema(out / "0-1.parquet").metadata[b"latent_domain_radius"])
    assert radius > 0 and (table["latent_distance"] > 0).all()
    assert table["in_domain"].equals(table["latent_distance"] <= radius)

    images, attrs = read_zarr(out / "0-1.zarr")
    assert attrs["origin"] == 0 and attrs["target"] == 1
    n, height, width, _ = images["original"].shape
    assert n == 3 and images["counterfactual"].shape == images["difference"].shape == (n, height, width, 3)
    assert images["original"].dtype == images["difference"].dtype == np.uint8
    np.testing.assert_allclose(np.linalg.norm(images["shift"], axis=1), table["shift_l2"], rtol=1e-5)
    np.testing.assert_array_equal(images["sample"], table["sample"])
    assert Image.open(out / "0-1.png").size == (3 * (width + 2) - 2, n * (height + 2) - 2)

    summary = read_json(out / "summary.json")
    assert summary["pairs"][0] | {"n": 3, "origin": 0, "target": 1} == summary["pairs"][0]
    assert summary["success_rate"] == pytest.approx(table["success"].mean())
    assert summary["success_in_domain_rate"] == pytest.approx((table["success"] & table["in_domain"]).mean())
    assert summary["pairs"][0]["latent_domain_radius"] == pytest.approx(radius)
    moved = read_parquet(out / "summary.parquet")
    assert list(moved.columns[:3]) == ["origin", "target", "measure"]
    assert set(moved["measure"]) == set(measures.tested_measures(table.columns))


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

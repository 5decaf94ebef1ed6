"""The strips stage: each shown unit swept on probe samples, with each frame's part map when the
run has a part segmenter (the StyleGAN fixture and a segmenter trained on its own renders)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.models import load_generator
from pipeline.segmentation import GeneratorSegmenter, train_segmenter, write_labels_folder
from pipeline.stages.common import Models, synthesize
from pipeline.stages.link import AffineLink
from pipeline.stages.perturb import sweep_latents, sweep_values
from pipeline.stages.strips import sweep_units
from tests.stylegan_fixture.make_pickle import CODE_DIR, forget_fixture_modules, write_network_pickle
from tests.test_segmentation import SETTINGS, brightness_labels
from tests.tiny_models import tiny_classifier, tiny_generator

RESOLUTION = 16
UNITS = [0, 3, 7]
STEPS = 3


@pytest.fixture
def stylegan(tmp_path):
    forget_fixture_modules()
    path = write_network_pickle(tmp_path / "g.pkl", img_resolution=RESOLUTION)
    yield {"kind": "stylegan_pkl", "path": str(path), "code_dir": str(CODE_DIR)}
    forget_fixture_modules()


def test_strip_frames_carry_the_part_map_of_their_own_render(stylegan, tmp_path):
    generator = load_generator(stylegan)
    latents, maps = brightness_labels(generator, 40, seed=0)
    write_labels_folder(tmp_path / "labels", latents, ["middle", "bright"], maps=maps)
    train_segmenter(
        tmp_path / "seg/model.pt",
        tmp_path / "seg/metrics.json",
        labels_dir=tmp_path / "labels",
        generator=stylegan,
        segmentation={**SETTINGS, "parts": ["middle", "bright"]},
        device="cpu",
    )
    classifier = tiny_classifier(image_size=RESOLUTION)
    cpu = torch.device("cpu")
    rng = np.random.default_rng(0)
    units = classifier.num_units
    link = AffineLink(
        torch.from_numpy(rng.normal(scale=0.3, size=(generator.w_dim, units))),
        torch.from_numpy(latents[:, 0].mean(axis=0)),
    )
    r = rng.normal(size=(2, units)).astype(np.float32)
    ranges = pd.DataFrame({"low": -1.0, "high": 1.0, "std": 0.5}, index=pd.RangeIndex(units, name="unit"))
    with GeneratorSegmenter(generator, tmp_path / "seg/model.pt", cpu) as segmenter:
        models = Models(classifier, generator, cpu, "fp32", segmenter)
        swept = sweep_units(models, link, r, UNITS, ranges, steps=STEPS, batch_size=4)

        assert swept["images"].shape == (len(UNITS), 2, STEPS, RESOLUTION, RESOLUTION, 3)
        assert swept["parts"].shape == swept["images"].shape[:-1] and swept["parts"].dtype == np.uint8
        assert swept["co_change"].shape == (len(UNITS), units)
        np.testing.assert_allclose(swept["values"], sweep_values(-np.ones(3), np.ones(3), STEPS))
        # Each frame's map is the segmenter's on that very render, in the frames' order.
        w = sweep_latents(link, torch.from_numpy(r), UNITS, torch.from_numpy(swept["values"]))
        with torch.no_grad():
            synthesize(generator, w.reshape(-1, generator.w_dim))
        expected = segmenter.label_maps((RESOLUTION, RESOLUTION)).numpy().reshape(swept["parts"].shape)
    np.testing.assert_array_equal(swept["parts"], expected)
    assert len(np.unique(expected)) > 1, "a sweep that moves the renders should cross the parts"


def test_strips_without_a_segmenter_have_no_part_maps():
    classifier = tiny_classifier(image_size=32)
    generator = tiny_generator(image_size=32)
    units = classifier.num_units
    rng = np.random.default_rng(1)
    link = AffineLink(torch.from_numpy(rng.normal(size=(generator.w_dim, units))), torch.zeros(generator.w_dim))
    ranges = pd.DataFrame({"low": 0.0, "high": 2.0, "std": 1.0}, index=pd.RangeIndex(units, name="unit"))
    swept = sweep_units(
        Models(classifier, generator, torch.device("cpu"), "fp32"),
        link,
        rng.normal(size=(3, units)).astype(np.float32),
        [1],
        ranges,
        steps=2,
        batch_size=8,
    )
    assert "parts" not in swept and swept["images"].shape[:3] == (1, 3, 2)

"""The breeds world's builtin models: the generator's interface, its latent-to-factor map,
its part map, training, the registry round trip, and the shipped models' gates."""

import json

import numpy as np
import pytest
import torch

from pipeline import world
from pipeline.models import load_classifier, load_generator, spec_weights_sha256
from pipeline.models.builtin import (
    WEIGHTS_DIR,
    BreedsGenerator,
    builtin_world,
    class_onehot,
    load_attribute_probe,
)
from pipeline.models.builtin.breeds_generator import part_labels
from pipeline.models.builtin.train import (
    BREEDS_CONFIG,
    CONSISTENCY_GATE,
    SPREAD_GATE,
    class_consistency,
    classifier_accuracy,
    merge_config,
    train_breeds_generator,
    train_default_models,
)
from pipeline.models.builtin.weights import save_builtin
from pipeline.world import breeds

GENERATOR_SPEC = {"kind": "builtin", "name": "breeds-generator"}
CLASSIFIER_SPEC = {"kind": "builtin", "name": "breeds-classifier"}
# Far from the seeds that training derives (SeedSequence outputs), so these images are fresh.
FRESH_SEED = 20_240_917
SMALL = {"w_dim": 16, "head_hidden": 16, "fourier": 8, "hidden": 12, "layers": 2, "canvas": 16}


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model = BreedsGenerator(**SMALL).eval()
    model.update_w_avg()
    return model


@pytest.fixture(scope="module")
def shipped():
    return load_generator(GENERATOR_SPEC)


def test_interface_shapes_and_ranges(small):
    assert small.world == "breeds"
    assert (small.z_dim, small.c_dim, small.num_ws) == (len(breeds.FACTORS), len(world.BREEDS), 3)
    z = torch.randn(5, small.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ws = small.mapping(z, class_onehot(torch.arange(5), small.c_dim), truncation_psi=0.7)
        images, logits = small.synthesis_parts(ws)
        labels = small.part_map(ws)
    assert ws.shape == (5, 3, small.w_dim) and torch.equal(ws[:, 0], ws[:, 2])
    assert images.shape == (5, 3, 64, 64) and images.min() >= -1 and images.max() <= 1
    assert logits.shape == (5, 1 + len(breeds.PART_NAMES), 64, 64)
    assert labels.shape == (5, 64, 64) and labels.dtype == torch.int64
    torch.testing.assert_close(small.synthesis(ws), images)
    with pytest.raises(ValueError, match="ws: expected shape"):
        small.synthesis(ws[:, 0])


def test_w_avg_is_the_class_offset_and_truncation_in_w_truncates_the_code(small):
    z = torch.randn(6, small.z_dim, generator=torch.Generator().manual_seed(1))
    c = class_onehot(torch.tensor([2] * 6), small.c_dim)
    with torch.no_grad():
        torch.testing.assert_close(small.mapping(z, c, 0.0), small.w_avg[2].expand(6, 3, -1))
        many = small.mapping(torch.randn(8192, small.z_dim), c[:1].expand(8192, -1))[:, 0].mean(0)
        torch.testing.assert_close(many, small.w_avg[2], atol=0.05, rtol=0)
        # Truncating w by psi is rendering the latent whose linear code is psi times z.
        truncated = small.mapping(z, c, 0.6)
        code_scaled = small.mapping(torch.where(_circular(), z, 0.6 * z), c)
        linear_part = truncated - code_scaled
    # Only the circular code (the background hue's cos and sin) differs: it shrinks instead.
    hue_columns = small.embed_code.weight[:, -2:]
    angles = 2 * np.pi * torch.special.ndtr(z[:, _circular()])
    cos_sin = torch.cat([torch.cos(angles), torch.sin(angles)], 1)
    expected = (-0.4 * cos_sin) @ hue_columns.detach().T
    torch.testing.assert_close(linear_part[:, 0], expected, atol=1e-5, rtol=1e-4)
    factors_truncated = small.world_factors(z, [2] * 6, 0.6)
    factors_scaled = small.world_factors(torch.where(_circular(), z, 0.6 * z), [2] * 6, 1.0)
    for name in breeds.FACTORS:
        np.testing.assert_allclose(factors_truncated[name], factors_scaled[name], rtol=0, atol=1e-6)


def _circular() -> torch.Tensor:
    return torch.tensor([name == "bg_hue" for name in breeds.FACTORS])


def test_world_factors_follow_the_world_ranges_and_breed_means(small):
    n = 6000
    z = torch.randn(n, small.z_dim, generator=torch.Generator().manual_seed(2))
    labels = np.arange(n) % len(world.BREEDS)
    factors = small.world_factors(z, labels, 1.0)
    averages = small.world_factors(z, labels, 0.0)
    reference_labels, reference = world.sample_factors(n, 3, world="breeds")
    means = breeds.breed_means()
    for name, (low, high) in world.factor_ranges("breeds").items():
        assert factors[name].between(low, high).all(), name
        for breed in range(len(world.BREEDS)):
            rows = labels == breed
            if name == "bg_hue":
                continue
            # psi = 0 puts every factor on its breed mean (nuisance factors: their midpoint).
            np.testing.assert_allclose(averages[name][rows], means[name][breed], atol=1e-9)
            world_rows = reference[name][reference_labels == breed]
            assert abs(factors[name][rows].mean() - means[name][breed]) < 0.1 * (high - low), (name, breed)
            assert abs(factors[name][rows].std() / world_rows.std() - 1) < 0.1, (name, breed)
    with pytest.raises(ValueError, match="labels"):
        small.world_factors(z[:3], [0, 1], 1.0)


def test_part_map_is_where_the_figure_covers_more_than_half_a_pixel(shipped):
    z = torch.randn(8, shipped.z_dim, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ws = shipped.mapping(z, class_onehot(torch.arange(8) % 6, 6), 0.7)
        pose, geometry, appearance = shipped.predict_parameters(ws)
        black, white = appearance.clone(), appearance.clone()
        black[:, 3:6], white[:, 3:6] = 0.0, 1.0
        on_black, logits = shipped.render(pose, geometry, black)
        on_white, _ = shipped.render(pose, geometry, white)
    # The background shows through by its share: the difference of the two renders.
    coverage = 1 - (on_white - on_black).mean(1) / 2
    labels = part_labels(logits)
    decided = (coverage - 0.5).abs() > 0.01
    assert ((labels > 0) == (coverage > 0.5))[decided].all()
    assert torch.equal(labels, shipped.part_map(ws))
    assert set(labels.unique().tolist()) == set(range(1 + len(breeds.PART_NAMES)))


def test_shipped_generator_draws_the_world_image_and_part_map_of_its_latent(shipped):
    z = torch.randn(120, shipped.z_dim, generator=torch.Generator().manual_seed(5))
    labels = torch.arange(120) % 6
    with torch.no_grad():
        images, logits = shipped.synthesis_parts(shipped.mapping(z, class_onehot(labels, 6), 0.7))
    factors = shipped.world_factors(z, labels, 0.7)
    assert (images * 0.5 + 0.5 - breeds.render(factors)).abs().mean() < 0.05
    predicted, truth = part_labels(logits), breeds.part_map(factors)
    ious = [((predicted == k) & (truth == k)).sum() / ((predicted == k) | (truth == k)).sum() for k in range(8)]
    assert float(torch.stack(ious).mean()) > 0.6


def test_tiny_training_run_lowers_the_loss():
    cfg = merge_config(BREEDS_CONFIG["generator"], {"architecture": SMALL, "steps": 40, "batch_size": 8, "lr": 1e-2})
    model, losses = train_breeds_generator(cfg, seed=3, log_every=100)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert all(np.isfinite(losses))
    _, first = train_breeds_generator({**cfg, "steps": 3}, seed=3, log_every=100)
    _, second = train_breeds_generator({**cfg, "steps": 3}, seed=3, log_every=100)
    assert first == second
    torch.testing.assert_close(model.w_avg, model.embed_class(torch.eye(model.c_dim)).detach())


def test_save_and_load_through_the_registry(tmp_path, small):
    save_builtin(small, SMALL, tmp_path, "breeds-generator", {"seed": 0})
    spec = {**GENERATOR_SPEC, "weights": str(tmp_path / "breeds-generator.pt")}
    loaded = load_generator(spec)
    assert isinstance(loaded, BreedsGenerator) and builtin_world(spec) == "breeds"
    z = torch.randn(3, small.z_dim)
    c = class_onehot([0, 3, 5], small.c_dim)
    with torch.no_grad():
        torch.testing.assert_close(loaded(z, c, 0.7), small(z, c, 0.7))
    manifest = json.loads((tmp_path / "breeds-generator.json").read_text())
    assert manifest["weights_sha256"] == spec_weights_sha256(spec, "generator")


def test_a_tiny_breeds_run_writes_its_three_models(tmp_path):
    tiny = {
        "world": "breeds",
        "classifier": {"steps": 2, "batch_size": 8},
        "generator": {"architecture": SMALL, "steps": 2, "batch_size": 4},
        "probe": {"steps": 2, "batch_size": 8},
        "evaluation": {"samples": 12, "batch_size": 6},
    }
    metrics = train_default_models(tmp_path, tiny, seed=0, threads=1)
    assert set(metrics) == {"breeds-classifier", "breeds-generator", "breeds-probe"}
    assert set(metrics["breeds-generator"]["spread_ratios"]) == set(breeds.FACTORS)
    assert metrics["breeds-classifier"]["accuracy_gate"] == 0.95
    probe = load_attribute_probe(tmp_path / "breeds-probe.pt", world="breeds")
    generator = load_generator({**GENERATOR_SPEC, "weights": str(tmp_path / "breeds-generator.pt")})
    images = generator(torch.randn(2, generator.z_dim), class_onehot([0, 1], 6)) * 0.5 + 0.5
    assert list(probe.predict(images).columns) == list(breeds.FACTORS)
    with pytest.raises(ValueError, match="world must be one of"):
        train_default_models(tmp_path, {"world": "dogs"}, seed=0, threads=1)


def test_shipped_breeds_models_record_passed_gates():
    for name, role in (("breeds-classifier", "classifier"), ("breeds-generator", "generator")):
        manifest = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
        assert spec_weights_sha256({"kind": "builtin", "name": name}, role) == manifest["weights_sha256"]
    classifier = json.loads((WEIGHTS_DIR / "breeds-classifier.json").read_text())["metrics"]
    generator = json.loads((WEIGHTS_DIR / "breeds-generator.json").read_text())["metrics"]
    assert classifier["accuracy"] >= classifier["accuracy_gate"] == 0.95
    assert generator["class_consistency"] >= CONSISTENCY_GATE and generator["truncation_psi"] == 0.7
    assert min(generator["spread_ratios"].values()) >= SPREAD_GATE and generator["gates_passed"]
    assert set(generator["spread_ratios"]) == set(breeds.FACTORS)
    for name in ("breeds-classifier", "breeds-generator", "breeds-probe"):
        assert (WEIGHTS_DIR / f"{name}.pt").stat().st_size <= 25 * 2**20


def test_shipped_models_pass_their_gates_on_fresh_samples(shipped):
    classifier = load_classifier(CLASSIFIER_SPEC)
    assert classifier.num_units >= 512
    assert classifier_accuracy(classifier, 300, FRESH_SEED, world_name="breeds") >= 0.95
    assert class_consistency(shipped, classifier, 300, truncation_psi=0.7, seed=FRESH_SEED) >= CONSISTENCY_GATE


def test_shipped_probe_reads_breeds_factors():
    images, _, factors = world.sample(300, FRESH_SEED, world="breeds")
    predicted = load_attribute_probe(world="breeds").predict(images)
    assert list(predicted.columns) == list(breeds.FACTORS)
    for name in ("body_length", "leg_length", "ear_droop", "coat_value", "spots", "tilt"):
        assert np.corrcoef(predicted[name], factors[name])[0, 1] > 0.85, name


def test_segmentation_hooks_see_the_part_logits_of_the_whole_batch(shipped):
    from pipeline.segmentation.features import GeneratorFeatures

    z = torch.randn(40, shipped.z_dim, generator=torch.Generator().manual_seed(6))
    with torch.no_grad(), GeneratorFeatures(shipped) as features:
        ws = shipped.mapping(z, class_onehot(torch.arange(40) % 6, 6), 0.7)
        _, logits = shipped.synthesis_parts(ws)
        (hooked,) = features.take()
    assert hooked.shape == (40, 2 + len(breeds.PART_NAMES), 64, 64)
    torch.testing.assert_close(hooked[:, : 1 + len(breeds.PART_NAMES)] * shipped.edge_gain, logits)

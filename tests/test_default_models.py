"""The builtin shapes-world models: loading, interfaces, quality gates on small fresh
samples, the training entry point, and load errors."""

import json

import numpy as np
import pytest
import torch

from pipeline import world
from pipeline.models import ModelSpecError, load_classifier, load_generator, spec_weights_sha256
from pipeline.models.builtin import WEIGHTS_DIR, class_onehot, latent_factors, load_attribute_probe, load_builtin
from pipeline.models.builtin.train import (
    DEFAULT_CONFIG,
    class_consistency,
    classifier_accuracy,
    train_classifier,
    train_default_models,
    train_generator,
    train_probe,
)

CLASSIFIER_SPEC = {"kind": "builtin", "name": "shapes-classifier"}
GENERATOR_SPEC = {"kind": "builtin", "name": "shapes-generator"}
# Far from the seeds that training derives (SeedSequence outputs), so these images are fresh.
FRESH_SEED = 20_240_917


@pytest.fixture(scope="module")
def classifier():
    return load_classifier(CLASSIFIER_SPEC)


@pytest.fixture(scope="module")
def generator():
    return load_generator(GENERATOR_SPEC)


def test_classifier_interface(classifier):
    images, _, _ = world.sample(4, FRESH_SEED)
    with torch.no_grad():
        spatial = classifier.spatial_features(images)
        r = classifier.features(images)
        logits = classifier.head(r)
    assert (classifier.num_units, classifier.num_classes) == (512, len(world.SHAPES))
    assert spatial.shape == (4, 512, 8, 8)
    assert r.shape == (4, 512) and (r >= 0).all()
    torch.testing.assert_close(r, spatial.mean(dim=(2, 3)))
    assert logits.shape == (4, len(world.SHAPES))
    # The registry folds batch normalisation for speed; the function must not change.
    with torch.no_grad():
        torch.testing.assert_close(load_builtin("shapes-classifier").features(images), r, atol=1e-4, rtol=1e-4)


def test_classifier_accuracy_on_fresh_images(classifier):
    assert classifier_accuracy(classifier, 300, FRESH_SEED) >= 0.95


def test_generator_interface_and_output_range(generator):
    assert (generator.z_dim, generator.c_dim) == (len(world.FACTORS), len(world.SHAPES))
    z = torch.randn(6, generator.z_dim, generator=torch.Generator().manual_seed(0))
    c = class_onehot(torch.arange(6), generator.c_dim)
    with torch.no_grad():
        ws = generator.mapping(z, c, truncation_psi=0.7)
        images = generator.synthesis(ws)
        # Synthesis takes distinct rows per layer too, as StyleGAN's does.
        mixed = generator.synthesis(torch.cat([ws[:, :1], ws.flip(0)[:, 1:]], dim=1))
    assert ws.shape == (6, generator.num_ws, generator.w_dim)
    assert torch.equal(ws[:, 0], ws[:, -1])
    assert images.shape == mixed.shape == (6, 3, 64, 64)
    assert images.min() >= -1 and images.max() <= 1 and images.std() > 0.1
    with pytest.raises(ValueError, match="ws: expected shape"):
        generator.synthesis(ws[:, 0])


def test_generator_class_consistency(generator, classifier):
    assert class_consistency(generator, classifier, 200, truncation_psi=0.7, seed=FRESH_SEED) >= 0.85


def test_default_models_run_under_bf16_autocast(generator, classifier):
    z = torch.randn(32, generator.z_dim, generator=torch.Generator().manual_seed(3))
    w = generator.mapping(z, class_onehot(torch.arange(32) % 5, generator.c_dim), truncation_psi=0.7)
    with torch.no_grad():
        exact = classifier((generator.synthesis(w) + 1) / 2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            images = generator.synthesis(w)
            reduced = classifier((images.float() + 1) / 2)
    assert images.dtype == torch.float32 and torch.isfinite(reduced).all()
    assert (reduced.argmax(1) == exact.argmax(1)).float().mean() >= 0.9


def test_generator_renders_the_factors_of_its_latent(generator):
    z = torch.randn(64, generator.z_dim, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(64) % generator.c_dim
    with torch.no_grad():
        images = generator(z, class_onehot(labels, generator.c_dim), truncation_psi=0.7) * 0.5 + 0.5
    target = world.render(labels, latent_factors(z, 0.7))
    assert (images - target).abs().mean() < 0.05


def test_truncation_zero_gives_the_class_average(generator):
    z = torch.randn(5, generator.z_dim, generator=torch.Generator().manual_seed(2))
    c = class_onehot(torch.tensor([3] * 5), generator.c_dim)
    with torch.no_grad():
        ws = generator.mapping(z, c, truncation_psi=0.0)
        average = generator.mapping(torch.randn(4096, generator.z_dim), c[:1].expand(4096, -1))[:, 0].mean(0)
    torch.testing.assert_close(ws, generator.w_avg[3].expand_as(ws))
    torch.testing.assert_close(generator.w_avg[3], average, atol=0.05, rtol=0)


def test_latent_factors_shrink_linear_factors_and_keep_hues():
    z = torch.randn(256, len(world.FACTORS), generator=torch.Generator().manual_seed(3))
    full, truncated = latent_factors(z, 1.0), latent_factors(z, 0.5)
    for name, (low, high) in world.FACTOR_RANGES.items():
        assert full[name].between(low, high).all()
        if name in ("hue", "bg_hue"):
            np.testing.assert_allclose(truncated[name], full[name])
        else:
            assert truncated[name].std() < full[name].std()


def test_attribute_probe_reads_world_factors():
    images, _, factors = world.sample(200, FRESH_SEED)
    predicted = load_attribute_probe().predict(images)
    assert list(predicted.columns) == list(world.FACTORS)
    for name in ("size", "x", "y", "bg_luminance"):
        assert np.corrcoef(predicted[name], factors[name])[0, 1] > 0.85, name
    hue_error = np.abs(predicted["hue"] - factors["hue"]) % 1.0
    assert np.minimum(hue_error, 1 - hue_error).mean() < 0.05


def test_shipped_manifests_match_weights_and_record_passed_gates():
    for name, spec in (("shapes-classifier", CLASSIFIER_SPEC), ("shapes-generator", GENERATOR_SPEC)):
        manifest = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
        role = name.removeprefix("shapes-")
        assert spec_weights_sha256(spec, role) == manifest["weights_sha256"]
    assert json.loads((WEIGHTS_DIR / "shapes-classifier.json").read_text())["metrics"]["accuracy"] >= 0.97
    assert json.loads((WEIGHTS_DIR / "shapes-generator.json").read_text())["metrics"]["gates_passed"]
    total_bytes = sum(path.stat().st_size for path in WEIGHTS_DIR.iterdir())
    assert total_bytes <= 25 * 2**20


TINY = {
    "classifier": {"steps": 3, "batch_size": 8},
    "generator": {
        "batch_size": 4,
        "phases": [{"steps": 3, "schedule_steps": 3, "lr": 1e-3, "hard_fraction": 0.5, "soft_edge_steps": 2}],
    },
    "probe": {"steps": 3, "batch_size": 8},
    "evaluation": {"samples": 16, "batch_size": 8},
    "log_every": 1,
}


def test_tiny_training_run_writes_loadable_models(tmp_path):
    metrics = train_default_models(tmp_path, TINY, seed=0, threads=1)
    assert set(metrics) == {"shapes-classifier", "shapes-generator", "shapes-probe"}
    manifest = json.loads((tmp_path / "shapes-generator.json").read_text())
    assert manifest["steps"] == 3 and np.isfinite(manifest["final_loss"])
    assert set(manifest["metrics"]["spread_ratios"]) == set(world.FACTORS)
    classifier = load_classifier({**CLASSIFIER_SPEC, "weights": str(tmp_path / "shapes-classifier.pt")})
    generator = load_generator({**GENERATOR_SPEC, "weights": str(tmp_path / "shapes-generator.pt")})
    probe = load_attribute_probe(tmp_path / "shapes-probe.pt")
    images = generator(torch.randn(2, generator.z_dim), class_onehot([0, 1], generator.c_dim)) * 0.5 + 0.5
    assert classifier.features(images).shape == (2, 512)
    assert probe.predict(images).shape == (2, len(world.FACTORS))


@pytest.mark.parametrize("train", [train_classifier, train_generator, train_probe])
def test_training_is_deterministic_with_finite_losses(train):
    name = {train_classifier: "classifier", train_generator: "generator", train_probe: "probe"}[train]
    cfg = {**DEFAULT_CONFIG[name], **TINY[name]}
    first_model, first_losses = train(cfg, 7)
    second_model, second_losses = train(cfg, 7)
    assert len(first_losses) == 3 and all(np.isfinite(first_losses))
    assert first_losses == second_losses
    for (key, a), b in zip(first_model.state_dict().items(), second_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_missing_or_corrupt_weights_raise_one_line_naming_the_file(tmp_path):
    missing = tmp_path / "absent.pt"
    with pytest.raises(ModelSpecError, match="absent.pt") as error:
        load_classifier({**CLASSIFIER_SPEC, "weights": str(missing)})
    assert "\n" not in str(error.value)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelSpecError, match="corrupt.pt") as error:
        load_generator({**GENERATOR_SPEC, "weights": str(corrupt)})
    assert "\n" not in str(error.value)


def test_bad_specs_name_the_key():
    with pytest.raises(ModelSpecError, match="classifier.name"):
        load_classifier({"kind": "builtin", "name": "shapes-generator"})
    with pytest.raises(ModelSpecError, match="generator.weight"):
        load_generator({**GENERATOR_SPEC, "weight": "typo.pt"})

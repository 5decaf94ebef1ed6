"""Real-model adapters: torchvision, timm, TorchScript classifiers and StyleGAN network pickles.

Networks have random weights and small inputs; the StyleGAN pickles come from the fixture
in ``tests/stylegan_fixture``, written the way the StyleGAN repositories write theirs.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.utils.cpp_extension
import torchvision
import torchvision.transforms.v2.functional as TF
from PIL import Image

import pipeline.models.adapters.stylegan as stylegan
import pipeline.models.adapters.timm_adapter as timm_adapter
import pipeline.models.adapters.torchscript_adapter  # noqa: F401  (registers kind: torchscript)
import pipeline.models.adapters.torchvision_adapter as torchvision_adapter
import pipeline.validation
import tests.tiny_models
from pipeline.device import autocast
from pipeline.models import ModelSpecError, load_classifier, load_generator, spec_weights_sha256
from pipeline.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, preprocess_from_spec
from pipeline.models.registry import file_sha256
from tests.stylegan_fixture.make_pickle import CODE_DIR, forget_fixture_modules, write_network_pickle

SMALL = {"resize": 64, "crop": 56}


def images(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def torchvision_spec(**overrides) -> dict:
    return {"kind": "torchvision", "name": "resnet18", "weights": None, "preprocess": SMALL, **overrides}


# --- preprocessing ----------------------------------------------------------------------


def test_imagenet_preprocess_matches_torchvision_transforms():
    x = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    expected = TF.normalize(TF.center_crop(TF.resize(x, [256], antialias=True), [224]), IMAGENET_MEAN, IMAGENET_STD)
    out = Preprocess()(x)
    assert out.shape == (2, 3, 224, 224)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_preprocess_steps_can_be_skipped_and_report_their_size():
    identity = preprocess_from_spec({"resize": None, "crop": None, "mean": None, "std": None})
    x = images(size=20)
    assert torch.equal(identity(x), x)
    assert Preprocess(resize=32, crop=None).output_size(20, 40) == (32, 64)


@pytest.mark.parametrize(
    ("spec", "key"),
    [({"resize": 64, "colour": 1}, "colour"), ({"crop": -3}, "crop"), ({"mean": [0.5, 0.5]}, "mean")],
)
def test_preprocess_spec_errors_name_the_key(spec, key):
    with pytest.raises(ModelSpecError, match=key):
        preprocess_from_spec(spec)


def test_crop_larger_than_the_resized_image_fails():
    with pytest.raises(ValueError, match="crop"):
        Preprocess(resize=32, crop=48)(images(size=32))


# --- torchvision ------------------------------------------------------------------------


def test_default_layer_is_the_penultimate_features_and_head_is_the_classifier():
    classifier = load_classifier(torchvision_spec())
    x = images()
    with torch.no_grad():
        r = classifier.features(x)
        logits = classifier.logits(x)
        torch.testing.assert_close(classifier.head(r), logits)
    assert r.shape == (2, 512) and classifier.num_units == 512 and classifier.num_classes == 1000
    assert classifier.head is classifier.network.fc
    # The maps ResNet pools into its penultimate features serve class activation maps.
    with torch.no_grad():
        maps = classifier.spatial_features(x)
    assert maps.shape[:2] == (2, 512)
    torch.testing.assert_close(maps.mean(dim=(2, 3)), r)


def test_penultimate_layer_without_pooled_maps_has_no_spatial_features():
    # MobileNetV3's classifier is an MLP: its last layer reads a hidden layer, not pooled maps.
    classifier = load_classifier(torchvision_spec(name="mobilenet_v3_small"))
    assert classifier.num_units == 1024 and classifier.head is classifier.network.classifier[3]
    assert not hasattr(classifier, "spatial_features")


def test_spatial_layer_is_pooled_and_keeps_its_maps():
    classifier = load_classifier(torchvision_spec(layer="layer4"))
    x = images()
    with torch.no_grad():
        maps = classifier.spatial_features(x)
        r = classifier.features(x)
        # Global pooling of layer4 is exactly what ResNet feeds its fc layer, so the head stays.
        torch.testing.assert_close(classifier.head(r), classifier.logits(x))
    assert maps.shape[:2] == (2, 512) and maps.shape[2] > 1
    torch.testing.assert_close(r, maps.mean(dim=(2, 3)))


def test_layer_that_does_not_feed_the_classifier_has_no_head():
    classifier = load_classifier(torchvision_spec(layer="layer3"))
    assert classifier.num_units == 256
    assert classifier.head is None
    features, logits = classifier.features_and_logits(images())
    assert features.shape == (2, 256) and logits.shape == (2, 1000)


def test_in_place_ops_after_the_layer_do_not_fake_a_head():
    # DenseNet applies relu in place after `features`; the pooled features are not fc's input.
    network = torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=8, num_classes=5)
    classifier = torchvision_adapter.HookedClassifier(network, Preprocess(resize=32, crop=None), layer="features")
    assert classifier.head is None and classifier.num_units == 28
    with torch.no_grad():
        r = classifier.features(images())
    assert bool((r < 0).any()), "features must be read before the in-place relu"


def test_state_dict_file_is_loaded_and_hashed(tmp_path):
    network = torchvision_adapter.load_torchvision_classifier(torchvision_spec(num_classes=10)).network
    path = tmp_path / "resnet18_10.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in network.state_dict().items()}}, path)
    spec = torchvision_spec(num_classes=10, weights=str(path))
    classifier = load_classifier(spec)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(classifier.logits(x), network(classifier.preprocess(x)))
    assert classifier.num_classes == 10
    assert spec_weights_sha256(spec, "classifier") == file_sha256(path)


def test_a_python_spec_hashes_its_factory_and_the_weights_of_the_model_spec_it_wraps(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(load_classifier(torchvision_spec()).network.state_dict(), path)
    base = torchvision_spec(weights=str(path))
    spec = {"kind": "python", "entrypoint": "pipeline.validation:planted_classifier", "kwargs": {"base_spec": base}}
    factory = Path(pipeline.validation.__file__)
    assert spec_weights_sha256(spec, "classifier") == f"{file_sha256(factory)},{file_sha256(path)}"
    no_nested = {"kind": "python", "entrypoint": "tests.tiny_models:tiny_classifier", "kwargs": {"seed": 1}}
    assert spec_weights_sha256(no_nested, "classifier") == file_sha256(Path(tests.tiny_models.__file__))


def test_weights_enum_resolves_from_the_local_cache_only(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    spec = torchvision_spec(weights="ResNet18_Weights.IMAGENET1K_V1")
    with pytest.raises(ModelSpecError, match="local torch cache"):
        load_classifier(spec)
    cached = torchvision_adapter.cached_weights_file("resnet18", "IMAGENET1K_V1")
    assert cached.parent == tmp_path / "checkpoints"
    cached.parent.mkdir()
    reference = load_classifier(torchvision_spec()).network
    torch.save(reference.state_dict(), cached)
    classifier = load_classifier(spec)
    torch.testing.assert_close(classifier.network.fc.weight, reference.fc.weight)
    assert spec_weights_sha256(spec, "classifier") == file_sha256(cached)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "resnet_999"}, "classifier.name"),
        ({"layer": "layer9"}, "no module 'layer9'.*layer4"),
        ({"layer": "layer4.1.relu"}, "runs 2 times"),
        ({"weights": "missing/weights.pth"}, "does not exist"),
        ({"weights": "ResNet18_Weights.NOT_A_TAG"}, "not a weights name"),
        ({"colour": "red"}, "unknown key"),
    ],
)
def test_torchvision_spec_errors(overrides, message):
    with pytest.raises(ModelSpecError, match=message):
        load_classifier(torchvision_spec(**overrides))


def test_state_dict_of_another_network_is_a_spec_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(ModelSpecError, match="does not fit"):
        load_classifier(torchvision_spec(weights=str(path)))


# --- timm -------------------------------------------------------------------------------


def test_timm_preprocess_defaults_follow_pretrained_cfg():
    defaults = timm_adapter.timm_preprocess_defaults(
        {
            "input_size": (3, 224, 224),
            "crop_pct": 0.875,
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "interpolation": "bicubic",
        }
    )
    assert defaults == {
        "resize": 256,
        "crop": 224,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "interpolation": "bicubic",
    }


def test_missing_timm_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ModelSpecError, match="timm is not installed"):
        load_classifier({"kind": "timm", "name": "resnet18"})


def test_timm_classifier_reads_the_penultimate_layer(tmp_path):
    timm = pytest.importorskip("timm")
    network = timm.create_model("resnet18", pretrained=False, num_classes=7)
    path = tmp_path / "resnet18.pth"
    torch.save(network.state_dict(), path)
    classifier = load_classifier(
        {"kind": "timm", "name": "resnet18", "weights": str(path), "num_classes": 7, "preprocess": SMALL}
    )
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(classifier.head(classifier.features(x)), network.eval()(classifier.preprocess(x)))
    assert (classifier.num_units, classifier.num_classes) == (512, 7)
    assert classifier.preprocess.interpolation == "bicubic"


# --- TorchScript ------------------------------------------------------------------------


class ScriptedNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU())
        self.fc = torch.nn.Linear(6, 4)

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    @torch.jit.export
    def head(self, r: torch.Tensor) -> torch.Tensor:
        return self.fc(r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean((2, 3)))


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_round_trip_with_features_and_head(tmp_path):
    path = tmp_path / "net.pt"
    torch.jit.script(ScriptedNet()).save(str(path))
    spec = {"kind": "torchscript", "path": str(path), "input_size": 16, "num_units": 6}
    classifier = load_classifier(spec)
    x = images(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(classifier.head(classifier.features(x)), classifier.module(x))
        assert classifier.spatial_features(x).shape == (3, 6, 14, 14)
    assert (classifier.num_units, classifier.num_classes) == (6, 4)
    assert spec_weights_sha256(spec, "classifier") == file_sha256(path)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_forward_only_archive_has_no_head(tmp_path):
    path = tmp_path / "traced.pt"
    body = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.ReLU()).eval()
    torch.jit.trace(body, images(1, 16)).save(str(path))
    classifier = load_classifier({"kind": "torchscript", "path": str(path), "input_size": 16})
    x = images(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(classifier.features(x), body(x).mean((2, 3)))
    assert classifier.head is None and classifier.num_units == 5
    assert hasattr(classifier, "spatial_features")
    with pytest.raises(ModelSpecError, match="spec says 9"):
        load_classifier({"kind": "torchscript", "path": str(path), "input_size": 16, "num_units": 9})


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_bad_files(tmp_path):
    with pytest.raises(ModelSpecError, match="does not exist"):
        load_classifier({"kind": "torchscript", "path": str(tmp_path / "absent.pt")})
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not an archive")
    with pytest.raises(ModelSpecError, match="not a TorchScript archive"):
        load_classifier({"kind": "torchscript", "path": str(junk)})


# --- StyleGAN network pickles -----------------------------------------------------------


@pytest.fixture
def clean_modules():
    """Each test imports the fixture's StyleGAN code afresh through the adapter's code_dir."""
    forget_fixture_modules()
    yield
    forget_fixture_modules()


@pytest.fixture
def xl_pickle(tmp_path, clean_modules):
    return write_network_pickle(tmp_path / "xl.pkl", per_class_w_avg=True)


def stylegan_spec(path, **overrides) -> dict:
    return {"kind": "stylegan_pkl", "path": str(path), "code_dir": str(CODE_DIR), **overrides}


def one_hot(labels: list[int], c_dim: int = 4) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(labels), c_dim).float()


def test_g_ema_loads_although_the_discriminator_cannot(xl_pickle, caplog):
    assert "pg_modules" not in sys.modules
    with caplog.at_level(logging.INFO, logger=stylegan.__name__):
        generator = load_generator(stylegan_spec(xl_pickle))
    assert "pg_modules.projector.FeatureProjector" in caplog.text
    assert file_sha256(xl_pickle) in caplog.text
    assert str(CODE_DIR) not in sys.path
    assert (generator.z_dim, generator.c_dim, generator.w_dim, generator.num_ws) == (8, 4, 8, 3)
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ws = generator.mapping(z, one_hot([0, 1, 2, 3, 0]), truncation_psi=0.7)
        out = generator.synthesis(ws)
    assert ws.shape == (5, 3, 8)
    assert torch.equal(ws[:, 0], ws[:, 2])
    assert out.shape == (5, 3, 16, 16) and out.dtype == torch.float32
    assert spec_weights_sha256(stylegan_spec(xl_pickle), "generator") == file_sha256(xl_pickle)


def test_truncation_goes_toward_the_class_average_of_stylegan_xl(xl_pickle):
    generator = load_generator(stylegan_spec(xl_pickle))
    w_avg = generator.network.mapping.w_avg
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    c = one_hot([2, 0, 3, 2])
    with torch.no_grad():
        full = generator.mapping(z, c, truncation_psi=1.0)
        at_centre = generator.mapping(z, c, truncation_psi=0.0)
        truncated = generator.mapping(z, c, truncation_psi=0.7)
        own = generator.network.mapping(z, c, truncation_psi=0.7)
    torch.testing.assert_close(at_centre[:, 0], w_avg[[2, 0, 3, 2]])
    centre = w_avg[[2, 0, 3, 2]].unsqueeze(1)
    torch.testing.assert_close(truncated, centre + 0.7 * (full - centre))
    torch.testing.assert_close(truncated, own)


def test_single_average_generators_get_sampled_class_averages(tmp_path, clean_modules):
    path = write_network_pickle(tmp_path / "sg2.pkl", per_class_w_avg=False)
    generator = load_generator(stylegan_spec(path, class_average_samples=4000))
    c = one_hot([1, 3, 1])
    with torch.no_grad():
        centres = generator.class_centres(c)
        z = torch.randn(4000, 8, generator=torch.Generator().manual_seed(123))
        fresh = generator.network.mapping(z, one_hot([3] * 4000), truncation_psi=1.0)[:, 0].mean(0)
        at_centre = generator.mapping(torch.randn(3, 8), c, truncation_psi=0.0)
    torch.testing.assert_close(centres[0], centres[2])
    assert not torch.allclose(centres[0], centres[1])
    assert (centres[1] - fresh).norm() < 0.1 * fresh.norm()
    torch.testing.assert_close(at_centre[:, 0], centres)
    global_truncation = load_generator(stylegan_spec(path, class_average_truncation=False))
    with torch.no_grad():
        towards_global = global_truncation.mapping(torch.randn(2, 8), one_hot([1, 3]), truncation_psi=0.0)
    torch.testing.assert_close(towards_global[:, 0], global_truncation.network.mapping.w_avg.expand(2, -1))


def test_noise_mode_and_force_fp32_reach_the_synthesis_network(xl_pickle):
    const = load_generator(stylegan_spec(xl_pickle))
    ws = const.mapping(torch.randn(2, 8), one_hot([0, 1]), truncation_psi=0.7)
    with torch.no_grad():
        assert torch.equal(const.synthesis(ws), const.synthesis(ws))
        noisy = load_generator(stylegan_spec(xl_pickle, noise_mode="random"))
        assert not torch.equal(noisy.synthesis(ws), noisy.synthesis(ws))
        reduced = load_generator(stylegan_spec(xl_pickle, force_fp32=False))
        difference = (reduced.synthesis(ws) - const.synthesis(ws)).abs().max()
    assert 0 < difference < 0.1


def test_a_run_precision_leaves_the_stylegan_network_its_own(xl_pickle):
    # The run's bf16 autocast would break the synthesis layers' dtype asserts, as it does
    # StyleGAN3's and StyleGAN-XL's; the network keeps its own precision instead.
    generator = load_generator(stylegan_spec(xl_pickle))
    z, c = torch.randn(2, 8), one_hot([0, 1])
    with torch.no_grad():
        ws = generator.mapping(z, c, truncation_psi=0.7)
        images = generator.synthesis(ws)
        with autocast(torch.device("cpu"), "bf16"):
            assert torch.equal(generator.mapping(z, c, truncation_psi=0.7), ws)
            autocast_images = generator.synthesis(ws)
    assert autocast_images.dtype == torch.float32 and torch.equal(autocast_images, images)


def test_class_ids_are_checked_against_c_dim(xl_pickle):
    generator = load_generator(stylegan_spec(xl_pickle))
    stylegan.check_class_ids(generator, [0, 3])
    with pytest.raises(ModelSpecError, match="class id 4 is not below the generator's c_dim 4"):
        stylegan.check_class_ids(generator, [0, 4])
    stylegan.check_class_ids(types.SimpleNamespace(c_dim=0), [232, 254])


def test_missing_code_dir_is_one_clear_error(xl_pickle, tmp_path):
    with pytest.raises(ModelSpecError, match="code_dir: .*does not exist"):
        load_generator(stylegan_spec(xl_pickle, code_dir=str(tmp_path / "no-checkout")))
    with pytest.raises(ModelSpecError, match="no torch_utils/persistence.py"):
        load_generator(stylegan_spec(xl_pickle, code_dir=str(tmp_path)))
    with pytest.raises(ModelSpecError, match="code_dir: missing"):
        load_generator({"kind": "stylegan_pkl", "path": str(xl_pickle)})


def test_pickle_without_g_ema_is_one_clear_error(tmp_path, clean_modules):
    path = write_network_pickle(tmp_path / "no_g_ema.pkl", with_g_ema=False)
    with pytest.raises(ModelSpecError, match="holds no 'G_ema' \\(found: G, training_set_kwargs, D\\)"):
        load_generator(stylegan_spec(path))


def test_missing_and_corrupt_pickles_are_spec_errors(tmp_path, clean_modules):
    with pytest.raises(ModelSpecError, match="does not exist"):
        load_generator(stylegan_spec(tmp_path / "absent.pkl"))
    good = write_network_pickle(tmp_path / "good.pkl")
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelSpecError, match="cannot unpickle"):
        load_generator(stylegan_spec(truncated))


def test_g_ema_needing_an_unimportable_module_names_it(tmp_path, clean_modules):
    path = write_network_pickle(tmp_path / "broken.pkl", discriminator_as_g_ema=True)
    with pytest.raises(ModelSpecError, match="G_ema .* cannot be rebuilt.*No module named 'pg_modules'"):
        load_generator(stylegan_spec(path))


def test_missing_distutils_points_at_setuptools(tmp_path, clean_modules, monkeypatch):
    # Their dnnlib imports distutils, which Python 3.12 removed; setuptools provides it again.
    checkout = tmp_path / "checkout"
    (checkout / "torch_utils").mkdir(parents=True)
    (checkout / "torch_utils" / "__init__.py").write_text("")
    (checkout / "torch_utils" / "persistence.py").write_text("from distutils.util import strtobool\n")
    path = tmp_path / "network.pkl"
    path.write_bytes(pickle.dumps({}))
    for name in ("distutils", "distutils.util"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ModelSpecError, match="distutils.*pip install setuptools"):
        load_generator(stylegan_spec(path, code_dir=str(checkout)))


def test_custom_ops_use_the_extension_that_load_returns(xl_pickle, monkeypatch):
    load_generator(stylegan_spec(xl_pickle))
    bias_act = sys.modules["torch_utils.ops.bias_act"]
    extension = types.ModuleType("bias_act_plugin")
    built = []
    monkeypatch.setattr(torch.utils.cpp_extension, "load", lambda name, **kw: built.append(name) or extension)
    monkeypatch.setitem(bias_act.__dict__, "_init", bias_act._init.__wrapped__)
    # The repositories' loader imports the built module by name, which recent PyTorch does not allow.
    monkeypatch.setattr(
        sys.modules["torch_utils.custom_ops"],
        "get_plugin",
        sys.modules["torch_utils.custom_ops"].get_plugin.__wrapped__,
    )
    with pytest.raises(ModuleNotFoundError, match="bias_act_plugin"):
        bias_act._init()
    assert stylegan.patch_custom_ops() == ["torch_utils.custom_ops", "torch_utils.ops.bias_act"]
    assert bias_act._init() is True
    assert bias_act._plugin is extension and built == ["bias_act_plugin", "bias_act_plugin"]


def test_custom_ops_fall_back_to_reference_with_a_warning(xl_pickle, monkeypatch):
    load_generator(stylegan_spec(xl_pickle))
    bias_act = sys.modules["torch_utils.ops.bias_act"]
    attempts = []

    def no_compiler(name, **kwargs):
        attempts.append(name)
        raise RuntimeError("nvcc not found")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", no_compiler)
    with pytest.warns(RuntimeWarning, match="reference implementation"):
        assert bias_act._init() is False
    assert bias_act._init() is False
    assert attempts == ["bias_act_plugin"]
    stylegan.patch_custom_ops(use_custom_ops=False)
    assert bias_act._init() is False and attempts == ["bias_act_plugin"]


# --- the paper's template config ----------------------------------------------------------


def test_paper_template_config_validates_and_builds_the_papers_classifier():
    import jsonschema
    import yaml

    root = CODE_DIR.parents[2]
    config = yaml.safe_load((root / "config" / "imagenet_resnet50_stylegan_xl.yaml").read_text())
    jsonschema.validate(config, yaml.safe_load((root / "workflow" / "schemas" / "config.schema.yaml").read_text()))
    assert config["classes"] == [232, 254, 151, 197, 178]
    assert (config["samples"]["train"], config["samples"]["truncation"], config["tuning"]["steps"]) == (5000, 0.7, 3)
    assert config["units"] == "all" and config["generator"]["kind"] == "stylegan_pkl"
    # Random weights stand in for the cached ImageNet ones; layer and preprocessing are the template's.
    classifier = load_classifier({**config["classifier"], "weights": None})
    assert classifier.num_units == 2048 and classifier.head is classifier.network.fc
    assert (classifier.preprocess.resize, classifier.preprocess.crop) == (256, 224)


# --- the paper-loop baseline of the benchmark ---------------------------------------------


def test_paper_loop_baseline_renders_the_sweeps_of_the_batched_path(xl_pickle, tmp_path):
    from pipeline.stages.common import render_and_encode
    from pipeline.stages.link import AffineLink
    from pipeline.stages.perturb import sweep_latents, sweep_values

    spec = importlib.util.spec_from_file_location("paper_loop", CODE_DIR.parents[2] / "bench" / "paper_loop.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    generator = load_generator(stylegan_spec(xl_pickle))
    classifier = load_classifier(torchvision_spec(preprocess={"resize": 32, "crop": 32}))
    r, w = bench.base_activations(classifier, generator, samples=2, truncation=0.7, device=torch.device("cpu"))
    spread = r.max(0).values - r.min(0).values
    units = np.sort(np.argsort(spread.numpy())[-2:])
    # Scaled so that sweeping a unit over its range moves w by about one unit: renders change visibly.
    weight = torch.randn(generator.w_dim, classifier.num_units, generator=torch.Generator().manual_seed(2))
    weight = weight / spread.max()
    bias = w.mean(0) - r.mean(0) @ weight.T
    ranges = np.stack([r[:, units].min(0).values.numpy(), r[:, units].max(0).values.numpy()], axis=1)
    achieved = bench.paper_loop(
        classifier, generator, weight.numpy(), bias.numpy(), r.numpy(), units, ranges, steps=3, out_dir=tmp_path
    )

    values = torch.from_numpy(sweep_values(ranges[:, 0], ranges[:, 1], 3))
    sweep = sweep_latents(AffineLink(weight, bias), r, units, values)  # [K, P, S, w_dim]
    encoded = render_and_encode(
        generator, classifier, sweep.reshape(-1, generator.w_dim), batch_size=12, device=torch.device("cpu"),
        label="batched", keep_images=True,
    )  # fmt: skip
    unit = units[1]
    with zipfile.ZipFile(tmp_path / f"sample_1_unit_{unit}.zip") as archive:
        names = [f"sample_1_unit_{unit}_step_{step}.png" for step in range(3)]
        paper_images = [np.array(Image.open(io.BytesIO(archive.read(name)))) for name in names]
    batched_images = encoded.images.reshape(2, 2, 3, *encoded.images.shape[1:])[1, 1]
    # The paper truncates to 8 bits, the stages round: one level apart at most.
    assert np.abs(np.stack(paper_images).astype(int) - batched_images.astype(int)).max() <= 1
    assert np.ptp(batched_images.astype(int), axis=0).max() > 10, "the sweep must change the render"
    batched = np.take_along_axis(encoded.r.reshape(2, 2, 3, -1), units[:, None, None, None], axis=-1)[..., 0]
    np.testing.assert_allclose(achieved.transpose(1, 0, 2), batched, atol=0.05 * float(np.abs(batched).max()))


def test_the_benchmarks_stylegan2_like_stand_in_speaks_the_generator_protocol(monkeypatch):
    monkeypatch.syspath_prepend(str(CODE_DIR.parents[2] / "bench"))
    kwargs = {"c_dim": 4, "widths": [16, 8, 8]}
    spec = {"kind": "python", "entrypoint": "stylegan2_like:StyleGAN2Like", "kwargs": kwargs}
    generator = load_generator(spec)
    assert (generator.img_resolution, generator.num_ws) == (16, 6)
    z = torch.randn(3, generator.z_dim, generator=torch.Generator().manual_seed(0))
    c = torch.nn.functional.one_hot(torch.tensor([0, 1, 3]), 4).float()
    with torch.no_grad():
        ws = generator.mapping(z, c, truncation_psi=0.7)
        images = generator.synthesis(ws)
    assert ws.shape == (3, 6, generator.w_dim) and images.shape == (3, 3, 16, 16)
    assert images.abs().max() <= 1 and images.std() > 0.05
    # With w_avg at zero, truncation 0 gives the same w for every sample of a class.
    with torch.no_grad():
        same = generator.mapping(z[:2], c[[0, 0]], truncation_psi=0.0)
    torch.testing.assert_close(same[0], same[1])

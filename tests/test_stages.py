"""Stage functions on tiny arrays and the tiny models, without Snakemake."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline.stages import common
from pipeline.stages.common import (
    ModelSetup,
    check_finite,
    code_version,
    imported_modules,
    render_and_encode,
    run_stage,
    synthesize,
    tile,
)
from pipeline.stages.config import ConfigError, chunk_units, load_schema, select_units, validate_config
from pipeline.stages.extract import extract_activations
from pipeline.stages.link import (
    AffineLink,
    column_tests,
    cross_validate_alpha,
    fit_mlp,
    fit_ridge,
    load_link,
    load_mlp_link,
    r2_score,
    save_link,
    unit_correlations,
)
from pipeline.stages.measure import gather_tables, sweep_table
from pipeline.stages.nulls import direction_sweeps, random_directions, typical_span
from pipeline.stages.perturb import sweep_domain, sweep_latents, sweep_values
from pipeline.stages.sample import latents_from_seeds, map_latents, sample_latents
from pipeline.stages.samples import Samples
from pipeline.stages.units import compute_ranges, probe_rows, probe_samples
from pipeline.store import read_zarr, write_parquet, write_zarr
from tests.conftest import REPO_ROOT, TINY_CLASSIFIER, TINY_GENERATOR
from tests.tiny_models import TinyClassifier, tiny_classifier, tiny_generator

SCHEMA = load_schema(REPO_ROOT / "workflow/schemas/config.schema.yaml")


class NeverRightClassifier(TinyClassifier):
    """Predicts the last class for every image, so no sample of classes 0 or 1 is accepted."""

    @property
    def head(self):
        return lambda r: torch.nn.functional.one_hot(
            torch.full((len(r),), self.num_classes - 1), self.num_classes
        ).float()


def never_right_classifier() -> NeverRightClassifier:
    return NeverRightClassifier()


# --- configuration ---------------------------------------------------------------------


def test_schema_defaults_equal_the_shipped_default_config() -> None:
    shipped = validate_config(yaml.safe_load((REPO_ROOT / "config/config.yaml").read_text()), SCHEMA)
    # The deliberate differences: the default run explains the breeds world's models (a
    # config that names no models gets the small shapes world's), segments parts at the
    # image's size with a longer training, searches counterfactuals for six class pairs and
    # runs the planted-unit validation beside it, while a config that names no pairs (e.g. a
    # small test run) skips those stages.
    assert shipped.pop("classifier") == {"kind": "builtin", "name": "breeds-classifier"}
    assert shipped.pop("generator") == {"kind": "builtin", "name": "breeds-generator"}
    shipped_segmentation = {key: shipped["segmentation"].pop(key) for key in ("size", "epochs", "lr")}
    assert shipped_segmentation == {"size": 64, "epochs": 400, "lr": 0.01}
    assert shipped["counterfactuals"].pop("pairs") == [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 0]]
    assert shipped["validation"].pop("enabled") is True
    defaults = validate_config({"classes": shipped["classes"]}, SCHEMA)
    assert defaults.pop("classifier")["name"] == "shapes-classifier"
    assert defaults.pop("generator")["name"] == "shapes-generator"
    for key in ("size", "epochs", "lr"):
        defaults["segmentation"].pop(key)
    assert defaults["counterfactuals"].pop("pairs") == []
    assert defaults["validation"].pop("enabled") is False
    assert defaults == shipped


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"tuning": {"chunk_sise": 2}}, "config key 'tuning.chunk_sise' is unknown"),
        ({"runn": "x"}, "config key 'runn' is unknown"),
        ({"tuning": {"chunk_size": 0}}, "config key 'tuning.chunk_size': 0 is less than the minimum of 1"),
        ({"samples": {"train": "many"}}, "config key 'samples.train': 'many' is not of type 'integer'"),
        ({"units": "some"}, "config key 'units': 'some' is not one of the allowed forms"),
        ({"units": {"start": 4, "stop": 2}}, "config key 'units': stop (2) must be greater than start (4)"),
        ({"device": "gpu"}, "config key 'device'"),
        ({"classifier": {"name": "x"}}, "config key 'classifier': 'kind' is a required property"),
    ],
)
def test_bad_config_gets_one_line_naming_the_key(config: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        validate_config(config, SCHEMA)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_command_line_strings_get_the_schema_types() -> None:
    # What `--config link='{alpha: 10}' units='[1, 2]'` hands over: YAML's base loader keeps strings.
    config = validate_config({"link": {"alpha": "10", "mlp": "true"}, "units": ["1", "2"], "run": "42"}, SCHEMA)
    assert config["link"]["alpha"] == 10 and config["link"]["mlp"] is True
    assert config["units"] == [1, 2]
    assert config["run"] == "42"


def test_every_config_key_is_documented() -> None:
    readme = (REPO_ROOT / "config/README.md").read_text()

    def keys(schema: dict, prefix: str = "") -> list[str]:
        found = []
        for name, sub in schema.get("properties", {}).items():
            found.append(prefix + name)
            found += keys(sub, f"{prefix}{name}.")
        return found

    missing = [key for key in keys(SCHEMA) if f"`{key}`" not in readme]
    assert not missing


def test_unit_selection_and_its_errors() -> None:
    assert select_units("all", 4) == [0, 1, 2, 3]
    assert select_units([3, 1, 3], 4) == [1, 3]
    assert select_units({"start": 1, "stop": 3}, 4) == [1, 2]
    with pytest.raises(ConfigError, match="unit 4 is out of range; the classifier has 4 units"):
        select_units([1, 4], 4)


def test_chunks_are_keyed_by_unit_id_so_new_units_leave_other_chunks_alone() -> None:
    before = chunk_units([0, 1, 2, 5], 3)
    after = chunk_units([0, 1, 2, 5, 9], 3)
    assert before == {0: [0, 1, 2], 1: [5]}
    assert after == {**before, 3: [9]}
    with pytest.raises(ConfigError, match="tuning.chunk_size"):
        chunk_units([0], 0)


# --- shared helpers ----------------------------------------------------------------------


def test_code_version_follows_the_modules_a_stage_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "stages").mkdir()
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "stages/__init__.py").write_text("")
    (tmp_path / "stages/a.py").write_text("import numpy\nfrom pipeline.stages import b\n")
    # Imported inside a function, under its package's name, and relative to it.
    (tmp_path / "stages/b.py").write_text("def f():\n    import pipeline.helpers\n    from . import c\n")
    (tmp_path / "stages/c.py").write_text("C = 1\n")
    (tmp_path / "helpers.py").write_text("H = 1\n")
    (tmp_path / "unrelated.py").write_text("U = 1\n")
    monkeypatch.setattr(common, "PACKAGE_ROOT", tmp_path)
    assert imported_modules("stages.a") == {"", "stages", "stages.a", "stages.b", "stages.c", "helpers"}
    version = code_version("stages.a")
    (tmp_path / "unrelated.py").write_text("U = 2\n")
    assert code_version("stages.a") == version
    (tmp_path / "helpers.py").write_text("H = 2\n")
    assert code_version("stages.a") != version
    assert code_version("stages.absent") == code_version("stages.absent")


def test_a_stage_s_code_is_the_package_modules_it_imports() -> None:
    extract = imported_modules("stages.extract")
    assert {"stages.common", "store", "models.registry", "models.adapters.builtin", "device"} <= extract
    assert not {"stats", "reporting", "stages.link", "adaptive"} & extract
    assert {"stages.perturb", "stages.measure", "stats", "adaptive"} <= imported_modules("stages.perturb_adaptive")


def test_run_stage_logs_the_failure_in_one_line(tmp_path: Path) -> None:
    def failing_stage(value: int) -> None:
        raise ValueError(f"config key 'x': {value} is wrong")

    log_path = tmp_path / "logs/stage.log"
    with pytest.raises(ValueError):
        run_stage(failing_stage, log_path=log_path, threads=torch.get_num_threads(), value=3)
    assert "ERROR" in log_path.read_text() and "ValueError: config key 'x': 3 is wrong" in log_path.read_text()


def test_bad_generator_output_and_nan_activations_are_named() -> None:
    generator = tiny_generator()
    generator.synthesis = lambda ws: torch.zeros(len(ws), 1, 8, 8)
    with pytest.raises(ValueError, match=r"generator: synthesis returned shape \[2, 1, 8, 8\]"):
        synthesize(generator, torch.zeros(2, generator.w_dim))
    with pytest.raises(ValueError, match="activations: 1 of 3 rows contain NaN or Inf"):
        check_finite("activations", np.array([[0.0, 1.0], [np.nan, 1.0], [2.0, 3.0]]))


def test_render_and_encode_does_not_depend_on_the_batch_size() -> None:
    generator, classifier = tiny_generator(), tiny_classifier()
    w = torch.randn(10, generator.w_dim, generator=torch.Generator().manual_seed(0))
    kwargs = {"device": torch.device("cpu"), "label": "test", "keep_images": True}
    small = render_and_encode(generator, classifier, w, batch_size=3, **kwargs)
    large = render_and_encode(generator, classifier, w, batch_size=10, **kwargs)
    np.testing.assert_allclose(small.r, large.r, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(small.images, large.images)
    assert small.images.shape == (10, 32, 32, 3) and small.logits.shape == (10, 8)


def test_classifier_passes_on_a_cpu_give_the_activations_of_one_pass(monkeypatch) -> None:
    classifier = tiny_classifier()
    images = torch.rand(11, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = classifier.features(images)
        monkeypatch.setattr(common, "CLASSIFIER_CPU_CHUNK", 4)
        in_passes = common.classify(classifier, images)
    assert in_passes.shape == whole.shape
    torch.testing.assert_close(in_passes, whole, rtol=1e-5, atol=1e-6)


def test_render_and_encode_at_bf16_stays_close_to_fp32_and_keeps_its_outputs_fp32() -> None:
    generator, classifier = tiny_generator(), tiny_classifier()
    w = torch.randn(12, generator.w_dim, generator=torch.Generator().manual_seed(1))
    kwargs = {"batch_size": 5, "device": torch.device("cpu"), "label": "test", "keep_images": True}
    exact = render_and_encode(generator, classifier, w, **kwargs)
    reduced = render_and_encode(generator, classifier, w, precision="bf16", **kwargs)
    assert reduced.r.dtype == np.float32 and reduced.logits.dtype == np.float32
    # bf16 keeps 8 bits of mantissa: relative errors of a few percent, not more.
    scale = np.abs(exact.r).max()
    assert np.abs(reduced.r - exact.r).max() <= 0.05 * scale
    assert not np.array_equal(reduced.r, exact.r)
    with pytest.raises(ValueError, match="precision: fp16 needs a CUDA device"):
        render_and_encode(generator, classifier, w, precision="fp16", **kwargs)
    with pytest.raises(ValueError, match="precision: expected one of fp32, bf16, fp16, got 'int8'"):
        render_and_encode(generator, classifier, w, precision="int8", **kwargs)


def test_tile_places_images_on_a_grid_with_gaps() -> None:
    images = np.arange(2 * 3, dtype=np.uint8).reshape(2, 3, 1, 1, 1).repeat(4, axis=2).repeat(5, axis=3).repeat(3, 4)
    canvas = tile(images, gap=1, fill=255)
    assert canvas.shape == (2 * 4 + 1, 3 * 5 + 2, 3)
    assert canvas[5, 6, 0] == images[1, 1, 0, 0, 0] and canvas[4, 0, 0] == 255


# --- sample and extract ------------------------------------------------------------------


def sample_kwargs(classifier: dict = TINY_CLASSIFIER, **overrides) -> dict:
    kwargs = {
        "models": ModelSetup(classifier, TINY_GENERATOR, device="cpu"),
        "classes": [0, 1],
        "train": 4,
        "test": 2,
        "probe": 2,
        "truncation": 0.7,
        "seed": 3,
        "require_correct": True,
        "max_draws": 20,
        "batch_size": 64,
    }
    return kwargs | overrides


def test_sampling_fills_each_split_per_class_and_is_reproducible(tmp_path: Path) -> None:
    sample_latents(tmp_path / "a.zarr", **sample_kwargs())
    sample_latents(tmp_path / "b.zarr", **sample_kwargs(batch_size=5))
    a, attrs = read_zarr(tmp_path / "a.zarr")
    b, _ = read_zarr(tmp_path / "b.zarr")
    for name in ("class", "seed", "draw", "split"):
        np.testing.assert_array_equal(a[name], b[name])
    np.testing.assert_allclose(a["w"], b["w"], rtol=1e-6, atol=1e-7)
    for class_id in (0, 1):
        splits = a["split"][a["class"] == class_id]
        assert {s: int(np.sum(splits == s)) for s in ("train", "test", "probe")} == {"train": 4, "test": 2, "probe": 2}
    # Each sample's latent is reproducible from its stored seed alone.
    generator = tiny_generator()
    z = latents_from_seeds(generator, a["seed"])
    w = map_latents(generator, z, a["class"], 0.7, batch_size=64, device=torch.device("cpu"))
    np.testing.assert_allclose(w.numpy(), a["w"], rtol=1e-6)
    assert attrs["generator"] == TINY_GENERATOR and attrs["require_correct"] is True

    extract_activations(
        tmp_path / "a.zarr",
        tmp_path / "activations.zarr",
        models=ModelSetup(TINY_CLASSIFIER, TINY_GENERATOR, device="cpu"),
        require_correct=True,
        batch_size=64,
    )
    activations, _ = read_zarr(tmp_path / "activations.zarr")
    assert activations["r"].shape == (16, 16) and activations["logits"].shape == (16, 8)
    np.testing.assert_array_equal(activations["accepted"], activations["pred"] == a["class"])
    assert activations["accepted"].all()


def test_sampling_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="config key 'classes': class 8 is out of range for the generator"):
        sample_latents(tmp_path / "x.zarr", **sample_kwargs(classes=[0, 8]))
    never_right = {"kind": "python", "entrypoint": "tests.test_stages:never_right_classifier"}
    with pytest.raises(ValueError, match="samples: no candidate of class 0 was classified as class 0 in 8 draws"):
        sample_latents(tmp_path / "x.zarr", **sample_kwargs(classifier=never_right, max_draws=1))
    assert not (tmp_path / "x.zarr").exists()


def test_without_the_class_filter_every_draw_is_kept(tmp_path: Path) -> None:
    never_right = {"kind": "python", "entrypoint": "tests.test_stages:never_right_classifier"}
    sample_latents(tmp_path / "l.zarr", **sample_kwargs(classifier=never_right, require_correct=False))
    latents, attrs = read_zarr(tmp_path / "l.zarr")
    np.testing.assert_array_equal(latents["draw"], np.tile(np.arange(8), 2))
    assert attrs["require_correct"] is False


# --- link ----------------------------------------------------------------------------------


def test_ridge_recovers_an_affine_map_and_cv_prefers_strong_shrinkage_on_noise() -> None:
    generator = torch.Generator().manual_seed(0)
    r = torch.rand(300, 6, generator=generator) * torch.tensor([1.0, 10.0, 0.1, 1.0, 1.0, 0.0])
    weight, bias = torch.randn(4, 6, generator=generator), torch.randn(4, generator=generator)
    weight[:, 5] = 0.0  # a dead unit: constant, so its weight is unidentifiable and must stay 0
    w = r @ weight.T + bias
    (link,) = fit_ridge(r, w, [1e-6])
    torch.testing.assert_close(link.weight, weight, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(link.bias, bias, rtol=1e-3, atol=1e-3)
    assert r2_score(link(r), w) > 0.999999
    assert r2_score(w.mean(dim=0).expand_as(w), w) == pytest.approx(0.0, abs=1e-12)

    # Many units, few samples and targets that are pure noise: only heavy shrinkage generalises.
    wide = torch.rand(60, 40, generator=generator)
    noise = torch.randn(60, 4, generator=generator)
    alpha, mse = cross_validate_alpha(wide, noise, [0.01, 1.0, 1e6], folds=3, seed=0)
    assert alpha == 1e6 and list(mse) == ["0.01", "1.0", "1000000.0"]
    with pytest.raises(ValueError, match="link.folds"):
        cross_validate_alpha(r[:2], noise[:2], [1.0], folds=3, seed=0)


def test_column_tests_tell_learnt_columns_from_fitting_noise() -> None:
    # w is read from 8 signal units through correlated latent dims; 200 units are pure noise
    # and one is constant. Noise columns must get roughly uniform p-values, signal ones tiny.
    generator = torch.Generator().manual_seed(1)
    n, signal, noise_units, w_dim = 2000, 8, 200, 16
    r = torch.cat(
        [torch.randn(n, signal + noise_units, generator=generator), torch.full((n, 1), 3.0)], dim=1
    ).double()
    mixing = torch.randn(signal, w_dim, generator=generator).double()
    correlated = torch.randn(w_dim, w_dim, generator=generator).double()
    w = r[:, :signal] @ mixing + 0.5 * torch.randn(n, w_dim, generator=generator).double() @ correlated
    tests = column_tests(r, w, alpha=10.0)
    assert tests["unit"].tolist() == list(range(signal + noise_units + 1))
    assert (tests["p"][:signal] < 1e-12).all()
    noise_p = tests["p"][signal:-1]
    assert 0.02 < (noise_p <= 0.05).mean() < 0.1 and 0.4 < (noise_p <= 0.5).mean() < 0.6
    # A noise column is about as long as the noise it is made of.
    ratio = tests["w_norm"] / tests["noise_norm"]
    assert 0.8 < ratio[signal:-1].median() < 1.2 and ratio[:signal].min() > 10
    assert tests["p"].iloc[-1] == 1.0 and tests["w_norm"].iloc[-1] == pytest.approx(0.0, abs=1e-9)


def test_sweep_domain_places_each_sweeps_ends_against_the_training_latents(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    n, w_dim = 400, 6
    split = np.array(["train"] * 300 + ["probe"] * 100)
    r = rng.standard_normal((n, 2)).astype(np.float32)
    # w follows the link exactly, so every sample's latent is a natural one.
    weight = np.zeros((w_dim, 2), dtype=np.float32)
    weight[0, 0], weight[1, 1] = 1.0, 1.0
    w = r @ weight.T + 0.5 * rng.standard_normal((n, w_dim)).astype(np.float32)
    write_zarr(tmp_path / "latents.zarr", {"w": w, "class": np.zeros(n, dtype=np.int64), "split": split})
    write_zarr(tmp_path / "activations.zarr", {"r": r, "accepted": np.ones(n, dtype=bool)})
    # Unit 0 sweeps over its natural range; unit 1 over twenty times as far.
    ranges = pd.DataFrame({"unit": [0, 1], "low": [-2.0, -40.0], "high": [2.0, 40.0]})
    write_parquet(tmp_path / "ranges.parquet", ranges)
    save_link(tmp_path / "link.pt", AffineLink(torch.from_numpy(weight), torch.zeros(w_dim)), 1.0, None, hidden=8)
    samples = Samples(tmp_path / "latents.zarr", tmp_path / "activations.zarr")
    domain = sweep_domain(samples, tmp_path / "link.pt", tmp_path / "ranges.parquet", [0, 1])
    assert list(domain.index) == [0, 1]
    assert domain.loc[0, "sweep_end_distance"] < 1.0 and domain.loc[0, "sweep_in_domain"] > 0.8
    assert domain.loc[1, "sweep_end_distance"] > 5.0 and domain.loc[1, "sweep_in_domain"] == 0.0


def test_link_round_trips_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(1)
    r, w = torch.rand(64, 5, generator=generator), torch.randn(64, 3, generator=generator)
    (affine,) = fit_ridge(r, w, [1.0])
    mlp = fit_mlp(r, w, hidden=8, epochs=3, seed=0, batch_size=16)
    save_link(tmp_path / "model.pt", affine, 1.0, mlp, hidden=8)
    torch.testing.assert_close(load_link(tmp_path / "model.pt")(r), affine(r))
    with torch.no_grad():
        torch.testing.assert_close(load_mlp_link(tmp_path / "model.pt")(r), mlp(r))
    save_link(tmp_path / "ridge.pt", affine, 1.0, None, hidden=8)
    assert load_mlp_link(tmp_path / "ridge.pt") is None
    with pytest.raises(FileNotFoundError, match="absent.pt: link model not found"):
        load_link(tmp_path / "absent.pt")


def test_unit_correlations_are_per_column_and_nan_for_constant_columns() -> None:
    a = np.array([[1.0, 5.0, 1.0], [2.0, 5.0, 2.0], [3.0, 5.0, 3.0]])
    b = np.array([[2.0, 1.0, 3.0], [4.0, 2.0, 2.0], [6.0, 3.0, 1.0]])
    np.testing.assert_allclose(unit_correlations(a, b), [1.0, np.nan, -1.0])


# --- ranges, sweeps and null controls --------------------------------------------------------


def test_ranges_are_quantiles_over_the_accepted_probe_samples(tmp_path: Path) -> None:
    r = np.arange(20, dtype=np.float32).reshape(10, 2)
    ranges = compute_ranges(r, [0.0, 1.0])
    assert ranges[["low", "high"]].to_numpy().tolist() == [[0.0, 18.0], [1.0, 19.0]]
    assert compute_ranges(r, [0.5, 0.5])["low"].tolist() == [9.0, 10.0]

    write_zarr(tmp_path / "latents.zarr", {"split": np.array(["train", "probe", "probe"])})
    write_zarr(tmp_path / "activations.zarr", {"accepted": np.array([True, False, True]), "r": r[:3]})
    samples = Samples(tmp_path / "latents.zarr", tmp_path / "activations.zarr")
    rows, probe = probe_samples(samples, latents=("split",), activations=("r",))
    assert rows.tolist() == [2] and probe["split"].tolist() == ["probe"]
    np.testing.assert_array_equal(probe["r"], r[2:3])
    assert probe_rows(tmp_path / "latents.zarr", tmp_path / "activations.zarr").tolist() == [2]
    write_zarr(tmp_path / "activations.zarr", {"accepted": np.array([True, False, False])})
    with pytest.raises(ValueError, match="no accepted probe sample"):
        probe_rows(tmp_path / "latents.zarr", tmp_path / "activations.zarr")


def test_sweep_latents_equal_the_link_of_the_edited_activations() -> None:
    generator = torch.Generator().manual_seed(2)
    link = AffineLink(torch.randn(4, 6, generator=generator), torch.randn(4, generator=generator))
    r = torch.rand(3, 6, generator=generator)
    units = [1, 4]
    values = torch.from_numpy(sweep_values(np.array([0.0, -1.0]), np.array([1.0, 1.0]), 5))
    assert values[:, 0].tolist() == [0.0, -1.0] and values[:, -1].tolist() == [1.0, 1.0]
    w = sweep_latents(link, r, units, values)
    assert w.shape == (2, 3, 5, 4)
    for k, unit in enumerate(units):
        for s in range(5):
            edited = r.clone()
            edited[:, unit] = values[k, s].float()
            torch.testing.assert_close(w[k, :, s], link(edited), rtol=1e-5, atol=1e-5)


def test_direction_sweeps_move_only_along_their_direction() -> None:
    r = np.random.default_rng(0).random((5, 8)).astype(np.float32)
    directions = random_directions(3, 8, seed=1)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0)
    np.testing.assert_array_equal(directions, random_directions(3, 8, seed=1))
    swept, requested = direction_sweeps(r, directions, span=2.0, steps=4)
    assert swept.shape == (3, 5, 4, 8)
    np.testing.assert_allclose(requested[:, -1] - requested[:, 0], 2.0)
    projections = np.einsum("dpsu,du->dps", swept, directions)
    np.testing.assert_allclose(projections, np.broadcast_to(requested[:, None, :], (3, 5, 4)), atol=1e-5)
    residual = swept - projections[..., None] * directions[:, None, None, :]
    original = r - (r @ directions.T).T[:, :, None] * directions[:, None, :]
    np.testing.assert_allclose(residual, np.broadcast_to(original[:, :, None, :], residual.shape), atol=1e-5)


def test_typical_span_ignores_constant_units() -> None:
    ranges = pd.DataFrame({"low": [0.0, 1.0, 2.0, 3.0], "high": [0.0, 2.0, 5.0, 3.0]})
    assert typical_span(ranges) == 2.0
    with pytest.raises(ValueError, match="every unit is constant"):
        typical_span(ranges.iloc[[0, 3]])


# --- tables and report ------------------------------------------------------------------------


def test_sweep_table_rows_follow_sweep_then_step_and_gathering_sorts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n, steps = 2, 3
    images = rng.integers(0, 255, (n, steps, 24, 24, 3), dtype=np.uint8)
    masks = np.zeros((n, steps, 24, 24), dtype=bool)
    masks[..., 6:18, 6:18] = True
    columns = {name: rng.random((n, steps)).astype(np.float32) for name in ("requested", "achieved", "pred_prob")}
    columns["achieved_change"] = columns["achieved"] - columns["achieved"][:, :1]
    columns["target_prob"] = columns["pred_prob"]
    columns |= {"others_mean_abs_change": np.zeros((n, steps)), "pred": np.zeros((n, steps), dtype=np.int64)}
    columns["w_distance"] = np.abs(columns["requested"] - columns["requested"][:, :1])
    table = sweep_table(np.array([7, 3]), np.array([10, 11]), np.array([1, 0]), columns, images, masks)
    assert table[["unit", "sample", "step"]].values.tolist() == [[7, 10, 0], [7, 10, 1], [7, 10, 2]] + [
        [3, 11, 0],
        [3, 11, 1],
        [3, 11, 2],
    ]
    np.testing.assert_array_equal(table["requested"], columns["requested"].reshape(-1))
    assert table["object.area"].iloc[0] == pytest.approx(144 / 576)

    write_parquet(tmp_path / "chunk-2.parquet", table[table["unit"] == 7])
    write_parquet(tmp_path / "chunk-1.parquet", table[table["unit"] == 3])
    gather_tables([tmp_path / "chunk-2.parquet", tmp_path / "chunk-1.parquet"], tmp_path / "all.parquet")
    gathered = pd.read_parquet(tmp_path / "all.parquet")
    assert gathered["unit"].tolist() == [3, 3, 3, 7, 7, 7]
    with pytest.raises(ValueError, match="unit 3 and sample 11 appear in more than one chunk"):
        gather_tables([tmp_path / "chunk-1.parquet", tmp_path / "chunk-1.parquet"], tmp_path / "twice.parquet")



def test_stage_modules_take_no_snakemake_objects() -> None:
    for module in (REPO_ROOT / "pipeline/stages").glob("*.py"):
        assert not re.search(r"\bsnakemake\b", module.read_text()), module.name

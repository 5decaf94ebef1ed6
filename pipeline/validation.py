"""Ground truth for the whole pipeline: a glass-box classifier with planted and null units.

:func:`planted_classifier` wraps any classifier. Its units are the base classifier's, then
planted units whose activation is a known function of the image, then null units. Use it
as a classifier spec::

    {kind: python, entrypoint: "pipeline.validation:planted_classifier",
     kwargs: {base_spec: {kind: builtin, name: shapes-classifier}, n_null: 16, seed: 0}}

- Planted units read simple statistics of the image (below), standardised on a sample of
  the run's world (:func:`reference_statistics`; the base classifier's builtin world unless
  ``world`` names one, the shapes world for any other classifier), and apply a function to
  them, once per gain/offset pair (default: one
  copy). ``PLANTED_TRUTH`` names the measure each function should be explained by. Copies
  of one function are collinear, and a linear link shares a function's weight among them:
  with three copies each moved its measure about a third as far, and the effects fell two
  to three times, so several copies test the statistics less than several functions do.
- Held-back sets of functions, nonlinear or 0.7/0.3 mixtures of two statistics whose
  dominant one is the truth (``FUNCTION_SETS``, chosen by name). Each was held back until
  the statistics of its time were run on it once; a set that a later change of the
  statistics was informed by is a development set from then on. ``held-back-1`` showed
  that the first statistics missed every planted unit; ``held-back-2`` was then drawn at
  random and committed before it was run: with numpy's ``default_rng(20261126)``, four
  dominant statistics without replacement, two of the monotone nonlinearities
  tanh(1.5 z), softplus(1.5 z), sign(z) |z|^1.5 and exp(0.8 z) for the first two, and a
  random partner statistic for the 0.7/0.3 mixtures of the other two. ``held-back-3`` was
  drawn the same way from ``default_rng(20261127)``, the draw repeated from the same
  generator until none of its functions was in an earlier set (the fifth draw), and
  committed before it was run; ``held-back-4`` likewise from ``default_rng(20261128)``
  (the second draw).
- Null units are pure noise: a seeded hash of the image bytes, so re-encoding the same
  render gives the same value (runs stay reproducible and resumable) while the value has no
  relation to anything visible.
- The head is the base head on the base units only (zero weight on the others), so the
  predictions, and thus which samples are accepted, do not change; ``spatial_features`` is
  the base's, so object masks are the base classifier's too.

The image statistics are computed independently of :mod:`pipeline.measures`: the object
is a soft mask of pixels whose colour differs from the median colour of the image border,
while the measures' masks come from the classifier's features and a colour model. Both
assume that the border shows background; otherwise a planted unit and the measure it should
be found by agree only through the images.

:func:`score_validation` turns the pipeline's outputs into precision and recall of each of
a unit's two labels (unique and tuning) over planted units, and the fraction of null-unit
tests that came out selective.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from copy import deepcopy
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats as scipy_stats
from torch import nn

from pipeline.models.builtin import builtin_world
from pipeline.models.registry import load_classifier
from pipeline.segmentation.config import trained_model
from pipeline.stages.config import ConfigError
from pipeline.stages.link import unit_correlations
from pipeline.stats import held_out_residuals, within_class_association
from pipeline.world import sample

LUMA_WEIGHTS = (0.2126, 0.7152, 0.0722)
# Colour distance (RGB, in [0, 1]) from the border colour where a pixel starts to count as
# object, and the width of the ramp to full weight.
OBJECT_DISTANCE = 0.08
OBJECT_RAMP = 0.08
REFERENCE_IMAGES = 512
REFERENCE_SEED = 12345
DEFAULT_GAINS = (1.0,)
DEFAULT_OFFSETS = (0.0,)
# The world that standardises the statistics where neither the spec nor the base model names one.
DEFAULT_REFERENCE_WORLD = "shapes"
# How clearly a planted unit's residual must be associated with a component for the component
# to be its unique truth (a two-sided p-value, Bonferroni over the glass-box statistics).
RESIDUAL_DETECTION_P = 0.05

Statistics = Mapping[str, torch.Tensor]

# name -> (true measure, function of the standardised statistics)
PLANTED_FUNCTIONS: dict[str, tuple[str, Callable[[Statistics], torch.Tensor]]] = {
    "object_redness": ("object.redness", lambda z: z["object_redness"]),
    "object_area": ("object.area", lambda z: z["object_area"]),
    "object_x": ("object.x", lambda z: z["object_x"]),
    "object_y": ("object.y", lambda z: z["object_y"]),
    "object_luminance": ("object.luminance", lambda z: z["object_luminance"]),
    "background_luminance": ("background.luminance", lambda z: z["background_luminance"]),
}
HELD_BACK_1_FUNCTIONS: dict[str, tuple[str, Callable[[Statistics], torch.Tensor]]] = {
    "object_y_tanh": ("object.y", lambda z: torch.tanh(1.5 * z["object_y"])),
    "object_saturation_exp": ("object.saturation", lambda z: torch.exp(0.8 * z["object_saturation"])),
    "object_luminance_mix": (
        "object.luminance",
        lambda z: 0.7 * z["object_luminance"] + 0.3 * z["background_luminance"],
    ),
    "object_area_mix": ("object.area", lambda z: 0.7 * z["object_area"] + 0.3 * z["object_redness"]),
}
HELD_BACK_2_FUNCTIONS: dict[str, tuple[str, Callable[[Statistics], torch.Tensor]]] = {
    "object_x_power": ("object.x", lambda z: torch.sign(z["object_x"]) * z["object_x"].abs().pow(1.5)),
    "object_area_tanh": ("object.area", lambda z: torch.tanh(1.5 * z["object_area"])),
    "background_luminance_mix": (
        "background.luminance",
        lambda z: 0.7 * z["background_luminance"] + 0.3 * z["object_y"],
    ),
    "object_luminance_y_mix": ("object.luminance", lambda z: 0.7 * z["object_luminance"] + 0.3 * z["object_y"]),
}
HELD_BACK_3_FUNCTIONS: dict[str, tuple[str, Callable[[Statistics], torch.Tensor]]] = {
    "object_luminance_softplus": (
        "object.luminance",
        lambda z: torch.nn.functional.softplus(1.5 * z["object_luminance"]),
    ),
    "object_x_tanh": ("object.x", lambda z: torch.tanh(1.5 * z["object_x"])),
    "object_redness_mix": (
        "object.redness",
        lambda z: 0.7 * z["object_redness"] + 0.3 * z["background_luminance"],
    ),
    "object_area_luminance_mix": (
        "object.area",
        lambda z: 0.7 * z["object_area"] + 0.3 * z["background_luminance"],
    ),
}
HELD_BACK_4_FUNCTIONS: dict[str, tuple[str, Callable[[Statistics], torch.Tensor]]] = {
    "object_y_power": ("object.y", lambda z: torch.sign(z["object_y"]) * z["object_y"].abs().pow(1.5)),
    "background_luminance_exp": ("background.luminance", lambda z: torch.exp(0.8 * z["background_luminance"])),
    "object_redness_y_mix": ("object.redness", lambda z: 0.7 * z["object_redness"] + 0.3 * z["object_y"]),
    "object_saturation_x_mix": ("object.saturation", lambda z: 0.7 * z["object_saturation"] + 0.3 * z["object_x"]),
}
FUNCTION_SETS = {
    "planted": PLANTED_FUNCTIONS,
    "held-back-1": HELD_BACK_1_FUNCTIONS,
    "held-back-2": HELD_BACK_2_FUNCTIONS,
    "held-back-3": HELD_BACK_3_FUNCTIONS,
    "held-back-4": HELD_BACK_4_FUNCTIONS,
}
# Drawn sets whose results informed a change of the statistics: development sets now.
DEVELOPMENT_DRAWS = frozenset(
    {"drawn:20261204", "drawn:1796423902", "drawn:826790793", "drawn:808522718", "drawn:1018282877"}
)
PLANTED_TRUTH: dict[str, str] = {name: truth for name, (truth, _) in PLANTED_FUNCTIONS.items()}
# The measure of each statistic of image_statistics.
STATISTIC_MEASURES = {
    "object_area": "object.area",
    "object_x": "object.x",
    "object_y": "object.y",
    "object_redness": "object.redness",
    "object_luminance": "object.luminance",
    "object_saturation": "object.saturation",
    "background_luminance": "background.luminance",
    "object_hue": "object.hue",
}
# The statistics a drawn set plants functions of. Hue is a glass-box statistic only so that a
# unique truth is checked against it: redness, saturation and luminance leave one direction
# of colour unread, and what the rest of a layer leaves of a colour unit often lies there.
DRAWN_STATISTICS = tuple(name for name in STATISTIC_MEASURES if name != "object_hue")
# The weight of each statistic in the mixtures above, by measure; other functions have one.
MIXTURE_COMPONENTS: dict[str, dict[str, float]] = {
    "object_luminance_mix": {"object.luminance": 0.7, "background.luminance": 0.3},
    "object_area_mix": {"object.area": 0.7, "object.redness": 0.3},
    "background_luminance_mix": {"background.luminance": 0.7, "object.y": 0.3},
    "object_luminance_y_mix": {"object.luminance": 0.7, "object.y": 0.3},
    "object_redness_mix": {"object.redness": 0.7, "background.luminance": 0.3},
    "object_area_luminance_mix": {"object.area": 0.7, "background.luminance": 0.3},
    "object_redness_y_mix": {"object.redness": 0.7, "object.y": 0.3},
    "object_saturation_x_mix": {"object.saturation": 0.7, "object.x": 0.3},
}
NONLINEARITIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": lambda v: torch.tanh(1.5 * v),
    "softplus": lambda v: torch.nn.functional.softplus(1.5 * v),
    "power": lambda v: torch.sign(v) * v.abs().pow(1.5),
    "exp": lambda v: torch.exp(0.8 * v),
}
DRAWN_PREFIX = "drawn:"
DRAWN_NONLINEAR = 3
DRAWN_MIXTURES = 3


def drawn_functions(
    seed: int,
) -> tuple[dict[str, tuple[str, Callable[[Statistics], torch.Tensor]]], dict[str, dict[str, float]]]:
    """A planted set drawn from ``numpy.random.default_rng(seed)``, and its components.

    Six dominant statistics without replacement; the first three go through a random
    monotone nonlinearity of ``NONLINEARITIES``, the other three are 0.7/0.3 mixtures with
    a random partner statistic. Drawn when the classifier is built, so a new seed gives a
    set that nothing was tuned on.
    """
    rng = np.random.default_rng(seed)
    statistics = list(DRAWN_STATISTICS)
    dominant = [statistics[k] for k in rng.choice(len(statistics), DRAWN_NONLINEAR + DRAWN_MIXTURES, replace=False)]
    functions: dict[str, tuple[str, Callable[[Statistics], torch.Tensor]]] = {}
    components: dict[str, dict[str, float]] = {}
    for statistic in dominant[:DRAWN_NONLINEAR]:
        kind = list(NONLINEARITIES)[int(rng.integers(len(NONLINEARITIES)))]
        name = f"{statistic}_{kind}"
        functions[name] = (STATISTIC_MEASURES[statistic], _nonlinear(statistic, NONLINEARITIES[kind]))
        components[name] = {STATISTIC_MEASURES[statistic]: 1.0}
    for statistic in dominant[DRAWN_NONLINEAR:]:
        others = [other for other in statistics if other != statistic]
        partner = others[int(rng.integers(len(others)))]
        name = f"{statistic}_{partner}_mix"
        functions[name] = (STATISTIC_MEASURES[statistic], _mixture(statistic, partner))
        components[name] = {STATISTIC_MEASURES[statistic]: 0.7, STATISTIC_MEASURES[partner]: 0.3}
    return functions, components


def _nonlinear(statistic: str, shape: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Statistics], torch.Tensor]:
    return lambda z: shape(z[statistic])


def _mixture(statistic: str, partner: str) -> Callable[[Statistics], torch.Tensor]:
    return lambda z: 0.7 * z[statistic] + 0.3 * z[partner]


def function_components(name: str, truth: str) -> dict[str, float]:
    """The weight of each measure in a named function of the fixed sets."""
    return MIXTURE_COMPONENTS.get(name, {truth: 1.0})


def image_statistics(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The glass-box statistics of images float [B, 3, H, W] in [0, 1], each ``[B]``."""
    batch, _, height, width = images.shape
    x = images.float()
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, 1:-1, 0], x[:, :, 1:-1, -1]], dim=2)
    border_colour = border.median(dim=2).values[:, :, None, None]
    distance = (x - border_colour).square().sum(dim=1).sqrt()
    weight = ((distance - OBJECT_DISTANCE) / OBJECT_RAMP).clamp(0.0, 1.0)  # [B, H, W]
    background = 1.0 - weight
    object_total = weight.sum(dim=(1, 2)).clamp_min(1e-6)
    background_total = background.sum(dim=(1, 2)).clamp_min(1e-6)

    def object_mean(values: torch.Tensor) -> torch.Tensor:
        return (values * weight).sum(dim=(1, 2)) / object_total

    xs = ((torch.arange(width, device=x.device) + 0.5) / width).view(1, 1, width)
    ys = ((torch.arange(height, device=x.device) + 0.5) / height).view(1, height, 1)
    luma = torch.einsum("c,bchw->bhw", torch.tensor(LUMA_WEIGHTS, device=x.device), x)
    largest = x.amax(dim=1)
    saturation = (largest - x.amin(dim=1)) / largest.clamp_min(1e-6)
    redness = object_mean(x[:, 0] - 0.5 * (x[:, 1] + x[:, 2]))
    blue_green = object_mean((math.sqrt(3) / 2) * (x[:, 1] - x[:, 2]))
    return {
        "object_area": weight.mean(dim=(1, 2)),
        "object_x": object_mean(xs.expand(batch, height, width)),
        "object_y": object_mean(ys.expand(batch, height, width)),
        "object_redness": redness,
        "object_luminance": object_mean(luma),
        "object_saturation": object_mean(saturation),
        "background_luminance": (luma * background).sum(dim=(1, 2)) / background_total,
        # The angle of the mean colour in the opponent plane, in turns from red (-0.5, 0.5]:
        # the measured hue's angle, cut at cyan rather than at red, where coats lie.
        "object_hue": torch.atan2(blue_green, redness) / (2 * math.pi),
    }


class PlantedClassifier(nn.Module):
    """Base units, then planted units, then null units; the base head on the base units."""

    def __init__(
        self,
        base: Any,
        functions: Mapping[str, tuple[str, Callable[[Statistics], torch.Tensor]]],
        n_null: int,
        seed: int,
        gains: Sequence[float],
        offsets: Sequence[float],
        keep_base: bool = True,
        world: str = DEFAULT_REFERENCE_WORLD,
    ):
        super().__init__()
        if len(gains) != len(offsets) or not gains:
            raise ValueError(f"gains and offsets must be equally long and non-empty, got {gains!r} and {offsets!r}")
        if n_null < 0:
            raise ValueError(f"n_null must be >= 0, got {n_null}")
        self.base = base
        self.keep_base = keep_base
        self.base_units = int(base.num_units) if keep_base else 0
        self.num_classes = getattr(base, "num_classes", None) if keep_base else None
        self.functions = dict(functions)
        self.gains = torch.tensor(list(gains), dtype=torch.float32)
        self.offsets = torch.tensor(list(offsets), dtype=torch.float32)
        self.n_null = n_null
        self.seed = seed
        copies = len(gains)
        self.num_units = self.base_units + len(self.functions) * copies + n_null

        names = [f"base:{k}" for k in range(self.base_units)]
        self.unit_truth: dict[int, str | None] = {}
        for name, (truth, _) in self.functions.items():
            for copy in range(copies):
                self.unit_truth[len(names)] = truth
                names.append(f"planted:{name}:{copy}")
        for k in range(n_null):
            self.unit_truth[len(names)] = None
            names.append(f"null:{k}")
        self.unit_names = names

        self.world = world
        self.reference_mean, self.reference_std = reference_statistics(world)
        self._null_projections: dict[tuple[int, str], torch.Tensor] = {}

        # Without the base units in the layer there is nothing for the base head to read.
        base_head = getattr(base, "head", None) if keep_base else None
        if base_head is None:
            self.head = None
        elif isinstance(base_head, nn.Linear):
            self.head = nn.Linear(self.num_units, base_head.out_features, bias=base_head.bias is not None)
            with torch.no_grad():
                self.head.weight.zero_()
                self.head.weight[:, : self.base_units] = base_head.weight
                if base_head.bias is not None:
                    self.head.bias.copy_(base_head.bias)
        else:
            self.head = _BaseUnitsHead(base_head, self.base_units)
        if hasattr(base, "spatial_features"):
            self.spatial_features = base.spatial_features
        self.eval()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        planted = self.planted_activations(x)
        null = self.null_activations(x).to(planted.dtype)
        if not self.keep_base:
            return torch.cat([planted, null], dim=1)
        base = self.base.features(x)
        return torch.cat([base, planted.to(base.dtype), null.to(base.dtype)], dim=1)

    def planted_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, functions x copies]``: offset + gain x function, function-major."""
        return self.planted_from(self.standardised(x))

    def standardised(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The statistics of images ``x`` (:func:`image_statistics`), standardised on the reference world."""
        return {k: (v - self.reference_mean[k]) / self.reference_std[k] for k, v in image_statistics(x).items()}

    def planted_from(self, z: Statistics) -> torch.Tensor:
        """The planted activations of standardised statistics ``z`` (:meth:`standardised`)."""
        values = torch.stack([function(z) for _, function in self.functions.values()], dim=1)  # [B, F]
        gains, offsets = self.gains.to(values.device), self.offsets.to(values.device)
        return (offsets[None, None, :] + gains[None, None, :] * values[:, :, None]).flatten(1)

    def null_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, n_null]`` standard normal values, a seeded hash of each image."""
        if self.n_null == 0:
            return x.new_zeros(x.shape[0], 0)
        # Quantising to 8 bits first makes the hash depend on the image, not on float noise;
        # a random projection of thousands of pixel values spans thousands of integers, so
        # its fractional part is uniform and changes completely with any pixel.
        levels = (x.detach().flatten(1).to(torch.float64) * 255).round()
        projected = levels @ self._projection(levels.shape[1], levels.device)
        uniform = torch.remainder(projected, 1.0).clamp(1e-7, 1 - 1e-7)
        return (math.sqrt(2.0) * torch.erfinv(2 * uniform - 1)).float()

    def _projection(self, size: int, device: torch.device) -> torch.Tensor:
        key = (size, str(device))
        if key not in self._null_projections:
            generator = torch.Generator().manual_seed(self.seed)
            projection = torch.randn(size, self.n_null, generator=generator, dtype=torch.float64)
            self._null_projections[key] = projection.to(device)
        return self._null_projections[key]

    def to(self, *args, **kwargs) -> PlantedClassifier:
        if not isinstance(self.base, nn.Module):
            self.base = self.base.to(*args, **kwargs)
        return super().to(*args, **kwargs)


class _BaseUnitsHead(nn.Module):
    def __init__(self, head: Callable[[torch.Tensor], torch.Tensor], base_units: int):
        super().__init__()
        self.base_head = head
        self.base_units = base_units

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.base_head(r[:, : self.base_units])


def planted_classifier(
    base_spec: Mapping[str, Any],
    planted: Sequence[str] | None = None,
    n_null: int = 16,
    seed: int = 0,
    *,
    functions: str = "planted",
    gains: Sequence[float] = DEFAULT_GAINS,
    offsets: Sequence[float] = DEFAULT_OFFSETS,
    keep_base: bool = True,
    world: str | None = None,
) -> PlantedClassifier:
    """The glass-box classifier: ``base_spec``'s classifier plus planted and null units.

    ``functions`` names a set of ``FUNCTION_SETS``; ``planted`` names functions of that set,
    None plants all of them. Each is planted once per gain/offset pair. Without
    ``keep_base`` the layer holds the planted and null units alone (a small layer of clean
    image functions); the base still gives the object masks, but there is no head, so
    every sample counts as accepted. ``world`` names the world whose sample standardises
    the planted statistics (:func:`reference_statistics`); None takes the base classifier's
    builtin world, or the shapes world for any other base. A function such as tanh(1.5 z)
    is nonlinear only over the statistic's own spread: standardised on another world, z
    may sit wholly on one flank of it.
    """
    table, components = function_set_components(functions)
    names = list(table) if planted is None else list(planted)
    unknown = [name for name in names if name not in table]
    if unknown:
        raise ValueError(f"planted: unknown function {unknown[0]!r}; known: {', '.join(table)}")
    base = load_classifier(base_spec)
    world = standardisation_world(world, base_spec)
    functions_used = {name: table[name] for name in names}
    model = PlantedClassifier(base, functions_used, n_null, seed, gains, offsets, keep_base, world)
    model.components = {name: components[name] for name in names}
    return model


def function_set(name: str) -> dict[str, tuple[str, Callable[[Statistics], torch.Tensor]]]:
    """The planted functions of set ``name``: a key of ``FUNCTION_SETS`` or ``drawn:<seed>``."""
    return function_set_components(name)[0]


def function_set_components(
    name: str,
) -> tuple[dict[str, tuple[str, Callable[[Statistics], torch.Tensor]]], dict[str, dict[str, float]]]:
    """The planted functions of set ``name`` and each one's weight per measure."""
    if name.startswith(DRAWN_PREFIX) and name[len(DRAWN_PREFIX) :].isdigit():
        return drawn_functions(int(name[len(DRAWN_PREFIX) :]))
    if name not in FUNCTION_SETS:
        raise ValueError(f"functions: unknown set {name!r}; known: {', '.join(FUNCTION_SETS)} or drawn:<seed>")
    table = FUNCTION_SETS[name]
    return table, {function: function_components(function, truth) for function, (truth, _) in table.items()}


LABELS = ("unique", "tuning")


def score_validation(
    summary: pd.DataFrame,
    concepts: pd.DataFrame,
    planted_truth: Mapping[int, str | None],
    tuning: pd.DataFrame | None = None,
    unique_truth: Mapping[int, str] | None = None,
    tuning_truth: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """Precision and recall of each label over planted units, and the null units' false-positive rates.

    ``planted_truth`` maps unit ids to their true measure, or to None for a null unit (as
    :attr:`PlantedClassifier.unit_truth` does). For each label (``unique`` from the sweep,
    ``tuning`` from the association across samples, where ``tuning`` holds its tests):
    precision, correct labels over planted units that got one; recall, correct labels over
    all planted units. A planted unit whose label truth is None (a unique truth that the
    rest of the layer leaves undefined, :func:`unique_truths`) is scored by neither, and
    counted in ``{label}_n_without_truth``; its row keeps its label.
    ``{label}_null_false_positive_rate``: the selective tests over all
    tests of null units, a per-test false-positive rate (not a false discovery rate: null
    units are a handful among many tests). The tuning label's truth is ``tuning_truth``
    (from :func:`tuning_truths`) where given, the unique label's ``unique_truth`` (from
    :func:`unique_truths`); each falls back to the dominant statistic of the function.
    """
    truth = {int(unit): measure for unit, measure in planted_truth.items()}
    planted = sorted(unit for unit, measure in truth.items() if measure is not None)
    nulls = sorted(unit for unit, measure in truth.items() if measure is None)
    by_unit = summary.set_index("unit")
    missing = [unit for unit in planted + nulls if unit not in by_unit.index]
    if missing:
        raise KeyError(f"summary: planted or null unit {missing[0]} is missing")
    labels = [label for label in LABELS if f"{label}_measure" in by_unit.columns]
    tests = {"unique": concepts, "tuning": tuning}

    rows = []
    for unit in planted:
        row: dict[str, Any] = {"unit": unit, "truth": truth[unit]}
        row["unique_truth"] = (unique_truth or {}).get(unit, truth[unit])
        row["tuning_truth"] = (tuning_truth or {}).get(unit, truth[unit])
        label_truth = {"unique": row["unique_truth"], "tuning": row["tuning_truth"]}
        for label in labels:
            value = by_unit.at[unit, f"{label}_measure"]
            value = None if pd.isna(value) else str(value)
            row[f"{label}_measure"] = value
            row[f"{label}_correct"] = value == label_truth[label] if label_truth[label] is not None else None
            row[f"{label}_gate"] = by_unit.at[unit, f"{label}_gate"] if f"{label}_gate" in by_unit else None
        rows.append(row)
    score: dict[str, Any] = {}
    for label in labels:
        scored = [row for row in rows if row[f"{label}_truth"] is not None]
        labelled = [row for row in scored if row[f"{label}_measure"] is not None]
        correct = sum(row[f"{label}_correct"] for row in scored)
        score[f"{label}_precision"] = correct / len(labelled) if labelled else None
        score[f"{label}_recall"] = correct / len(scored) if scored else None
        score[f"{label}_n_labelled"] = len(labelled)
        score[f"{label}_n_correct"] = int(correct)
        score[f"{label}_n_without_truth"] = len(rows) - len(scored)
        label_tests = tests[label]
        null_tests = label_tests[label_tests["unit"].isin(nulls)] if label_tests is not None else pd.DataFrame()
        score[f"{label}_null_false_positive_rate"] = float(null_tests["selective"].mean()) if len(null_tests) else None
        score[f"{label}_n_null_tests"] = len(null_tests)
        score[f"{label}_n_null_selective"] = int(null_tests["selective"].sum()) if len(null_tests) else 0
    score["n_planted"] = len(planted)
    score["n_null_units"] = len(nulls)
    score["units"] = rows
    return score


def standardised_statistics(model: PlantedClassifier, images: torch.Tensor) -> pd.DataFrame:
    """The glass-box statistics of ``images`` float [B, 3, H, W] in [0, 1], standardised as
    ``model``'s planted units read them: one column per statistic, named by its measure."""
    return _statistics_frame(model.standardised(images))


def _statistics_frame(z: Statistics) -> pd.DataFrame:
    return pd.DataFrame({STATISTIC_MEASURES[name]: values.numpy() for name, values in z.items()})


def unique_truths(
    model: PlantedClassifier, layer: np.ndarray, statistics: pd.DataFrame, classes: np.ndarray, *, folds: int, seed: int
) -> dict[int, dict[str, Any]]:
    """Per planted unit: the component of its function that what the unit adds beyond the rest
    of the layer reads, or None where the rest of the layer leaves no component to read.

    ``layer [N, U]`` holds the whole layer's activations on samples of ``classes [N]`` whose
    standardised glass-box statistics are ``statistics`` (same rows;
    :func:`standardised_statistics`). What a unit adds is its residual, the part of it the
    rest of the layer does not predict (:func:`pipeline.stats.held_out_residuals`, with
    ``folds`` and ``seed``; the rest leaves out the function's own copies, which share the
    link's column). Its ``association`` with every glass-box statistic is the within-class
    association the unique label ranks by (:func:`pipeline.stats.within_class_association`),
    read from the statistics, never from the image measures the label reads. The truth is
    the component with the largest |association|, where that association is clearly not
    zero (``RESIDUAL_DETECTION_P``, Bonferroni over the statistics) and no statistic outside
    the function is more associated. Otherwise it is None, and the unit is left out of the
    unique label's scores: the rest of the layer carries the function, and what is left of
    the unit is what the regression took away with its neighbours' statistics, or noise,
    which no label of the function could name. So a 0.7/0.3 mixture whose dominant
    statistic the layer already carries is truly labelled by its minor one, and a unit the
    layer predicts all but wholly has no unique truth. ``residual_share`` is the residual's
    spread over the unit's.
    """
    residuals, _ = held_out_residuals(layer, folds=folds, seed=seed)
    names = list(statistics.columns)
    associations = within_class_association(residuals, statistics.to_numpy(), classes)  # [U, statistics]
    detectable = scipy_stats.norm.isf(RESIDUAL_DETECTION_P / (2 * len(names))) / math.sqrt(
        max(len(layer) - len(np.unique(classes)), 1)
    )
    truths: dict[int, dict[str, Any]] = {}
    for unit, name in enumerate(model.unit_names):
        if not name.startswith("planted:"):
            continue
        components = model.components[name.split(":")[1]]
        found = {measure: float(value) for measure, value in zip(names, associations[unit], strict=True)}
        strength = {measure: abs(np.nan_to_num(value)) for measure, value in found.items()}
        best = max(components, key=strength.__getitem__)
        outside = max((strength[m] for m in names if m not in components), default=0.0)
        spread = float(np.std(layer[:, unit]))
        truths[unit] = {
            "measure": best if strength[best] >= detectable and strength[best] >= outside else None,
            "association": found,
            "residual_share": float(np.std(residuals[:, unit])) / spread if spread > 0 else float("nan"),
        }
    return truths


def tuning_truths(
    model: PlantedClassifier, layer: np.ndarray, statistics: pd.DataFrame, classes: np.ndarray
) -> dict[int, dict[str, Any]]:
    """Per planted unit: the component of its function that it is most associated with within classes.

    The tuning label names the measure most associated with the unit within each class
    (:func:`pipeline.stats.unit_tuning`), so its truth is the component statistic with the
    largest |association| by the same statistic (:func:`pipeline.stats.within_class_association`),
    computed from the unit's activation in ``layer [N, U]`` and the glass-box ``statistics``
    (:func:`standardised_statistics`) of the same samples of ``classes [N]``: never from the
    image measures that the label reads. A component weighs by how far it moves the unit
    within a class: a statistic that mostly tells classes apart (as coat colour tells
    breeds) varies little within one, and one that the generator's renders spread widely
    moves the unit more than its nominal weight says. A function of one statistic keeps it.
    """
    truths: dict[int, dict[str, Any]] = {}
    for unit, name in enumerate(model.unit_names):
        if not name.startswith("planted:"):
            continue
        components = list(model.components[name.split(":")[1]])
        association = within_class_association(layer[:, [unit]], statistics[components].to_numpy(), classes)[0]
        found = {measure: float(value) for measure, value in zip(components, association, strict=True)}
        best = max(found, key=lambda measure: abs(np.nan_to_num(found[measure])))
        truths[unit] = {"measure": best, "association": found}
    return truths


def glass_box_readings(
    model: PlantedClassifier, images: np.ndarray, batch_size: int = 256
) -> tuple[pd.DataFrame, np.ndarray]:
    """What ``model``'s planted units read in ``images`` uint8 [N, H, W, 3], a batch at a
    time: the standardised statistics (:func:`standardised_statistics`) and the planted
    activations ``[N, functions x copies]`` recomputed from them."""
    statistics, activations = [], []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start : start + batch_size]).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            z = model.standardised(batch)
            activations.append(model.planted_from(z).numpy())
        statistics.append(_statistics_frame(z))
    return pd.concat(statistics, ignore_index=True), np.concatenate(activations)


def planted_agreement(model: PlantedClassifier, recomputed: np.ndarray, layer: np.ndarray) -> float:
    """The smallest correlation, over planted units, between the layer's activations and
    ``recomputed`` (:func:`glass_box_readings`): near 1 where the truths read the units' own images."""
    planted = [unit for unit, name in enumerate(model.unit_names) if name.startswith("planted:")]
    return float(unit_correlations(layer[:, planted], recomputed).min())


def planted_run_config(config: Mapping[str, Any], base_units: int) -> dict[str, Any]:
    """The config of the validation run beside ``config``'s run, in ``results/{run}/validation``.

    Everything is the run's (samples, link, tuning, statistics), except: the classifier is
    the glass-box one around the run's classifier (with ``config["validation"]``'s planted
    set, its statistics standardised on the world the run's generator renders: see
    :func:`reference_world`), only the planted and null units are swept, and there are no counterfactuals and
    no nested validation. So its ``validation.json`` says how well the run's own settings
    find known concepts.
    """
    settings = config["validation"]
    table = function_set(settings["functions"])
    planted = len(table) * len(settings["gains"])
    nested = deepcopy(dict(config))
    nested["run"] = f"{config['run']}/validation"
    nested["classifier"] = {
        "kind": "python",
        "entrypoint": PLANTED_ENTRYPOINT,
        "kwargs": {
            "base_spec": deepcopy(config["classifier"]),
            "functions": settings["functions"],
            "n_null": settings["n_null"],
            "seed": settings["seed"],
            "gains": list(settings["gains"]),
            "offsets": list(settings["offsets"]),
            "keep_base": settings["keep_base"],
            "world": reference_world(config["generator"], config["classifier"]),
        },
    }
    first = base_units if settings["keep_base"] else 0
    nested["units"] = {"start": first, "stop": first + planted + settings["n_null"]}
    nested["counterfactuals"] = {**config["counterfactuals"], "pairs": []}
    nested["validation"] = {**settings, "enabled": False}
    # The same generator and labels give the same segmenter: the run's own, trained once.
    segmentation = config.get("segmentation")
    if segmentation:
        model = trained_model(segmentation, config["generator"], f"results/{config['run']}")
        nested["segmentation"] = {**segmentation, "model": model} if model else dict(segmentation)
    return nested


PLANTED_ENTRYPOINT = f"{__name__}:planted_classifier"


def is_planted_classifier(spec: Mapping[str, Any]) -> bool:
    """Whether a classifier spec is the glass-box classifier, whose concepts can be validated."""
    return spec.get("kind") == "python" and spec.get("entrypoint") == PLANTED_ENTRYPOINT


def standardisation_world(world: str | None, base_spec: Mapping[str, Any]) -> str:
    """The world that standardises a planted classifier's statistics: ``world``, else the
    base classifier's builtin world, else the shapes world."""
    return world or builtin_world(base_spec) or DEFAULT_REFERENCE_WORLD


def check_planted_world(classifier: Mapping[str, Any], generator: Mapping[str, Any]) -> None:
    """Raise ConfigError where a planted classifier's statistics are standardised on another
    world than the builtin generator renders: its planted units would then read statistics
    spread several times as wide as intended on some images and hardly at all on others."""
    if not is_planted_classifier(classifier):
        return
    rendered = builtin_world(generator)
    if rendered is None:
        return
    kwargs = classifier.get("kwargs") or {}
    standardised = standardisation_world(kwargs.get("world"), kwargs.get("base_spec") or {})
    if standardised != rendered:
        raise ConfigError(
            f"config key 'classifier.kwargs.world': the planted statistics are standardised on the {standardised} "
            f"world, but the generator renders the {rendered} world; name world: {rendered}, "
            f"or a {standardised} generator"
        )


def reference_world(generator: Mapping[str, Any], classifier: Mapping[str, Any]) -> str:
    """The world whose images a run sees: its builtin generator's, else its builtin
    classifier's, else the shapes world (a user's models name no world of this package)."""
    return builtin_world(generator) or builtin_world(classifier) or DEFAULT_REFERENCE_WORLD


@functools.lru_cache(maxsize=4)
def reference_statistics(world: str = DEFAULT_REFERENCE_WORLD) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and standard deviation of each statistic over a fixed sample of ``world``."""
    images, _, _ = sample(REFERENCE_IMAGES, seed=REFERENCE_SEED, world=world)
    statistics = image_statistics(images)
    return (
        {name: float(values.mean()) for name, values in statistics.items()},
        {name: float(values.std().clamp_min(1e-6)) for name, values in statistics.items()},
    )

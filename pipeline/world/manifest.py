"""Ground truth of what tells a world's classes apart, and which image measures read it.

A world whose classes differ by the distributions of its factors (part sizes, colours, ...)
registers a :class:`ClassManifest`. Checks of the pipeline's claims read it: does a unit
labelled for a measure read a factor that defines classes, and does a counterfactual from
one class to another move the measures of the factors that separate that pair, toward the
target's values? A world whose classes share every factor's distribution (the shapes world:
its classes differ only by the outline) has no manifest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ClassManifest:
    """What separates the classes of one world.

    - ``classes``: class names, in label order.
    - ``factor_means``: factor -> the mean of that factor in each class, in label order.
    - ``defining``: ``(a, b)`` with ``a < b`` -> the factors whose distributions differ
      between classes ``a`` and ``b``. Factors not listed have the same distribution in both.
    - ``factor_measures``: factor -> ``{measure column: +1 or -1}``, the measures that read
      the factor and whether they grow (+1) or shrink (-1) as the factor grows.
    """

    classes: tuple[str, ...]
    factor_means: Mapping[str, tuple[float, ...]]
    defining: Mapping[tuple[int, int], tuple[str, ...]]
    factor_measures: Mapping[str, Mapping[str, int]]

    def __post_init__(self) -> None:
        count = len(self.classes)
        for factor, means in self.factor_means.items():
            if len(means) != count:
                raise ValueError(f"factor {factor!r} has {len(means)} class means for {count} classes")
        for (a, b), factors in self.defining.items():
            if not 0 <= a < b < count:
                raise ValueError(f"class pair {(a, b)} is not an ordered pair of classes below {count}")
            unknown = [factor for factor in factors if factor not in self.factor_means]
            if unknown:
                raise ValueError(f"class pair {(a, b)} names factor {unknown[0]!r} without class means")
        for factor, measures in self.factor_measures.items():
            if any(sign not in (-1, 1) for sign in measures.values()):
                raise ValueError(f"factor {factor!r}: every measure's sign must be +1 or -1")

    def differing_factors(self, origin: int, target: int) -> dict[str, int]:
        """The factors that separate ``origin`` from ``target`` -> the sign of target's mean minus origin's."""
        factors = self.defining.get((min(origin, target), max(origin, target)), ())
        moves = {}
        for factor in factors:
            difference = self.factor_means[factor][target] - self.factor_means[factor][origin]
            if difference != 0:
                moves[factor] = 1 if difference > 0 else -1
        return moves

    def expected_measure_moves(self, origin: int, target: int) -> dict[str, int]:
        """Measure column -> the sign it should change by from ``origin`` toward ``target``.

        A measure that reads two separating factors pulling it in opposite directions has no
        expected sign and is left out.
        """
        expected: dict[str, set[int]] = {}
        for factor, factor_sign in self.differing_factors(origin, target).items():
            for measure, measure_sign in self.factor_measures.get(factor, {}).items():
                expected.setdefault(measure, set()).add(factor_sign * measure_sign)
        return {measure: signs.pop() for measure, signs in expected.items() if len(signs) == 1}


_MANIFESTS: dict[str, ClassManifest] = {}


def register_manifest(world: str, manifest: ClassManifest) -> None:
    """Make ``manifest`` the ground truth of ``world`` (called by the world's own module)."""
    _MANIFESTS[world] = manifest


def class_manifest(world: str) -> ClassManifest | None:
    """The manifest of ``world``, or None for a world whose classes share every factor's distribution."""
    return _MANIFESTS.get(world)

"""What every world's ``sample_factors`` shares: checking its arguments and drawing the labels."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def as_range(world: str, name: str, spec: float | tuple[float, float]) -> tuple[float, float]:
    """A factor override as ``(low, high)``: one number fixes the factor."""
    if isinstance(spec, (int, float)):
        return float(spec), float(spec)
    low, high = (float(s) for s in spec)
    if high < low:
        raise ValueError(f"{world} factor {name!r}: range ({low}, {high}) has high < low")
    return low, high


def draw_labels(
    n: int,
    seed: int,
    classes: Sequence[int] | None,
    *,
    class_count: int,
    factors: Iterable[str],
    overrides: Mapping[str, object],
    world: str,
    class_ids: str,
) -> tuple[np.random.Generator, np.ndarray]:
    """Check ``sample_factors``' arguments, then draw ``n`` labels among ``classes`` (all when None).

    Returns the generator, so that the world draws its factors from the same stream after the labels.
    ``world`` and ``class_ids`` name the world's factors and classes in the error messages.
    """
    known = list(factors)
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"unknown {world} factor {unknown[0]!r}; known: {', '.join(known)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    allowed = np.arange(class_count) if classes is None else np.asarray(list(classes), dtype=np.int64)
    if allowed.size == 0 or allowed.min() < 0 or allowed.max() >= class_count:
        raise ValueError(f"classes must be {class_ids} in [0, {class_count}), got {list(allowed)}")
    rng = np.random.default_rng(seed)
    return rng, allowed[rng.integers(0, allowed.size, size=n)]

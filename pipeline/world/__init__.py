"""Procedural, seeded, vectorised worlds with known factors.

Two worlds share one API (:mod:`pipeline.world.worlds`), chosen by ``world=``:

- ``"shapes"`` (the default): one object of one of ``len(SHAPES)`` shape classes on a flat
  background (:mod:`pipeline.world.render`);
- ``"breeds"``: a four-legged animal with seven named parts in ``len(BREEDS)`` breeds that
  differ by overlapping distributions of part geometry and coat (:mod:`pipeline.world.breeds`),
  with a per-pixel part map and a registered class manifest.

The continuous factors that produced each image are returned with it, so later stages
can check what a unit encodes against ground truth. ``FACTORS`` and ``FACTOR_RANGES`` are
the shapes world's; :func:`factor_ranges` gives any world's.

This package imports nothing else from the project.
"""

from pipeline.world.breeds import BREEDS
from pipeline.world.manifest import ClassManifest, class_manifest, register_manifest
from pipeline.world.render import FACTOR_RANGES, FACTORS, IMAGE_SIZE, SHAPES
from pipeline.world.worlds import (
    WORLDS,
    class_names,
    factor_ranges,
    part_map,
    part_names,
    render,
    sample,
    sample_factors,
)

__all__ = [
    "BREEDS",
    "ClassManifest",
    "FACTOR_RANGES",
    "FACTORS",
    "IMAGE_SIZE",
    "SHAPES",
    "WORLDS",
    "class_manifest",
    "class_names",
    "factor_ranges",
    "part_map",
    "part_names",
    "register_manifest",
    "render",
    "sample",
    "sample_factors",
]

"""The shapes world: a procedural, seeded, vectorised renderer with known factors.

Every image holds one object of one of ``len(SHAPES)`` shape classes on a flat
background. The continuous factors that produced each image are returned with it,
so later stages can check what a unit encodes against ground truth.

This package imports nothing else from the project.
"""

from pipeline.world.manifest import ClassManifest, class_manifest, register_manifest
from pipeline.world.render import (
    FACTOR_RANGES,
    FACTORS,
    IMAGE_SIZE,
    PART_NAMES,
    SHAPES,
    part_map,
    render,
    sample,
    sample_factors,
)

__all__ = [
    "ClassManifest",
    "FACTOR_RANGES",
    "FACTORS",
    "IMAGE_SIZE",
    "PART_NAMES",
    "SHAPES",
    "class_manifest",
    "part_map",
    "register_manifest",
    "render",
    "sample",
    "sample_factors",
]

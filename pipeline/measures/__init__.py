"""Quantification of renders: object regions without labels, image measures and motion.

``object_masks`` finds the object of every render, ``measure_sweeps`` turns sweeps of
renders into one row of ``{region}.{quantity}`` measures per render, and
``measure_changes`` reduces each sweep to its change from the first to the last step;
``relative_measures`` relates each part's measures to the whole object's (the label hierarchy).
"""

from pipeline.measures.hierarchy import (
    SHARE_QUANTITIES,
    part_whole_pairs,
    relative_measures,
    whole_counterpart,
)
from pipeline.measures.image import (
    APPEARANCE_QUANTITIES,
    CIRCULAR_QUANTITIES,
    MAGNITUDE_QUANTITIES,
    MIN_REGION_PIXELS,
    PART_GEOMETRY_QUANTITIES,
    RELATIVE_QUANTITIES,
    SHAPE_QUANTITIES,
    measure_changes,
    measure_names,
    measure_sweeps,
    quantity_of,
    selected_measures,
    tested_measures,
    wrap,
)
from pipeline.measures.motion import MOTION_QUANTITIES
from pipeline.measures.regions import (
    object_masks,
    otsu_thresholds,
    regions_from_labels,
    saliency_maps,
)

__all__ = [
    "APPEARANCE_QUANTITIES",
    "CIRCULAR_QUANTITIES",
    "MAGNITUDE_QUANTITIES",
    "MIN_REGION_PIXELS",
    "MOTION_QUANTITIES",
    "PART_GEOMETRY_QUANTITIES",
    "RELATIVE_QUANTITIES",
    "SHAPE_QUANTITIES",
    "SHARE_QUANTITIES",
    "measure_changes",
    "measure_names",
    "measure_sweeps",
    "object_masks",
    "otsu_thresholds",
    "part_whole_pairs",
    "quantity_of",
    "regions_from_labels",
    "relative_measures",
    "saliency_maps",
    "selected_measures",
    "tested_measures",
    "whole_counterpart",
    "wrap",
]

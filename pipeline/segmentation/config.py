"""Where a run's part regions come from, decided and checked when the workflow is planned.

``segmentation.labels`` is ``auto`` (the world's own part maps for the builtin generator,
classifier saliency for any other), ``none`` (saliency), ``world``, or a labels folder.
A folder is read and checked completely here, so bad labels stop the run before any job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.segmentation.labels import LabelsError, read_labels

WORLD = "world"


def labels_source(segmentation: Mapping[str, Any], generator_spec: Mapping[str, Any]) -> str | None:
    """``"world"``, a labels folder, or None when the regions come from saliency."""
    labels = str(segmentation["labels"])
    builtin = generator_spec.get("kind") == "builtin"
    if labels == "none":
        return None
    if labels == "auto":
        return WORLD if builtin else None
    if labels == WORLD and not builtin:
        raise LabelsError(
            "config key 'segmentation.labels': 'world' labels only the builtin generator's renders; "
            "give a labels folder (python -m pipeline label) or none"
        )
    return labels


def check_segmentation(segmentation: Mapping[str, Any], generator_spec: Mapping[str, Any]) -> str | None:
    """Check the segmentation config (and a labels folder's files); return :func:`labels_source`,
    or None when ``segmentation.model`` names a trained segmenter, which then needs no labels."""
    if segmentation.get("model"):
        return None
    source = labels_source(segmentation, generator_spec)
    parts = list(segmentation["parts"])
    if source == WORLD:
        from pipeline.models.builtin import builtin_world
        from pipeline.world import part_names

        world_parts = list(part_names(builtin_world(generator_spec)))
        if parts and parts != world_parts:
            raise LabelsError(f"config key 'segmentation.parts' {parts} does not match the world's parts {world_parts}")
    elif source is not None:
        if not parts:
            raise LabelsError(f"config key 'segmentation.parts': name the parts of the labels folder {source}")
        labels = read_labels(source, parts)
        if segmentation["train"] > len(labels.maps):
            raise LabelsError(
                f"config key 'segmentation.train': {segmentation['train']} renders asked, "
                f"{source} holds {len(labels.maps)}"
            )
    return source


def trained_model(segmentation: Mapping[str, Any], generator_spec: Mapping[str, Any], results: str) -> str:
    """The segmenter a run takes its regions from: ``segmentation.model``, the one the run
    trains in ``{results}/segmentation``, or "" for saliency regions."""
    if segmentation.get("model"):
        return str(segmentation["model"])
    return f"{results}/segmentation/model.pt" if labels_source(segmentation, generator_spec) else ""

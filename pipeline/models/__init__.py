"""Models: the classifier and generator protocols, one registry, and adapters."""

from pipeline.models.description import ModelDescription, describe_model
from pipeline.models.protocols import Classifier, Generator
from pipeline.models.registry import (
    ModelSpecError,
    load_classifier,
    load_generator,
    spec_weights_sha256,
)

__all__ = [
    "Classifier",
    "Generator",
    "ModelDescription",
    "ModelSpecError",
    "describe_model",
    "load_classifier",
    "load_generator",
    "spec_weights_sha256",
]

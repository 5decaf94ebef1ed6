"""The builtin models of the shapes world: classifier, generator and attribute probe.

Their weights ship in ``pipeline/models/weights``; :func:`train_default_models` in
``pipeline.models.builtin.train`` retrains them. Load them through the registry
(``{kind: builtin, name: shapes-classifier}``) or directly with :func:`load_builtin`.
"""

from pipeline.models.builtin.classifier import ShapesClassifier
from pipeline.models.builtin.generator import ShapesGenerator, class_onehot, latent_factors
from pipeline.models.builtin.probe import AttributeProbe
from pipeline.models.builtin.weights import (
    BUILTIN_MODELS,
    BUILTIN_WORLDS,
    WEIGHTS_DIR,
    builtin_world,
    load_builtin,
    weights_path,
)


def load_attribute_probe(weights=None) -> AttributeProbe:
    """The shipped attribute probe (or the one in ``weights``), in eval mode on the CPU."""
    return load_builtin("shapes-probe", weights)


__all__ = [
    "BUILTIN_MODELS",
    "BUILTIN_WORLDS",
    "WEIGHTS_DIR",
    "AttributeProbe",
    "ShapesClassifier",
    "ShapesGenerator",
    "builtin_world",
    "class_onehot",
    "latent_factors",
    "load_attribute_probe",
    "load_builtin",
    "weights_path",
]

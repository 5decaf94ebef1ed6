"""The builtin models of the procedural worlds: per world a classifier, a generator and an
attribute probe (``shapes-*`` and ``breeds-*``).

Their weights ship in ``pipeline/models/weights``; :func:`train_default_models` in
``pipeline.models.builtin.train`` retrains them. Load them through the registry
(``{kind: builtin, name: breeds-classifier}``) or directly with :func:`load_builtin`.
"""

from pipeline.models.builtin.breeds_generator import BreedsGenerator, breeds_latent_factors
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


def load_attribute_probe(weights=None, world: str = "shapes") -> AttributeProbe:
    """The shipped attribute probe of ``world`` (or the one in ``weights``), in eval mode on the CPU."""
    return load_builtin(f"{world}-probe", weights)


__all__ = [
    "BUILTIN_MODELS",
    "BUILTIN_WORLDS",
    "WEIGHTS_DIR",
    "AttributeProbe",
    "BreedsGenerator",
    "ShapesClassifier",
    "ShapesGenerator",
    "breeds_latent_factors",
    "builtin_world",
    "class_onehot",
    "latent_factors",
    "load_attribute_probe",
    "load_builtin",
    "weights_path",
]

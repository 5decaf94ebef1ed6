"""Model adapters. Importing this package registers every kind with the registry.

Adapters with optional dependencies (timm, a StyleGAN checkout) import them lazily
inside their loaders, so registering them costs nothing.
"""

from pipeline.models.adapters import (  # noqa: F401
    builtin,
    python_entry,
    stylegan,
    timm_adapter,
    torchscript_adapter,
    torchvision_adapter,
)

"""Model adapters. Importing this package registers every kind with the registry.

Adapters with optional dependencies (timm, a StyleGAN checkout) import them lazily
inside their loaders, so registering them costs nothing.
"""

from pipeline.models.adapters import python_entry  # noqa: F401

"""The two interfaces that every classifier and generator adapter speaks.

Images cross the boundary as float tensors ``[B, 3, H, W]``: classifiers take them in
[0, 1] and do their own preprocessing; generators return them in [-1, 1], as StyleGAN does.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Classifier(Protocol):
    """A classifier split at the layer whose units are studied.

    ``head`` is ``None`` when the studied layer does not feed the logits directly.
    """

    num_units: int
    num_classes: int | None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images float [B, 3, H, W] in [0, 1] -> activations r [B, num_units]."""
        ...

    @property
    def head(self):  # Callable[[Tensor], Tensor] | None
        """Activations r [B, num_units] -> logits [B, num_classes], or None."""
        ...

    def to(self, device: torch.device) -> Classifier: ...


@runtime_checkable
class Generator(Protocol):
    """StyleGAN's interface: a mapping network and a synthesis network."""

    z_dim: int
    c_dim: int
    w_dim: int
    num_ws: int

    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """z [B, z_dim], one-hot c [B, c_dim] -> ws [B, num_ws, w_dim]."""
        ...

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """ws [B, num_ws, w_dim] -> images float [B, 3, H, W] in [-1, 1]."""
        ...

    def to(self, device: torch.device) -> Generator: ...

"""Tiny models that speak the classifier and generator protocols, for fast workflow tests.

The generator decodes its latent into the factors of the shapes world and renders them,
so its images look like the default world's at a fraction of the cost. The classifier has
random convolution weights and a linear head fitted in closed form on world images, so
most of its predictions are right and samples survive the correct-class filter.
Both are deterministic functions of their seed. Specs, as used by the test configs:

    classifier: {kind: python, entrypoint: "tests.tiny_models:tiny_classifier"}
    generator:  {kind: python, entrypoint: "tests.tiny_models:tiny_generator"}
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.world import FACTOR_RANGES, FACTORS, SHAPES, render, sample

NUISANCE_DIMS = 2
HEAD_FIT_SAMPLES = 1024
HEAD_RIDGE = 1e-3


class TinyGenerator:
    """z, class -> w = [class code, projected z]; w -> shape class and world factors -> image."""

    def __init__(self, z_dim: int = 8, image_size: int = 32, num_ws: int = 2, seed: int = 0):
        self.z_dim = z_dim
        self.c_dim = len(SHAPES)
        self.w_dim = self.c_dim + len(FACTORS) + NUISANCE_DIMS
        self.num_ws = num_ws
        self.image_size = image_size
        rng = torch.Generator().manual_seed(seed)
        continuous = self.w_dim - self.c_dim
        self.projection = torch.randn(continuous, z_dim, generator=rng) / z_dim**0.5
        self.class_scale = 3.0
        self.w_avg = torch.cat([torch.full((self.c_dim,), self.class_scale / self.c_dim), torch.zeros(continuous)])
        low, high = zip(*(FACTOR_RANGES[name] for name in FACTORS), strict=True)
        self.factor_low = torch.tensor(low)
        self.factor_span = torch.tensor(high) - self.factor_low

    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        w = torch.cat([self.class_scale * c.float(), z.float() @ self.projection.T], dim=1)
        w = self.w_avg + truncation_psi * (w - self.w_avg)
        return w.unsqueeze(1).repeat(1, self.num_ws, 1)

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        w = ws[:, 0].detach().cpu().float()
        labels = w[:, : self.c_dim].argmax(dim=1)
        unit_factors = torch.sigmoid(1.5 * w[:, self.c_dim : self.c_dim + len(FACTORS)])
        values = (self.factor_low + unit_factors * self.factor_span).numpy()
        factors = {name: values[:, k] for k, name in enumerate(FACTORS)}
        images = render(labels.numpy(), factors, self.image_size)
        return (images * 2.0 - 1.0).to(ws.device)

    def to(self, device: torch.device) -> TinyGenerator:
        return self


class TinyClassifier(nn.Module):
    """Two random ReLU convolutions, global average pooling, and a least-squares head."""

    def __init__(self, num_units: int = 16, image_size: int = 32, seed: int = 0):
        super().__init__()
        self.num_units = num_units
        self.num_classes = len(SHAPES)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.conv1 = nn.Conv2d(3, 12, kernel_size=5, stride=2, padding=2)
            self.conv2 = nn.Conv2d(12, num_units, kernel_size=3, stride=2, padding=1)
            # He initialisation keeps the units' activations of order one, as in a trained net.
            for conv in (self.conv1, self.conv2):
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                nn.init.zeros_(conv.bias)
        self.linear = nn.Linear(num_units, self.num_classes)
        self.eval()
        self._fit_head(image_size, seed)

    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(torch.relu(self.conv1(x))))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_features(x).mean(dim=(2, 3))

    @property
    def head(self) -> nn.Linear:
        return self.linear

    @torch.no_grad()
    def _fit_head(self, image_size: int, seed: int) -> None:
        images, labels, _ = sample(HEAD_FIT_SAMPLES, seed=seed, image_size=image_size)
        r = self.features(images).double()
        # Standardised features make one ridge strength fit any random initialisation.
        mean, std = r.mean(dim=0), r.std(dim=0).clamp_min(1e-6)
        design = (r - mean) / std
        targets = nn.functional.one_hot(labels, self.num_classes).double()
        targets = targets - targets.mean(dim=0)
        gram = design.T @ design + HEAD_RIDGE * len(r) * torch.eye(design.shape[1], dtype=torch.float64)
        solution = torch.linalg.solve(gram, design.T @ targets) / std.unsqueeze(1)
        self.linear.weight.copy_(solution.T.float())
        self.linear.bias.copy_((-(mean @ solution)).float())


def tiny_generator(z_dim: int = 8, image_size: int = 32, num_ws: int = 2, seed: int = 0) -> TinyGenerator:
    return TinyGenerator(z_dim=z_dim, image_size=image_size, num_ws=num_ws, seed=seed)


def tiny_classifier(num_units: int = 16, image_size: int = 32, seed: int = 0) -> TinyClassifier:
    return TinyClassifier(num_units=num_units, image_size=image_size, seed=seed)


def accuracy_on_world(classifier: TinyClassifier, n: int, seed: int, image_size: int = 32) -> float:
    """Held-out accuracy on fresh world images: the tests check the head is useful."""
    images, labels, _ = sample(n, seed=seed, image_size=image_size)
    with torch.no_grad():
        pred = classifier.head(classifier.features(images)).argmax(dim=1)
    return float(np.mean((pred == labels).numpy()))

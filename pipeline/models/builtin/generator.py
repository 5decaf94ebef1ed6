"""The default generator: class-conditional, object-centric, with StyleGAN's interface.

Mapping. Each latent dimension stands for one world factor (``FACTORS`` order): a linear
factor is ``low + Phi(z) * (high - low)``; a circular one (the hues) is the angle
``2 pi Phi(z)``. The mapping embeds that code linearly, with a learned offset per class.
Because it is linear, truncating w toward the class average (as StyleGAN-XL does) is
exactly truncating the code toward its mean, so every truncated w still names a world
image (see :func:`latent_factors`).

Synthesis is a learned object-centric ("sprite") decoder; every parameter is learned from
world images, and nothing of the world's renderer is used inside the model:

* row 0 of ws -> pose head: object centre (x, y), log radius, rotation angle;
* row 1 of ws -> appearance head: object RGB, background RGB, stripe frequency and phase;
* row 2 of ws -> styles of a small coordinate network f(u, v; w) over the object frame
  (u, v) = R(-rotation)(p - centre) / radius, which outputs a distance-like field whose
  zero set is the outline. The class reaches it only through w. Coverage is
  sigmoid(-field * radius_px * gain), so edges stay about one pixel wide at every size;
* stripes shade the object by 1 - a (1 - cos(2 pi f u + phase)) with a learned amplitude a;
* image = lerp(background, object * shade, coverage).

A convolutional decoder and a per-pixel coordinate network trained on the same targets
drew blurred blobs after as many steps on two CPU cores; placing a learned shape in a
predicted object frame is what makes the renders sharp within a CPU training budget.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.builtin.conditional import LinearClassMapping, mlp_head
from pipeline.world import FACTOR_RANGES, FACTORS

CIRCULAR_FACTORS: tuple[str, ...] = ("hue", "bg_hue")
_CIRCULAR_MASK = torch.tensor([name in CIRCULAR_FACTORS for name in FACTORS])


def latent_factors(z: torch.Tensor, truncation_psi: float | torch.Tensor = 1.0) -> pd.DataFrame:
    """The world factors that the generator renders for latents ``z`` at ``truncation_psi``.

    ``truncation_psi`` is one number or one value per row. This is the ground truth that
    the generator was trained to reproduce, so later stages can check against it.
    """
    z = z.detach().to("cpu", torch.float64)
    if z.ndim != 2 or z.shape[1] != len(FACTORS):
        raise ValueError(f"z: expected shape [B, {len(FACTORS)}], got {list(z.shape)}")
    psi = torch.as_tensor(truncation_psi, dtype=torch.float64).reshape(-1, 1)
    quantile = torch.special.ndtr(torch.where(_CIRCULAR_MASK, z, psi * z)).numpy()
    columns = {}
    for index, name in enumerate(FACTORS):
        low, high = FACTOR_RANGES[name]
        columns[name] = low + quantile[:, index] * (high - low)
    return pd.DataFrame(columns)


def latent_code(z: torch.Tensor) -> torch.Tensor:
    """z [B, F] -> the code the mapping embeds: z for linear factors, (cos, sin) for hues.

    Its mean over z ~ N(0, I) is exactly zero, so the class average of w is the class offset.
    """
    angles = 2 * math.pi * torch.special.ndtr(z[:, _CIRCULAR_MASK.to(z.device)])
    return torch.cat([z[:, ~_CIRCULAR_MASK.to(z.device)], torch.cos(angles), torch.sin(angles)], dim=1)


class ModulatedLinear(nn.Module):
    """StyleGAN2's modulated convolution with a 1x1 kernel, applied to every pixel."""

    def __init__(self, in_features: int, out_features: int, w_dim: int, demodulate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(1, 1, out_features))
        self.style = nn.Linear(w_dim, in_features)
        nn.init.normal_(self.style.weight, std=0.5 / math.sqrt(w_dim))
        nn.init.ones_(self.style.bias)
        self.demodulate = demodulate
        self.weight_gain = 1.0 / math.sqrt(in_features)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x [B, P, in], w [B, w_dim] -> [B, P, out]."""
        weight = self.style(w)[:, :, None] * (self.weight * self.weight_gain)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.square().sum(dim=1, keepdim=True) + 1e-8)
        return torch.baddbmm(self.bias, x, weight)


# Pose outputs: x, y (image fractions, y down), log radius (fraction of the side), angle.
POSE_NAMES = ("x", "y", "log_size", "rotation")
# Appearance outputs: object rgb, background rgb (all in [0, 1] after a sigmoid), stripe
# frequency (cycles per object radius along u), stripe phase.
APPEARANCE_NAMES = ("r", "g", "b", "bg_r", "bg_g", "bg_b", "frequency", "phase")


class ShapesGenerator(LinearClassMapping, nn.Module):
    """Class-conditional generator of shapes-world images with StyleGAN's interface."""

    world = "shapes"

    def __init__(
        self,
        c_dim: int = 8,
        w_dim: int = 128,
        head_hidden: int = 128,
        fourier: int = 24,
        hidden: tuple[int, ...] = (32, 32),
        img_resolution: int = 64,
        canvas: int = 40,
        extent: float = 1.25,
    ):
        super().__init__()
        self.init_mapping(len(FACTORS), len(FACTORS) + len(CIRCULAR_FACTORS), c_dim, w_dim, img_resolution)

        self.pose = mlp_head(w_dim, head_hidden, len(POSE_NAMES))
        self.appearance = mlp_head(w_dim, head_hidden, len(APPEARANCE_NAMES))
        # Fourier features of (u, v): learned frequencies and phases (SIREN-like first layer).
        self.fourier = nn.Linear(2, fourier)
        widths = (fourier + 3, *hidden)
        self.layers = nn.ModuleList(ModulatedLinear(a, b, w_dim) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.to_distance = ModulatedLinear(widths[-1], 1, w_dim, demodulate=False)
        self.edge_gain = nn.Parameter(torch.tensor(4.0))
        self.stripe_amplitude = nn.Parameter(torch.tensor(0.2))
        # Training starts with soft edges (a factor < 1) so that the field gets gradients
        # deep inside shapes too, e.g. to open the hole of a ring; inference uses 1.
        self.edge_softening = 1.0
        # The shape's distance field is evaluated on a canonical grid over the object frame
        # [-extent, extent]^2 (u right, v up) and resampled into the image by the pose.
        self.register_grids(canvas, extent, img_resolution)
        self._init_heads()

    @torch.no_grad()
    def _init_heads(self) -> None:
        mid = {name: 0.5 * sum(FACTOR_RANGES[name]) for name in FACTORS}
        last = self.pose[-1]
        last.weight.mul_(0.1)
        last.bias.copy_(torch.tensor([mid["x"], mid["y"], math.log(mid["size"]), 0.0]))
        last = self.appearance[-1]
        last.weight.mul_(0.1)
        last.bias.copy_(torch.tensor([0.5, 0.5, 0.5, -1.0, -1.0, -1.0, 1.5, 0.0]))
        # Frequencies up to ~4 cycles per radius in random directions.
        angles = torch.rand(self.fourier.out_features) * 2 * math.pi
        freq = 2 * math.pi * 4.0 * torch.rand(self.fourier.out_features)
        self.fourier.weight.copy_(torch.stack([freq * torch.cos(angles), freq * torch.sin(angles)], dim=1))
        self.fourier.bias.uniform_(-math.pi, math.pi)
        self.to_distance.bias.fill_(0.0)

    def latent_code(self, z: torch.Tensor) -> torch.Tensor:
        return latent_code(z)

    def predict_parameters(self, ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ws -> (pose [B, 4], appearance [B, 8]) raw head outputs (see POSE/APPEARANCE_NAMES)."""
        return self.pose(ws[:, 0]), self.appearance(ws[:, 1])

    def shape_field(self, w: torch.Tensor) -> torch.Tensor:
        """w [B, w_dim] -> distance-like field (object radii, < 0 inside) on the canvas, [B, 1, G, G]."""
        uv = self.canonical
        r = torch.sqrt(uv.square().sum(dim=1, keepdim=True))
        features = torch.cat([torch.sin(self.fourier(uv)), uv, r], dim=1)  # shared by the batch
        x = features.unsqueeze(0).expand(w.shape[0], -1, -1)
        for layer in self.layers:
            x = F.leaky_relu(layer(x, w), 0.2)
        # A disc prior (radius 0.8) gives every shape a start; far out, the field is outside.
        distance = self.to_distance(x, w).squeeze(-1) + 0.2 * (r.squeeze(1) - 0.8) + F.relu(r.squeeze(1) - 1.15)
        return distance.view(-1, 1, self.canvas, self.canvas)

    def world_factors(
        self, z: torch.Tensor, labels: torch.Tensor | np.ndarray, truncation_psi: float | torch.Tensor = 1.0
    ) -> pd.DataFrame:
        """The world factors rendered for latents ``z`` of classes ``labels`` (every builtin
        generator answers this; in the shapes world the factors do not depend on the class)."""
        if len(labels) != len(z):
            raise ValueError(f"labels: {len(labels)} rows for {len(z)} latents")
        return latent_factors(z, truncation_psi)

    def synthesis_unclamped(self, ws: torch.Tensor, return_parameters: bool = False):
        """ws [B, num_ws, w_dim] -> images [B, 3, H, W], roughly in [-1, 1] (for training)."""
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws: expected shape [B, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        n, res = ws.shape[0], self.img_resolution
        pose, appearance = self.predict_parameters(ws)
        size = torch.exp(pose[:, 2]).view(n, 1)
        cos, sin = torch.cos(pose[:, 3]).view(n, 1), torch.sin(pose[:, 3]).view(n, 1)
        dx = self.pixels[:, 0] - pose[:, 0:1]  # [B, P]
        dy = self.pixels[:, 1] - pose[:, 1:2]
        u = (cos * dx + sin * dy) / size  # [B, P]; u right, v up, unit = object radius
        v = (sin * dx - cos * dy) / size
        distance = self.shape_field(ws[:, 2])  # [B, 1, canvas, canvas]
        # Resample into the image; outside the canvas the field is +2 (background).
        grid = torch.stack([u, -v], dim=-1).view(n, res, res, 2) / self.extent
        distance = F.grid_sample(distance - 2.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        distance = distance.view(n, res * res) + 2.0
        sharpness = res * self.edge_gain * self.edge_softening
        coverage = torch.sigmoid(-distance * size * sharpness).unsqueeze(1)  # [B, 1, P]
        frequency, phase = appearance[:, 6:7], appearance[:, 7:8]
        shade = 1.0 - self.stripe_amplitude * (1.0 - torch.cos((2 * math.pi) * frequency * u + phase))
        obj = torch.sigmoid(appearance[:, 0:3]).unsqueeze(2) * shade.unsqueeze(1)  # [B, 3, P]
        bg = torch.sigmoid(appearance[:, 3:6]).unsqueeze(2)
        # Compositing in fp32 lets the generator run under autocast, whose layers return bf16/fp16.
        img = torch.lerp(bg.float(), obj.float(), coverage.float())
        img = (img * 2 - 1).view(n, self.img_channels, res, res)
        if return_parameters:
            return img, pose, appearance
        return img

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """ws [B, num_ws, w_dim] -> images [B, 3, H, W] in [-1, 1]."""
        return self.synthesis_unclamped(ws).clamp(-1.0, 1.0)


def class_onehot(labels: torch.Tensor | np.ndarray, c_dim: int) -> torch.Tensor:
    return F.one_hot(torch.as_tensor(np.asarray(labels), dtype=torch.int64), c_dim).float()

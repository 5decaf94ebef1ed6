"""A generator with StyleGAN2's shape and cost, random weights: the benchmark's stand-in.

Throughput does not depend on what a generator has learned, only on its layers, so this
network reproduces StyleGAN2's config-F synthesis at the widths of its 256x256 models: a
learned 4x4 constant, then per resolution two 3x3 modulated and demodulated convolutions
(styles from an affine map of w, weights scaled per sample and run as one grouped
convolution) and a 1x1 toRGB whose outputs are upsampled and summed. The mapping network is
StyleGAN2's 8-layer MLP with a class embedding and per-class truncation. Simplifications that
leave the cost nearly unchanged: bilinear upsampling instead of the FIR-filtered transposed
convolution, and no noise inputs (renders are deterministic, like ``noise_mode: const``).

Load it through the registry as
``{kind: python, entrypoint: "stylegan2_like:StyleGAN2Like", kwargs: {...}}`` with ``bench/``
on the import path (it is when ``bench/paper_loop.py`` runs as a script).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

WIDTHS_256 = (512, 512, 512, 512, 512, 256, 128)  # at 4, 8, ..., 256 pixels


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class ModulatedConv(nn.Module):
    def __init__(self, w_dim: int, in_channels: int, out_channels: int, kernel: int, demodulate: bool = True):
        super().__init__()
        self.affine = nn.Linear(w_dim, in_channels)
        nn.init.ones_(self.affine.bias)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.demodulate = demodulate
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        batch, in_channels, height, width = x.shape
        styles = self.affine(w)  # [B, in]
        weight = self.weight[None] * styles[:, None, :, None, None] / math.sqrt(self.weight[0].numel())
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        out = F.conv2d(
            x.reshape(1, batch * in_channels, height, width),
            weight.reshape(-1, in_channels, *weight.shape[3:]),
            padding=self.padding,
            groups=batch,
        )
        return out.reshape(batch, -1, height, width) + self.bias[None, :, None, None]


class StyleGAN2Like(nn.Module):
    def __init__(
        self,
        c_dim: int = 1000,
        z_dim: int = 512,
        w_dim: int = 512,
        widths: tuple[int, ...] = WIDTHS_256,
        mapping_layers: int = 8,
        seed: int = 0,
    ):
        super().__init__()
        torch.manual_seed(seed)
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution = 4 * 2 ** (len(widths) - 1)
        self.img_channels = 3
        self.num_ws = 2 * len(widths)
        self.embed = nn.Linear(c_dim, w_dim)
        layers: list[nn.Module] = []
        for index in range(mapping_layers):
            layers += [nn.Linear(z_dim + w_dim if index == 0 else w_dim, w_dim), nn.LeakyReLU(0.2)]
        self.mapping_network = nn.Sequential(*layers)
        self.register_buffer("w_avg", torch.zeros(c_dim, w_dim))
        self.const = nn.Parameter(torch.randn(widths[0], 4, 4))
        self.convs = nn.ModuleList()
        self.to_rgb = nn.ModuleList()
        for index, width in enumerate(widths):
            previous = widths[max(0, index - 1)]
            if index:
                self.convs.append(ModulatedConv(w_dim, previous, width, 3))
            self.convs.append(ModulatedConv(w_dim, width, width, 3))
            self.to_rgb.append(ModulatedConv(w_dim, width, 3, 1, demodulate=False))
        self.eval()

    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """z [B, z_dim], one-hot c [B, c_dim] -> ws [B, num_ws, w_dim], truncated toward each class's w_avg."""
        w = self.mapping_network(torch.cat([_normalise(z), _normalise(self.embed(c))], dim=1))
        if truncation_psi != 1:
            w_avg = c @ self.w_avg
            w = w_avg + truncation_psi * (w - w_avg)
        return w[:, None].expand(-1, self.num_ws, -1)

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """ws [B, num_ws, w_dim] -> images [B, 3, R, R], roughly in [-1, 1]."""
        x = self.const[None].expand(ws.shape[0], -1, -1, -1)
        rgb = None
        conv, style = iter(self.convs), 0
        for index, to_rgb in enumerate(self.to_rgb):
            if index:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
                x = F.leaky_relu(next(conv)(x, ws[:, style]), 0.2) * math.sqrt(2)
                style += 1
            x = F.leaky_relu(next(conv)(x, ws[:, style]), 0.2) * math.sqrt(2)
            skip = to_rgb(x, ws[:, style + 1])
            rgb = skip if rgb is None else F.interpolate(rgb, scale_factor=2, mode="bilinear") + skip
            style += 1
        return torch.tanh(rgb)

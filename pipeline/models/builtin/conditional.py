"""What the builtin generators share: a mapping that is linear in a code of z plus a class
offset, and the small MLP heads that read w.

Because the mapping is linear and the code has zero mean over z ~ N(0, I), the class
average of w is the class offset, and truncating w toward it truncates the code: every
truncated w still names a world image.
"""

from __future__ import annotations

import torch
from torch import nn


def mlp_head(w_dim: int, hidden: int, out: int) -> nn.Sequential:
    """Two hidden layers with leaky ReLU: w -> ``out`` raw parameters."""
    return nn.Sequential(
        nn.Linear(w_dim, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, out),
    )


class LinearClassMapping:
    """StyleGAN's ``mapping`` and interface sizes for an ``nn.Module`` that calls
    :meth:`init_mapping` in its constructor; subclasses say how z becomes the code."""

    def init_mapping(self, z_dim: int, code_dim: int, c_dim: int, w_dim: int, img_resolution: int) -> None:
        """StyleGAN's sizes (three identical rows of ws, RGB images) and the mapping's
        ``embed_code``, ``embed_class`` and per-class ``w_avg`` buffer [c_dim, w_dim]."""
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = 3
        self.img_resolution = img_resolution
        self.img_channels = 3
        self.embed_code = nn.Linear(code_dim, w_dim, bias=False)
        self.embed_class = nn.Linear(c_dim, w_dim)
        self.register_buffer("w_avg", torch.zeros(c_dim, w_dim))

    def latent_code(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """z [B, z_dim], one-hot c [B, c_dim] -> ws [B, num_ws, w_dim] (identical rows)."""
        c = c.to(self.w_avg.dtype)
        w = self.embed_code(self.latent_code(z)) + self.embed_class(c)
        if truncation_psi != 1:
            w_avg = c @ self.w_avg
            w = w_avg + truncation_psi * (w - w_avg)
        return w.unsqueeze(1).expand(-1, self.num_ws, -1)

    @torch.no_grad()
    def update_w_avg(self) -> None:
        """Set the per-class average of w over z ~ N(0, I): the class offset, because the
        code has zero mean and the mapping is linear."""
        self.w_avg.copy_(self.embed_class(torch.eye(self.c_dim, device=self.w_avg.device)))

    def register_grids(self, canvas: int, extent: float, img_resolution: int) -> None:
        """Buffers ``canonical`` [canvas², 2], the object frame's grid over [-extent, extent]²
        (u right, v up; row 0 is the top), and ``pixels`` [img_resolution², 2], the image's
        pixel centres as fractions of the side (x right, y down)."""
        self.extent = extent
        self.canvas = canvas
        cg = ((torch.arange(canvas, dtype=torch.float32) + 0.5) / canvas * 2 - 1) * extent
        cv, cu = torch.meshgrid(-cg, cg, indexing="ij")
        self.register_buffer("canonical", torch.stack([cu.flatten(), cv.flatten()], dim=1))
        grid = (torch.arange(img_resolution, dtype=torch.float32) + 0.5) / img_resolution
        y, x = torch.meshgrid(grid, grid, indexing="ij")
        self.register_buffer("pixels", torch.stack([x.flatten(), y.flatten()], dim=1))

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        return self.synthesis(self.mapping(z, c, truncation_psi))

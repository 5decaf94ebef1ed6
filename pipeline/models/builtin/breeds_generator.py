"""The breeds world's generator: class-conditional, with StyleGAN's interface, drawing a
part map beside each image as joint image-and-label generators do.

Mapping. Each latent dimension stands for one world factor (``breeds.FACTORS`` order). A
breed factor is ``mean[breed] + spread * t`` with ``t`` the standard normal truncated to
[-2, 2] that ``z`` maps to monotonically; a nuisance factor is ``low + Phi(z) (high - low)``;
the background hue is the angle ``2 pi Phi(z)``. The mapping embeds the code (``z``, with
the hue as cos and sin) linearly and adds a learned offset per class, so truncating w
toward the class average is exactly truncating the code toward zero, which moves every
breed factor toward its breed mean (see :func:`breeds_latent_factors`).

Synthesis is learned from world images, their part maps and their factors; nothing of the
world's renderer runs inside the model:

* row 0 of ws -> pose head: figure centre (x, y), log scale (one figure unit as a
  fraction of the side) and tilt;
* row 1 of ws -> geometry head: the figure's ten part-geometry factors and the gait, each
  scaled to about [-1, 1] over its world range;
* row 2 of ws -> appearance head: coat RGB, background RGB, spot contrast, points darkening;
* a coordinate network over a canvas in the figure's own frame, conditioned on the
  geometry alone (FiLM), outputs logits of background + the seven parts and a shade map;
  the canvas is resampled into the image by the pose, and a learned edge gain keeps edges
  about a pixel wide;
* image = sum over k of softmax_k * colour_k. Each part's colour is the coat times learned
  per-part tones: a gain, darkening by the spot contrast times a learned spot pattern (a
  free canvas over the figure frame), by the points, and by the shade map; any part may
  instead take a learned colour of its own (the eye does).

The part map is 0 (background) where the background's share of a pixel is at least one
half, else the part with the largest share: the rule the world's own part map follows.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.builtin.conditional import LinearClassMapping, mlp_head
from pipeline.world import breeds

CIRCULAR_FACTORS: tuple[str, ...] = ("bg_hue",)
_CIRCULAR_MASK = torch.tensor([name in CIRCULAR_FACTORS for name in breeds.FACTORS])
# Geometry the coordinate network draws from: every part-geometry factor and the gait.
GEOMETRY_FACTORS: tuple[str, ...] = (
    "body_length",
    "body_height",
    "leg_length",
    "tail_length",
    "tail_angle",
    "head_size",
    "snout_length",
    "ear_length",
    "ear_droop",
    "eye_size",
    "gait",
)
POSE_NAMES = ("x", "y", "log_scale", "tilt")
# coat r, g, b; background r, g, b (logits of [0, 1]); spots; points.
APPEARANCE_NAMES = ("r", "g", "b", "bg_r", "bg_g", "bg_b", "spots", "points")
NUM_PARTS = len(breeds.PART_NAMES)
# Images per chunk of the canvas network and the compositing (see BreedsGenerator.render).
RENDER_CHUNK = 32
_LOWER, _UPPER = 0.5 * math.erfc(breeds.TRUNCATION / math.sqrt(2)), 0.5 * math.erfc(-breeds.TRUNCATION / math.sqrt(2))


def geometry_scale(name: str) -> tuple[float, float]:
    """(midpoint, half-width) of a geometry factor's world range: the head's unit."""
    low, high = breeds.FACTOR_RANGES[name]
    return 0.5 * (low + high), 0.5 * (high - low)


def breeds_latent_factors(
    z: torch.Tensor, labels: torch.Tensor | np.ndarray, truncation_psi: float | torch.Tensor = 1.0
) -> pd.DataFrame:
    """The breeds-world factors of latents ``z`` [B, 22] of breeds ``labels`` at ``truncation_psi``
    (one number or one per row): the ground truth the generator was trained to render."""
    z = z.detach().to("cpu", torch.float64)
    if z.ndim != 2 or z.shape[1] != len(breeds.FACTORS):
        raise ValueError(f"z: expected shape [B, {len(breeds.FACTORS)}], got {list(z.shape)}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(z),):
        raise ValueError(f"labels: {labels.shape[0] if labels.ndim else 0} rows for {len(z)} latents")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(breeds.BREEDS)):
        raise ValueError(f"labels: breed ids must lie in [0, {len(breeds.BREEDS)})")
    psi = torch.as_tensor(truncation_psi, dtype=torch.float64).reshape(-1, 1)
    quantile = torch.special.ndtr(torch.where(_CIRCULAR_MASK, z, psi * z))
    truncated_normal = torch.special.ndtri(_LOWER + quantile * (_UPPER - _LOWER)).numpy()
    quantile = quantile.numpy()
    columns = {}
    for index, name in enumerate(breeds.FACTORS):
        if name in breeds.LEVELS:
            levels, spread = breeds.LEVELS[name]
            means = np.asarray(levels)[np.asarray(breeds.BREED_LEVELS[name])[labels]]
            columns[name] = means + spread * truncated_normal[:, index]
        else:
            low, high = breeds.FACTOR_RANGES[name]
            columns[name] = low + quantile[:, index] * (high - low)
    return pd.DataFrame(columns)


def breeds_latent_code(z: torch.Tensor) -> torch.Tensor:
    """z [B, 22] -> the code the mapping embeds: z, with the background hue as (cos, sin).

    Its mean over z ~ N(0, I) is exactly zero, so the class average of w is the class offset.
    """
    mask = _CIRCULAR_MASK.to(z.device)
    angles = 2 * math.pi * torch.special.ndtr(z[:, mask])
    return torch.cat([z[:, ~mask], torch.cos(angles), torch.sin(angles)], dim=1)


class CanvasToImage(nn.Module):
    """Resample maps on the figure-frame canvas [B, C, G, G] into the image [B, C, H, W].

    A module of its own so that the segmentation stage can hook its output: the part
    logits and shade over the image (see :meth:`BreedsGenerator.segmentation_layers`).
    """

    def forward(self, canvas: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(canvas, grid.to(canvas.dtype), mode="bilinear", padding_mode="border", align_corners=False)


class BreedsGenerator(LinearClassMapping, nn.Module):
    """Class-conditional generator of breeds-world images and part maps with StyleGAN's interface."""

    world = "breeds"

    def __init__(
        self,
        c_dim: int = len(breeds.BREEDS),
        w_dim: int = 128,
        head_hidden: int = 128,
        fourier: int = 48,
        hidden: int = 64,
        layers: int = 3,
        img_resolution: int = 64,
        canvas: int = 48,
        extent: float = 1.7,
    ):
        super().__init__()
        self.init_mapping(
            len(breeds.FACTORS), len(breeds.FACTORS) + len(CIRCULAR_FACTORS), c_dim, w_dim, img_resolution
        )

        self.pose = mlp_head(w_dim, head_hidden, len(POSE_NAMES))
        self.geometry = mlp_head(w_dim, head_hidden, len(GEOMETRY_FACTORS))
        self.appearance = mlp_head(w_dim, head_hidden, len(APPEARANCE_NAMES))

        # Coordinate network: the first layer's input is shared by the batch (the canvas is
        # in the figure's frame), the geometry enters as a bias there and as a FiLM scale and
        # shift of every later layer.
        self.fourier = nn.Linear(2, fourier)
        self.first = nn.Linear(fourier + 2, hidden)
        self.first_condition = nn.Linear(len(GEOMETRY_FACTORS), hidden)
        self.hidden_layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers - 1))
        self.film = nn.ModuleList(nn.Linear(len(GEOMETRY_FACTORS), 2 * hidden) for _ in range(layers - 1))
        self.to_maps = nn.Linear(hidden, NUM_PARTS + 2)  # background + parts logits, shade
        self.to_image = CanvasToImage()
        self.edge_gain = nn.Parameter(torch.tensor(4.0))

        # Colours: per part (PART_NAMES order) a tone gain, how much spots, points and the
        # shade map darken it, and how much it takes a colour of its own instead of the coat.
        self.part_gain = nn.Parameter(torch.ones(NUM_PARTS))
        self.spot_weight = nn.Parameter(torch.zeros(NUM_PARTS))
        self.point_weight = nn.Parameter(torch.zeros(NUM_PARTS))
        self.shade_weight = nn.Parameter(torch.zeros(NUM_PARTS))
        self.own_colour = nn.Parameter(torch.zeros(NUM_PARTS, 3))
        self.own_mix = nn.Parameter(torch.full((NUM_PARTS,), -3.0))
        self.spot_pattern = nn.Parameter(0.1 * torch.randn(1, 1, 2 * canvas, 2 * canvas))

        self.register_grids(canvas, extent, img_resolution)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        mid = {name: 0.5 * sum(breeds.FACTOR_RANGES[name]) for name in breeds.FACTORS}
        for head in (self.pose, self.geometry, self.appearance):
            head[-1].weight.mul_(0.1)
        self.pose[-1].bias.copy_(torch.tensor([mid["x"], mid["y"], math.log(mid["scale"]), 0.0]))
        self.geometry[-1].bias.zero_()
        self.appearance[-1].bias.copy_(torch.tensor([0.5, 0.0, -0.5, -1.5, -1.5, -1.5, 0.3, 0.2]))
        # Frequencies up to ~3 cycles per figure unit in random directions.
        count = self.fourier.out_features
        angles = torch.rand(count) * 2 * math.pi
        frequency = 2 * math.pi * 3.0 * torch.rand(count)
        self.fourier.weight.copy_(torch.stack([frequency * torch.cos(angles), frequency * torch.sin(angles)], dim=1))
        self.fourier.bias.uniform_(-math.pi, math.pi)
        for film in self.film:
            film.weight.mul_(0.1)
            film.bias.zero_()

    # -- StyleGAN's interface -------------------------------------------------------------

    def latent_code(self, z: torch.Tensor) -> torch.Tensor:
        return breeds_latent_code(z)

    def world_factors(
        self, z: torch.Tensor, labels: torch.Tensor | np.ndarray, truncation_psi: float | torch.Tensor = 1.0
    ) -> pd.DataFrame:
        """The breeds-world factors rendered for latents ``z`` of breeds ``labels``."""
        return breeds_latent_factors(z, labels, truncation_psi)

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """ws [B, num_ws, w_dim] -> images [B, 3, H, W] in [-1, 1]."""
        return self.synthesis_parts(ws)[0]

    # -- parts ----------------------------------------------------------------------------

    def synthesis_parts(self, ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ws -> (images [B, 3, H, W] in [-1, 1], part logits [B, 1 + parts, H, W]:
        channel 0 the background, channel k the part ``breeds.PART_NAMES[k - 1]``)."""
        image, logits = self.render(*self.predict_parameters(ws))
        return image.clamp(-1.0, 1.0), logits

    def part_map(self, ws: torch.Tensor) -> torch.Tensor:
        """ws -> int64 [B, H, W] part labels of the images :meth:`synthesis` draws (0 background)."""
        return part_labels(self.synthesis_parts(ws)[1])

    def segmentation_layers(self) -> list[nn.Module]:
        """The module whose output is the part logits and shade over the image, for hooks."""
        return [self.to_image]

    def predict_parameters(self, ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ws -> (pose [B, 4], geometry [B, 11], appearance [B, 8]): POSE_NAMES, scaled
        GEOMETRY_FACTORS, and APPEARANCE_NAMES with the colours already in [0, 1]."""
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws: expected shape [B, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        appearance = self.appearance(ws[:, 2])
        appearance = torch.cat([torch.sigmoid(appearance[:, :6]), appearance[:, 6:]], dim=1)
        return self.pose(ws[:, 0]), self.geometry(ws[:, 1]), appearance

    def canvas_maps(self, geometry: torch.Tensor) -> torch.Tensor:
        """Scaled geometry [B, 11] -> logits of background + parts and the shade, [B, 9, G, G]."""
        uv = self.canonical
        shared = self.first(torch.cat([torch.sin(self.fourier(uv)), uv], dim=1))  # [Q, hidden]
        x = F.leaky_relu_(shared + self.first_condition(geometry).unsqueeze(1), 0.2)  # [B, Q, hidden]
        for layer, film in zip(self.hidden_layers, self.film, strict=True):
            # FiLM folded into a per-sample weight and bias: one fused matmul per layer, as the
            # hidden activations are the bulk of the memory traffic.
            gain, shift = film(geometry).unsqueeze(1).chunk(2, dim=2)  # [B, 1, hidden] each
            gain = gain + 1
            weight = layer.weight.t().unsqueeze(0) * gain  # [B, in, out]
            x = F.leaky_relu_(torch.baddbmm(layer.bias * gain + shift, x, weight), 0.2)
        maps = torch.matmul(self.to_maps.weight, x.transpose(1, 2)) + self.to_maps.bias.view(-1, 1)  # [B, 9, Q]
        return maps.view(-1, NUM_PARTS + 2, self.canvas, self.canvas)

    def image_grid(self, pose: torch.Tensor) -> torch.Tensor:
        """Pose [B, 4] -> where each pixel lies on the canvas, as grid_sample wants it [B, H, W, 2]."""
        n, res = pose.shape[0], self.img_resolution
        scale = torch.exp(pose[:, 2:3])
        cos, sin = torch.cos(pose[:, 3:4]), torch.sin(pose[:, 3:4])
        dx, dy = self.pixels[:, 0] - pose[:, 0:1], self.pixels[:, 1] - pose[:, 1:2]
        u = (cos * dx - sin * dy) / scale  # figure units, u forward, v up; the tilt turns counter-clockwise
        v = (-sin * dx - cos * dy) / scale
        return torch.stack([u, -v], dim=-1).view(n, res, res, 2) / self.extent

    def render(
        self, pose: torch.Tensor, geometry: torch.Tensor, appearance: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameters (as :meth:`predict_parameters` returns them) -> (images, part logits),
        images unclamped, roughly in [-1, 1].

        The canvas network and the compositing run in chunks of RENDER_CHUNK images, whose
        activations stay in the CPU's cache (1.7x the images/s of one batch of 512); the
        resampling into the image runs once, so a hook on it sees the whole batch.
        """
        grid = self.image_grid(pose)
        chunks = range(0, pose.shape[0], RENDER_CHUNK)
        canvas = torch.cat([self.canvas_maps(geometry[s : s + RENDER_CHUNK]) for s in chunks])
        maps = self.to_image(canvas, grid).float()  # [B, 9, H, W]
        logits = maps[:, : NUM_PARTS + 1] * self.edge_gain
        images = [
            self._composite(
                logits[s : s + RENDER_CHUNK], maps[s : s + RENDER_CHUNK, NUM_PARTS + 1 :],
                grid[s : s + RENDER_CHUNK], appearance[s : s + RENDER_CHUNK].float(),
            )
            for s in chunks
        ]  # fmt: skip
        return torch.cat(images), logits

    def _composite(
        self, logits: torch.Tensor, shade: torch.Tensor, grid: torch.Tensor, appearance: torch.Tensor
    ) -> torch.Tensor:
        """Part logits [B, 8, H, W], shade logits [B, 1, H, W], grid and appearance -> images in [-1, 1]."""
        n, res = logits.shape[0], self.img_resolution
        shade = torch.sigmoid(shade)
        pattern = torch.sigmoid(F.grid_sample(self.spot_pattern.expand(n, -1, -1, -1), grid, align_corners=False))
        coat = appearance[:, 0:3].view(n, 3, 1)
        spots = appearance[:, 6].view(n, 1)
        points = appearance[:, 7].view(n, 1)
        weights = torch.softmax(logits, dim=1).view(n, NUM_PARTS + 1, res * res)
        # Part k's colour is lerp(coat * tone_k, own colour_k, own share m_k) with
        # tone_k = gain_k (1 - points weight_k * points) (1 - spot weight_k * X) (1 - shade weight_k * S),
        # X = spots * pattern and S = shade per pixel. Expanding the product, the image needs
        # only four sums over parts for the tone (of 1, X, S, X S) and three for the own
        # colours: one batched matmul over the part shares, not a colour per part and pixel.
        own = torch.sigmoid(self.own_mix)
        spot_weight, shade_weight = torch.sigmoid(self.spot_weight), torch.sigmoid(self.shade_weight)
        base = (1 - own) * self.part_gain * (1 - torch.sigmoid(self.point_weight) * points)  # [B, parts]
        coefficients = torch.cat(
            [
                torch.stack([base, -base * spot_weight, -base * shade_weight, base * spot_weight * shade_weight], 2),
                (own.view(-1, 1) * torch.sigmoid(self.own_colour)).expand(n, -1, -1),
            ],
            dim=2,
        )  # [B, parts, 7]
        sums = torch.bmm(coefficients.transpose(1, 2), weights[:, 1:])  # [B, 7, P]
        spotted = (spots * pattern.view(n, res * res)).unsqueeze(1)
        shade = shade.view(n, 1, res * res)
        tone = sums[:, 0:1] + spotted * sums[:, 1:2] + shade * (sums[:, 2:3] + spotted * sums[:, 3:4])
        background = appearance[:, 3:6].view(n, 3, 1)
        image = weights[:, 0:1] * background + tone * coat + sums[:, 4:7]
        return (image * 2 - 1).view(n, self.img_channels, res, res)


def part_labels(logits: torch.Tensor) -> torch.Tensor:
    """Part logits [B, 1 + parts, H, W] -> int64 labels [B, H, W]: 0 where the background
    takes at least half of the pixel, else the part with the largest share."""
    shares = torch.softmax(logits.float(), dim=1)
    return torch.where(shares[:, 0] >= 0.5, 0, shares[:, 1:].argmax(dim=1) + 1)

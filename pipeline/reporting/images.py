"""The report's images as arrays and PNG bytes: fitted frames, strips, part outlines.

No device and no HTML here: the strips stage fits its renders with these, and the site
builder tiles them into PNGs.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.stages.common import tile

THUMBNAIL_TILE = 96
# Part k of a segmenter is outlined in colour k - 1 (cycling): the Okabe-Ito palette, which
# stays distinct for the common colour-vision deficiencies.
OUTLINE_PALETTE = ("#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#000000")


@dataclass(frozen=True)
class Thumbnail:
    png: bytes
    width: int
    height: int
    tile: int  # side of one image in the PNG, in pixels

    def display_width(self, tile: int) -> int:
        """The width to show it at so that one image is ``tile`` CSS pixels high."""
        return round(self.width * tile / self.tile)


def fit_frames(images: np.ndarray, max_side: int) -> np.ndarray:
    """uint8 [N, H, W, 3] -> the same images scaled down (Lanczos) so that the height is at most ``max_side``."""
    height, width = images.shape[1:3]
    if height <= max_side:
        return images
    size = (round(width * max_side / height), max_side)
    return np.stack([np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS)) for image in images])


def fit_label_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 label maps [N, H, W] -> [N, *size], each pixel the label at its centre (nearest neighbour)."""
    height, width = maps.shape[1:3]
    rows = ((np.arange(size[0]) + 0.5) * height / size[0]).astype(np.int64)
    cols = ((np.arange(size[1]) + 0.5) * width / size[1]).astype(np.int64)
    return np.ascontiguousarray(maps[:, rows][:, :, cols])


def thumbnail(images: np.ndarray, *, gap: int = 2) -> Thumbnail:
    """uint8 [rows, cols, H, W, 3] -> the tiled grid as a PNG (images fitted to ``THUMBNAIL_TILE`` first)."""
    rows, cols = images.shape[:2]
    fitted = fit_frames(images.reshape(-1, *images.shape[2:]), THUMBNAIL_TILE)
    return _png(tile(fitted.reshape(rows, cols, *fitted.shape[1:]), gap=gap), side=fitted.shape[1])


def part_outlines(parts: np.ndarray, *, gap: int = 2) -> Thumbnail:
    """uint8 part maps [rows, cols, h, w] -> a transparent RGBA PNG, laid out as :func:`thumbnail`
    lays out the frames, with a one-pixel outline of every part in its :data:`OUTLINE_PALETTE` colour.

    A pixel is on the outline of part k when it belongs to k and one of its four neighbours
    does not (the frame's edge and the gap between frames count as background).
    """
    labels = tile(np.repeat(parts[..., None], 3, axis=-1), gap=gap, fill=0)[..., 0]
    padded = np.pad(labels, 1)
    centre = padded[1:-1, 1:-1]
    edge = (
        (padded[:-2, 1:-1] != centre)
        | (padded[2:, 1:-1] != centre)
        | (padded[1:-1, :-2] != centre)
        | (padded[1:-1, 2:] != centre)
    ) & (centre > 0)
    colours = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in OUTLINE_PALETTE], dtype=np.uint8)
    overlay = np.zeros((*labels.shape, 4), dtype=np.uint8)
    overlay[edge, :3] = colours[(centre[edge].astype(np.int64) - 1) % len(colours)]
    overlay[edge, 3] = 255
    return _png(overlay, side=parts.shape[2])


def _png(canvas: np.ndarray, *, side: int) -> Thumbnail:
    image = Image.fromarray(canvas)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return Thumbnail(buffer.getvalue(), image.width, image.height, side)

"""Motion along a sweep: dense optical flow (OpenCV Farneback), accumulated from the first step.

The paper matched tuned images with PUMP; dense Farneback flow is the well-kept,
dependency-free stand-in. Flow needs one grey channel: each sweep is projected on its
principal colour axis (the direction of largest colour variance over all its steps, one
projection for all of them), so an object that differs from its background in hue but not
in luma still has edges to follow. The flow runs on images area-downscaled to at most
``FLOW_SIZE`` pixels on the long side: the quantities are means over the whole image, which
the coarse flow gives as accurately (to within 0.1 pixel on shifted shapes-world objects)
at a quarter of the cost of 64 pixels.

Flow runs between consecutive steps and is summed along the sweep, because dense flow
follows displacements up to about an object's radius only: a flat object that jumps
farther between the first and the last step is underestimated or even reversed, and
consecutive steps are closer. Quantities per render, all 0 at the first step:

- ``motion``: the path length so far, the sum over consecutive pairs of the mean flow
  magnitude over the image, as a fraction of the image width;
- ``motion_x``, ``motion_y``: the summed mean flow components as fractions of the width
  and height (``y`` grows downwards, as in the region centroids);
- ``motion_direction``: the angle of (``motion_x``, ``motion_y``) in radians, from +x
  towards +y; NaN where that vector is shorter than ``MIN_DIRECTION_PIXELS``.

Flow is only reliable where the image has structure: a flat object moving on a flat
background moves its edges, and the mean magnitude then grows with the object's perimeter
as well as with its displacement. Displacements of a whole object are better read from the
region centroids (``object.x``, ``object.y``); motion also sees parts that move within it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch

MOTION_QUANTITIES: tuple[str, ...] = ("motion", "motion_x", "motion_y", "motion_direction")
# Shorter mean flows, in flow-image pixels, have no meaningful direction.
MIN_DIRECTION_PIXELS = 0.02
FLOW_SIZE = 32

# Pyramid scale, levels, window, iterations, polynomial neighbourhood and sigma, chosen on
# shifted shapes-world objects for accuracy per unit of time.
FARNEBACK_PARAMETERS = (0.5, 3, 7, 3, 5, 1.1, 0)


def sweep_motion(images: np.ndarray, threads: int | None = None) -> dict[str, np.ndarray]:
    """Sweeps of uint8 images ``[N, S, H, W, 3]`` -> ``{quantity: float [N, S]}``."""
    grey = _principal_channel(images)
    n, steps, height, width = grey.shape
    pairs = [(i, s) for i in range(n) for s in range(1, steps)]
    # OpenCV releases the GIL inside the flow, so threads run the pairs in parallel.
    workers = max(1, threads if threads is not None else torch.get_num_threads())
    pair_flow = np.zeros((n, steps, 3), dtype=np.float64)
    if pairs:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = pool.map(lambda pair: _mean_flow(grey[pair[0], pair[1] - 1], grey[pair[0], pair[1]]), pairs)
            for (i, s), result in zip(pairs, results, strict=True):
                pair_flow[i, s] = result
    magnitude, dx, dy = np.moveaxis(pair_flow.cumsum(axis=1), 2, 0)
    direction = np.where(np.hypot(dx, dy) >= MIN_DIRECTION_PIXELS, np.arctan2(dy, dx), np.nan)
    return {
        "motion": magnitude / width,
        "motion_x": dx / width,
        "motion_y": dy / height,
        "motion_direction": direction,
    }


def _principal_channel(images: np.ndarray) -> np.ndarray:
    """uint8 [N, S, H, W, 3] -> uint8 [N, S, h, w]: downscaled, projected on each sweep's principal colour axis."""
    n, steps, height, width, _ = images.shape
    scale = min(1.0, FLOW_SIZE / max(height, width))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    colours = torch.from_numpy(images.reshape(n * steps, height, width, 3)).permute(0, 3, 1, 2).float()
    if scale < 1:
        colours = torch.nn.functional.adaptive_avg_pool2d(colours, size)
    pixels = colours.reshape(n, steps, 3, -1).permute(0, 2, 1, 3).reshape(n, 3, -1)  # [N, 3, S*h*w]
    centred = pixels - pixels.mean(dim=2, keepdim=True)
    covariance = centred @ centred.transpose(1, 2)
    axis = torch.linalg.eigh(covariance.double()).eigenvectors[..., -1].float()  # largest eigenvalue last
    projected = torch.einsum("nc,ncp->np", axis, centred)
    low, high = projected.amin(dim=1, keepdim=True), projected.amax(dim=1, keepdim=True)
    grey = (projected - low) / (high - low).clamp_min(1e-6) * 255
    return grey.round().to(torch.uint8).numpy().reshape(n, steps, *size)


def _mean_flow(first: np.ndarray, later: np.ndarray) -> tuple[float, float, float]:
    """Mean flow magnitude and mean flow vector from ``first`` to ``later``, in flow-image pixels."""
    flow = cv2.calcOpticalFlowFarneback(first, later, None, *FARNEBACK_PARAMETERS)
    return float(np.hypot(flow[..., 0], flow[..., 1]).mean()), float(flow[..., 0].mean()), float(flow[..., 1].mean())

"""Regions without hand labels: the ``object`` of every render, and optional user parts.

Object masks, for any classifier, in three steps:

1. A saliency map (``method``, see :data:`SALIENCY_METHODS`):

   - ``contrast`` (the default where the classifier has ``spatial_features(x) -> [B, K, h,
     w]``): how far each position's feature vector lies from the median feature vector of
     the map's border, i.e. where the classifier sees something other than the
     surroundings. It needs no head and works even for untrained networks.
   - ``cam``: the class activation map, the head's weights for the target class applied to
     the spatial maps. It needs a linear head whose first ``K`` inputs are those maps
     pooled (a standard CNN split before its pooling), and a classifier whose evidence
     sits on the object.
   - ``gradient`` (the default without spatial maps): |gradient x (image - border colour)|
     of the target logit (of the feature norm without a head), blurred: a first-order
     attribution relative to a plain image of the border's colour. Plain gradient
     magnitudes of a trained CNN are as large on the background as on the object.

2. The map is upsampled to the image, scaled to [0, 1] per image and cut at its Otsu
   threshold. That seed is coarse: feature maps are 8 times smaller than the image in
   typical CNNs, so the seed alone overlaps the object by an IoU of about 0.2.
3. The seed is refined by colour: a Gaussian colour model for the object and one for the
   background, fitted to the seed, relabel every pixel by their log-likelihood ratio plus
   a prior from the saliency map; three rounds. Where the refined mask is nearly empty or
   nearly the whole image, or, for ``contrast`` and ``gradient``, covers more than half of
   the image border (which contradicts their premise), the seed is kept.

On shapes-world renders, against the renderer's true masks, a small trained ResNet-style
classifier gave a median IoU of 0.94 with ``contrast`` and ``cam`` (10th percentile 0.75)
and 0.95 with ``gradient`` (10th percentile 0.91); a random-weight CNN gave 0.95 with
``contrast`` and ``gradient`` but no usable ``cam``. The tests check these methods on
glass-box and random-weight classifiers.

Failure modes, each visible in the measures as NaN or implausible areas:

- the object is defined by the image's border: in close-ups, where the object fills the
  border, ``contrast`` and ``gradient`` mark the background instead;
- a classifier that decides on context (or a part) gives a mask on that context (part);
- an object whose colours match the background's is not separated by the refinement, and
  the mask falls back to the coarse saliency shape;
- several objects, or an object split by occlusion, give one region for all of them;
- a textured background can be taken for the object by the colour model.

Where a segmentation is configured (:mod:`pipeline.segmentation`: a few-shot pixel
classifier on the generator's own features), none of the above runs: each render's label
map gives the regions (:func:`regions_from_labels`), and the object is the union of its
parts. The saliency path is the fallback for runs without a segmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

OTSU_BINS = 64
REFINE_ROUNDS = 3
# Logit of the saliency prior per unit of normalised saliency above the threshold: it
# decides pixels whose colour fits both models, and yields to clearly distinct colours.
SALIENCY_PRIOR_STRENGTH = 8.0
COLOUR_VARIANCE_FLOOR = 1e-3
MIN_MASK_FRACTION = 0.002
MAX_MASK_FRACTION = 0.98
MAX_BORDER_FRACTION = 0.5
GRADIENT_BLUR = 5
BATCH_SIZE = 256

SALIENCY_METHODS: dict[str, str] = {
    "auto": "contrast when the classifier has spatial_features, else gradient",
    "contrast": "distance of the spatial feature vectors from the border's median feature vector",
    "cam": "class activation map: the head's target-class weights applied to the spatial features",
    "gradient": "blurred |gradient x (image - border colour)| of the target logit (feature norm without a head)",
}


def object_masks(
    classifier: Any,
    images: torch.Tensor,
    target_class: torch.Tensor | None,
    *,
    method: str = "auto",
    refine: bool = True,
    batch_size: int = BATCH_SIZE,
    spatial: torch.Tensor | None = None,
) -> torch.Tensor:
    """The object region of each image: bool ``[B, H, W]`` on the images' device.

    ``spatial`` optionally holds the classifier's ``spatial_features`` of ``images``.

    ``images``: float ``[B, 3, H, W]`` in [0, 1]; ``target_class``: int64 ``[B]``, the class
    whose evidence marks the object (used by the ``cam`` and ``gradient`` methods; may be
    None when the classifier has no head). ``method``: see :data:`SALIENCY_METHODS`.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected float [B, 3, H, W], got {list(images.shape)}")
    method = resolve_method(classifier, method)
    # Both methods define the object as what differs from the border, so a refined mask
    # that covers most of the border contradicts its own seed.
    border_limit = None if method == "cam" else MAX_BORDER_FRACTION
    out = torch.empty(images.shape[0], *images.shape[2:], dtype=torch.bool, device=images.device)
    for start in range(0, images.shape[0], batch_size):
        batch = slice(start, start + batch_size)
        targets = None if target_class is None else target_class[batch].to(images.device)
        maps = None if spatial is None else spatial[batch]
        saliency = saliency_maps(classifier, images[batch], targets, method, spatial=maps)
        seed = saliency >= otsu_thresholds(saliency.flatten(1))[:, None, None]
        out[batch] = _refine_by_colour(images[batch], saliency, seed, border_limit) if refine else seed
    return out


def regions_from_labels(labels: np.ndarray, part_names: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Label maps ``[..., H, W]`` (0 background, k the k-th part) -> the object mask, the
    union of the parts, and ``{name: mask}`` per part.

    With a single part the part is the object itself, and no part masks are returned:
    their columns would repeat the object's and count each concept twice.
    """
    labels = np.asarray(labels)
    whole = labels > 0
    if len(part_names) < 2:
        return whole, {}
    return whole, {name: labels == k + 1 for k, name in enumerate(part_names)}


def resolve_method(classifier: Any, method: str) -> str:
    """The saliency method that ``method`` (possibly ``auto``) means for this classifier."""
    if method not in SALIENCY_METHODS:
        raise ValueError(f"saliency method: expected one of {', '.join(SALIENCY_METHODS)}, got {method!r}")
    if method == "auto":
        return "contrast" if hasattr(classifier, "spatial_features") else "gradient"
    return method


def saliency_maps(
    classifier: Any,
    images: torch.Tensor,
    target_class: torch.Tensor | None,
    method: str = "auto",
    spatial: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-image saliency in [0, 1], ``[B, H, W]``, by ``method`` (see :data:`SALIENCY_METHODS`).

    ``spatial``: the classifier's ``spatial_features`` of ``images`` when the caller has
    them already, which saves a second forward pass.
    """
    method = resolve_method(classifier, method)
    if method == "gradient":
        return _normalise(_gradient_saliency(classifier, images, target_class))
    if not hasattr(classifier, "spatial_features"):
        raise ValueError(f"saliency method {method!r}: the classifier has no spatial_features")
    with torch.no_grad():
        maps = (classifier.spatial_features(images) if spatial is None else spatial).float()
        saliency = _class_activation(classifier, maps, target_class) if method == "cam" else _feature_contrast(maps)
        upsampled = F.interpolate(saliency[:, None], size=images.shape[2:], mode="bilinear", align_corners=False)
    return _normalise(upsampled[:, 0])


def _class_activation(classifier: Any, maps: torch.Tensor, target_class: torch.Tensor | None) -> torch.Tensor:
    weight = getattr(getattr(classifier, "head", None), "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or weight.shape[1] < maps.shape[1]:
        raise ValueError("saliency method 'cam': the classifier's head has no weight matrix over its spatial maps")
    if target_class is None:
        raise ValueError("saliency method 'cam': target_class is required")
    return torch.einsum("bk,bkhw->bhw", weight[target_class, : maps.shape[1]].float(), maps)


def _feature_contrast(maps: torch.Tensor) -> torch.Tensor:
    """Distance of each position's feature vector from the median feature vector of the map's border."""
    background = _border(maps).median(dim=2).values[:, :, None, None]
    return (maps - background).norm(dim=1)


def otsu_thresholds(values: torch.Tensor, bins: int = OTSU_BINS) -> torch.Tensor:
    """Otsu's threshold of each row of ``values`` (in [0, 1]), batched: ``[B, P] -> [B]``."""
    index = (values * bins).long().clamp_(0, bins - 1)
    histogram = torch.zeros(values.shape[0], bins, device=values.device).scatter_add_(
        1, index, torch.ones_like(values, dtype=torch.float32)
    )
    p = histogram / histogram.sum(dim=1, keepdim=True)
    centres = (torch.arange(bins, device=values.device, dtype=torch.float32) + 0.5) / bins
    omega = p.cumsum(dim=1)
    mu = (p * centres).cumsum(dim=1)
    between = (mu[:, -1:] * omega - mu) ** 2 / (omega * (1 - omega)).clamp_min(1e-12)
    split = between[:, :-1].argmax(dim=1)
    return (split + 1).float() / bins


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    low, high = flat.amin(dim=1), flat.amax(dim=1)
    return ((maps - low[:, None, None]) / (high - low).clamp_min(1e-12)[:, None, None]).clamp_(0, 1)


def _gradient_saliency(classifier: Any, images: torch.Tensor, target_class: torch.Tensor | None) -> torch.Tensor:
    head = getattr(classifier, "head", None)
    if head is not None and target_class is None:
        raise ValueError("saliency method 'gradient': target_class is required when the classifier has a head")
    with torch.enable_grad():
        x = images.detach().clone().requires_grad_(True)
        features = classifier.features(x)
        if head is None:
            score = features.norm(dim=1)
        else:
            score = head(features).gather(1, target_class.view(-1, 1)).squeeze(1)
        (gradient,) = torch.autograd.grad(score.sum(), x)
    # Gradient x (image - plain background): the first-order attribution relative to a
    # baseline image of the border's colour. Plain gradients are large on the background
    # too; this product vanishes wherever the image already equals the baseline.
    baseline = _border(images).median(dim=2).values[:, :, None, None]
    saliency = (gradient * (images - baseline)).sum(dim=1, keepdim=True).abs()
    blurred = F.avg_pool2d(saliency, GRADIENT_BLUR, stride=1, padding=GRADIENT_BLUR // 2, count_include_pad=False)
    return blurred[:, 0].detach()


def _border(maps: torch.Tensor) -> torch.Tensor:
    """The border positions of ``[B, C, H, W]`` maps as ``[B, C, 2 (H + W) - 4]``."""
    return torch.cat([maps[:, :, 0], maps[:, :, -1], maps[:, :, 1:-1, 0], maps[:, :, 1:-1, -1]], dim=2)


def _refine_by_colour(
    images: torch.Tensor, saliency: torch.Tensor, seed: torch.Tensor, border_limit: float | None
) -> torch.Tensor:
    colours = images.detach().flatten(2).float()  # [B, 3, P]
    squares = colours.square()
    pixels = colours.shape[2]
    totals = colours.sum(dim=2), squares.sum(dim=2)  # [B, 3] each
    flat_seed = seed.flatten(1)
    threshold = otsu_thresholds(saliency.flatten(1))
    prior = SALIENCY_PRIOR_STRENGTH * (saliency.flatten(1) - threshold[:, None])
    mask = flat_seed
    for _ in range(REFINE_ROUNDS):
        # Each Gaussian's moments from weighted sums; the background's are the totals minus
        # the object's, and the log-likelihood ratio is a quadratic in each colour channel.
        weights = mask.float()[:, :, None]  # [B, P, 1]
        count = weights.sum(dim=1).clamp(1.0, pixels - 1.0)  # [B, 1]
        object_moments = (colours @ weights)[..., 0] / count, (squares @ weights)[..., 0] / count
        rest = pixels - count
        background_moments = tuple(
            (total - moment * count) / rest for total, moment in zip(totals, object_moments, strict=True)
        )
        (mean_o, var_o), (mean_b, var_b) = (
            (m1, (m2 - m1.square()).clamp_min(0) + COLOUR_VARIANCE_FLOOR)
            for m1, m2 in (object_moments, background_moments)
        )
        quadratic = 0.5 / var_b - 0.5 / var_o  # [B, 3]
        linear = mean_o / var_o - mean_b / var_b
        constant = (0.5 * (mean_b.square() / var_b - mean_o.square() / var_o + (var_b / var_o).log())).sum(dim=1)
        ratio = (quadratic[:, :, None] * squares + linear[:, :, None] * colours).sum(dim=1) + constant[:, None]
        mask = ratio + prior > 0
    fraction = mask.float().mean(dim=1)
    usable = (fraction >= MIN_MASK_FRACTION) & (fraction <= MAX_MASK_FRACTION)
    mask = mask.view_as(seed)
    if border_limit is not None:
        usable &= _border(mask[:, None].float())[:, 0].mean(dim=1) <= border_limit
    return torch.where(usable[:, None, None], mask, seed)

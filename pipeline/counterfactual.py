"""Counterfactual searches: a shift of a sample's activations whose render the classifier calls the target class.

For activations ``r`` [B, U] of images of class ``origin``, a search looks for a shift in
activation space such that the counterfactual activation ``r' = relu(r + shift)``, mapped
by the link to a latent and rendered by the generator, is classified as ``target`` when the
classifier sees the render. Success is always judged on that re-encoded render, never on
the classifier's head applied to ``r'``: the render cycle r -> w -> image -> r-hat does not
return r', and a flip that exists only in activation space says nothing about images.

Two searches:

- ``mahalanobis`` (the default): the smallest shift under a Gaussian prior of the training
  activations. With covariance Σ (a Ledoit-Wolf shrinkage estimate, :class:`ActivationPrior`)
  and the head's margin gradient ``g = d(logit_target - logit_origin)/dr`` (``W_T - W_O`` for
  a linear head), the shift of least Mahalanobis length ``sqrt(shift' Σ^-1 shift)`` that
  raises the margin by a given amount points along ``Σ g``. The search walks along that
  ray: first out from the length at which the head's margin would reach zero, by factors of
  ``BRACKET_GROWTH``, until the render flips or the length passes ``max_distance``; then it
  bisects between the last length that did not flip and the first that did. The prior keeps
  the shift inside the subspace the training activations occupy, so the link does not turn
  it into a long move of the latent.
- ``paper``: the paper's gradient search, with loss
  ``-logit_target(r') + w_origin * logit_origin(r') - w_cos * cos(link(r), link(r'))`` and
  ``r' = relu(r - s)``, the same activation that is rendered (the paper's own loss scored
  ``r - s`` and rendered ``relu(r - s)``). Every ``check_every`` steps the current ``r'`` is
  rendered and classified; each sample stops at its own success or at ``max_steps``. The
  loss is linear in s except for the cosine, whose gradient vanishes at s = 0 and which
  ignores the latent's length, so nothing bounds how far the latent travels.

Both run many samples at once: every per-sample computation is independent, so a batch
gives the same counterfactuals as one sample at a time.

A classifier may call an image the generator was never trained to make, a flat colour
field say, by any class. So every counterfactual's latent is placed against the training
latents (:class:`LatentDomain`): a flip counts as in the generator's domain only if its
latent is no farther from their mean, in their standard deviations, than 99 % of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg

from pipeline.device import run_with_backoff
from pipeline.models.protocols import Classifier, Generator
from pipeline.stages.common import synthesize, to_uint8

log = logging.getLogger(__name__)

Link = Callable[[torch.Tensor], torch.Tensor]

METHODS = ("mahalanobis", "paper")
OPTIMIZERS = ("sgd", "adam")
PROGRESS_SECONDS = 10.0
DOMAIN_QUANTILE = 0.99
# The bracketing walk starts no shorter than this fraction of max_distance, so a sample whose
# head margin is already near zero still takes steps of a useful size.
MIN_START_FRACTION = 0.01
BRACKET_GROWTH = 1.5


@dataclass(frozen=True)
class LatentDomain:
    """Where the generator's training-time latents lie: their mean and std per latent dim,
    and the ``DOMAIN_QUANTILE`` quantile of their standardised distance from the mean."""

    mean: np.ndarray
    std: np.ndarray
    radius: float

    @classmethod
    def fit(cls, w: np.ndarray) -> LatentDomain:
        if len(w) < 2:
            raise ValueError(f"latent domain: needs at least 2 latents, got {len(w)}")
        w = np.asarray(w, dtype=np.float64)
        std = w.std(axis=0)
        domain = cls(w.mean(axis=0), np.where(std > 0, std, 1.0), 0.0)
        return cls(domain.mean, domain.std, float(np.quantile(domain.distances(w), DOMAIN_QUANTILE)))

    def distances(self, w: np.ndarray) -> np.ndarray:
        """Standardised distance of each latent ``w [N, w_dim]`` from the mean, [N]."""
        return np.linalg.norm((np.asarray(w, dtype=np.float64) - self.mean) / self.std, axis=1)


@dataclass(frozen=True)
class ActivationPrior:
    """A Gaussian model of the training activations: their mean and a shrinkage covariance.

    The covariance is the Ledoit-Wolf estimate ``(1 - λ) S + λ μ I`` (S the sample
    covariance, μ its mean variance), with the λ that minimises the expected squared error
    in Frobenius norm (Ledoit & Wolf 2004). With fewer samples than units S is singular;
    the shrunk estimate is positive definite whenever the activations vary at all.
    """

    mean: np.ndarray  # float64 [U]
    covariance: np.ndarray  # float64 [U, U]
    shrinkage: float

    @classmethod
    def fit(cls, r: np.ndarray) -> ActivationPrior:
        r = np.asarray(r, dtype=np.float64)
        n, units = r.shape
        if n < 2:
            raise ValueError(f"activation prior: needs at least 2 samples, got {n}")
        centred = r - r.mean(axis=0)
        sample = centred.T @ centred / n
        mu = float(np.trace(sample)) / units
        if mu <= 0:
            raise ValueError("activation prior: the training activations do not vary")
        dispersion = float(np.sum((sample - mu * np.eye(units)) ** 2)) / units
        # Mean squared distance of the one-sample estimates x x' from S, over n^2: how far S is off.
        spread = (float(np.sum(np.sum(centred**2, axis=1) ** 2)) - n * float(np.sum(sample**2))) / (n**2 * units)
        shrinkage = 1.0 if dispersion == 0 else min(max(spread, 0.0), dispersion) / dispersion
        covariance = (1 - shrinkage) * sample + shrinkage * mu * np.eye(units)
        return cls(r.mean(axis=0), covariance, shrinkage)

    def lengths(self, shift: np.ndarray) -> np.ndarray:
        """Mahalanobis length ``sqrt(s' Σ^-1 s)`` of each row of ``shift [N, U]``."""
        shift = np.asarray(shift, dtype=np.float64)
        solved = linalg.cho_solve(linalg.cho_factor(self.covariance), shift.T).T
        return np.sqrt(np.maximum(np.sum(shift * solved, axis=1), 0.0))


@dataclass(frozen=True)
class Counterfactuals:
    """One row per searched sample.

    ``original`` is the render of ``link(r)``, not the sample's own generator image, so that
    original and counterfactual differ only by the shift. Probabilities are those of the
    re-classified renders. ``steps`` counts optimiser steps up to the check that first saw
    the target class (paper; ``max_steps`` where none did), or the renders the walk and the
    bisection judged (mahalanobis).
    """

    success: np.ndarray  # bool [B]
    steps: np.ndarray  # int64 [B]
    start_prob_origin: np.ndarray  # float32 [B], render of link(r)
    start_prob_target: np.ndarray  # float32 [B]
    prob_origin: np.ndarray  # float32 [B], render of link(r_counterfactual)
    prob_target: np.ndarray  # float32 [B]
    predicted: np.ndarray  # int64 [B], class of the counterfactual render
    shift: np.ndarray  # float32 [B, U], r_counterfactual - r
    r_counterfactual: np.ndarray  # float32 [B, U]
    original: np.ndarray  # uint8 [B, H, W, 3]
    counterfactual: np.ndarray  # uint8 [B, H, W, 3]

    @property
    def shift_l2(self) -> np.ndarray:
        return np.linalg.norm(self.shift, axis=1)


def check_request(classifier: Classifier, r: torch.Tensor, origin: int, target: int, batch: int) -> None:
    """One line naming what is wrong with a search request, before any work is done."""
    if classifier.head is None:
        raise ValueError("counterfactuals need a classifier with a head (logits); this one has none")
    num_classes = classifier.num_classes
    for name, value in (("origin", origin), ("target", target)):
        if num_classes is not None and not 0 <= value < num_classes:
            raise ValueError(f"counterfactuals.{name}: class {value} is outside [0, {num_classes})")
    if origin == target:
        raise ValueError(f"counterfactuals: origin and target are the same class ({origin})")
    if batch < 1:
        raise ValueError("counterfactuals.batch_size: must be >= 1")
    if r.ndim != 2:
        raise ValueError(f"counterfactuals: r must be [samples, units], got shape {tuple(r.shape)}")


def search_mahalanobis(
    classifier: Classifier,
    generator: Generator,
    link: Link,
    r: torch.Tensor,
    origin: int,
    target: int,
    *,
    prior: ActivationPrior,
    max_distance: float,
    bisection_steps: int,
    batch: int,
) -> Counterfactuals:
    """The smallest-Mahalanobis counterfactual of every row of ``r`` [B, U] (see the module docstring).

    ``max_distance`` bounds the shift's Mahalanobis length; ``bisection_steps`` halves the
    bracket around the first flipping length that many times. Models and link must sit on
    ``r``'s device; ``batch`` bounds how many samples are rendered together and is halved
    when the GPU runs out of memory.
    """
    check_request(classifier, r, origin, target, batch)
    if max_distance <= 0 or bisection_steps < 0:
        raise ValueError("counterfactuals: max_distance must be > 0 and bisection_steps >= 0")
    if prior.covariance.shape != (r.shape[1], r.shape[1]):
        raise ValueError(f"counterfactuals: prior of {prior.covariance.shape[0]} units for r of {r.shape[1]}")
    covariance = torch.from_numpy(prior.covariance).to(device=r.device, dtype=torch.float32)
    settings = {"covariance": covariance, "max_distance": max_distance, "bisection_steps": bisection_steps}
    return _in_batches(_walk, classifier, generator, link, r, origin, target, batch, settings)


def _in_batches(
    search: Callable[..., Counterfactuals],
    classifier: Classifier,
    generator: Generator,
    link: Link,
    r: torch.Tensor,
    origin: int,
    target: int,
    batch: int,
    settings: Mapping[str, Any],
) -> Counterfactuals:
    """``search`` over ``r`` in batches of at most ``batch`` rows (halved on CUDA out-of-memory), joined."""
    parts: list[Counterfactuals] = []

    def step(rows: slice) -> None:
        parts.append(search(classifier, generator, link, r[rows].detach().float(), origin, target, **settings))

    run_with_backoff(step, r.shape[0], batch)
    return _joined(parts)


def _walk(
    classifier: Classifier,
    generator: Generator,
    link: Link,
    r: torch.Tensor,
    origin: int,
    target: int,
    *,
    covariance: torch.Tensor,
    max_distance: float,
    bisection_steps: int,
) -> Counterfactuals:
    n = r.shape[0]
    with torch.enable_grad():
        probe = r.clone().requires_grad_(True)
        logits = classifier.head(probe)
        margin = (logits[:, target] - logits[:, origin]).detach()
        (gradient,) = torch.autograd.grad((logits[:, target] - logits[:, origin]).sum(), probe)
    with torch.no_grad():
        spread = gradient @ covariance  # Σ g per sample (Σ is symmetric)
        gain = torch.sqrt((gradient * spread).sum(dim=1).clamp_min(1e-30))  # margin per unit of Mahalanobis length
        direction = spread / gain[:, None]  # Mahalanobis length 1
        head_crossing = (-margin / gain).clamp(MIN_START_FRACTION * max_distance, max_distance)

        def judge(rows: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            shifted = torch.relu(r[rows] + length[:, None] * direction[rows])
            images = _quantised(synthesize(generator, link(shifted)))
            return images, _probabilities(classifier, images)

        start_images = _quantised(synthesize(generator, link(r)))
        start_probs = _probabilities(classifier, start_images)
        flipped_at_start = start_probs.argmax(1) == target
        low = torch.zeros(n, device=r.device)
        high = torch.where(flipped_at_start, low, torch.full_like(low, torch.inf))
        final_images, final_probs = start_images.clone(), start_probs.clone()
        renders = torch.zeros(n, dtype=torch.int64, device=r.device)

        # Walk out until the render flips; a sample that never does ends at max_distance.
        length = head_crossing.clone()
        searching = ~flipped_at_start
        while bool(searching.any()):
            rows = searching.nonzero().squeeze(1)
            images, probs = judge(rows, length[rows])
            renders[rows] += 1
            flipped = probs.argmax(1) == target
            at_limit = length[rows] >= max_distance
            keep = flipped | at_limit
            final_images[rows[keep]], final_probs[rows[keep]] = images[keep], probs[keep]
            high[rows[flipped]] = length[rows[flipped]]
            low[rows[~flipped]] = length[rows[~flipped]]
            searching[rows[keep]] = False
            length[rows] = torch.clamp(length[rows] * BRACKET_GROWTH, max=max_distance)

        # Bisect between the last length that did not flip and the first that did.
        found = torch.isfinite(high)
        rows = (found & ~flipped_at_start).nonzero().squeeze(1)
        for _ in range(bisection_steps if rows.numel() else 0):
            middle = (low[rows] + high[rows]) / 2
            images, probs = judge(rows, middle)
            renders[rows] += 1
            flipped = probs.argmax(1) == target
            high[rows[flipped]] = middle[flipped]
            low[rows[~flipped]] = middle[~flipped]
            final_images[rows[flipped]], final_probs[rows[flipped]] = images[flipped], probs[flipped]

        chosen = torch.where(found, high, low)
        r_counterfactual = torch.relu(r + chosen[:, None] * direction)
    log.info("counterfactuals %d -> %d: %d of %d flipped", origin, target, int(found.sum()), n)
    return _result(
        found, renders, start_probs, final_probs, r, r_counterfactual, start_images, final_images, origin, target
    )


def search_paper(
    classifier: Classifier,
    generator: Generator,
    link: Link,
    r: torch.Tensor,
    origin: int,
    target: int,
    *,
    lr: float,
    max_steps: int,
    w_origin: float,
    w_cos: float,
    check_every: int,
    optimizer: str,
    batch: int,
) -> Counterfactuals:
    """The paper's gradient search for every row of ``r`` [B, U] (see the module docstring).

    ``link`` must be differentiable. Models and link must already sit on ``r``'s device.
    ``batch`` bounds how many samples are optimised together; it is halved when the GPU runs
    out of memory.
    """
    check_request(classifier, r, origin, target, batch)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"counterfactuals.optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")
    if max_steps < 1 or check_every < 1:
        raise ValueError("counterfactuals: max_steps and check_every must be >= 1")
    settings = {
        "lr": lr,
        "max_steps": max_steps,
        "w_origin": w_origin,
        "w_cos": w_cos,
        "check_every": check_every,
        "optimizer": optimizer,
    }
    return _in_batches(_descend, classifier, generator, link, r, origin, target, batch, settings)


def _descend(
    classifier: Classifier,
    generator: Generator,
    link: Link,
    r: torch.Tensor,
    origin: int,
    target: int,
    *,
    lr: float,
    max_steps: int,
    w_origin: float,
    w_cos: float,
    check_every: int,
    optimizer: str,
) -> Counterfactuals:
    n = r.shape[0]
    device = r.device
    with torch.no_grad():
        w_reference = link(r)
        start_images = _quantised(synthesize(generator, w_reference))
        start_probs = _probabilities(classifier, start_images)

    # A zero start keeps the search from inventing changes that no class term asks for.
    shift = torch.zeros_like(r, requires_grad=True)
    step_size = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer]([shift], lr=lr)

    done = torch.zeros(n, dtype=torch.bool, device=device)
    steps = torch.full((n,), max_steps, dtype=torch.int64)
    final_shift = torch.zeros_like(r)
    final_images = torch.empty_like(start_images)
    final_probs = torch.empty_like(start_probs)

    last_report = time.perf_counter()
    for step in range(1, max_steps + 1):
        with torch.enable_grad():
            loss = paper_loss(classifier, link, r, shift, w_reference, origin, target, w_origin=w_origin, w_cos=w_cos)
            # Only the shift's gradient: the models' parameters may require grad and must stay untouched.
            (shift.grad,) = torch.autograd.grad(loss[~done].sum(), shift)
        step_size.step()
        with torch.no_grad():
            # Adam's momentum would keep moving a finished sample even with a zero gradient.
            shift[done] = final_shift[done]

        if step % check_every and step < max_steps:
            continue
        active = (~done).nonzero().squeeze(1)
        with torch.no_grad():
            candidate = shift[active].detach()
            images = _quantised(synthesize(generator, link(torch.relu(r[active] - candidate))))
            probs = _probabilities(classifier, images)
        flipped = probs.argmax(1) == target
        # Failures keep their last check, so every sample ends with a rendered counterfactual.
        keep = flipped | (step == max_steps)
        rows = active[keep]
        final_shift[rows] = candidate[keep]
        final_images[rows] = images[keep]
        final_probs[rows] = probs[keep]
        done[active[flipped]] = True
        steps[active[flipped].cpu()] = step
        if time.perf_counter() - last_report > PROGRESS_SECONDS:
            log.info("counterfactuals %d -> %d: step %d, %d of %d flipped", origin, target, step, int(done.sum()), n)
            last_report = time.perf_counter()
        if bool(done.all()):
            break

    with torch.no_grad():
        r_counterfactual = torch.relu(r - final_shift)
    return _result(
        done, steps, start_probs, final_probs, r, r_counterfactual, start_images, final_images, origin, target
    )


def paper_loss(
    classifier: Classifier,
    link: Link,
    r: torch.Tensor,
    shift: torch.Tensor,
    w_reference: torch.Tensor,
    origin: int,
    target: int,
    *,
    w_origin: float,
    w_cos: float,
) -> torch.Tensor:
    """The paper's loss per sample, [B], scored on ``relu(r - shift)``: the activation that is rendered."""
    shifted = torch.relu(r - shift)
    logits = classifier.head(shifted)
    closeness = F.cosine_similarity(w_reference, link(shifted), dim=1)
    return -logits[:, target] + w_origin * logits[:, origin] - w_cos * closeness


def _result(
    success: torch.Tensor,
    steps: torch.Tensor,
    start_probs: torch.Tensor,
    final_probs: torch.Tensor,
    r: torch.Tensor,
    r_counterfactual: torch.Tensor,
    start_images: torch.Tensor,
    final_images: torch.Tensor,
    origin: int,
    target: int,
) -> Counterfactuals:
    return Counterfactuals(
        success=success.cpu().numpy(),
        steps=steps.cpu().numpy().astype(np.int64),
        start_prob_origin=start_probs[:, origin].cpu().numpy(),
        start_prob_target=start_probs[:, target].cpu().numpy(),
        prob_origin=final_probs[:, origin].cpu().numpy(),
        prob_target=final_probs[:, target].cpu().numpy(),
        predicted=final_probs.argmax(1).cpu().numpy(),
        shift=(r_counterfactual - r).detach().cpu().numpy(),
        r_counterfactual=r_counterfactual.detach().cpu().numpy(),
        original=to_uint8(start_images),
        counterfactual=to_uint8(final_images),
    )


def _joined(parts: list[Counterfactuals]) -> Counterfactuals:
    return Counterfactuals(
        **{name: np.concatenate([getattr(p, name) for p in parts]) for name in Counterfactuals.__dataclass_fields__}
    )


def _quantised(images: torch.Tensor) -> torch.Tensor:
    # Judging the 8-bit image that is stored keeps a flip near the boundary from being lost on saving.
    return (images * 255).round() / 255


def _probabilities(classifier: Classifier, images: torch.Tensor) -> torch.Tensor:
    return torch.softmax(classifier.head(classifier.features(images)), dim=1)

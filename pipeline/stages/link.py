"""Stage 3: the link from classifier activations r to generator latents w.

The link is a ridge regression on standardised r, solved in closed form in float64 via
one SVD per fit, which gives the solutions for every candidate alpha at the cost of one.
Alpha is chosen by k-fold cross-validation over a log grid unless the config fixes it.
The fitted map is stored as an affine map in raw activation units, ``w = W r + b``, which is
what the perturbation stage needs: moving unit i by ``dv`` moves w by ``W[:, i] * dv``.
An optional small MLP is fitted for comparison only; its figures go into the metrics.

:func:`column_tests` asks of every unit's column whether it is more than fitting noise; the
concept statistics require it (``p_link`` in :mod:`pipeline.stats`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats as scipy_stats
from torch import nn

from pipeline.stages.common import Models, ModelSetup
from pipeline.stages.samples import Samples
from pipeline.store import atomic_path, write_json, write_parquet

log = logging.getLogger(__name__)

LINK_FORMAT = 1
MLP_LEARNING_RATE = 1e-3
MLP_WEIGHT_DECAY = 1e-4


class AffineLink(nn.Module):
    """w = r @ weight.T + bias, with ``weight [w_dim, U]`` in raw activation units."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight.float())
        self.register_buffer("bias", bias.float())

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return r.to(self.weight.dtype) @ self.weight.T + self.bias


class MlpLink(nn.Module):
    """A two-hidden-layer MLP on standardised r, predicting standardised w."""

    def __init__(self, num_units: int, w_dim: int, hidden: int):
        super().__init__()
        self.register_buffer("r_mean", torch.zeros(num_units))
        self.register_buffer("r_std", torch.ones(num_units))
        self.register_buffer("w_mean", torch.zeros(w_dim))
        self.register_buffer("w_std", torch.ones(w_dim))
        self.net = nn.Sequential(
            nn.Linear(num_units, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, w_dim)
        )

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.net((r.float() - self.r_mean) / self.r_std) * self.w_std + self.w_mean


def standardisation(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std per unit; constant (dead) units get std 1 so they stay at zero."""
    mean = r.mean(dim=0)
    std = r.std(dim=0, correction=0)
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def ridge_path(x: torch.Tensor, y: torch.Tensor, alphas: Sequence[float]) -> list[torch.Tensor]:
    """Ridge coefficients [U, w_dim] of centred ``y`` on centred ``x``, one per alpha."""
    u, s, vt = torch.linalg.svd(x, full_matrices=False)
    uty = u.T @ y
    return [_ridge_from_svd(s, vt, uty, alpha) for alpha in alphas]


def _ridge_from_svd(s: torch.Tensor, vt: torch.Tensor, uty: torch.Tensor, alpha: float) -> torch.Tensor:
    """Ridge coefficients [U, w_dim] from the SVD x = U S V^T and U^T y."""
    return vt.T @ ((s / (s * s + alpha)).unsqueeze(1) * uty)


def fit_ridge(r: torch.Tensor, w: torch.Tensor, alphas: Sequence[float]) -> list[AffineLink]:
    """Fit ridge r -> w in float64 for each alpha; return the affine links in raw units."""
    r, w = r.double(), w.double()
    r_mean, r_std = standardisation(r)
    w_mean = w.mean(dim=0)
    links = []
    for coef in ridge_path((r - r_mean) / r_std, w - w_mean, alphas):
        weight = (coef / r_std.unsqueeze(1)).T
        links.append(AffineLink(weight, w_mean - weight @ r_mean))
    return links


def column_tests(r: torch.Tensor, w: torch.Tensor, alpha: float) -> pd.DataFrame:
    """Per unit: is its column of the ridge link ``r -> w`` (fitted with ``alpha``) more than fitting noise?

    With standardised r = U S V^T, the coefficients are B = V diag(s / (s^2 + alpha)) U^T w.
    Noise in w (rows independent, covariance Sigma across latent dims) reaches unit i's row
    of B with covariance d_i Sigma, d_i = sum_j V_ij^2 s_j^2 / (s_j^2 + alpha)^2. Sigma is
    estimated from the residuals over n minus the fit's effective degrees of freedom. With
    a zero column, ||B_i||^2 / d_i is then a sum of chi-squares weighted by Sigma's
    eigenvalues, taken as g chi2_h with g = tr(Sigma^2) / tr(Sigma) and h = tr(Sigma)^2 /
    tr(Sigma^2) (Satterthwaite), which needs no inverse of a possibly singular Sigma.

    What it tells apart is a learnt column from noise, not a unit's own contribution from
    its neighbours': ridge shrinks correlated units' columns towards one another, and a
    column that a unit owes to its neighbours counts as learnt.

    Returns ``unit``, ``w_norm`` (||B_i||: how far w moves per standard deviation of the
    unit), ``noise_norm`` (sqrt(d_i tr Sigma), the norm a column of pure noise would have)
    and ``p``; a constant unit gets an empty column and p = 1.
    """
    r, w = r.double(), w.double()
    mean, std = standardisation(r)
    x = (r - mean) / std
    y = w - w.mean(dim=0)
    u, s, vt = torch.linalg.svd(x, full_matrices=False)
    coef = _ridge_from_svd(s, vt, u.T @ y, alpha)  # [U, w_dim]
    residual = y - x @ coef
    dof = float(len(x) - (s * s / (s * s + alpha)).sum())
    if dof <= 0:
        raise ValueError(f"link: {len(x)} training samples leave no residual degrees of freedom at alpha {alpha}")
    sigma = residual.T @ residual / dof
    spread = ((vt.T**2) * (s * s / (s * s + alpha) ** 2)).sum(dim=1)  # d_i [U]
    trace, trace_squared = float(torch.trace(sigma)), float((sigma * sigma).sum())
    scale, dof_chi2 = trace_squared / trace, trace**2 / trace_squared
    norm = torch.linalg.vector_norm(coef, dim=1).numpy()
    spread = spread.numpy()
    learnt = spread > 1e-12 * spread.max()
    with np.errstate(invalid="ignore", divide="ignore"):
        statistic = np.where(learnt, norm**2 / spread, 0.0)
    return pd.DataFrame(
        {
            "unit": np.arange(len(norm), dtype=np.int64),
            "w_norm": norm,
            "noise_norm": np.sqrt(spread * trace),
            "p": np.where(learnt, scipy_stats.chi2.sf(statistic / scale, dof_chi2), 1.0),
        }
    )


def cross_validate_alpha(
    r: torch.Tensor, w: torch.Tensor, alphas: Sequence[float], folds: int, seed: int
) -> tuple[float, dict[str, float]]:
    """The alpha with the lowest mean validation MSE over ``folds`` folds, and every MSE."""
    if len(r) < folds:
        raise ValueError(f"config key 'link.folds': {folds} folds need at least {folds} training samples, got {len(r)}")
    order = np.random.default_rng(seed).permutation(len(r))
    errors = np.zeros(len(alphas))
    for held_out in np.array_split(order, folds):
        train = np.setdiff1d(order, held_out)
        for k, link in enumerate(fit_ridge(r[train], w[train], alphas)):
            with torch.no_grad():
                errors[k] += float(((link(r[held_out]) - w[held_out]) ** 2).mean()) / folds
    best = int(np.argmin(errors))
    return float(alphas[best]), {repr(float(a)): float(e) for a, e in zip(alphas, errors, strict=True)}


def r2_score(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of the variance of ``target`` (summed over latent dims) that ``predicted`` explains."""
    residual = ((predicted.double() - target.double()) ** 2).sum()
    total = ((target.double() - target.double().mean(dim=0)) ** 2).sum()
    return float(1.0 - residual / total)


def unit_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation per column of two [N, U] arrays; NaN where a column is constant."""
    a = a.astype(np.float64) - a.mean(axis=0)
    b = b.astype(np.float64) - b.mean(axis=0)
    denominator = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (a * b).sum(axis=0) / denominator, np.nan)


def cycle_metrics(
    link: nn.Module, models: Models, r: torch.Tensor, classes: np.ndarray, *, batch_size: int, label: str
) -> dict[str, float | None]:
    """r -> link -> render -> r_hat: the median unit correlation and the class agreement."""
    with torch.no_grad():
        w_hat = link.to(models.device)(r.to(models.device)).float().cpu()
    encoded = models.encode(w_hat, batch_size=batch_size, label=label)
    correlations = unit_correlations(r.numpy(), encoded.r)
    agreement = None if encoded.logits is None else float(np.mean(encoded.logits.argmax(axis=1) == classes))
    return {
        "cycle_unit_corr": float(np.nanmedian(correlations)) if np.isfinite(correlations).any() else None,
        "cycle_class_agreement": agreement,
    }


def fit_mlp(r: torch.Tensor, w: torch.Tensor, *, hidden: int, epochs: int, seed: int, batch_size: int) -> MlpLink:
    """Train the comparison MLP with Adam on minibatches; deterministic for a seed on the CPU."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mlp = MlpLink(r.shape[1], w.shape[1], hidden)
    mlp.r_mean, mlp.r_std = (t.float() for t in standardisation(r.double()))
    mlp.w_mean, mlp.w_std = (t.float() for t in standardisation(w.double()))
    optimiser = torch.optim.Adam(mlp.parameters(), lr=MLP_LEARNING_RATE, weight_decay=MLP_WEIGHT_DECAY)
    shuffle = torch.Generator().manual_seed(seed)
    target = (w.float() - mlp.w_mean) / mlp.w_std
    for epoch in range(epochs):
        order = torch.randperm(len(r), generator=shuffle)
        total = 0.0
        for start in range(0, len(r), batch_size):
            rows = order[start : start + batch_size]
            loss = ((mlp.net((r[rows].float() - mlp.r_mean) / mlp.r_std) - target[rows]) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(rows)
        if (epoch + 1) % max(1, epochs // 10) == 0:
            log.info("mlp: epoch %d/%d, training loss %.4f", epoch + 1, epochs, total / len(r))
    return mlp.eval()


def save_link(path: str | Path, affine: AffineLink, alpha: float, mlp: MlpLink | None, hidden: int) -> None:
    payload = {
        "format": LINK_FORMAT,
        "weight": affine.weight.cpu(),
        "bias": affine.bias.cpu(),
        "alpha": alpha,
        "mlp": None if mlp is None else {"hidden": hidden, "state_dict": mlp.state_dict()},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _load_payload(path: str | Path) -> dict[str, Any]:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: link model not found")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != LINK_FORMAT:
        raise ValueError(f"{path}: unknown link format {payload.get('format')!r}")
    return payload


def load_link(path: str | Path) -> AffineLink:
    """The ridge link from ``link/model.pt``, on the CPU."""
    payload = _load_payload(path)
    return AffineLink(payload["weight"], payload["bias"])


def load_mlp_link(path: str | Path) -> MlpLink | None:
    """The comparison MLP from ``link/model.pt``, or None when it was not fitted."""
    payload = _load_payload(path)
    if payload["mlp"] is None:
        return None
    weight = payload["weight"]
    mlp = MlpLink(weight.shape[1], weight.shape[0], payload["mlp"]["hidden"])
    mlp.load_state_dict(payload["mlp"]["state_dict"])
    return mlp.eval()


def fit_link(
    samples: Samples,
    model_path: str | Path,
    metrics_path: str | Path,
    units_path: str | Path,
    *,
    models: ModelSetup,
    alpha: str | float,
    alphas: list[float],
    folds: int,
    seed: int,
    mlp: bool,
    mlp_hidden: int,
    mlp_epochs: int,
    batch_size: int,
) -> None:
    """Fit the link on accepted training samples; write ``model.pt``, ``metrics.json`` and
    ``units.parquet`` (:func:`column_tests`).

    Held-out figures use the accepted test samples: R² of w, and the cycle r -> w -> image ->
    r_hat (median unit correlation, fraction of re-renders classified as the sample's class).
    """
    arrays = {"latents": ("w", "class"), "activations": ("r",)}
    (train_rows, train), (test_rows, test) = samples.read("train", **arrays), samples.read("test", **arrays)
    if len(train_rows) < 2 or len(test_rows) < 2:
        raise ValueError(
            f"{samples.activations_path}: the link needs at least 2 accepted train and test samples, "
            f"got {len(train_rows)} and {len(test_rows)}"
        )
    r_train, w_train = torch.from_numpy(train["r"]), torch.from_numpy(train["w"])
    r_test, w_test = torch.from_numpy(test["r"]), torch.from_numpy(test["w"])
    if alpha == "auto":
        chosen, cv_mse = cross_validate_alpha(r_train, w_train, alphas, folds, seed)
        log.info("link: alpha %.3g chosen by %d-fold cross-validation", chosen, folds)
    else:
        chosen, cv_mse = float(alpha), {}
    (affine,) = fit_ridge(r_train, w_train, [chosen])
    columns = column_tests(r_train, w_train, chosen)
    with torch.no_grad():
        metrics: dict[str, Any] = {
            "alpha": chosen,
            "alpha_source": "cross-validation" if alpha == "auto" else "config",
            "cv_mse": cv_mse,
            "n_train": len(train_rows),
            "n_test": len(test_rows),
            "precision": models.precision,
            "num_units": int(r_train.shape[1]),
            "w_dim": int(w_train.shape[1]),
            "r2_train": r2_score(affine(r_train), w_train),
            "r2_test": r2_score(affine(r_test), w_test),
            "columns_beyond_noise": float((columns["p"] <= 0.05).mean()),
            "column_norm_over_noise_median": float((columns["w_norm"] / columns["noise_norm"]).median()),
        }
    if not metrics["r2_test"] > 0:
        # Every later stage moves along this link; one that predicts w no better than its
        # mean would make every unit look inert, not fail.
        raise ValueError(
            f"link: held-out R² of w is {metrics['r2_test']:.3g}, not above 0: the activations in "
            f"{samples.activations_path} do not predict the latents (too few samples, or a layer blind to the images?)"
        )
    loaded = models.load()
    metrics |= cycle_metrics(affine, loaded, r_test, test["class"], batch_size=batch_size, label="link cycle")
    mlp_link = None
    if mlp:
        mlp_link = fit_mlp(r_train, w_train, hidden=mlp_hidden, epochs=mlp_epochs, seed=seed, batch_size=batch_size)
        with torch.no_grad():
            metrics["mlp_r2_train"] = r2_score(mlp_link(r_train), w_train)
            metrics["mlp_r2_test"] = r2_score(mlp_link(r_test), w_test)
        mlp_cycle = cycle_metrics(mlp_link, loaded, r_test, test["class"], batch_size=batch_size, label="mlp cycle")
        metrics |= {f"mlp_{name}": value for name, value in mlp_cycle.items()}
        mlp_link.cpu()
    log.info("link: %s", {k: v for k, v in metrics.items() if k != "cv_mse"})
    save_link(model_path, affine.cpu(), chosen, mlp_link, mlp_hidden)
    write_parquet(units_path, columns)
    write_json(metrics_path, metrics)

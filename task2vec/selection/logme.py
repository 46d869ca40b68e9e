"""LogME (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer
Learning"): how well frozen features F (N, D) explain target labels, as the log marginal evidence of
a Bayesian linear model, maximised over its two precisions. No training.

For one target column y (N,), weights w ~ N(0, α⁻¹ I) and y | F, w ~ N(F w, β⁻¹ I):

    log p(y | F, α, β) = D/2 log α + N/2 log β − N/2 log 2π − β/2 ‖y − F m‖² − α/2 ‖m‖²
                         − 1/2 Σ_i log(α + β σ_i),

with A = α I + β FᵀF, m = β A⁻¹ Fᵀ y the posterior mean and σ_i the eigenvalues of FᵀF. The
maximising (α, β) solve the fixed point (MacKay 1992, the published algorithm's iteration)

    γ = Σ_i β σ_i / (α + β σ_i),   α = γ / ‖m‖²,   β = (N − γ) / ‖y − F m‖²,

iterated here to convergence (relative change of α/β below `tolerance`), then the evidence is
evaluated exactly at the result. LogME = evidence / N, averaged over target columns: the one-hot
columns of a class target, the single column of a regression target. Higher is better.

The sum over i runs over all D eigenvalues of FᵀF, the zero ones included (each adds log α);
thuml/LogME's default sums over the min(N, D) singular values only, so where N < D its values are
not the evidence and not comparable with these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Printed and written wherever a LogME value is reported.
LOGME_NOTE = ("LogME here is the exact log evidence / N; the thuml/LogME package's values differ where texts are "
              "fewer than feature dimensions (N < D: its fixed point drops the D - N zero eigenvalues), so do not "
              "compare the two")


@dataclass(frozen=True)
class Evidence:
    """LogME of one target column and the precisions that maximise it."""

    value: float      # log evidence / N
    alpha: float
    beta: float
    iterations: int


def column_evidence(features: np.ndarray, target: np.ndarray, *, tolerance: float = 1e-8,
                    max_iterations: int = 1000) -> Evidence:
    """Maximised LogME of one target column by the fixed point, on the eigendecomposition of FᵀF."""
    n, d = features.shape
    sigma, vectors = np.linalg.eigh(features.T @ features)                         # (D,), (D, D)
    sigma = np.clip(sigma, 0.0, None)
    projected = vectors.T @ (features.T @ target)                                  # (D,) Vᵀ Fᵀ y
    alpha, beta = 1.0, 1.0
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        m_coords = beta * projected / (alpha + beta * sigma)                       # m in the eigenbasis
        gamma = float(np.sum(beta * sigma / (alpha + beta * sigma)))
        m = vectors @ m_coords
        residual = float(np.sum((target - features @ m) ** 2))
        new_alpha = gamma / max(float(m_coords @ m_coords), 1e-300)
        new_beta = (n - gamma) / max(residual, 1e-300)
        converged = abs(new_alpha / new_beta - alpha / beta) <= tolerance * (alpha / beta)
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    value = (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - n / 2 * math.log(2 * math.pi)
             - 0.5 * float(np.sum(np.log(alpha + beta * sigma))))
    m_coords = beta * projected / (alpha + beta * sigma)
    m = vectors @ m_coords
    value -= beta / 2 * float(np.sum((target - features @ m) ** 2)) + alpha / 2 * float(m_coords @ m_coords)
    return Evidence(value / n, alpha, beta, iterations)


def logme(features: np.ndarray, labels: np.ndarray, *, regression: bool) -> float:
    """LogME of features (N, D) for labels (N,): class indices (one-hot columns, averaged) or scores."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.shape != (features.shape[0],) or features.shape[0] < 2:
        raise ValueError(f"features (N, D) and labels (N,) with N >= 2, got {features.shape} and {labels.shape}")
    if not np.all(np.isfinite(features)):
        raise ValueError("features hold NaN or infinity")
    if regression:
        columns = [labels.astype(np.float64)]
    else:
        columns = [(labels == k).astype(np.float64) for k in np.unique(labels)]
    return float(np.mean([column_evidence(features, column).value for column in columns]))

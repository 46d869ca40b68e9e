"""Confidence intervals of a ranking score by resampling seeds within each source.

A source's measured score is the mean over its training seeds, and so is the plain model's; the
seeds are the independent units. Each bootstrap draw resamples, with replacement, the seeds of
every source and of the plain model separately (as many as each has), recomputes each mean as
x̄ + sqrt(n/(n−1))·(x̄* − x̄) (the resampled mean x̄* of n seeds spreads with the plug-in variance,
(n−1)/n of the unbiased one), the gains over the plain model's mean, and the score of the fixed
predicted ranking on them. The
interval is the percentile interval of the draws; draws where the score is undefined (NDCG with
no positive gain) are left out and counted.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# (predicted, measured means, gains) -> score
Statistic = Callable[[np.ndarray, np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Interval:
    """A score, its percentile interval over seed resamples, and the draws left out."""

    value: float
    low: float
    high: float
    undefined_draws: int
    samples: int
    confidence: float


def _inflation(n: int) -> float:
    """sqrt(n / (n − 1)): a resampled mean varies by (n − 1)/n of the sample's variance / n (the
    plug-in variance's bias), so its deviation from the mean is scaled back up; 1 for one seed."""
    return float(np.sqrt(n / (n - 1))) if n > 1 else 1.0


def seed_interval(statistic: Statistic, predicted: Sequence[float], per_source: Sequence[Sequence[float]],
                  plain: Sequence[float], *, samples: int = 2000, seed: int = 0,
                  confidence: float = 0.95) -> Interval:
    """The score of `predicted` on the measured means of `per_source` (per-seed values of each source)
    against `plain` (the plain model's per-seed values), with its seed-resampling interval.

    Raises:
        ValueError: a source or the plain model without seeds.
    """
    values = [np.asarray(v, dtype=np.float64) for v in per_source]
    base = np.asarray(plain, dtype=np.float64)
    if any(v.size == 0 for v in values) or base.size == 0:
        raise ValueError("every source and the plain model need at least one seed")
    p = np.asarray(predicted, dtype=np.float64)
    means = np.array([v.mean() for v in values])
    observed = statistic(p, means, means - base.mean())
    rng = np.random.default_rng(seed)
    draws = np.empty(samples)
    inflation = np.array([_inflation(v.size) for v in values])                     # (S,)
    for b in range(samples):
        resampled = np.array([v[rng.integers(v.size, size=v.size)].mean() for v in values])
        drawn = means + inflation * (resampled - means)
        plain_mean = base.mean() + _inflation(base.size) * (base[rng.integers(base.size, size=base.size)].mean()
                                                            - base.mean())
        draws[b] = statistic(p, drawn, drawn - plain_mean)
    defined = draws[np.isfinite(draws)]
    tail = (1 - confidence) / 2
    low, high = (float(np.quantile(defined, tail)), float(np.quantile(defined, 1 - tail))) if defined.size \
        else (float("nan"), float("nan"))
    return Interval(float(observed), low, high, samples - int(defined.size), samples, confidence)

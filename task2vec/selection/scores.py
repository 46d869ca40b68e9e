"""Scores of a predicted ranking of sources against their measured transfer (Vu et al. 2020, Poth et
al. 2021). `predicted`: a selector's score per source (higher = predicted to help more);
`measured`: the source's measured score on the target; `gain`: measured minus the plain model's.

    spearman       Spearman's ρ of predicted and measured (average ranks for ties; NaN with a reason
                   when either is constant)
    ndcg@k         DCG_k / IDCG_k with DCG_k = Σ_{i ≤ k} rel_(i) / log2(i + 1), sources ordered by
                   predicted score and rel = max(gain, 0) (NDCG needs non-negative relevance: a source
                   that hurts counts as no help); tied predicted scores share the mean of their
                   positions' discounts, as sklearn.metrics.ndcg_score does; NaN when no source helps
                   (IDCG = 0)
    regret@k       best measured − the best measured among the top k predicted, in the target's
                   metric (0: the best source is among the k picked); ties at the cut are broken
                   against the selector (the worse-measured tied source is picked first)
    rank_of_best   1-based position of the best-measured source in the predicted order, a tie counting
                   half a place for every other source tied with it
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from utils.classification.metrics import MetricValue, spearman as spearman_metric


def _vectors(predicted: Sequence[float], measured: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    p, m = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    if p.shape != m.shape or p.ndim != 1 or p.size == 0:
        raise ValueError(f"predicted {p.shape} and measured {m.shape} must be two non-empty vectors of one length")
    return p, m


def spearman(predicted: Sequence[float], measured: Sequence[float]) -> MetricValue:
    """Spearman's ρ (utils.classification.metrics.spearman: Pearson of average ranks)."""
    p, m = _vectors(predicted, measured)
    return spearman_metric(m, p)


def dcg_at_k(predicted: np.ndarray, relevance: np.ndarray, k: int) -> float:
    """Σ over the first k places of the predicted order of relevance / log2(place + 1), tied
    predictions sharing the mean discount of the places they span."""
    discount = 1.0 / np.log2(np.arange(predicted.size) + 2.0)
    discount[k:] = 0.0
    cumulative = np.cumsum(discount)
    total = 0.0
    start = 0
    for value in np.unique(predicted)[::-1]:            # groups of equal predictions, best first
        members = predicted == value
        count = int(members.sum())
        span = cumulative[start + count - 1] - (cumulative[start - 1] if start else 0.0)
        total += float(relevance[members].mean()) * span
        start += count
    return total


def ndcg_at_k(predicted: Sequence[float], gain: Sequence[float], k: int) -> MetricValue:
    """NDCG@k with relevance max(gain, 0) (module docstring)."""
    p, g = _vectors(predicted, gain)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    relevance = np.clip(g, 0.0, None)
    ideal = dcg_at_k(relevance, relevance, k)
    if ideal <= 0:
        return MetricValue(math.nan, "no source has a positive gain: NDCG is undefined")
    return MetricValue(dcg_at_k(p, relevance, k) / ideal)


def top_k(predicted: np.ndarray, measured: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k sources picked by predicted score, ties broken against the selector."""
    order = np.lexsort((measured, -predicted))          # predicted descending, then measured ascending
    return order[:k]


def regret_at_k(predicted: Sequence[float], measured: Sequence[float], k: int) -> MetricValue:
    """max(measured) − max(measured of the top k predicted) (module docstring)."""
    p, m = _vectors(predicted, measured)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return MetricValue(float(m.max() - m[top_k(p, m, k)].max()))


def rank_of_best(predicted: Sequence[float], measured: Sequence[float]) -> MetricValue:
    """1 + #(sources predicted higher than the best-measured one) + #(tied with it) / 2; with
    several best-measured sources, the best placed of them."""
    p, m = _vectors(predicted, measured)
    ranks = [1 + float(np.sum(p > p[i])) + (float(np.sum(p == p[i])) - 1) / 2
             for i in np.flatnonzero(m == m.max())]
    return MetricValue(min(ranks))


SCORES = ("spearman", "ndcg@3", "regret@3", "rank_of_best")


def ranking_scores(predicted: Sequence[float], measured: Sequence[float], gain: Sequence[float],
                   k: int = 3) -> dict[str, MetricValue]:
    """Every score of one predicted ranking (k for NDCG and regret)."""
    return {"spearman": spearman(predicted, measured), f"ndcg@{k}": ndcg_at_k(predicted, gain, k),
            f"regret@{k}": regret_at_k(predicted, measured, k), "rank_of_best": rank_of_best(predicted, measured)}

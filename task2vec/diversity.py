"""The diversity coefficient, cross-diversity, and their uncertainty; the Monte-Carlo noise floor.

The diversity coefficient of n embeddings is the mean distance over the P = n(n−1)/2 pairs,

    div = (1/P) Σ_{i<j} d(e_i, e_j).

Its P terms are not independent (each embedding appears in n−1 of them: div is a U-statistic), so
the i.i.d.-pairs interval that Beyond Scale reports is far too narrow. The default interval is a
leave-one-embedding-out jackknife, which treats the n batches (or tasks), not the pairs, as the
independent units. The naive interval is still returned, labelled as such, for comparison with
published numbers.

Intervals are for a quantity that lies in [0, 1] (a mean of distances): the t-interval is
intersected with [0, 1]. A confidence set that is cut to the parameter's range still covers the
true value whenever the uncut one did, so the coverage is unchanged, and no interval reaches
below 0. Point estimates are never clipped (a bias-corrected diversity may be negative; see
task2vec.correction).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from task2vec.correction import corrected_distance, corrected_matrix
from task2vec.distances import cross_distances, distance_function, paired_distances, pairwise_distances

SYMMETRY_ATOL = 1e-9
RANGE = (0.0, 1.0)  # every distance lies in [0, 1], so does every mean of true distances


@dataclass(frozen=True)
class DiversityEstimate:
    """A mean distance with its standard error and confidence interval.

    Attributes:
        value: the estimate (mean pairwise or mean cross distance).
        se, ci_low, ci_high: standard error and confidence interval from `method`
            (NaN when they cannot be estimated, e.g. from a single pair).
        n: number of independent units (embeddings); for cross-diversity, min(n1, n2).
        confidence: the interval's coverage, e.g. 0.95.
        method: how se was estimated.
        naive_se, naive_ci_low, naive_ci_high: the interval that treats every distance as an
            independent draw. Too narrow: the distances share embeddings. For comparison only.
        ci_clipped: whether the t-interval reached outside [0, 1] and was cut to it.
    """

    value: float
    se: float
    ci_low: float
    ci_high: float
    n: int
    confidence: float
    method: str
    naive_se: float
    naive_ci_low: float
    naive_ci_high: float
    ci_clipped: bool = False

    def to_dict(self) -> dict:
        """The fields as a plain dict (NaN stays NaN; writers of strict JSON map it to null)."""
        return asdict(self)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")


def _t_interval(value: float, se: float, dof: int, confidence: float) -> tuple[float, float]:
    """value ± t_{(1+c)/2, dof}·se, intersected with RANGE; NaN bounds when dof < 1 or se is NaN.

    An interval entirely outside RANGE (possible for a bias-corrected value) becomes the nearest
    end point, [0, 0] or [1, 1].
    """
    if dof < 1 or math.isnan(se):
        return math.nan, math.nan
    half = float(stats.t.ppf((1 + confidence) / 2, dof)) * se
    return clip_interval(value - half, value + half)


def clip_interval(low: float, high: float, bounds: tuple[float, float] = RANGE) -> tuple[float, float]:
    """[low, high] ∩ [bounds]; an empty intersection becomes the nearer bound (NaN stays NaN)."""
    lower, upper = bounds
    return min(max(low, lower), upper), max(min(high, upper), lower)


def _naive(values: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(se, low, high) of the mean of `values` as if they were i.i.d.: sd/√N, t with N−1 dof."""
    count = values.size
    se = float(values.std(ddof=1) / math.sqrt(count)) if count > 1 else math.nan
    low, high = _t_interval(float(values.mean()), se, count - 1, confidence)
    return se, low, high


def _check_distance_matrix(distances: np.ndarray) -> np.ndarray:
    """`distances` as a float64 square symmetric finite matrix.

    Raises:
        ValueError: not square, not symmetric within SYMMETRY_ATOL, non-finite, or n < 2.
    """
    matrix = np.asarray(distances, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"the distance matrix must be square, got shape {matrix.shape}")
    if matrix.shape[0] < 2:
        raise ValueError(f"the diversity coefficient needs at least 2 embeddings, got {matrix.shape[0]}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("the distance matrix holds NaN or infinite values")
    if not np.allclose(matrix, matrix.T, rtol=0, atol=SYMMETRY_ATOL):
        raise ValueError(f"the distance matrix is not symmetric (atol {SYMMETRY_ATOL}); pass d(e_i, e_j) for all i, j")
    return matrix


def jackknife_leave_one_out(distances: np.ndarray) -> np.ndarray:
    """div_(−k): the diversity coefficient without embedding k, for every k.

    With S = Σ_{i<j} d_ij, P = n(n−1)/2 and R_k = Σ_{j≠k} d_kj (upper-triangle values mirrored),
    div_(−k) = (S − R_k)/(P − (n−1)).

    Args:
        distances: (n, n) symmetric matrix, n ≥ 3.

    Returns:
        (n,) leave-one-out estimates.
    """
    n = distances.shape[0]
    upper = np.triu(distances, 1)              # (n, n): the pairs counted by div, by index
    mirrored = upper + upper.T                 # so that R_k uses exactly the values S sums
    total = upper.sum()
    row_sums = mirrored.sum(axis=1)            # (n,) R_k
    return (total - row_sums) / (n * (n - 1) / 2 - (n - 1))


def diversity_coefficient(distances: np.ndarray, confidence: float = 0.95) -> DiversityEstimate:
    """Mean pairwise distance with a leave-one-out jackknife confidence interval.

    value = mean of d_ij over the upper triangle by index (`triu_indices(n, 1)`); zero distances
    are kept (they are data, not missing values). The matrix may hold bias-corrected distances,
    some of them negative.
    Jackknife: SE² = (n−1)/n · Σ_k (div_(−k) − mean_k div_(−k))², see `jackknife_leave_one_out`;
    CI = value ± t_{(1+c)/2, n−1}·SE, intersected with [0, 1] (module docstring).
    Naive (for comparison only, too narrow): the P distances as i.i.d. draws, SE = sd/√P with
    P−1 degrees of freedom. The pairs share embeddings, so they are positively correlated.

    With n = 2 there is one pair: value is that distance and SE, CI (jackknife and naive) are NaN.

    Args:
        distances: (n, n) symmetric distance matrix, n ≥ 2.
        confidence: coverage of the interval, in (0, 1).

    Raises:
        ValueError: n < 2, a non-square, asymmetric or non-finite matrix, or a bad confidence.
    """
    _check_confidence(confidence)
    matrix = _check_distance_matrix(distances)
    n = matrix.shape[0]
    pairs = matrix[np.triu_indices(n, 1)]      # (P,)
    value = float(pairs.mean())
    naive_se, naive_low, naive_high = _naive(pairs, confidence)
    if n == 2:
        se = math.nan
    else:
        leave_out = jackknife_leave_one_out(matrix)
        se = math.sqrt((n - 1) / n * float(np.sum((leave_out - leave_out.mean()) ** 2)))
    low, high = _t_interval(value, se, n - 1, confidence)
    return DiversityEstimate(value, se, low, high, n, confidence, "jackknife (leave one embedding out)",
                             naive_se, naive_low, naive_high, _was_clipped(value, se, n - 1, confidence))


def _was_clipped(value: float, se: float, dof: int, confidence: float) -> bool:
    """Whether value ± t·se reaches outside RANGE."""
    if dof < 1 or math.isnan(se):
        return False
    half = float(stats.t.ppf((1 + confidence) / 2, dof)) * se
    return bool(value - half < RANGE[0] or value + half > RANGE[1])


def cross_diversity(distances: np.ndarray, confidence: float = 0.95) -> DiversityEstimate:
    """Mean cross distance between two sets of embeddings, with a two-sample U-statistic SE.

    value = mean over the full (n1, n2) matrix of d(e_i^(1), e_j^(2)).
    SE² ≈ Var(row means)/n1 + Var(column means)/n2 (ddof 1; NaN when n1 or n2 is 1), with
    t on min(n1, n2) − 1 degrees of freedom. Naive: the n1·n2 entries as i.i.d. draws.

    Args:
        distances: (n1, n2) cross-distance matrix.
        confidence: coverage of the interval, in (0, 1).

    Raises:
        ValueError: not 2-D, empty, non-finite, or a bad confidence.
    """
    _check_confidence(confidence)
    matrix = np.asarray(distances, dtype=np.float64)
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f"the cross-distance matrix must be 2-D and non-empty, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("the cross-distance matrix holds NaN or infinite values")
    n1, n2 = matrix.shape
    value = float(matrix.mean())
    if n1 > 1 and n2 > 1:
        se = math.sqrt(float(matrix.mean(axis=1).var(ddof=1)) / n1 + float(matrix.mean(axis=0).var(ddof=1)) / n2)
    else:
        se = math.nan
    low, high = _t_interval(value, se, min(n1, n2) - 1, confidence)
    naive_se, naive_low, naive_high = _naive(matrix.ravel(), confidence)
    return DiversityEstimate(value, se, low, high, min(n1, n2), confidence,
                             "two-sample U-statistic (row and column means)", naive_se, naive_low, naive_high,
                             _was_clipped(value, se, min(n1, n2) - 1, confidence))


def noise_floor(first: np.ndarray, second: np.ndarray, distance: str = "task2vec") -> dict:
    """Distance of each embedding to its re-embedding (same data, new Monte-Carlo seed).

    The Fisher estimate samples labels from the model; two embeddings of the same data differ
    only by that sampling. Their distance is the floor under which diversity is not resolved.

    Args:
        first: (n, D) embeddings.
        second: (n, D) the same data re-embedded with another seed, row for row.
        distance: one of task2vec.distances.DISTANCES.

    Returns:
        {"mean": mean distance, "per_item": [n distances], "n": n, "distance": name}.

    Raises:
        ValueError: different shapes, an unknown distance, or negative / non-finite entries.
    """
    per_item = paired_distances(first, second, distance)
    return {"mean": float(per_item.mean()), "per_item": per_item.tolist(), "n": int(per_item.size),
            "distance": distance}


def data_diversity(batches: np.ndarray, distance: str = "task2vec", confidence: float = 0.95) -> DiversityEstimate:
    """Diversity coefficient of one task over its batch embeddings (jackknife over batches).

    Args:
        batches: (n, D) one embedding per disjoint batch of the task's examples, n ≥ 2.
        distance: one of task2vec.distances.DISTANCES.
        confidence: coverage of the interval.

    Raises:
        ValueError: fewer than 2 batches, an unknown distance, or negative / non-finite entries.
    """
    return diversity_coefficient(pairwise_distances(batches, distance), confidence)


def cross_data_diversity(first: np.ndarray, second: np.ndarray, distance: str = "task2vec",
                         confidence: float = 0.95) -> DiversityEstimate:
    """Cross-diversity of two tasks over their batch embeddings ((n1, D) and (n2, D))."""
    return cross_diversity(cross_distances(first, second, distance), confidence)


def corrected_data_diversity(batches: np.ndarray, batches_reseeded: np.ndarray, distance: str = "task2vec",
                             confidence: float = 0.95) -> DiversityEstimate:
    """Data diversity of one task corrected for Monte-Carlo noise (jackknife over batches).

    With d_ij the distances between batch embeddings and f_k = d(batch_k, batch_k re-embedded)
    each batch's floor, the corrected diversity is the mean over i < j of
    corrected_distance(d_ij, f_i, f_j) (task2vec.correction); to first order the raw diversity
    minus the mean floor. Its interval is the jackknife over batches of that matrix, cut to [0, 1].

    Args:
        batches: (n, D) one embedding per disjoint batch, n ≥ 2.
        batches_reseeded: (n, D) the same batches re-embedded with another Monte-Carlo seed.

    Raises:
        ValueError: different shapes, fewer than 2 batches, floors too large to correct (the
            message says to raise K), or bad embeddings.
    """
    floors = paired_distances(batches, batches_reseeded, distance)
    matrix = corrected_matrix(pairwise_distances(batches, distance), floors, distance)
    if not np.all(np.isfinite(matrix)):
        raise ValueError("the batch noise floors are too large to correct for (their sum exceeds "
                         "task2vec.correction.MAX_FLOOR_SUM); raise --num_samples or the batch size")
    return diversity_coefficient(matrix, confidence)


# ---------------------------------------------------------------------------------------------
# Statistics of one set of task embeddings (TaskDiversity.py)
# ---------------------------------------------------------------------------------------------

SET_STATISTICS = ("diversity", "diversity_with_target", "distance_to_target")
CORRECTED = "_corrected"   # suffix of the noise-corrected version of a statistic
ALL_SET_STATISTICS = SET_STATISTICS + tuple(name + CORRECTED for name in SET_STATISTICS)


def mean_pairwise_distance(vectors: Sequence[np.ndarray], distance: str) -> float:
    """Diversity coefficient (mean distance over pairs i<j) of the vectors; NaN for fewer than 2."""
    if len(vectors) < 2:
        return math.nan
    return diversity_coefficient(pairwise_distances(np.stack(vectors), distance)).value


def corrected_mean_pairwise_distance(vectors: Sequence[np.ndarray], reseeded: Sequence[np.ndarray],
                                     distance: str) -> float:
    """Mean over pairs i<j of the noise-corrected distance, each vector's floor being its distance
    to its re-embedding; NaN for fewer than 2 vectors or floors too large to correct."""
    if len(vectors) < 2:
        return math.nan
    floors = paired_distances(np.stack(vectors), np.stack(reseeded), distance)
    matrix = corrected_matrix(pairwise_distances(np.stack(vectors), distance), floors, distance)
    return float(matrix[np.triu_indices(len(vectors), 1)].mean())


def mean_embedding(members: Sequence[np.ndarray]) -> np.ndarray:
    """(D,) average of the members, each first scaled to unit sum (an all-zero member stays zero)."""
    scaled = [m / m.sum() if m.sum() > 0 else m for m in members]
    return np.mean(scaled, axis=0)


def set_statistics(members: Sequence[np.ndarray], target: np.ndarray, distance: str,
                   members_reseeded: Sequence[np.ndarray | None] | None = None,
                   target_reseeded: np.ndarray | None = None) -> dict[str, float]:
    """The raw and noise-corrected statistics of one set of (D,) embeddings (ALL_SET_STATISTICS).

    diversity = mean_{i<j} d(e_i, e_j); diversity_with_target = the same over the set and the
    target; distance_to_target = d(mean embedding, target). The "_corrected" versions replace each
    distance by corrected_distance(d, f, f') (task2vec.correction), with f = d(e, e re-embedded);
    the mean embedding's floor is measured directly: d(mean of the members, mean of their
    re-embeddings).

    NaN where undefined: diversity for fewer than 2 members, the other two for no member, and every
    corrected statistic when a re-embedding it needs is None (or the floors are too large).
    """
    members = list(members)
    pair = distance_function(distance)
    statistics = {
        "diversity": mean_pairwise_distance(members, distance),
        "diversity_with_target": mean_pairwise_distance([*members, target], distance) if members else math.nan,
        "distance_to_target": pair(mean_embedding(members), target) if members else math.nan,
    }
    statistics.update({name + CORRECTED: math.nan for name in SET_STATISTICS})
    reseeded = list(members_reseeded) if members_reseeded is not None else [None] * len(members)
    if not members or target_reseeded is None or any(r is None for r in reseeded):
        return statistics
    statistics["diversity" + CORRECTED] = corrected_mean_pairwise_distance(members, reseeded, distance)
    statistics["diversity_with_target" + CORRECTED] = corrected_mean_pairwise_distance(
        [*members, target], [*reseeded, target_reseeded], distance)
    mean, mean_reseeded = mean_embedding(members), mean_embedding(reseeded)
    statistics["distance_to_target" + CORRECTED] = float(corrected_distance(
        statistics["distance_to_target"], pair(mean, mean_reseeded), pair(target, target_reseeded), distance))
    return statistics

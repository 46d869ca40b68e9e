"""The diversity coefficient, cross-diversity, and their uncertainty; the Monte-Carlo noise floor.

The diversity coefficient of n embeddings is div = (1/P) Σ_{i<j} d(e_i, e_j), P = n(n−1)/2. Each
embedding appears in n−1 of the pairs (a U-statistic), so the i.i.d.-pairs interval that Beyond
Scale reports is far too narrow; the default interval is a leave-one-embedding-out jackknife. The
naive one is still returned, labelled as such, to compare with published numbers.

Intervals are intersected with [0, 1], the range of a mean of distances: that keeps the coverage.
Point estimates are never clipped (a bias-corrected diversity may be negative).
"""
from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from task2vec.analysis.correction import MAX_FLOOR_SUM, corrected_distance, corrected_matrix, is_resolved, noise_bias
from task2vec.analysis.distances import distance_function, paired_distances, pairwise_distances, task2vec_distance
from task2vec.embedding.io import TaskEmbedding

logger = logging.getLogger(__name__)

SYMMETRY_ATOL = 1e-9
RANGE = (0.0, 1.0)  # every distance lies in [0, 1], so does every mean of true distances


@dataclass(frozen=True)
class DiversityEstimate:
    """A mean distance with its standard error and confidence interval (NaN when not estimable).

    n counts independent units (embeddings; min(n1, n2) for cross-diversity). The naive_* interval
    treats every distance as an independent draw: too narrow, for comparison only. ci_clipped: the
    t-interval reached outside [0, 1] and was cut to it.
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


def _t_interval(value: float, se: float, dof: int, confidence: float) -> tuple[float, float, bool]:
    """(low, high, clipped): value ± t_{(1+c)/2, dof}·se intersected with RANGE, and whether it
    reached outside RANGE; NaN bounds (not clipped) when dof < 1 or se is NaN."""
    if dof < 1 or math.isnan(se):
        return math.nan, math.nan, False
    half = float(stats.t.ppf((1 + confidence) / 2, dof)) * se
    clipped = bool(value - half < RANGE[0] or value + half > RANGE[1])
    # An interval entirely outside RANGE (a bias-corrected value) becomes the nearer bound.
    low, high = min(max(value - half, RANGE[0]), RANGE[1]), max(min(value + half, RANGE[1]), RANGE[0])
    return low, high, clipped


def _naive(values: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(se, low, high) of the mean of `values` as if they were i.i.d.: sd/√N, t with N−1 dof."""
    count = values.size
    se = float(values.std(ddof=1) / math.sqrt(count)) if count > 1 else math.nan
    low, high, _ = _t_interval(float(values.mean()), se, count - 1, confidence)
    return se, low, high


def _check_distance_matrix(distances: np.ndarray) -> np.ndarray:
    """`distances` as a float64 square symmetric finite matrix."""
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
    """(n,) div_(−k), the diversity without embedding k, of an (n, n) symmetric matrix (n ≥ 3).

    With S = Σ_{i<j} d_ij, P = n(n−1)/2 and R_k = Σ_{j≠k} d_kj: div_(−k) = (S − R_k)/(P − (n−1)).
    """
    n = distances.shape[0]
    upper = np.triu(distances, 1)              # (n, n): the pairs counted by div, by index
    mirrored = upper + upper.T                 # so that R_k uses exactly the values S sums
    total = upper.sum()
    row_sums = mirrored.sum(axis=1)            # (n,) R_k
    return (total - row_sums) / (n * (n - 1) / 2 - (n - 1))


def diversity_coefficient(distances: np.ndarray, confidence: float = 0.95) -> DiversityEstimate:
    """Mean pairwise distance of an (n, n) symmetric matrix (n ≥ 2) with a jackknife interval.

    value = mean of d_ij over i < j (zeros and negative corrected distances are data).
    Jackknife: SE² = (n−1)/n · Σ_k (div_(−k) − mean_k div_(−k))², CI = value ± t_{(1+c)/2, n−1}·SE.
    Naive: the P distances as i.i.d. draws, SE = sd/√P, P−1 dof. With n = 2 both SEs are NaN.
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
    low, high, clipped = _t_interval(value, se, n - 1, confidence)
    return DiversityEstimate(value, se, low, high, n, confidence, "jackknife (leave one embedding out)",
                             naive_se, naive_low, naive_high, clipped)


def cross_diversity(distances: np.ndarray, confidence: float = 0.95) -> DiversityEstimate:
    """Mean of an (n1, n2) cross-distance matrix with a two-sample U-statistic SE.

    SE² ≈ Var(row means)/n1 + Var(column means)/n2 (ddof 1; NaN when n1 or n2 is 1), t on
    min(n1, n2) − 1 dof. Naive: the n1·n2 entries as i.i.d. draws.
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
    low, high, clipped = _t_interval(value, se, min(n1, n2) - 1, confidence)
    naive_se, naive_low, naive_high = _naive(matrix.ravel(), confidence)
    return DiversityEstimate(value, se, low, high, min(n1, n2), confidence,
                             "two-sample U-statistic (row and column means)", naive_se, naive_low, naive_high,
                             clipped)


def noise_floor(first: np.ndarray, second: np.ndarray, distance: str = "task2vec") -> dict:
    """Distance of each of (n, D) embeddings to its re-embedding with a new Monte-Carlo seed: the
    floor under which diversity is not resolved. {"mean", "per_item", "n", "distance"}."""
    per_item = paired_distances(first, second, distance)
    return {"mean": float(per_item.mean()), "per_item": per_item.tolist(), "n": int(per_item.size),
            "distance": distance}


def data_diversity(batches: np.ndarray, distance: str = "task2vec", confidence: float = 0.95) -> DiversityEstimate:
    """Diversity coefficient of one task over its (n, D) batch embeddings, n ≥ 2."""
    return diversity_coefficient(pairwise_distances(batches, distance), confidence)


def corrected_data_diversity(batches: np.ndarray, batches_reseeded: np.ndarray, distance: str = "task2vec",
                             confidence: float = 0.95) -> DiversityEstimate:
    """Data diversity of one task over (n, D) batch embeddings, corrected for Monte-Carlo noise:
    the mean over i < j of corrected_distance(d_ij, f_i, f_j), f_k = d(batch_k, its re-embedding)."""
    floors = paired_distances(batches, batches_reseeded, distance)
    matrix = corrected_matrix(pairwise_distances(batches, distance), floors, distance)
    if not np.all(np.isfinite(matrix)):
        raise ValueError("the batch noise floors are too large to correct for (their sum exceeds "
                         "task2vec.analysis.correction.MAX_FLOOR_SUM); raise --num_samples or the batch size")
    return diversity_coefficient(matrix, confidence)


# ---------------------------------------------------------------------------------------------
# Statistics of one set of task embeddings
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

    diversity = mean_{i<j} d(e_i, e_j); diversity_with_target = the same with the target added;
    distance_to_target = d(mean embedding, target). "_corrected" uses corrected_distance with each
    floor f = d(e, e re-embedded) (the mean embedding's: d(mean, mean of re-embeddings)). NaN where
    undefined or a needed re-embedding is None.
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


# ---------------------------------------------------------------------------------------------
# Task sets, task distances and noise floors
# ---------------------------------------------------------------------------------------------

def subset_diversities(vectors: Mapping[str, np.ndarray], sources: Sequence[str], target: str,
                       subset_size: int, distance: str,
                       reseeded: Mapping[str, np.ndarray | None] | None = None) -> tuple[list[dict], str]:
    """(every subset of `subset_size` sources with its set_statistics, the key they are ranked by):
    ascending diversity_corrected when every subset has one, else raw diversity; ties by names."""
    if not 2 <= subset_size <= len(sources):
        raise ValueError(f"subset_size must be between 2 and the {len(sources)} sources, got {subset_size}")
    reseeded = reseeded or {}
    subsets = [{"tasks": list(subset),
                **set_statistics([vectors[name] for name in subset], vectors[target], distance,
                                 [reseeded.get(name) for name in subset], reseeded.get(target))}
               for subset in itertools.combinations(sources, subset_size)]
    key = "diversity" + CORRECTED
    if not all(math.isfinite(entry[key]) for entry in subsets):
        key = "diversity"
    return sorted(subsets, key=lambda entry: (entry[key], entry["tasks"])), key


def task_distance_table(vectors: Mapping[str, np.ndarray], tasks: Sequence[str], distance: str,
                        reseeded: Mapping[str, np.ndarray | None] | None = None) -> dict:
    """{"tasks", "matrix": raw (n, n), "floors": [f or None], "corrected": (n, n) or None with a
    "corrected_reason"}."""
    matrix = pairwise_distances(np.stack([vectors[name] for name in tasks]), distance)
    pair = distance_function(distance)
    reseeded = reseeded or {}
    floors = [None if reseeded.get(name) is None else pair(vectors[name], reseeded[name]) for name in tasks]
    table = {"tasks": list(tasks), "matrix": matrix.tolist(), "floors": floors, "corrected": None}
    if None in floors:
        table["corrected_reason"] = "a task has no embedding_reseeded.npy (no noise floor)"
    else:
        table["corrected"] = corrected_matrix(matrix, np.array(floors), distance).tolist()
    return table


def set_diversity(table: Mapping[str, Any], members: Sequence[str], confidence: float) -> dict:
    """Raw and corrected diversity of `members` (task names of `table`) with jackknife intervals
    (tasks as draws from a population of tasks); corrected is None with a reason if not computable."""
    index = [table["tasks"].index(name) for name in members]
    raw = np.asarray(table["matrix"])[np.ix_(index, index)]
    result: dict[str, Any] = {"raw": diversity_coefficient(raw, confidence).to_dict(), "corrected": None}
    if table["corrected"] is None:
        result["corrected_reason"] = "a task has no embedding_reseeded.npy (no noise floor)"
        return result
    corrected = np.asarray(table["corrected"])[np.ix_(index, index)]
    if not np.all(np.isfinite(corrected)):
        result["corrected_reason"] = f"noise floors summing to more than {MAX_FLOOR_SUM}: too large to correct"
        return result
    result["corrected"] = diversity_coefficient(corrected, confidence).to_dict()
    return result


# ---------------------------------------------------------------------------------------------
# Noise floor
# ---------------------------------------------------------------------------------------------

def task_noise_floor(embedding: TaskEmbedding, distance: str, confidence: float) -> dict:
    """Task-level floor d(e, e_reseeded) of one task and, over its batches, the data diversity, the
    batch floor and the diversity corrected for it; whatever cannot be computed says why."""
    entry: dict[str, Any] = {"task": embedding.task, "task_level": None, "batches": None}
    if embedding.reseeded is None:
        entry["task_level_reason"] = "no embedding_reseeded.npy (embed the task again with a new seed to measure it)"
    else:
        entry["task_level"] = distance_function(distance)(embedding.vector, embedding.reseeded)
    if embedding.batches is None or len(embedding.batches) < 2:
        entry["batches_reason"] = "fewer than 2 batch embeddings (batches.npy)"
        return entry
    diversity = data_diversity(embedding.batches, distance, confidence)
    batches: dict[str, Any] = {"n": int(len(embedding.batches)), "diversity": diversity.to_dict(),
                               "diversity_corrected": None, "noise_floor": None, "floor_to_diversity": None}
    if embedding.batches_reseeded is None:
        for key in ("noise_floor", "diversity_corrected", "floor_to_diversity"):
            batches[f"{key}_reason"] = "no batches_reseeded.npy"
    else:
        floor = noise_floor(embedding.batches, embedding.batches_reseeded, distance)
        batches.update(noise_floor=floor["mean"], noise_floor_per_batch=floor["per_item"],
                       floor_to_diversity=floor["mean"] / diversity.value if diversity.value > 0 else math.nan)
        try:
            batches["diversity_corrected"] = corrected_data_diversity(
                embedding.batches, embedding.batches_reseeded, distance, confidence).to_dict()
        except ValueError as err:
            batches["diversity_corrected_reason"] = str(err)
    entry["batches"] = batches
    return entry


def noise_floor_summary(embeddings: Mapping[str, TaskEmbedding], task_matrix: np.ndarray, distance: str,
                        confidence: float) -> dict:
    """Noise floor of every task, and for each pair of tasks its raw and corrected distance and
    whether the embeddings resolve it (`task2vec.analysis.correction.is_resolved`)."""
    per_task = {name: task_noise_floor(emb, distance, confidence) for name, emb in embeddings.items()}
    measured = [entry["task_level"] for entry in per_task.values() if entry["task_level"] is not None]
    off_diagonal = task_matrix[~np.eye(len(task_matrix), dtype=bool)]
    return {"distance": distance, "tasks": per_task,
            "max_task_level": max(measured) if measured else None,
            "min_task_distance": float(off_diagonal.min()) if off_diagonal.size else None,
            "note": "task_level = d(e, e re-embedded with a new Monte-Carlo seed); a pair is resolved when at least "
                    "half of its raw distance is signal: corrected >= raw - corrected (bias_removed, the bias the "
                    "full correction removed; bias = (f_a + f_b)/2 is its first-order value, right for small "
                    "distances only)",
            "pairs": resolved_pairs(list(embeddings), task_matrix, per_task, distance)}


def resolved_pairs(tasks: Sequence[str], task_matrix: np.ndarray, per_task: Mapping[str, dict],
                   distance: str = "task2vec") -> list[dict]:
    """For each task pair: raw distance, floors, first-order bias (f_a + f_b)/2, corrected distance,
    bias_removed = raw − corrected, and `is_resolved` (None when not measurable)."""
    pairs = []
    for i, j in zip(*np.triu_indices(len(tasks), 1)):
        floors = [per_task[tasks[k]]["task_level"] for k in (i, j)]
        raw = float(task_matrix[i, j])
        entry: dict[str, Any] = {"tasks": [tasks[i], tasks[j]], "distance": raw, "floors": floors,
                                 "bias": None, "corrected": None, "bias_removed": None, "resolved": None}
        if None not in floors:
            corrected = float(corrected_distance(raw, floors[0], floors[1], distance))
            finite = math.isfinite(corrected)
            entry.update(bias=float(noise_bias(*floors)), corrected=corrected if finite else None,
                         bias_removed=raw - corrected if finite else None,
                         resolved=is_resolved(raw=raw, corrected=corrected))
            if not finite:
                reason = "noise floors too large to correct"
                entry.update(corrected_reason=reason, bias_removed_reason=reason, resolved_reason=reason)
        else:
            entry["reason"] = "a task of the pair has no embedding_reseeded.npy (no noise floor)"
        pairs.append(entry)
    return pairs


def noise_floor_verdict(pairs: Sequence[Mapping[str, Any]]) -> str:
    """One line: how many task pairs the embeddings resolve (`is_resolved`), and what to do if not all."""
    unresolved = [" / ".join(p["tasks"]) for p in pairs if p["resolved"] is False]
    unmeasured = sum(1 for p in pairs if p["resolved"] is None)
    rule = "at least half of the raw distance is signal: corrected >= raw - corrected"
    line = (f"verdict: all {len(pairs) - unmeasured} task pairs are resolved ({rule})" if not unresolved
            else f"verdict: {len(unresolved)} of {len(pairs)} task pairs are not resolved ({', '.join(unresolved)}; "
                 f"resolved means {rule}); raise --num_samples")
    return line + (f"; {unmeasured} pairs without a measured floor" if unmeasured else "")


def embedding_noise_report(embedding: TaskEmbedding) -> dict:
    """Task-level and batch-level noise floors beside the data-level diversity of the batches, raw
    and corrected for the batch floors (None where it cannot be computed)."""
    batches, batches_reseeded = embedding.batches, embedding.batches_reseeded
    report: dict = {"task": None, "batches_mean": None, "data_diversity": None, "data_diversity_corrected": None}
    if len(batches) >= 2:
        report["data_diversity"] = data_diversity(batches).value
    if embedding.reseeded is not None:
        report["task"] = task2vec_distance(embedding.vector, embedding.reseeded)
        report["batches_mean"] = noise_floor(batches, batches_reseeded)["mean"]
        if len(batches) >= 2:
            try:
                report["data_diversity_corrected"] = corrected_data_diversity(batches, batches_reseeded).value
            except ValueError as err:   # floors too large to correct: said in the log, left None
                logger.warning("data diversity not corrected: %s", err)
    return report

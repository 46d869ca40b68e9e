"""Task-level diversity of source-task subsets, joined with target accuracies (TaskDiversity.py).

For every subset of the source tasks it reports

    diversity             = mean_{i<j in S} d(e_i, e_j)               (diversity coefficient of S)
    diversity_with_target = the same over S ∪ {target}
    distance_to_target    = d(mean_{i in S} e_i, e_target)

where e are task embeddings (non-negative Fisher diagonals) and d a distance of
`task2vec.distances`. The mean embedding averages the members after scaling each to unit sum:
the distances ignore an embedding's scale, so the average must too, or a task whose Fisher values
are larger (a harder task, a longer text) would outweigh the others.

Each comes raw and corrected for the Monte-Carlo noise of the embeddings ("_corrected", from
each task's noise floor f = d(e, e re-embedded with a new seed); task2vec.correction), and the
subsets are ranked by the corrected diversity whenever every task has its re-embedding.

Given the results table that run_target_task_GPT2_sst2_multiple.py appends to, the report groups
its rows by experimental condition, averages the rows of one source set into one point, and
correlates the points with these quantities (task2vec.transfer). Beside the diversities it
always reports the noise floor and which task pairs the embeddings resolve. Loading the embeddings
and checking that they can be compared is in task2vec.comparability; what is written and printed
from the report is in task2vec.reporting.
"""
from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from task2vec.comparability import check_comparable, embedding_summary
from task2vec.correction import MAX_FLOOR_SUM, corrected_distance, corrected_matrix, is_resolved, noise_bias
from task2vec.distances import distance_function, pairwise_distances
from task2vec.diversity import (CORRECTED, corrected_data_diversity, data_diversity, diversity_coefficient, noise_floor,
                                set_statistics)
from task2vec.io import TaskEmbedding
from task2vec.transfer import join_results, transfer_analysis


# ---------------------------------------------------------------------------------------------
# Diversity of task sets
# ---------------------------------------------------------------------------------------------

def reseeded_vectors(embeddings: Mapping[str, TaskEmbedding]) -> dict[str, np.ndarray | None]:
    """Task name -> its re-embedding with a new Monte-Carlo seed (None when it was not computed)."""
    return {name: emb.reseeded for name, emb in embeddings.items()}


def subset_diversities(vectors: Mapping[str, np.ndarray], sources: Sequence[str], target: str,
                       subset_size: int, distance: str,
                       reseeded: Mapping[str, np.ndarray | None] | None = None) -> tuple[list[dict], str]:
    """Every subset of `subset_size` sources with its raw and corrected statistics, ranked.

    The ranking is by ascending diversity_corrected when every subset has one (every task was
    re-embedded), else by the raw diversity; ties are broken by the task names.

    Returns:
        (entries {"tasks": [...], **set_statistics}, the statistic they are ranked by).

    Raises:
        ValueError: subset_size outside [2, len(sources)].
    """
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
    """The tasks' pairwise distances, their noise floors and the corrected distances.

    Returns:
        {"tasks", "matrix": (n, n) raw, "floors": [f per task, None if not measured],
         "corrected": (n, n) or None when a floor is missing, with "corrected_reason"}.
    """
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
    """Raw and corrected diversity of `members` (task names of `table`) with jackknife intervals.

    The jackknife leaves one task out, so it treats the tasks as drawn from a population of tasks;
    the corrected one is None (with a reason) when a floor is missing or too large.
    """
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
    """Task-level and batch-level noise floor of one task, and its data diversity over batches.

    task_level = d(e, e_reseeded). With batches: the diversity coefficient of the batch
    embeddings (jackknife CI) and, with re-embedded batches, their own floor (the mean of
    d(batch_k, batch_k reseeded)) and the diversity corrected for it. Whatever cannot be computed
    says why.
    """
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
    whether the embeddings resolve it (`task2vec.correction.is_resolved`)."""
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
    """For each pair of different tasks: raw distance d, both floors, the first-order noise bias
    (f_a + f_b)/2 ("bias"), the corrected distance, the bias it removed ("bias_removed" = raw −
    corrected) and whether the pair is resolved (corrected ≥ bias_removed, `is_resolved`; None
    when a floor was not measured or the floors are too large to correct)."""
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
    """One line: how many task pairs the embeddings resolve (at least half of the raw distance is
    signal: corrected ≥ raw − corrected, `task2vec.correction.is_resolved`), and what to do if not all."""
    unresolved = [" / ".join(p["tasks"]) for p in pairs if p["resolved"] is False]
    unmeasured = sum(1 for p in pairs if p["resolved"] is None)
    rule = "at least half of the raw distance is signal: corrected >= raw - corrected"
    line = (f"verdict: all {len(pairs) - unmeasured} task pairs are resolved ({rule})" if not unresolved
            else f"verdict: {len(unresolved)} of {len(pairs)} task pairs are not resolved ({', '.join(unresolved)}; "
                 f"resolved means {rule}); raise --num_samples")
    return line + (f"; {unmeasured} pairs without a measured floor" if unmeasured else "")


# ---------------------------------------------------------------------------------------------
# The whole report
# ---------------------------------------------------------------------------------------------

def build_report(embeddings: Mapping[str, TaskEmbedding], *, sources: Sequence[str], target: str, subset_size: int,
                 distance: str, confidence: float, emb_dir: str | os.PathLike,
                 results: Sequence[dict] | None = None, missing: Mapping[str, str] | None = None,
                 results_file: str | None = None, allow_setting_mismatch: bool = False,
                 permutation_seed: int = 0) -> dict:
    """The content of diversity.json (before NaN is mapped to null).

    Args:
        embeddings: every loaded embedding: sources, target and any extra task of the results.
        sources, target: canonical names; the subsets are drawn from `sources`.
        results: rows of the results table, or None to skip the join.
        missing: task -> why it has no embedding (rows needing it are skipped with that reason).
        results_file: the table's path (reported, and named in errors).
        allow_setting_mismatch: compare embeddings made with different K, examples, max length or
            head settings (reported as warnings) instead of refusing them.
        permutation_seed: seed of the Monte-Carlo permutation tests (only used above 8 points).

    Raises:
        DataError: incomparable embeddings or a malformed results table.
    """
    warnings = check_comparable(embeddings, allow_setting_mismatch=allow_setting_mismatch)
    vectors = {name: emb.vector for name, emb in embeddings.items()}
    reseeded = reseeded_vectors(embeddings)
    tasks = [*sources, target]
    table = task_distance_table(vectors, tasks, distance, reseeded)
    subsets, ranked_by = subset_diversities(vectors, sources, target, subset_size, distance, reseeded)
    report: dict[str, Any] = {
        "distance": distance, "target": target, "sources": list(sources), "subset_size": subset_size,
        "confidence": confidence, "comparability_warnings": warnings,
        "subsets": subsets, "subsets_ranked_by": ranked_by,
        "task_distances": table,
        "source_set_diversity": set_diversity(table, sources, confidence),
        "noise_floor": noise_floor_summary({name: embeddings[name] for name in tasks}, np.asarray(table["matrix"]),
                                           distance, confidence),
        "embeddings": embedding_summary(emb_dir, embeddings),
    }
    if results is not None:
        joined, skipped = join_results(results, vectors, target, distance, missing or {}, results_file or "",
                                       reseeded)
        report.update(results_table=results_file, joined_results=joined, skipped_results=skipped,
                      transfer=transfer_analysis(joined, confidence, permutation_seed))
    return report

"""Task-level diversity of source-task subsets, joined with target accuracies (TaskDiversity.py).

For every subset of the source tasks it reports

    diversity             = mean_{i<j in S} d(e_i, e_j)               (diversity coefficient of S)
    diversity_with_target = the same over S ∪ {target}
    distance_to_target    = d(mean_{i in S} e_i, e_target)

where e are task embeddings (non-negative Fisher diagonals) and d a distance of
`task2vec.distances`. The mean embedding averages the members after scaling each to unit sum:
the distances ignore an embedding's scale, so the average must too, or a task whose Fisher values
are larger (a harder task, a longer text) would outweigh the others.

Given the results table that run_target_task_GPT2_sst2_multiple.py appends to, the report joins
each row's source set with these quantities and correlates them with the mean target accuracy
(task2vec.transfer). Beside the diversities it always reports the Monte-Carlo noise floor: the
distance of an embedding to a re-embedding of the same data. What is written and printed from the
report is in task2vec.reporting.
"""
from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from task2vec.distances import distance_function, pairwise_distances
from task2vec.diversity import data_diversity, diversity_coefficient, noise_floor, set_statistics
from task2vec.io import TaskEmbedding, load_task_embedding
from task2vec.transfer import accuracy_correlations, join_results
from utils.errors import DataError
from utils.tasks import get_task

logger = logging.getLogger(__name__)

METADATA_SUMMARY_KEYS = ("layout_digest", "probe", "objective", "estimator", "num_samples", "examples_used")


# ---------------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------------

def load_embeddings(emb_dir: str | os.PathLike, tasks: Iterable[str]) -> dict[str, TaskEmbedding]:
    """Canonical task name -> its embedding, for tasks that must all exist.

    Raises:
        DataError: the folder of `emb_dir` or of a task is missing or unreadable.
    """
    emb_dir = Path(emb_dir)
    if not emb_dir.is_dir():
        raise DataError("no such embedding folder; compute the embeddings with `python -m task2vec` first "
                        "or pass --emb_dir", file=str(emb_dir))
    return {get_task(task).name: load_task_embedding(emb_dir, task) for task in tasks}


def load_available_embeddings(emb_dir: str | os.PathLike,
                              tasks: Iterable[str]) -> tuple[dict[str, TaskEmbedding], dict[str, str]]:
    """Embeddings of the tasks that have a folder in `emb_dir`, and why the others are absent.

    A missing folder is a reason to skip the results that need it; an unreadable one is an error.

    Returns:
        (name -> embedding, name -> reason it is absent).
    """
    found: dict[str, TaskEmbedding] = {}
    missing: dict[str, str] = {}
    for task in tasks:
        name = get_task(task).name
        if (Path(emb_dir) / name).is_dir():
            found[name] = load_task_embedding(emb_dir, name)
        else:
            missing[name] = f"no embedding for {name!r} in {emb_dir}"
    return found, missing


def check_comparable(embeddings: Mapping[str, TaskEmbedding]) -> None:
    """Refuse embeddings whose coordinates do not mean the same thing.

    Raises:
        DataError: two embeddings differ in dimension, metadata["layout_digest"], or in the probe
            weights, objective or estimator that produced them.
    """
    layouts = {name: (emb.vector.shape[0], emb.metadata.get("layout_digest")) for name, emb in embeddings.items()}
    if len(set(layouts.values())) > 1:
        described = ", ".join(f"{name}: D={dim}, layout {digest}" for name, (dim, digest) in layouts.items())
        raise DataError(f"the embeddings cannot be compared: their coordinate layouts differ ({described}); "
                        "recompute them with the same probe and settings")
    if any(digest is None for _, digest in layouts.values()):
        logger.warning("the embeddings carry no layout_digest; only their dimensions could be checked")
    for key, read in (("probe weights", _probe_digest),
                      ("objective", lambda m: m.get("objective")), ("estimator", lambda m: m.get("estimator"))):
        values = {name: read(emb.metadata) for name, emb in embeddings.items()}
        if len({v for v in values.values() if v is not None}) > 1:
            described = ", ".join(f"{name}: {value}" for name, value in values.items())
            raise DataError(f"the embeddings cannot be compared: their {key} differ ({described}); "
                            "recompute them with the same probe and settings")


def _probe_digest(metadata: Mapping[str, Any]) -> str | None:
    """The probe's weight digest (a probe given only by name counts as that name)."""
    probe = metadata.get("probe")
    return probe.get("sha256") if isinstance(probe, dict) else probe


def embedding_summary(emb_dir: str | os.PathLike, embeddings: Mapping[str, TaskEmbedding]) -> dict[str, dict]:
    """Per task: folder, dimension, the metadata that says how it was computed, companions present."""
    summary = {}
    for name, emb in embeddings.items():
        summary[name] = {"path": str(Path(emb_dir) / name), "dimension": int(emb.vector.shape[0]),
                         **{key: emb.metadata.get(key) for key in METADATA_SUMMARY_KEYS},
                         "n_batches": None if emb.batches is None else int(emb.batches.shape[0]),
                         "reseeded": emb.reseeded is not None,
                         "batches_reseeded": emb.batches_reseeded is not None}
    return summary


# ---------------------------------------------------------------------------------------------
# Diversity of task sets
# ---------------------------------------------------------------------------------------------

def subset_diversities(vectors: Mapping[str, np.ndarray], sources: Sequence[str], target: str,
                       subset_size: int, distance: str) -> list[dict]:
    """Every subset of `subset_size` sources (itertools.combinations order), by ascending diversity.

    Ties are broken by the task names. Each entry: {"tasks": [...], **set_statistics}.

    Raises:
        ValueError: subset_size outside [2, len(sources)].
    """
    if not 2 <= subset_size <= len(sources):
        raise ValueError(f"subset_size must be between 2 and the {len(sources)} sources, got {subset_size}")
    subsets = [{"tasks": list(subset),
                **set_statistics([vectors[name] for name in subset], vectors[target], distance)}
               for subset in itertools.combinations(sources, subset_size)]
    return sorted(subsets, key=lambda entry: (entry["diversity"], entry["tasks"]))


def task_distance_table(vectors: Mapping[str, np.ndarray], tasks: Sequence[str], distance: str) -> dict:
    """{"tasks": [...], "matrix": (n, n) list of lists} of the tasks' pairwise distances."""
    matrix = pairwise_distances(np.stack([vectors[name] for name in tasks]), distance)
    return {"tasks": list(tasks), "matrix": matrix.tolist()}


# ---------------------------------------------------------------------------------------------
# Noise floor
# ---------------------------------------------------------------------------------------------

def task_noise_floor(embedding: TaskEmbedding, distance: str, confidence: float) -> dict:
    """Task-level and batch-level noise floor of one task, and its data diversity over batches.

    task_level = d(e, e_reseeded). With batches: the diversity coefficient of the batch
    embeddings (jackknife CI) and, with re-embedded batches, their own floor, the mean of
    d(batch_k, batch_k reseeded). Whatever cannot be computed says why.
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
                               "noise_floor": None, "floor_to_diversity": None}
    if embedding.batches_reseeded is None:
        batches["noise_floor_reason"] = "no batches_reseeded.npy"
    else:
        floor = noise_floor(embedding.batches, embedding.batches_reseeded, distance)
        batches.update(noise_floor=floor["mean"], noise_floor_per_batch=floor["per_item"],
                       floor_to_diversity=floor["mean"] / diversity.value if diversity.value > 0 else math.nan)
    entry["batches"] = batches
    return entry


def noise_floor_summary(embeddings: Mapping[str, TaskEmbedding], task_matrix: np.ndarray, distance: str,
                        confidence: float) -> dict:
    """Noise floor of every task, beside the smallest distance between two different tasks.

    A task distance not clearly above the task-level floor is not resolved by the embeddings.
    """
    per_task = {name: task_noise_floor(emb, distance, confidence) for name, emb in embeddings.items()}
    measured = [entry["task_level"] for entry in per_task.values() if entry["task_level"] is not None]
    off_diagonal = task_matrix[~np.eye(len(task_matrix), dtype=bool)]
    return {"distance": distance, "tasks": per_task,
            "max_task_level": max(measured) if measured else None,
            "min_task_distance": float(off_diagonal.min()) if off_diagonal.size else None,
            "note": "task_level = d(e, e re-embedded with a new Monte-Carlo seed); distances near it are noise",
            "pairs": pairs_above_noise_floor(list(embeddings), task_matrix, per_task)}


def pairs_above_noise_floor(tasks: Sequence[str], task_matrix: np.ndarray, per_task: Mapping[str, dict]) -> list[dict]:
    """For each pair of different tasks: d, the larger of the two task-level floors, and whether d
    lies above it (None when a floor was not measured)."""
    pairs = []
    for i, j in zip(*np.triu_indices(len(tasks), 1)):
        floors = [per_task[tasks[k]]["task_level"] for k in (i, j)]
        floor = None if None in floors else max(floors)
        pairs.append({"tasks": [tasks[i], tasks[j]], "distance": float(task_matrix[i, j]), "floor": floor,
                      "above": None if floor is None else bool(task_matrix[i, j] > floor)})
    return pairs


def noise_floor_verdict(pairs: Sequence[Mapping[str, Any]]) -> str:
    """One line: how many task pairs the embeddings resolve, and what to do if not all."""
    unresolved = [" / ".join(p["tasks"]) for p in pairs if p["above"] is False]
    unmeasured = sum(1 for p in pairs if p["above"] is None)
    line = (f"verdict: all {len(pairs) - unmeasured} task pairs lie above their noise floor" if not unresolved
            else f"verdict: {len(unresolved)} of {len(pairs)} task pairs do not lie above their noise floor "
                 f"({', '.join(unresolved)}); raise --num_samples")
    return line + (f"; {unmeasured} pairs without a measured floor" if unmeasured else "")


# ---------------------------------------------------------------------------------------------
# The whole report
# ---------------------------------------------------------------------------------------------

def build_report(embeddings: Mapping[str, TaskEmbedding], *, sources: Sequence[str], target: str, subset_size: int,
                 distance: str, confidence: float, emb_dir: str | os.PathLike,
                 results: Sequence[dict] | None = None, missing: Mapping[str, str] | None = None,
                 results_file: str | None = None) -> dict:
    """The content of diversity.json (before NaN is mapped to null).

    Args:
        embeddings: every loaded embedding: sources, target and any extra task of the results.
        sources, target: canonical names; the subsets are drawn from `sources`.
        results: rows of the results table, or None to skip the join.
        missing: task -> why it has no embedding (rows needing it are skipped with that reason).
        results_file: the table's path (reported, and named in errors).

    Raises:
        DataError: incomparable embeddings or a malformed results table.
    """
    check_comparable(embeddings)
    vectors = {name: emb.vector for name, emb in embeddings.items()}
    tasks = [*sources, target]
    table = task_distance_table(vectors, tasks, distance)
    source_matrix = np.asarray(table["matrix"])[:len(sources), :len(sources)]
    report: dict[str, Any] = {
        "distance": distance, "target": target, "sources": list(sources), "subset_size": subset_size,
        "confidence": confidence,
        "subsets": subset_diversities(vectors, sources, target, subset_size, distance),
        "task_distances": table,
        "source_set_diversity": diversity_coefficient(source_matrix, confidence).to_dict(),
        "noise_floor": noise_floor_summary({name: embeddings[name] for name in tasks}, np.asarray(table["matrix"]),
                                           distance, confidence),
        "embeddings": embedding_summary(emb_dir, embeddings),
    }
    if results is not None:
        joined, skipped = join_results(results, vectors, target, distance, missing or {}, results_file or "")
        report.update(results_table=results_file, joined_results=joined, skipped_results=skipped,
                      correlations=accuracy_correlations(joined))
    return report



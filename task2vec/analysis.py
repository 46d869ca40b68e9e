"""Task-level diversity of source-task subsets, joined with target accuracies (TaskDiversity.py).

For every subset of the source tasks it reports

    diversity             = mean_{i<j in S} d(e_i, e_j)               (diversity coefficient of S)
    diversity_with_target = the same over S ∪ {target}
    distance_to_target    = d(mean_{i in S} e_i, e_target)

where e are task embeddings (non-negative Fisher diagonals) and d a distance of
`task2vec.distances`. The mean embedding averages the members after scaling each to unit sum:
the distances ignore an embedding's scale, so the average must too, or a task whose Fisher values
are larger (a harder task, a longer text) would outweigh the others.

Given the results table that run_target_task_GPT2_sst2_multiple.py appends to, it joins each
row's source set with these quantities and correlates them with the mean target accuracy. Every
row that cannot be joined is listed with its reason. Beside the diversities it always reports the
Monte-Carlo noise floor: the distance of an embedding to a re-embedding of the same data.
"""
from __future__ import annotations

import csv
import itertools
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from task2vec.distances import distance_function, pairwise_distances
from task2vec.diversity import data_diversity, diversity_coefficient, noise_floor
from task2vec.io import TaskEmbedding, load_task_embedding
from utils.errors import DataError, UnknownTaskError
from utils.tasks import get_task

logger = logging.getLogger(__name__)

SET_STATISTICS = ("diversity", "diversity_with_target", "distance_to_target")
METADATA_SUMMARY_KEYS = ("layout_digest", "probe", "objective", "estimator", "num_samples", "examples_used")
# Files TaskDiversity.py writes; an overwritten folder loses them first, so that a plot of an
# earlier run with --results_table cannot sit beside the results of a run without one.
OUTPUT_FILES = ("diversity.json", "diversity.csv", "task_distances.csv", "task_distances.png",
                "accuracy_vs_diversity.png", "correlations.json")
CHAIN_SEPARATOR = ";"    # steps of a source chain, as utils.target_task.chain_description writes them
REPTILE_SEPARATOR = "+"  # tasks of one Reptile step, as maml_qa.py records them


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

def mean_pairwise_distance(vectors: Sequence[np.ndarray], distance: str) -> float:
    """Diversity coefficient (mean distance over pairs i<j) of the vectors; NaN for fewer than 2."""
    if len(vectors) < 2:
        return math.nan
    return diversity_coefficient(pairwise_distances(np.stack(vectors), distance)).value


def mean_embedding(members: Sequence[np.ndarray]) -> np.ndarray:
    """(D,) average of the members, each first scaled to unit sum (an all-zero member stays zero)."""
    scaled = [m / m.sum() if m.sum() > 0 else m for m in members]
    return np.mean(scaled, axis=0)


def set_statistics(members: Sequence[np.ndarray], target: np.ndarray, distance: str) -> dict[str, float]:
    """diversity, diversity_with_target and distance_to_target of one set of (D,) embeddings.

    NaN where undefined: diversity for fewer than 2 members, the other two for no member.
    """
    members = list(members)
    return {
        "diversity": mean_pairwise_distance(members, distance),
        "diversity_with_target": mean_pairwise_distance([*members, target], distance) if members else math.nan,
        "distance_to_target": distance_function(distance)(mean_embedding(members), target) if members else math.nan,
    }


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
# Results table
# ---------------------------------------------------------------------------------------------

def parse_source_tasks(text: str) -> list[str]:
    """Canonical source tasks of a results-table cell, in order of first appearance.

    "squad;squad_v2;duorc-p" is a chain of three steps; "squad+squad_v2+duorc-s" one Reptile step
    over three tasks; "" no source (the plain pretrained model).

    Raises:
        UnknownTaskError: a name that is not registered.
    """
    names: list[str] = []
    for step in text.split(CHAIN_SEPARATOR):
        for part in step.split(REPTILE_SEPARATOR):
            if part.strip():
                name = get_task(part).name
                if name not in names:
                    names.append(name)
    return names


def read_results_table(path: str | os.PathLike) -> list[dict]:
    """Rows of the CSV run_target_task_GPT2_sst2_multiple.py --results_table appends to.

    Each row is a dict of its columns plus "line" (its line number in the file).

    Raises:
        DataError: the file is missing, empty, or lacks columns of RESULTS_TABLE_COLUMNS.
    """
    # Imported here: utils.target_task pulls in torch, which nothing else in the analysis needs.
    from utils.target_task import RESULTS_TABLE_COLUMNS

    path = Path(path)
    if not path.is_file():
        raise DataError("no such results table; write it with run_target_task_GPT2_sst2_multiple.py "
                        "--results_table", file=str(path))
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in RESULTS_TABLE_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"not a results table of run_target_task_GPT2_sst2_multiple.py (missing columns "
                            f"{missing})", file=str(path))
        rows = []
        for row in reader:
            rows.append({**row, "line": reader.line_num})
    return rows


def _row_sources(row: dict, target: str) -> tuple[list[str] | None, str | None]:
    """(source tasks, None) for a row of `target`, else (None, reason it is skipped)."""
    try:
        row_target = get_task(row["target_task"] or "").name
    except UnknownTaskError:
        row_target = row["target_task"]
    if row_target != target:
        return None, f"target_task {row['target_task']!r} is not {target!r}"
    try:
        return parse_source_tasks(row["source_tasks"] or ""), None
    except UnknownTaskError:
        return None, f"source_tasks {row['source_tasks']!r} holds a name that is not a registered task"


def tasks_in_results(rows: Iterable[dict], target: str) -> list[str]:
    """Every source task named by the rows of `target` (parsable ones), in first-seen order."""
    names: list[str] = []
    for row in rows:
        sources, _ = _row_sources(row, target)
        names.extend(name for name in sources or [] if name not in names)
    return names


def join_results(rows: Sequence[dict], vectors: Mapping[str, np.ndarray], target: str, distance: str,
                 missing: Mapping[str, str], file: str) -> tuple[list[dict], list[dict]]:
    """Rows of `target` whose source tasks all have embeddings, with their set statistics.

    Args:
        rows: from `read_results_table`.
        vectors: task name -> (D,) embedding (the target's included).
        target: canonical target task.
        distance: one of DISTANCES.
        missing: task name -> why it has no embedding (from `load_available_embeddings`).
        file: the table's path, for error messages.

    Returns:
        (joined, skipped). joined: line, source_tasks, sources, n_sources, mean_accuracy and
        SET_STATISTICS. skipped: line, target_task, source_tasks and the reason.

    Raises:
        DataError: a mean_accuracy that is not a number.
    """
    joined, skipped = [], []
    for row in rows:
        sources, reason = _row_sources(row, target)
        absent = [name for name in sources or [] if name not in vectors]
        if sources is not None and absent:
            reason = "; ".join(missing.get(name, f"no embedding loaded for {name!r}") for name in absent)
        if reason is None:
            try:
                accuracy = float(row["mean_accuracy"])
            except ValueError:
                raise DataError(f"mean_accuracy {row['mean_accuracy']!r} is not a number", file=file,
                                record=f"line {row['line']}", field="mean_accuracy") from None
            if not math.isfinite(accuracy):
                reason = f"mean_accuracy is {accuracy}"
        if reason is not None:
            skipped.append({"line": row["line"], "target_task": row["target_task"],
                            "source_tasks": row["source_tasks"], "reason": reason})
            continue
        statistics = set_statistics([vectors[name] for name in sources], vectors[target], distance)
        joined.append({"line": row["line"], "source_tasks": row["source_tasks"], "sources": sources,
                       "n_sources": len(sources), "mean_accuracy": accuracy, **statistics,
                       "output_dir": row.get("output_dir", "")})
    return joined, skipped


def correlate(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """Spearman's ρ and Pearson's r of y against x with their two-sided p-values (scipy.stats).

    Pairs where either value is NaN are dropped first. NaN, with a reason, when fewer than 3
    pairs remain or either variable is constant.
    """
    x_values, y_values = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = ~(np.isnan(x_values) | np.isnan(y_values))
    x_values, y_values = x_values[keep], y_values[keep]
    result: dict[str, Any] = {"n": int(keep.sum()), "spearman_rho": math.nan, "spearman_p": math.nan,
                              "pearson_r": math.nan, "pearson_p": math.nan, "reason": None}
    if result["n"] < 3:
        result["reason"] = f"only {result['n']} joined row(s); at least 3 are needed"
    elif np.ptp(x_values) == 0 or np.ptp(y_values) == 0:
        result["reason"] = "a variable is constant over the joined rows"
    else:
        spearman = stats.spearmanr(x_values, y_values)
        pearson = stats.pearsonr(x_values, y_values)
        result.update(spearman_rho=float(spearman.statistic), spearman_p=float(spearman.pvalue),
                      pearson_r=float(pearson.statistic), pearson_p=float(pearson.pvalue))
    return result


def accuracy_correlations(joined: Sequence[dict]) -> dict[str, dict]:
    """Correlation of mean_accuracy with each of SET_STATISTICS over the joined rows.

    "diversity" uses the rows with at least 2 sources (it is NaN for the others).
    """
    accuracy = [row["mean_accuracy"] for row in joined]
    return {column: correlate([row[column] for row in joined], accuracy) for column in SET_STATISTICS}


def accuracy_by_source_set(joined: Sequence[dict]) -> dict[frozenset, list[float]]:
    """Source set -> the mean accuracies of the joined rows trained from exactly that set."""
    by_set: dict[frozenset, list[float]] = {}
    for row in joined:
        by_set.setdefault(frozenset(row["sources"]), []).append(row["mean_accuracy"])
    return by_set


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


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def json_safe(value: Any) -> Any:
    """`value` with NaN/inf as None, numpy scalars and arrays as Python numbers and lists, for strict JSON."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return str(value)
    return value


def _cell(value: Any) -> Any:
    """A CSV cell: empty for None/NaN, full precision otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else value


def write_subsets_csv(path: Path, subsets: Sequence[dict], joined: Sequence[dict] | None) -> None:
    """diversity.csv: one row per subset; with joined results, the mean accuracy of the rows
    trained from exactly that source set (their mean when several) and how many there are."""
    columns = ["tasks", *SET_STATISTICS] + (["mean_accuracy", "n_results"] if joined is not None else [])
    by_set = accuracy_by_source_set(joined or [])
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for subset in subsets:
            row = [";".join(subset["tasks"]), *(_cell(subset[key]) for key in SET_STATISTICS)]
            if joined is not None:
                accuracies = by_set.get(frozenset(subset["tasks"]), [])
                row += [_cell(float(np.mean(accuracies))) if accuracies else "", len(accuracies)]
            writer.writerow(row)


def write_matrix_csv(path: Path, tasks: Sequence[str], matrix: Sequence[Sequence[float]]) -> None:
    """task_distances.csv: a header of task names and one row per task."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["task", *tasks])
        for name, row in zip(tasks, matrix):
            writer.writerow([name, *(_cell(float(value)) for value in row)])


def plot_distance_heatmap(path: Path, tasks: Sequence[str], matrix: Sequence[Sequence[float]], distance: str) -> None:
    """PNG heatmap of the task distance matrix with every value written in its cell."""
    # matplotlib.figure.Figure draws with the Agg canvas without touching pyplot's global state.
    from matplotlib.figure import Figure

    values = np.asarray(matrix, dtype=np.float64)            # (n, n)
    size = 1.2 + 0.9 * len(tasks)
    figure = Figure(figsize=(size + 1.5, size))
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap="viridis", vmin=0.0)
    figure.colorbar(image, ax=axes, label=f"{distance} distance")
    axes.set_xticks(range(len(tasks)), labels=tasks, rotation=45, ha="right")
    axes.set_yticks(range(len(tasks)), labels=tasks)
    threshold = values.max() / 2 if values.size else 0.0
    for i, j in itertools.product(range(len(tasks)), repeat=2):
        axes.text(j, i, f"{values[i, j]:.3g}", ha="center", va="center", fontsize=8,
                  color="black" if values[i, j] > threshold else "white")
    axes.set_title(f"task distances ({distance})")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot_accuracy_vs_diversity(path: Path, joined: Sequence[dict], correlation: Mapping[str, Any],
                               target: str) -> None:
    """PNG scatter of mean target accuracy against source diversity, one labelled point per row."""
    from matplotlib.figure import Figure

    points = [row for row in joined if not math.isnan(row["diversity"])]
    figure = Figure(figsize=(7, 5))
    axes = figure.add_subplot()
    axes.scatter([row["diversity"] for row in points], [row["mean_accuracy"] for row in points])
    for row in points:
        axes.annotate(row["source_tasks"], (row["diversity"], row["mean_accuracy"]), fontsize=7,
                      xytext=(3, 3), textcoords="offset points")
    axes.margins(x=0.25, y=0.1)  # room for the labels of the outermost points
    if not points:
        axes.text(0.5, 0.5, "no joined row with 2 or more source tasks", ha="center", transform=axes.transAxes)
    rho = correlation.get("spearman_rho", math.nan)
    axes.set_title(f"{target} accuracy vs source diversity (Spearman ρ = {rho:.3f}, n = {correlation.get('n', 0)})")
    axes.set_xlabel("diversity of the source tasks")
    axes.set_ylabel(f"mean {target} accuracy")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def ranking_lines(report: Mapping[str, Any]) -> list[str]:
    """The subsets by ascending diversity, one line each, as the original script printed them."""
    return [f"{rank:2d}. {', '.join(entry['tasks'])}: diversity {entry['diversity']:.6f}, with {report['target']} "
            f"{entry['diversity_with_target']:.6f}, distance to {report['target']} {entry['distance_to_target']:.6f}"
            for rank, entry in enumerate(report["subsets"], start=1)]


def noise_floor_lines(floor: Mapping[str, Any]) -> list[str]:
    """One line per task of a `noise_floor_summary`: its task-level floor and, with batches, data
    diversity and batch floor."""
    lines = [f"noise floor ({floor['distance']}; smallest distance between two tasks "
             f"{floor['min_task_distance']:.6f}):"]
    for name, entry in floor["tasks"].items():
        text = (f"d(e, e reseeded) = {entry['task_level']:.6f}" if entry["task_level"] is not None
                else f"not measured ({entry['task_level_reason']})")
        batches = entry.get("batches")
        if batches:
            diversity = batches["diversity"]
            text += (f"; {batches['n']} batches: diversity {diversity['value']:.6f} "
                     f"[{diversity['ci_low']:.6f}, {diversity['ci_high']:.6f}]")
            if batches["noise_floor"] is not None:
                text += f", batch noise floor {batches['noise_floor']:.6f}"
        lines.append(f"  {name}: {text}")
    return lines

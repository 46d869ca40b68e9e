"""What TaskDiversity.py writes and prints: strict JSON, CSV tables, PNG figures, text lines."""
from __future__ import annotations

import csv
import itertools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from task2vec.diversity import SET_STATISTICS
from task2vec.transfer import accuracy_by_source_set

# Files TaskDiversity.py writes; an overwritten folder loses them first, so that a plot of an
# earlier run with --results_table cannot sit beside the results of a run without one.
OUTPUT_FILES = ("diversity.json", "diversity.csv", "task_distances.csv", "task_distances.png",
                "accuracy_vs_diversity.png", "correlations.json")


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

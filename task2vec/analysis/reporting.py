"""What the diversity report writes and prints: strict JSON, CSV tables, PNG figures, text lines."""
from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from task2vec.analysis.diversity import ALL_SET_STATISTICS, CORRECTED, SET_STATISTICS, noise_floor_verdict
from utils.run.outputs import write_json

# mean, std, ci_low, ci_high: of the target's metric (the `metric` column) over the pooled seeds.
POINT_COLUMNS = ("algorithm", "metric", "max_train_samples", "selection", "objectives", "base_model", "sources",
                 "orders", "lines", "duplicate_lines", "n_runs", "n_seeds", "mean", "std", "ci_low", "ci_high",
                 *ALL_SET_STATISTICS)


def not_finite_reason(key: str) -> str:
    """Why a statistic named `key` can be undefined (the text json_safe writes beside its null)."""
    if key.endswith(CORRECTED) or key in ("corrected", "matrix"):
        return ("no noise-floor correction: a task involved has no re-embedding (embedding_reseeded.npy), or its "
                "floors are too large to correct")
    if key in ("se", "naive_se", "ci_low", "ci_high", "naive_ci_low", "naive_ci_high") or key.startswith("std"):
        return "too few values (fewer than 2) to estimate a spread"
    if key in SET_STATISTICS:
        return "undefined for this set: a diversity needs 2 tasks, a distance to the target 1"
    if key == "floor_to_diversity":
        return "the batch diversity is 0"
    return "not a finite number for these inputs"


def _cell(value: Any) -> Any:
    """A CSV cell: empty for None/NaN, full precision otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else value


def write_subsets_csv(path: Path, subsets: Sequence[dict]) -> None:
    """diversity.csv: one row per subset, ranked, raw and corrected statistics (no target score:
    scores belong to a condition, transfer_points.csv)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tasks", *ALL_SET_STATISTICS])
        for subset in subsets:
            writer.writerow([";".join(subset["tasks"]), *(_cell(subset[key]) for key in ALL_SET_STATISTICS)])


def write_points_csv(path: Path, transfer: Mapping[str, Any]) -> None:
    """transfer_points.csv: one row per (condition, source set) point of the transfer analysis."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(POINT_COLUMNS)
        for condition in transfer["conditions"]:
            for point in condition["points"]:
                values = {**condition["condition"], **point}
                writer.writerow([";".join(map(str, values[key])) if isinstance(values[key], list)
                                 else _cell(values[key]) for key in POINT_COLUMNS])


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


def condition_label(condition: Mapping[str, str]) -> str:
    """A short description of a condition, e.g. "sequential, accuracy, max_train_samples 1000, holdout, lm"."""
    parts = [condition["algorithm"], condition["metric"]]
    parts.append(f"max_train_samples {condition['max_train_samples'] or 'all'}")
    parts += [condition[key] for key in ("selection", "objectives", "base_model") if condition[key]]
    return ", ".join(parts)


def correlation_text(correlation: Mapping[str, Any]) -> str:
    """"n = 5 source sets: Spearman ρ 0.900 (p 0.083), Pearson r 0.812 (p 0.117), exact: all 120 orderings"."""
    head = f"n = {correlation['n']} source sets"
    if correlation["reason"]:
        return f"{head}: {correlation['reason']}"
    return (f"{head}: Spearman ρ {correlation['spearman_rho']:.3f} (p {correlation['spearman_p']:.3g}), "
            f"Pearson r {correlation['pearson_r']:.3f} (p {correlation['pearson_p']:.3g}), {correlation['p_method']}")


def x_statistic(condition: Mapping[str, Any]) -> str:
    """The diversity the plot shows: the corrected one when every point has it, else the raw one."""
    corrected = "diversity" + CORRECTED
    values = [point[corrected] for point in condition["points"] if not math.isnan(point["diversity"])]
    return corrected if values and all(not math.isnan(v) for v in values) else "diversity"


def plot_score_vs_diversity(path: Path, transfer: Mapping[str, Any], target: str) -> None:
    """PNG: one panel per condition; one point per source set with its CI over seeds, the plain
    model as a reference line (its CI shaded), and the correlation with n and its exact p."""
    from matplotlib.figure import Figure

    conditions = list(transfer["conditions"]) or [None]
    figure = Figure(figsize=(7.5, 5.2 * len(conditions)))
    for number, condition in enumerate(conditions, start=1):
        axes = figure.add_subplot(len(conditions), 1, number)
        if condition is None:
            axes.text(0.5, 0.5, f"no joined row for {target} with a source task", ha="center", transform=axes.transAxes)
            continue
        x_name = x_statistic(condition)
        points = [p for p in condition["points"] if not math.isnan(p[x_name])]
        x = [p[x_name] for p in points]
        y = np.array([p["mean"] for p in points])
        low = np.array([p["ci_low"] for p in points])
        high = np.array([p["ci_high"] for p in points])
        bars = np.nan_to_num(np.vstack([y - low, high - y]), nan=0.0)   # a point of one seed has no bar
        axes.errorbar(x, y, yerr=bars, fmt="o", capsize=3)
        for point, xi, yi in zip(points, x, y):
            axes.annotate("+".join(point["sources"]) + f" ({point['n_seeds']} seeds)", (xi, yi), fontsize=7,
                          xytext=(3, 3), textcoords="offset points")
        baseline = condition["baseline"]
        if baseline is not None:
            axes.axhline(baseline["mean"], color="grey", linestyle="--",
                         label=f"no source ({baseline['n_seeds']} seeds)")
            if not math.isnan(baseline["ci_low"]):
                axes.axhspan(baseline["ci_low"], baseline["ci_high"], color="grey", alpha=0.15)
            axes.legend(fontsize=7, loc="best")
        if not points:
            axes.text(0.5, 0.5, "no source set with 2 or more tasks", ha="center", transform=axes.transAxes)
        axes.margins(x=0.25, y=0.1)  # room for the labels of the outermost points
        correlation = condition["correlations"][x_name]
        title = f"{condition_label(condition['condition'])}\n{correlation_text(correlation)}"
        if correlation["warning"]:
            title += "\n(fewer than 5 source sets: description, not evidence)"
        axes.set_title(title, fontsize=8)
        axes.set_xlabel(f"{x_name.replace('_', ' ')} of the source tasks"
                        + (" (noise floor removed)" if x_name != "diversity" else ""))
        axes.set_ylabel(f"mean {target} {condition['condition']['metric']} (95% CI over seeds)")
    figure.suptitle("one point per source set; rows of a set pooled, repeats counted once; exact permutation p",
                    fontsize=8)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.35 / figure.get_figheight()))   # room for the suptitle
    figure.savefig(path, dpi=120)


def _fmt(value: float | None, digits: int = 6) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def ranking_lines(report: Mapping[str, Any]) -> list[str]:
    """The subsets in the report's ranking (by corrected diversity when available), one line each."""
    target = report["target"]
    return [f"{rank:2d}. {', '.join(entry['tasks'])}: diversity {_fmt(entry['diversity' + CORRECTED])} corrected "
            f"({_fmt(entry['diversity'])} raw), with {target} {_fmt(entry['diversity_with_target' + CORRECTED])} "
            f"({_fmt(entry['diversity_with_target'])}), distance to {target} "
            f"{_fmt(entry['distance_to_target' + CORRECTED])} ({_fmt(entry['distance_to_target'])})"
            for rank, entry in enumerate(report["subsets"], start=1)]


def estimate_text(estimate: Mapping[str, Any] | None) -> str:
    """"0.123456 [0.100000, 0.150000]" of a DiversityEstimate dict ("n/a" for None)."""
    if estimate is None:
        return "n/a"
    return f"{_fmt(estimate['value'])} [{_fmt(estimate['ci_low'])}, {_fmt(estimate['ci_high'])}]"


def noise_floor_lines(floor: Mapping[str, Any]) -> list[str]:
    """One line per task of a `noise_floor_summary`: its task-level floor and, with batches, data
    diversity (raw and corrected) and batch floor."""
    lines = [f"noise floor ({floor['distance']}; smallest distance between two tasks "
             f"{floor['min_task_distance']:.6f}):"]
    for name, entry in floor["tasks"].items():
        text = (f"d(e, e reseeded) = {entry['task_level']:.6f}" if entry["task_level"] is not None
                else f"not measured ({entry['task_level_reason']})")
        batches = entry.get("batches")
        if batches:
            text += f"; {batches['n']} batches: diversity {estimate_text(batches['diversity'])}"
            if batches["noise_floor"] is not None:
                text += (f", batch noise floor {batches['noise_floor']:.6f}, corrected diversity "
                         f"{estimate_text(batches['diversity_corrected'])}")
        lines.append(f"  {name}: {text}")
    return lines


def write_report_files(output_dir: Path, report: dict, safe: dict, *, plots: bool) -> None:
    """The report files: diversity.json (`safe`, the strict JSON of `report`), diversity.csv,
    task_distances[_corrected].csv, with a results table correlations.json and transfer_points.csv, and
    the figures."""
    write_json(output_dir / "diversity.json", safe)
    write_subsets_csv(output_dir / "diversity.csv", report["subsets"])
    table = report["task_distances"]
    write_matrix_csv(output_dir / "task_distances.csv", table["tasks"], table["matrix"])
    if table["corrected"] is not None:
        write_matrix_csv(output_dir / "task_distances_corrected.csv", table["tasks"], table["corrected"])
    if "transfer" in report:
        write_json(output_dir / "correlations.json", safe["transfer"])
        write_points_csv(output_dir / "transfer_points.csv", report["transfer"])
    if plots:
        plot_distance_heatmap(output_dir / "task_distances.png", table["tasks"], table["matrix"], report["distance"])
        if "transfer" in report:
            plot_score_vs_diversity(output_dir / "score_vs_diversity.png", report["transfer"], report["target"])


def report_lines(report: dict) -> list[str]:
    """What the report prints: the ranking, the noise floor and, with a results table, each
    condition and its correlations."""
    lines: list[str] = []
    for warning in report["comparability_warnings"]:
        lines.append(f"warning: {warning}")
    lines.append(f"Subsets of {report['subset_size']} source tasks by ascending {report['distance']} "
          f"{report['subsets_ranked_by'].replace('_', ' ')} (target {report['target']}; corrected (raw)):")
    lines += ranking_lines(report)
    overall = report["source_set_diversity"]
    lines.append(f"All {len(report['sources'])} sources ({overall['raw']['confidence']:.0%} jackknife CI over tasks): "
          f"diversity {estimate_text(overall['raw'])} raw, {estimate_text(overall['corrected'])} corrected")
    lines += [*noise_floor_lines(report["noise_floor"]), noise_floor_verdict(report["noise_floor"]["pairs"])]
    if "transfer" not in report:
        return lines
    lines.append(f"Results table: {len(report['joined_results'])} row(s) joined, {len(report['skipped_results'])} skipped")
    for row in report["skipped_results"]:
        lines.append(f"  skipped line {row['line']} ({row['source_tasks'] or 'no source'}): {row['reason']}")
    for condition in report["transfer"]["conditions"]:
        points = condition["points"]
        duplicates = sum(len(point["duplicate_lines"]) for point in points)
        repeated = f" ({duplicates} repeated rows counted once)" if duplicates else ""
        lines.append(f"Condition {condition_label(condition['condition'])}: {condition['n_rows']} row(s) -> {len(points)} "
              f"source set(s){repeated}")
        if condition["baseline"] is not None:
            base = condition["baseline"]
            lines.append(f"  no source: {base['mean']:.4f} [{base['ci_low']:.4f}, {base['ci_high']:.4f}] "
                  f"over {base['n_seeds']} seeds")
        for point in points:
            if point["runs_share_seeds"]:
                lines.append(f"  warning: runs of {'+'.join(point['sources'])} from one checkpoint share seeds; they are "
                      "pooled as if independent")
        for group in condition["chain_orders"]:
            orders = "; ".join(f"{o['source_tasks']} {o['mean']:.4f} ({o['n_seeds']} seeds)"
                               for o in group["orders"])
            lines.append(f"  chain orders of {'+'.join(group['sources'])}: {orders}")
        correlations = condition["correlations"]
        reasons = {corr["reason"] for corr in correlations.values()}
        if None not in reasons and len(reasons) == 1:   # no coefficient at all, for one reason: say it once
            lines.append(f"  no correlation: {correlation_text(next(iter(correlations.values())))}")
            continue
        for name, corr in correlations.items():
            lines.append(f"  {condition['condition']['metric']} vs {name}: {correlation_text(corr)}")
            if corr["warning"]:
                lines.append(f"    warning: {corr['warning']}")
    return lines

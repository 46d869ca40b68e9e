"""What `python -m task2vec.selection` prints and writes besides selection.json: the leaderboard
lines, selection.csv and one figure per target."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from scipy import stats

from task2vec.reporting import condition_label


def _interval(entry: dict) -> str:
    if entry.get("value") is None:
        return f"n/a ({entry.get('reason', 'undefined')})"
    low, high = entry.get("ci_low"), entry.get("ci_high")
    bounds = "" if low is None or high is None else f" [{low:.3f}, {high:.3f}]"
    return f"{entry['value']:.3f}{bounds}"


def leaderboard_lines(target: str, entries: list[dict], k: int) -> list[str]:
    """Per condition, one line per selector: each score with its interval; skipped selectors with why."""
    lines = [f"Target {target}:"]
    seen: list = []
    for entry in entries:
        label = condition_label(entry["condition"])
        if label not in seen:
            seen.append(label)
            lines.append(f"  condition {label}")
        if "skipped" in entry:
            lines.append(f"    {entry['selector'] or 'every selector'}: skipped ({entry['skipped']})")
            continue
        scores = entry["scores"]
        values = f" ({entry['values']} values)" if entry.get("values") else ""
        lines.append(f"    {entry['selector']}{values}: "
                     + ", ".join(f"{name} {_interval(value)}" for name, value in scores.items()))
        if entry.get("values_reason"):
            lines.append(f"      raw values: {entry['values_reason']}")
        if entry.get("note"):
            lines.append(f"      note: {entry['note']}")
    return lines


def write_csv(path: Path, report: dict) -> None:
    """selection.csv: target, condition, selector, score, value, interval, undefined draws (or why skipped)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["target", "condition", "selector", "score", "value", "ci_low", "ci_high", "note"])
        for target, part in report["targets"].items():
            for entry in part["leaderboard"]:
                label = condition_label(entry["condition"])
                if "skipped" in entry:
                    writer.writerow([target, label, entry["selector"] or "", "", "", "", "", entry["skipped"]])
                    continue
                for name, value in entry["scores"].items():
                    note = "; ".join(filter(None, [value.get("reason"), entry.get("values_reason"), entry.get("note")]))
                    writer.writerow([target, label, entry["selector"], name,
                                     *("" if value.get(key) is None else value[key] for key in ("value", "ci_low", "ci_high")),
                                     note])


def _mean_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (0 for one seed: no spread to show)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, 0.0
    return mean, float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))


def plot_selection(path: Path, target: str, conditions: list, entries: list[dict]) -> None:
    """For each selector (a panel; the target's first condition with two source sets or more),
    predicted score against the measured gain over the plain model (or the measured score without
    one), one point per source set with its t-interval over seeds."""
    from matplotlib.figure import Figure

    condition = next((c for c in conditions if len(c.sources) >= 2), conditions[0])
    scored = [e for e in entries if "predicted" in e and e["condition"] == condition.condition]
    figure = Figure(figsize=(4.2 * max(1, len(scored)), 3.8))
    plain = float(np.mean(condition.plain)) if condition.plain else None
    for number, entry in enumerate(scored, start=1):
        axes = figure.add_subplot(1, len(scored), number)
        for source in condition.sources:
            mean, half = _mean_interval(source.values)
            y = mean - plain if plain is not None else mean
            x = entry["predicted"][source.label]
            axes.errorbar([x], [y], yerr=[[half], [half]], fmt="o", capsize=3)
            axes.annotate(source.label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ndcg = next((v for name, v in entry["scores"].items() if name.startswith("ndcg")), {})
        axes.set_title(f"{entry['selector']} (NDCG {_interval(ndcg)})", fontsize=8)
        axes.set_xlabel("predicted score", fontsize=8)
        axes.set_ylabel(f"{'gain over the plain model' if plain is not None else 'measured'} "
                        f"({condition.condition['metric']})", fontsize=8)
    figure.suptitle(f"{target}: {condition_label(condition.condition)}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)

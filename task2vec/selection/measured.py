"""Measured transfer per experimental condition, with per-seed values, from the results table and
the summary.json of each row (the target script's `output_dir`).

Rows are grouped as TaskDiversity.py groups them (task2vec.transfer.row_condition: target, metric,
base model, data budget, selection, objectives, algorithm); within a condition every row of one
source set is pooled over its seeds (a row repeated with the same checkpoint and seeds counted
once), and the plain model's rows of the same target, metric, base model, budget and selection are
the reference the gains are measured against.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from task2vec.transfer import BASELINE_KEYS, distinct_runs, parse_source_tasks, row_condition
from utils.data.registry import get_task
from utils.results.table import row_score
from utils.run.errors import UnknownTaskError


@dataclass
class MeasuredSource:
    """One source set of a condition: its per-seed values pooled over its runs."""

    sources: tuple[str, ...]
    values: list[float] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "+".join(self.sources)


@dataclass
class MeasuredCondition:
    """The source sets of one condition and the plain model's per-seed values (None: no plain row)."""

    condition: dict
    sources: list[MeasuredSource]
    plain: list[float] | None
    plain_lines: list[int]


def seed_values(row: dict, metric: str, table: Path) -> tuple[list[float] | None, str | None]:
    """(the per-seed values of `metric` in the row's summary.json, None) or (None, why not)."""
    folder = Path(row.get("output_dir") or "")
    if not folder.is_absolute() and not folder.exists():
        folder = table.parent / folder
    path = folder / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        return None, f"no readable summary.json at {path} ({err.__class__.__name__}): its seeds cannot be resampled"
    values = [run.get(f"eval_{metric}") for run in summary.get("runs", [])]
    if not values or any(value is None or not math.isfinite(float(value)) for value in values):
        return None, f"{path}: eval_{metric} is missing or undefined for a seed"
    return [float(value) for value in values], None


def measured_conditions(rows: list[dict], target: str, table: Path) -> tuple[list[MeasuredCondition], list[dict]]:
    """The conditions of `target` with their source sets and plain model, and the rows skipped
    (line, reason)."""
    skipped: list[dict] = []
    groups: dict[tuple, dict[tuple[str, ...], list]] = {}
    plain: dict[tuple, list] = {}
    conditions: dict[tuple, dict] = {}
    for row in rows:
        try:
            if get_task(row["target_task"] or "").name != target:
                continue
            sources = tuple(sorted(parse_source_tasks(row["source_tasks"] or "")))
        except UnknownTaskError as err:
            skipped.append({"line": row["line"], "reason": str(err)})
            continue
        condition = row_condition(row, target)
        values, reason = seed_values(row, row_score(row)[0], table)
        if reason:
            skipped.append({"line": row["line"], "reason": reason})
            continue
        entry = {**row, "values": values}
        if condition["algorithm"] == "none":
            plain.setdefault(tuple(condition[k] for k in BASELINE_KEYS), []).append(entry)
            continue
        key = tuple(condition.values())
        conditions[key] = condition
        groups.setdefault(key, {}).setdefault(sources, []).append(entry)
    result = []
    for key, by_set in groups.items():
        measured = []
        for sources, entries in sorted(by_set.items()):
            runs, _ = distinct_runs(entries)
            measured.append(MeasuredSource(sources, [v for run in runs for v in run["values"]],
                                           [run["line"] for run in runs], [run["pretrained_model"] for run in runs]))
        reference = plain.get(tuple(conditions[key][k] for k in BASELINE_KEYS))
        plain_runs = distinct_runs(reference)[0] if reference else []
        result.append(MeasuredCondition(conditions[key], measured,
                                        [v for run in plain_runs for v in run["values"]] if plain_runs else None,
                                        [run["line"] for run in plain_runs]))
    return result, skipped

"""Measured transfer: the target script's results table joined with the diversity of each row's
source tasks, grouped by experimental condition, and the correlations between the two.

`source_tasks` cells name chain steps separated by ";" and the tasks of one Reptile step joined by
"+" ("squad;squad_v2;duorc-p", "squad+squad_v2+duorc-s"). Rows that cannot be joined are listed
with their reason, never dropped silently. What keeps the correlations honest:

- Rows are grouped by CONDITION (CONDITION_KEYS) and never pooled across conditions: a different
  data budget, metric or algorithm is a different experiment. An empty `algorithm` cell is read
  from source_tasks (`training_algorithm`); "none", the plain model, is the condition's reference
  line, never a point.
- Within a condition, all rows of one source SET make one point, whatever their chain order, pooled
  over their seeds; a row repeating the same source_tasks, checkpoint and seeds is counted once and
  listed. Chain orders of one set are reported beside the points ("chain_orders"), not as extra
  observations.
- Coefficients come with n, the number of distinct source sets, and exact permutation p-values.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from task2vec.analysis.correlation import correlate
from task2vec.analysis.diversity import ALL_SET_STATISTICS, set_statistics
from utils.results.metrics import metric_range
from utils.results.metrics import bounded_interval
from utils.run.errors import DataError, UnknownTaskError
from utils.results.table import RESULTS_TABLE_KEY_COLUMNS, existing_columns, read_rows, row_score
from utils.data.registry import get_task

CHAIN_SEPARATOR = ";"    # steps of a source chain, as utils.classification.summary.chain_description writes them
REPTILE_SEPARATOR = "+"  # tasks of one Reptile step, as maml_qa.py records them
CHAIN_LINK = " > "       # links of source_chain, the base model first
ALGORITHMS = ("none", "sequential", "reptile", "fomaml", "multitask", "mixed")
CONDITION_KEYS = ("target_task", "metric", "base_model", "max_train_samples", "selection", "objectives", "algorithm")
# The keys of a plain model's condition (no source: no objectives, no algorithm).
BASELINE_KEYS = CONDITION_KEYS[:5]


def parse_source_tasks(text: str) -> list[str]:
    """Canonical source tasks of a results-table cell, in order of first appearance ("": none)."""
    names: list[str] = []
    for step in text.split(CHAIN_SEPARATOR):
        for part in step.split(REPTILE_SEPARATOR):
            if part.strip():
                name = get_task(part).name
                if name not in names:
                    names.append(name)
    return names


def training_algorithm(text: str) -> str:
    """The training algorithm of a source_tasks cell: "none" without a source, "sequential" for
    single-task steps, "reptile" for one "+"-joined step, "mixed" for a chain with one."""
    steps = [step for step in text.split(CHAIN_SEPARATOR) if step.strip()]
    if not steps:
        return "none"
    reptile = [len([part for part in step.split(REPTILE_SEPARATOR) if part.strip()]) > 1 for step in steps]
    if not any(reptile):
        return "sequential"
    return "reptile" if len(steps) == 1 else "mixed"


def read_results_table(path: str | os.PathLike) -> list[dict]:
    """Rows (dicts with their "line" number) of the CSV that run_target_task_GPT2_sst2_multiple.py
    --results_table appends to; DataError for a file without the key or score columns."""
    writer = "run_target_task_GPT2_sst2_multiple.py"
    rows = read_rows(path, RESULTS_TABLE_KEY_COLUMNS, flag="--results_table", writer=writer)
    header = existing_columns(path) or ()
    if not {"primary_metric", "mean_primary", "std_primary"} <= set(header):
        raise DataError(f"not a table written by {writer} --results_table (no score columns primary_metric, "
                        "mean_primary, std_primary)", file=str(path))
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


def _number(row: dict, column: str, file: str, *, integer: bool = False, required: bool = True) -> float:
    """A numeric cell; "" and NaN read as NaN unless required (then DataError, as for non-numbers)."""
    text = (row.get(column) or "").strip()
    try:
        value = float(text) if text else math.nan
    except ValueError:
        raise DataError(f"{column} {text!r} is not a number", file=file, record=f"line {row['line']}",
                        field=column) from None
    if required and not math.isfinite(value):
        raise DataError(f"{column} is missing", file=file, record=f"line {row['line']}", field=column)
    return int(value) if integer and math.isfinite(value) else value


def row_condition(row: Mapping[str, Any], target: str) -> dict[str, str]:
    """The experimental condition of a row (CONDITION_KEYS; see the module docstring)."""
    base = (row.get("source_chain") or "").split(CHAIN_LINK)[0].strip()
    return {"target_task": target, "metric": row_score(row)[0], "base_model": Path(base).name if base else "",
            "max_train_samples": (row.get("max_train_samples") or "").strip(),
            "selection": (row.get("selection") or "").strip(), "objectives": (row.get("objectives") or "").strip(),
            "algorithm": (row.get("algorithm") or "").strip() or training_algorithm(row.get("source_tasks") or "")}


def join_results(rows: Sequence[dict], vectors: Mapping[str, np.ndarray], target: str, distance: str,
                 missing: Mapping[str, str], file: str,
                 reseeded: Mapping[str, np.ndarray | None] | None = None) -> tuple[list[dict], list[dict]]:
    """(joined, skipped): rows of `target` whose source tasks all have embeddings, with their
    condition, run summary and ALL_SET_STATISTICS; the others with the reason they are skipped.

    `vectors` holds the target's embedding too; `missing` says why a task has none; `reseeded`
    gives re-embeddings (None: no floor) for the corrected statistics.
    """
    reseeded = reseeded or {}
    joined, skipped = [], []
    for row in rows:
        sources, reason = _row_sources(row, target)
        absent = [name for name in sources or [] if name not in vectors]
        if sources is not None and absent:
            reason = "; ".join(missing.get(name, f"no embedding loaded for {name!r}") for name in absent)
        metric, mean_column, std_column = row_score(row)
        if reason is None:
            mean = _number(row, mean_column, file, required=False)
            if not math.isfinite(mean):
                reason = f"{mean_column} ({metric}) is {row.get(mean_column)!r}"
        if reason is not None:
            skipped.append({"line": row["line"], "target_task": row["target_task"],
                            "source_tasks": row["source_tasks"], "reason": reason})
            continue
        statistics = set_statistics([vectors[name] for name in sources], vectors[target], distance,
                                    [reseeded.get(name) for name in sources], reseeded.get(target))
        joined.append({"line": row["line"], "source_tasks": row["source_tasks"], "sources": sources,
                       "n_sources": len(sources), "condition": row_condition(row, target),
                       "pretrained_model": row.get("pretrained_model", ""), "seeds": row.get("seeds", ""),
                       "n": _number(row, "n", file, integer=True), "metric": metric, "mean": mean,
                       "std": _number(row, std_column, file, required=False), **statistics,
                       "output_dir": row.get("output_dir", "")})
    return joined, skipped


# ---------------------------------------------------------------------------------------------
# Points: one per source set and condition
# ---------------------------------------------------------------------------------------------

def pooled_summary(runs: Sequence[Mapping[str, Any]], confidence: float) -> dict[str, Any]:
    """Mean, std and t-interval over all the seeds of several runs, from each run's n, mean, std.

    N = Σ n_i; mean = Σ n_i m_i / N; (N − 1)·std² = Σ (n_i − 1) s_i² + Σ n_i (m_i − mean)²;
    CI = mean ± t_{(1+c)/2, N−1}·std/√N, cut to the metric's range. std and CI are NaN when N = 1
    or a run of several seeds lacks its std.
    """
    n = np.array([run["n"] for run in runs], dtype=np.float64)
    means = np.array([run["mean"] for run in runs], dtype=np.float64)
    stds = np.array([run["std"] for run in runs], dtype=np.float64)
    total = float(n.sum())
    mean = float((n * means).sum() / total)
    within = np.where(n > 1, (n - 1) * np.square(stds), 0.0)
    std = math.nan
    if total > 1 and np.all(np.isfinite(within)):
        std = math.sqrt(float(within.sum() + (n * np.square(means - mean)).sum()) / (total - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, total - 1)) * std / math.sqrt(total) if total > 1 else math.nan
    low, high = bounded_interval(mean, half, metric_range(str(runs[0].get("metric", ""))) if runs else None)
    return {"n_seeds": int(total), "mean": mean, "std": std, "ci_low": low, "ci_high": high}


def distinct_runs(rows: Sequence[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], list[int]]:
    """The rows that are distinct runs, and the lines of those that repeat one (same source_tasks,
    checkpoint and seed list; without a seed list, the same output_dir). The first is kept."""
    seen: set[tuple] = set()
    runs, duplicates = [], []
    for row in rows:
        key = (row["source_tasks"], row["pretrained_model"], row["seeds"] or ("dir", row["output_dir"]))
        if key in seen:
            duplicates.append(row["line"])
        else:
            seen.add(key)
            runs.append(row)
    return runs, duplicates


def _shared_seeds(runs: Sequence[Mapping[str, Any]]) -> bool:
    """Whether two runs of one checkpoint name a seed in common (then they are not independent)."""
    seen: set[tuple[str, str]] = set()
    for run in runs:
        for seed in filter(None, (part.strip() for part in str(run["seeds"]).split(";"))):
            key = (run["pretrained_model"], seed)
            if key in seen:
                return True
            seen.add(key)
    return False


def source_set_point(rows: Sequence[Mapping[str, Any]], confidence: float) -> dict[str, Any]:
    """One point from the rows of one source set in one condition (module docstring)."""
    runs, duplicates = distinct_runs(rows)
    orders = list(dict.fromkeys(row["source_tasks"] for row in rows))
    return {"sources": sorted(rows[0]["sources"]), "orders": orders, "lines": [row["line"] for row in rows],
            "duplicate_lines": duplicates, "n_runs": len(runs), "runs_share_seeds": _shared_seeds(runs),
            **pooled_summary(runs, confidence),
            **{name: rows[0][name] for name in ALL_SET_STATISTICS}}


def chain_orders(rows: Sequence[Mapping[str, Any]], confidence: float) -> list[dict]:
    """For each source_tasks order of one set: its lines and pooled score (the order analysis)."""
    by_order: dict[str, list] = {}
    for row in rows:
        by_order.setdefault(row["source_tasks"], []).append(row)
    return [{"source_tasks": order, "lines": [row["line"] for row in group],
             **pooled_summary(distinct_runs(group)[0], confidence)} for order, group in by_order.items()]


def _condition_key(condition: Mapping[str, str]) -> tuple:
    return tuple(condition[key] for key in CONDITION_KEYS)


def baselines(joined: Sequence[Mapping[str, Any]], confidence: float) -> list[dict]:
    """The plain model's score per (target, metric, base model, max train samples, selection)."""
    groups: dict[tuple, list] = {}
    for row in joined:
        if row["condition"]["algorithm"] == "none":
            groups.setdefault(_condition_key(row["condition"])[:len(BASELINE_KEYS)], []).append(row)
    result = []
    for key, rows in groups.items():
        runs, duplicates = distinct_runs(rows)
        result.append({"condition": dict(zip(BASELINE_KEYS, key)), "lines": [row["line"] for row in rows],
                       "duplicate_lines": duplicates, **pooled_summary(runs, confidence)})
    return result


def transfer_analysis(joined: Sequence[Mapping[str, Any]], confidence: float = 0.95, seed: int = 0) -> dict:
    """Per condition (in table order): one point per source set (sorted), the plain model, chain
    orders and correlations {statistic: correlate(...)}; plus the rules and all baselines."""
    groups: dict[tuple, list] = {}
    for row in joined:
        if row["condition"]["algorithm"] != "none":
            groups.setdefault(_condition_key(row["condition"]), []).append(row)
    references = baselines(joined, confidence)
    conditions = []
    for key, rows in groups.items():
        by_set: dict[frozenset, list] = {}
        for row in rows:
            by_set.setdefault(frozenset(row["sources"]), []).append(row)
        points = sorted((source_set_point(group, confidence) for group in by_set.values()),
                        key=lambda point: point["sources"])
        reference = next((b for b in references if tuple(b["condition"].values()) == key[:len(BASELINE_KEYS)]), None)
        scores = [point["mean"] for point in points]
        conditions.append({
            "condition": dict(zip(CONDITION_KEYS, key)), "n_rows": len(rows), "points": points,
            "baseline": reference,
            "chain_orders": [{"sources": sorted(group[0]["sources"]), "orders": chain_orders(group, confidence)}
                             for group in by_set.values() if len({row["source_tasks"] for row in group}) > 1],
            "correlations": {name: correlate([point[name] for point in points], scores, seed)
                             for name in ALL_SET_STATISTICS}})
    return {"rules": RULES, "conditions": conditions, "baselines": references}


RULES = ("one point per distinct source set within a condition (target, metric, base model, max train samples, "
         "selection, objectives, algorithm); rows of a set pooled over their seeds, repeated rows counted once, chain orders "
         "pooled (listed under chain_orders); n = distinct source sets; p = exact permutation p-value")

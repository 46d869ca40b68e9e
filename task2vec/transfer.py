"""Measured transfer: the results table of the target script, joined with the diversity of each
row's source tasks, and the correlations between the two (TaskDiversity.py --results_table).

`source_tasks` cells name the chain steps separated by ";" and the tasks of a Reptile step joined by
"+" (e.g. "squad;squad_v2;duorc-p", "squad+squad_v2+duorc-s"); a row's sources are that set.
Every row that cannot be joined is listed with its reason, never dropped silently.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from task2vec.diversity import SET_STATISTICS, set_statistics
from utils.errors import DataError, UnknownTaskError
from utils.tasks import get_task

CHAIN_SEPARATOR = ";"    # steps of a source chain, as utils.target_task.chain_description writes them
REPTILE_SEPARATOR = "+"  # tasks of one Reptile step, as maml_qa.py records them


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

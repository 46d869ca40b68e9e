"""A classification or regression task of the user's own, described by a small JSON file instead of
a registry entry: the target script (--dataset_name) and `python -m utils.data` (--task) take the
path of such a file wherever they take a task name (python -m task2vec and TaskDiversity.py take
registered tasks only, for now).

    {"name": "reviews",                      a new name (not a registered task or alias)
     "labels": ["negative", "neutral", "positive"],    class names, label index = position;
                                                       or "score_range": [0, 1] for a regression
     "text_column": "review",                the column (CSV/TSV header, JSON-lines key) of the text
     "text_pair_column": "reply",            optional: a sentence-pair task
     "label_column": "stars",                the label: an index, a class name, or a score
     "metrics": ["accuracy", "matthews_correlation"]}  optional, the primary one first

The default metrics are accuracy for classes and Pearson then Spearman for a score. A task from a
file has no Hub dataset: its data come from --train_file / --validation_file, read as the GLUE
tables are (utils.data.classification_adapters).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from types import MappingProxyType

from utils.run.errors import UnknownTaskError

# utils.classification.metrics.METRIC_FUNCTIONS, by name (this module stays free of numpy).
KNOWN_METRICS = ("accuracy", "f1", "matthews_correlation", "pearson", "spearmanr")
CLASS_METRICS = ("accuracy", "f1", "matthews_correlation")
SCORE_METRICS = ("pearson", "spearmanr")
FIELDS = ("name", "labels", "score_range", "text_column", "text_pair_column", "label_column", "metrics")
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def is_task_file(name: str) -> bool:
    """Whether a task argument names a task file (it ends in .json) rather than a registered task."""
    return name.strip().lower().endswith(".json")


def _fail(path: Path, message: str) -> UnknownTaskError:
    return UnknownTaskError(f"task file {path}: {message}")


def _string(entry: dict, key: str, path: Path, required: bool = True) -> str | None:
    value = entry.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, f'"{key}" must be a non-empty string')
    return value


def _metrics(entry: dict, path: Path, regression: bool, classes: int) -> tuple[str, ...]:
    """The task's metrics, primary first, checked against its kind."""
    allowed = SCORE_METRICS if regression else CLASS_METRICS
    metrics = entry.get("metrics", list(allowed[:2] if regression else ("accuracy",)))
    if not isinstance(metrics, list) or not metrics or len(set(map(str, metrics))) != len(metrics):
        raise _fail(path, f'"metrics" must be a non-empty list of distinct names from {list(allowed)}')
    for metric in metrics:
        if metric not in allowed:
            kind = "a regression (score) task" if regression else "a class task"
            raise _fail(path, f'metric {metric!r} is not one for {kind}; choose from {list(allowed)}')
    if "f1" in metrics and classes != 2:
        raise _fail(path, f'"f1" is the F1 of class 1 of a two-class task; this task has {classes} classes')
    return tuple(metrics)


def task_from_file(path_text: str):
    """The TaskSpec a task file describes (module docstring).

    Raises:
        UnknownTaskError: no such file, not JSON, an unknown or missing field, a name already
            registered, or metrics that do not fit the task; the message names the file and field.
    """
    from utils.data.registry import TableLayout, TaskSpec, registered_spec

    path = Path(path_text.strip()).expanduser()
    if not path.is_file():
        raise UnknownTaskError(f"task file {path} not found (a task argument ending in .json names a task file; "
                               "see docs/data.md, 'Your own task')")
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _fail(path, f"not valid JSON ({err})") from None
    if not isinstance(entry, dict):
        raise _fail(path, "must hold one JSON object")
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise _fail(path, f"unknown field(s) {unknown}; the fields are {list(FIELDS)}")
    name = _string(entry, "name", path).strip().lower()
    if not _NAME.fullmatch(name):
        raise _fail(path, f'"name" {name!r} must be lower-case letters, digits, ".", "_" or "-"')
    if registered_spec(name) is not None:
        raise _fail(path, f'"name" {name!r} is a registered task; give your task a name of its own')
    labels, score_range = entry.get("labels"), entry.get("score_range")
    if (labels is None) == (score_range is None):
        raise _fail(path, 'give exactly one of "labels" (class names) and "score_range" ([low, high])')
    if labels is not None and (not isinstance(labels, list) or len(labels) < 2
                               or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels)):
        raise _fail(path, '"labels" must list at least two distinct class names')
    if score_range is not None and (not isinstance(score_range, list) or len(score_range) != 2
                                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                               for x in score_range) or not score_range[0] < score_range[1]):
        raise _fail(path, '"score_range" must be [low, high] with low < high')
    text, label = _string(entry, "text_column", path), _string(entry, "label_column", path)
    pair = _string(entry, "text_pair_column", path, required=False)
    metrics = _metrics(entry, path, score_range is not None, len(labels or ()))
    texts = (text,) if pair is None else (text, pair)
    return TaskSpec(name, (), "classification", False, "", None, MappingProxyType({"train": "train",
                    "validation": "validation"}), "glue", metrics[0],
                    label_names=tuple(labels) if labels else None,
                    notes=f"Described by the task file {path}; its data come from local files only.",
                    text_pair_required=pair is not None,
                    regression_range=(float(score_range[0]), float(score_range[1])) if score_range else None,
                    table=TableLayout(texts, label, texts), metrics=metrics)

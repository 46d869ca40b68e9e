"""A target's evaluation on its own metrics: what one seed's run reports, and the score that
chooses its epoch.

The model's outputs are (N, C) logits for a class task, whose prediction is the argmax, or (N, 1)
scores for a regression task (STS-B), whose prediction is the score itself, unclipped, as GLUE
scores it. Every metric of the task (`utils.classification.metrics.GLUE_METRICS`, primary first)
is reported as `eval_<metric>`; an undefined one (a Pearson correlation of constant predictions)
is null with `eval_<metric>_reason`. A class task also reports accuracy, macro-F1 and the per-class
report; the loss is the objective's: cross-entropy, or mean squared error for a regression.

The epoch is selected on the primary metric of the hold-out, an undefined value counting below
every defined one.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from utils.classification.metrics import COMPANION_VALIDATION, GLUE_METRICS, METRIC_FUNCTIONS, MetricValue
from utils.classification.objective import classification_report, softmax_cross_entropy
from utils.data.registry import TaskSpec


def metric_names(spec: TaskSpec) -> tuple[str, ...]:
    """The task's metrics, its primary one first: a task file's own, else a GLUE task's GLUE_METRICS."""
    return spec.metrics or GLUE_METRICS.get(spec.name, (spec.metric,))


def primary_metric(spec: TaskSpec) -> str:
    """The metric a target is reported and selected on (CoLA matthews_correlation, STS-B pearson, ...)."""
    return metric_names(spec)[0]


def predictions_of(outputs: np.ndarray, regression: bool) -> np.ndarray:
    """(N,) predictions of (N, C) outputs: the score of a regression head, else the argmax class."""
    return outputs[:, 0] if regression else outputs.argmax(axis=1)


def task_scores(spec: TaskSpec, labels: Sequence, predictions: Sequence) -> dict[str, MetricValue]:
    """Every metric of the task on these predictions, primary first."""
    return {name: METRIC_FUNCTIONS[name](labels, predictions) for name in metric_names(spec)}


def selection_score(spec: TaskSpec, labels: Sequence, outputs: np.ndarray) -> float:
    """The primary metric of `outputs` (the hold-out's), −inf where it is undefined, so that an
    epoch with a defined score is always preferred."""
    value = METRIC_FUNCTIONS[primary_metric(spec)](labels, predictions_of(outputs, spec.is_regression)).value
    return value if math.isfinite(value) else -math.inf


def evaluation_results(spec: TaskSpec, labels: np.ndarray, outputs: np.ndarray) -> dict[str, float | str | None]:
    """The flat `eval_*` results of one run on the validation set (module docstring).

    Args:
        labels: (N,) class indices, or float scores for a regression task.
        outputs: (N, C) logits, or (N, 1) scores.
    """
    predictions = predictions_of(outputs, spec.is_regression)
    results: dict[str, float | str | None] = {}
    for name, metric in task_scores(spec, labels, predictions).items():
        results[f"eval_{name}"] = metric.value if math.isfinite(metric.value) else None
        if metric.reason:
            results[f"eval_{name}_reason"] = metric.reason
    if spec.is_regression:
        results["eval_loss"] = float(np.mean(np.square(predictions.astype(np.float64) - labels.astype(np.float64))))
    else:
        results.update({f"eval_{key}": value for key, value in
                        classification_report(labels, predictions, spec.label_names).items()})
        results["eval_loss"] = softmax_cross_entropy(outputs, labels)
    return results


def companion_metrics(spec: TaskSpec) -> tuple[str, ...]:
    """The task's metrics on its companion dev set (COMPANION_VALIDATION), e.g. MNLI's
    accuracy_mismatched; () for a task without one."""
    if spec.name not in COMPANION_VALIDATION:
        return ()
    suffix = COMPANION_VALIDATION[spec.name][0]
    return tuple(f"{name}_{suffix}" for name in metric_names(spec))


def reported_metrics(spec: TaskSpec) -> tuple[str, ...]:
    """The metrics summary.json summarises over seeds: the task's, then accuracy and macro-F1 for a
    class task (the columns every earlier summary had), then for a task with a companion dev set
    its metrics named by set (MNLI: accuracy_matched, the same number as accuracy, and
    accuracy_mismatched)."""
    extra = () if spec.is_regression else ("accuracy", "macro_f1")
    named = tuple(f"{name}_matched" for name in metric_names(spec)) if spec.name in COMPANION_VALIDATION else ()
    return tuple(dict.fromkeys(metric_names(spec) + extra + named + companion_metrics(spec)))

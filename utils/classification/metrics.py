"""The GLUE metrics, as the benchmark's own evaluation computes them (scikit-learn and scipy there).

    accuracy              mean(prediction == label)
    f1                    binary F1 of the positive class (label 1): 2 TP / (2 TP + FP + FN); 0 when
                          there is no positive label and no positive prediction (scikit-learn's
                          zero_division default, with its warning)
    matthews_correlation  (c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2)), with
                          c correct predictions, s examples, p_k / t_k how often class k is predicted /
                          true; 0 when a factor under the root is 0 (one predicted or one true class),
                          as scikit-learn's matthews_corrcoef returns
    pearson               Pearson's r of scores and labels
    spearmanr             Pearson's r of their ranks (ties get their average rank)

Pearson and Spearman are undefined when the scores or the labels are constant, or with fewer than
two examples: they are NaN with a reason (`MetricValue.reason`), which the outputs write as null
and `<key>_reason` (utils.run.outputs), instead of scipy's warning and NaN.

Which metrics a GLUE task reports, and which one is primary (the first): `GLUE_METRICS`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# task -> its metrics, the primary one first (GLUE: CoLA Matthews correlation; MRPC and QQP F1 and
# accuracy; STS-B Pearson and Spearman; the others accuracy). mnli-mm is MNLI on its mismatched dev set.
GLUE_METRICS: Mapping[str, tuple[str, ...]] = {
    "cola": ("matthews_correlation",),
    "sst2": ("accuracy",),
    "mrpc": ("f1", "accuracy"),
    "stsb": ("pearson", "spearmanr"),
    "qqp": ("f1", "accuracy"),
    "mnli": ("accuracy",),
    "mnli-mm": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
}

# A task whose model GLUE also scores on a second dev set: task -> (the suffix of those metrics, the
# registered task whose validation split that set is). MNLI is reported matched (its own validation
# split, the primary metric) and mismatched, both from one trained model.
COMPANION_VALIDATION: Mapping[str, tuple[str, str]] = {"mnli": ("mismatched", "mnli-mm")}


@dataclass(frozen=True)
class MetricValue:
    """A metric's value, or NaN with the reason it is undefined."""

    value: float
    reason: str | None = None


def accuracy(labels: Sequence[int], predictions: Sequence[int]) -> MetricValue:
    """Share of predictions equal to their label."""
    y, p = _pair(labels, predictions)
    return MetricValue(float(np.mean(y == p)))


def binary_f1(labels: Sequence[int], predictions: Sequence[int], positive: int = 1) -> MetricValue:
    """F1 of the `positive` class: 2 TP / (2 TP + FP + FN), 0 when that is 0 / 0."""
    y, p = _pair(labels, predictions)
    tp = int(np.sum((p == positive) & (y == positive)))
    fp = int(np.sum((p == positive) & (y != positive)))
    fn = int(np.sum((p != positive) & (y == positive)))
    denominator = 2 * tp + fp + fn
    return MetricValue(2 * tp / denominator if denominator else 0.0)


def matthews_correlation(labels: Sequence[int], predictions: Sequence[int]) -> MetricValue:
    """Matthews' correlation for any number of classes (module docstring); 0 when undefined."""
    y, p = _pair(labels, predictions)
    classes = np.union1d(y, p)
    true_counts = np.array([np.sum(y == k) for k in classes], dtype=np.float64)       # t_k
    predicted_counts = np.array([np.sum(p == k) for k in classes], dtype=np.float64)  # p_k
    correct, total = float(np.sum(y == p)), float(y.size)
    numerator = correct * total - float(predicted_counts @ true_counts)
    under_root = (total ** 2 - float(predicted_counts @ predicted_counts)) * (total ** 2 - float(true_counts @ true_counts))
    return MetricValue(numerator / math.sqrt(under_root) if under_root > 0 else 0.0)


def pearson(labels: Sequence[float], scores: Sequence[float]) -> MetricValue:
    """Pearson's r of scores and labels; NaN with a reason when either is constant or n < 2."""
    y, s = _pair(labels, scores, dtype=np.float64)
    if y.size < 2:
        return MetricValue(math.nan, f"undefined for {y.size} example(s)")
    for values, what in ((s, "predictions"), (y, "labels")):
        if np.all(values == values[0]):
            return MetricValue(math.nan, f"the {what} are constant ({float(values[0]):g}): a correlation is undefined")
    dy, ds = y - y.mean(), s - s.mean()
    value = float(dy @ ds / math.sqrt(float(dy @ dy) * float(ds @ ds)))
    return MetricValue(max(-1.0, min(1.0, value)))


def spearman(labels: Sequence[float], scores: Sequence[float]) -> MetricValue:
    """Spearman's rho: Pearson's r of the average ranks; NaN with a reason as `pearson`."""
    y, s = _pair(labels, scores, dtype=np.float64)
    if y.size < 2:
        return MetricValue(math.nan, f"undefined for {y.size} example(s)")
    return pearson(average_ranks(y), average_ranks(s))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size, dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < values.size:
        end = start
        while end + 1 < values.size and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


METRIC_FUNCTIONS = {"accuracy": accuracy, "f1": binary_f1, "matthews_correlation": matthews_correlation,
                    "pearson": pearson, "spearmanr": spearman}

# The range of each metric summarised over seeds (the interval of its mean stays within it).
METRIC_RANGES: Mapping[str, tuple[float, float]] = {
    "accuracy": (0.0, 1.0), "f1": (0.0, 1.0), "macro_f1": (0.0, 1.0),
    "matthews_correlation": (-1.0, 1.0), "pearson": (-1.0, 1.0), "spearmanr": (-1.0, 1.0)}


def metric_range(name: str) -> tuple[float, float] | None:
    """The range of a metric, its dev-set suffix ignored (accuracy_mismatched is an accuracy); None
    for an unbounded one."""
    for suffix in ("_matched", "_mismatched"):
        name = name.removesuffix(suffix)
    return METRIC_RANGES.get(name)


def task_metrics(task: str, labels: Sequence, predictions: Sequence) -> dict[str, MetricValue]:
    """Every metric of a GLUE task, the primary one first (`GLUE_METRICS`).

    Raises:
        KeyError: not a GLUE task.
    """
    return {name: METRIC_FUNCTIONS[name](labels, predictions) for name in GLUE_METRICS[task]}


def _pair(labels: Sequence, predictions: Sequence, dtype: type = np.int64) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(labels, dtype=dtype), np.asarray(predictions, dtype=dtype)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} must be two vectors of one length")
    if y.size == 0:
        raise ValueError("no examples to score")
    return y, p

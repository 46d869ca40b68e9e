"""The metrics runs are scored with, as GLUE's evaluation computes them, their ranges, and a metric's
statistics over seeds (`summarize`).

    accuracy              mean(prediction == label)
    f1                    binary F1 of the positive class (label 1): 2 TP / (2 TP + FP + FN); 0 when
                          there is no positive label and no positive prediction
    matthews_correlation  (c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2)), with
                          c correct predictions, s examples, p_k / t_k how often class k is predicted /
                          true; 0 when a factor under the root is 0 (one predicted or one true class)
    pearson               Pearson's r of scores and labels
    spearmanr             Pearson's r of their ranks (ties get their average rank)

Pearson and Spearman are undefined for constant scores or labels, or under two examples: NaN with
a reason (`MetricValue.reason`), written as null and `<key>_reason`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score


@dataclass(frozen=True)
class MetricValue:
    """A metric's value, or NaN with the reason it is undefined."""

    value: float
    reason: str | None = None


def accuracy(labels: Sequence[int], predictions: Sequence[int]) -> MetricValue:
    """Share of predictions equal to their label."""
    return MetricValue(float(accuracy_score(*_pair(labels, predictions))))


def binary_f1(labels: Sequence[int], predictions: Sequence[int]) -> MetricValue:
    """F1 of class 1: 2 TP / (2 TP + FP + FN), 0 when that is 0 / 0."""
    y, p = _pair(labels, predictions)
    return MetricValue(float(f1_from_counts(confusion_counts(y == 1, p == 1, 2))))


def matthews_correlation(labels: Sequence[int], predictions: Sequence[int]) -> MetricValue:
    """Matthews' correlation for any number of classes (module docstring); 0 when undefined."""
    y, p = _pair(labels, predictions)
    classes, codes = np.unique(np.concatenate([y, p]), return_inverse=True)
    return MetricValue(float(matthews_from_counts(confusion_counts(codes[:y.size], codes[y.size:], classes.size))))


def confusion_counts(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """(..., K, K) counts, [t, p] = examples of class t predicted p, of (N,) labels (classes 0..K-1)
    and (..., N) predictions: one np.bincount for all rows (the bootstrap scores every seed at once)."""
    predictions = np.asarray(predictions, dtype=np.int64)
    rows = np.arange(predictions[..., 0].size).reshape(predictions.shape[:-1] + (1,))
    cells = (rows * n_classes + np.asarray(labels, dtype=np.int64)) * n_classes + predictions
    return np.bincount(cells.ravel(), minlength=rows.size * n_classes ** 2).reshape(
        predictions.shape[:-1] + (n_classes, n_classes))


def f1_from_counts(counts: np.ndarray) -> np.ndarray:
    """F1 of class 1 of (..., K, K) confusion counts: 2 TP / (true + predicted 1s), 0 for 0 / 0
    (scikit-learn's f1_score with zero_division=0, to the last bit)."""
    denominator = counts[..., 1, :].sum(-1) + counts[..., :, 1].sum(-1)
    return np.where(denominator > 0, 2 * counts[..., 1, 1] / np.maximum(denominator, 1), 0.0)


def matthews_from_counts(counts: np.ndarray) -> np.ndarray:
    """Matthews' correlation of (..., K, K) confusion counts, computed as scikit-learn's
    matthews_corrcoef does (the sums are exact integers in float64): 0 when undefined."""
    true, predicted = counts.sum(-1, dtype=np.float64), counts.sum(-2, dtype=np.float64)
    n = predicted.sum(-1)
    covariance = np.trace(counts, axis1=-2, axis2=-1).astype(np.float64) * n - (true * predicted).sum(-1)
    variances = (n ** 2 - (predicted * predicted).sum(-1)) * (n ** 2 - (true * true).sum(-1))
    return np.where(variances == 0, 0.0, covariance / np.sqrt(np.where(variances == 0, 1.0, variances)))


def pearson(labels: Sequence[float], scores: Sequence[float]) -> MetricValue:
    """Pearson's r of scores and labels; NaN with a reason when either is constant or n < 2."""
    y, s = _pair(labels, scores, dtype=np.float64)
    return _undefined_correlation(y, s) or MetricValue(float(stats.pearsonr(y, s).statistic))


def spearman(labels: Sequence[float], scores: Sequence[float]) -> MetricValue:
    """Spearman's rho: Pearson's r of the average ranks; NaN with a reason as `pearson`."""
    y, s = _pair(labels, scores, dtype=np.float64)
    return _undefined_correlation(y, s) or MetricValue(float(stats.spearmanr(y, s).statistic))


def _undefined_correlation(y: np.ndarray, s: np.ndarray) -> MetricValue | None:
    if y.size < 2:
        return MetricValue(math.nan, f"undefined for {y.size} example(s)")
    for values, what in ((s, "predictions"), (y, "labels")):
        if np.all(values == values[0]):
            return MetricValue(math.nan, f"the {what} are constant ({float(values[0]):g}): a correlation is undefined")
    return None


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


def _pair(labels: Sequence, predictions: Sequence, dtype: type = np.int64) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(labels, dtype=dtype), np.asarray(predictions, dtype=dtype)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} must be two vectors of one length")
    if y.size == 0:
        raise ValueError("no examples to score")
    return y, p


def summarize(values: Sequence[float], confidence: float = 0.95,
              bounds: tuple[float, float] | None = None) -> dict[str, float]:
    """n, mean, std (ddof 1), the Student-t interval of the mean, CI = mean ± t_{(1+c)/2, n−1} · std / √n,
    min and max. With one value, std and the CI are NaN (never 0, a claim of no spread). `bounds` (a
    metric's range) cut the interval: with few seeds an accuracy's t-interval can pass 0 or 1."""
    array = np.asarray(values, dtype=np.float64)
    n = len(array)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = float(array.mean())
    std = float(array.std(ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * std / math.sqrt(n)) if n > 1 else math.nan
    low, high = bounded_interval(mean, half, bounds)
    return {"n": n, "mean": mean, "std": std, "ci_low": low, "ci_high": high,
            "confidence": confidence, "min": float(array.min()), "max": float(array.max())}


def bounded_interval(mean: float, half: float, bounds: tuple[float, float] | None) -> tuple[float, float]:
    """(mean − half, mean + half) intersected with `bounds` (a metric's range; None: unbounded);
    NaN bounds stay NaN (no spread estimate)."""
    low, high = mean - half, mean + half
    if bounds is None or not math.isfinite(half):
        return low, high
    return max(low, bounds[0]), min(high, bounds[1])


ONE_RUN_REASON = "one run: no spread estimate"


def json_ready(summary: dict[str, float]) -> dict[str, float | str | None]:
    """A `summarize` result for JSON, which has no NaN: an undefined value becomes null, and
    `<key>_reason` beside it says why (e.g. "std": null, "std_reason": "one run: no spread estimate")."""
    ready: dict[str, float | str | None] = {}
    for key, value in summary.items():
        if isinstance(value, float) and not math.isfinite(value):
            ready[key] = None
            ready[f"{key}_reason"] = ONE_RUN_REASON if summary.get("n", 0) < 2 else "not a finite number"
        else:
            ready[key] = value
    return ready

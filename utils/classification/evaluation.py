"""A target's evaluation on its own metrics, and the epoch chosen on a hold-out.

Outputs are (N, C) logits of a class task (prediction: the argmax) or (N, 1) scores of a regression
(STS-B; prediction: the score, unclipped, as GLUE scores it). Every metric of the task (`GLUE_METRICS`,
primary first) is reported as `eval_<metric>`, an undefined one as null with `eval_<metric>_reason`;
a class task adds accuracy, macro-F1 and scikit-learn's per-class report. The loss is the
objective's: cross-entropy, or mean squared error.

The epoch is chosen on the primary metric of a hold-out taken from the training data, never on the
validation set that is reported; an undefined value counts below every defined one.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from scipy.special import log_softmax
from sklearn.metrics import precision_recall_fscore_support

from utils.data.loading import proportional_quotas, strata
from utils.data.registry import TaskSpec
from utils.results.metrics import METRIC_FUNCTIONS, MetricValue

# task -> its metrics, the primary one first (GLUE: CoLA Matthews correlation; MRPC and QQP F1 and
# accuracy; STS-B Pearson and Spearman; the others accuracy). mnli-mm is MNLI on its mismatched dev set.
GLUE_METRICS: Mapping[str, tuple[str, ...]] = {
    "cola": ("matthews_correlation",), "sst2": ("accuracy",), "mrpc": ("f1", "accuracy"),
    "stsb": ("pearson", "spearmanr"), "qqp": ("f1", "accuracy"), "mnli": ("accuracy",), "mnli-mm": ("accuracy",),
    "qnli": ("accuracy",), "rte": ("accuracy",), "wnli": ("accuracy",)}

# A task whose model GLUE also scores on a second dev set: task -> (the suffix of those metrics, the
# registered task whose validation split that set is). MNLI is reported matched (its own validation
# split, the primary metric) and mismatched, both from one trained model.
COMPANION_VALIDATION: Mapping[str, tuple[str, str]] = {"mnli": ("mismatched", "mnli-mm")}


def metric_names(spec: TaskSpec) -> tuple[str, ...]:
    """The task's metrics, its primary one first: a task file's own, else a GLUE task's GLUE_METRICS."""
    return spec.metrics or GLUE_METRICS.get(spec.name, (spec.metric,))


def primary_metric(spec: TaskSpec) -> str:
    """The metric a target is reported and selected on (CoLA matthews_correlation, STS-B pearson, ...)."""
    return metric_names(spec)[0]


def companion_metrics(spec: TaskSpec) -> tuple[str, ...]:
    """The task's metrics on its companion dev set, e.g. MNLI's accuracy_mismatched; () if none."""
    if spec.name not in COMPANION_VALIDATION:
        return ()
    return tuple(f"{name}_{COMPANION_VALIDATION[spec.name][0]}" for name in metric_names(spec))


def reported_metrics(spec: TaskSpec) -> tuple[str, ...]:
    """The metrics summary.json summarises over seeds: the task's, accuracy and macro-F1 of a class
    task, and with a companion dev set its metrics named by set (MNLI: accuracy_matched, the same
    number as accuracy, and accuracy_mismatched)."""
    extra = () if spec.is_regression else ("accuracy", "macro_f1")
    named = tuple(f"{name}_matched" for name in metric_names(spec)) if spec.name in COMPANION_VALIDATION else ()
    return tuple(dict.fromkeys(metric_names(spec) + extra + named + companion_metrics(spec)))


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


def classification_report(labels: Sequence[int], predictions: Sequence[int], label_names: Sequence[str]
                          ) -> dict[str, float]:
    """Accuracy, flat per-class `precision_<name>` / recall / F1 / support, their macro means and the
    support-weighted F1, as scikit-learn's `classification_report` with zero_division=0."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=list(range(len(label_names))), zero_division=0)
    report: dict[str, float] = {"accuracy": float(np.mean(labels == predictions))}
    for index, name in enumerate(label_names):
        report.update({f"precision_{name}": float(precision[index]), f"recall_{name}": float(recall[index]),
                       f"f1_{name}": float(f1[index]), f"support_{name}": int(support[index])})
    weights = support / max(1, int(support.sum()))
    report.update({"macro_precision": float(np.mean(precision)), "macro_recall": float(np.mean(recall)),
                   "macro_f1": float(np.mean(f1)), "weighted_f1": float(np.dot(weights, f1))})
    return report


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean of −log softmax(logits)[label] over (N, C) logits and integer labels."""
    return float(-log_softmax(logits, axis=1)[np.arange(len(labels)), labels].mean())


def evaluation_results(spec: TaskSpec, labels: np.ndarray, outputs: np.ndarray) -> dict[str, float | str | None]:
    """The flat `eval_*` results of (N,) labels and (N, C) logits or (N, 1) scores (module docstring)."""
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


def prediction_rows(spec: TaskSpec, records: list[dict], labels: np.ndarray, outputs: np.ndarray) -> Iterator[dict]:
    """predictions.jsonl rows: id, label, prediction and the logits (a class task) or the score."""
    for record, label, prediction, row in zip(records, labels, predictions_of(outputs, spec.is_regression), outputs):
        if spec.is_regression:
            yield {"id": record["id"], "label": float(label), "prediction": float(prediction)}
        else:
            yield {"id": record["id"], "label": int(label), "prediction": int(prediction),
                   "logits": [float(x) for x in row]}


def split_holdout(records: list[dict], size: int, seed: int) -> tuple[list[dict], list[dict], int]:
    """(training, hold-out, number of strata the hold-out holds), stratified by label.

    The strata are the classes (for a regression target, five quantile bins of the scores;
    utils.data.loading.strata). The hold-out takes max(E, ⌊N/10⌋) records, at most `size`, where E
    is the number of strata with two records or more: first one record of each such stratum (so a
    one-class hold-out happens only when the data or `size` allow no other), then the rest shared
    in proportion to the strata's remaining sizes (utils.data.loading.proportional_quotas), never
    taking a stratum's last record, so training keeps every class. Drawn with `seed`; records keep
    their order.
    """
    if not records:
        return [], [], 0
    _, members, _ = strata(records)
    sizes = np.array([len(m) for m in members])
    eligible = sizes >= 2
    count = min(size, max(int(eligible.sum()), len(records) // 10), int((sizes - 1).sum()))
    rng = np.random.default_rng(seed)
    quotas = np.zeros(len(members), dtype=np.int64)
    if count >= eligible.sum():
        quotas += eligible
    spare = sizes - 1 - quotas                      # what each stratum can still give, keeping one
    remaining, open_strata = count - int(quotas.sum()), np.flatnonzero(spare > 0)
    if remaining > 0:
        quotas[open_strata] += proportional_quotas(spare[open_strata], remaining, rng)
    chosen = {i for indices, quota in zip(members, quotas) if quota
              for i in rng.choice(indices, size=int(quota), replace=False).tolist()}
    return ([r for i, r in enumerate(records) if i not in chosen], [r for i, r in enumerate(records) if i in chosen],
            int(np.count_nonzero(quotas)))


def holdout_problem(spec: TaskSpec, labels: Sequence[float]) -> str | None:
    """Why a hold-out cannot tell epochs apart whatever the model does, or None: empty, one class
    (accuracy rewards predicting it; MCC and F1 are constant), or for a regression fewer than three
    examples or one score."""
    if len(labels) == 0:
        return "the training data is too small to hold any example out"
    if spec.is_regression and len(labels) < 3:
        return f"a hold-out of {len(labels)} examples is too small (a Pearson correlation of two points is ±1)"
    if len(set(labels)) < 2:
        what = "score" if spec.is_regression else "class"
        return f"every one of the {len(labels)} hold-out examples has the same {what}"
    return None


def choose_epoch(curve: Sequence[float], problem: str | None) -> tuple[int | None, str | None]:
    """(the best epoch on the hold-out, 1-based, the earliest of tied ones; or None and why the last
    epoch is taken instead: `problem` said so before training, or the score never changed)."""
    if problem is not None:
        return None, problem
    if len(curve) > 1 and len(set(curve)) == 1:
        value = "undefined" if not math.isfinite(curve[0]) else f"{curve[0]:.4g}"
        return None, f"the hold-out metric is {value} at every epoch"
    return int(np.argmax(curve)) + 1, None

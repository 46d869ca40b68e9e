"""The GLUE metrics against independent computations: scipy.stats, loops over examples, covariances of
one-hot codes, and scikit-learn's documented values."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from utils.classification.evaluation import GLUE_METRICS, task_scores
from utils.data.registry import get_task
from utils.results.metrics import accuracy, binary_f1, matthews_correlation, pearson, spearman

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_and_f1_equal_loops_over_the_examples(seed):
    rng = np.random.default_rng(seed)
    labels, predictions = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    assert accuracy(labels, predictions).value == sum(int(a == b) for a, b in zip(labels, predictions)) / 200
    tp = sum(1 for a, b in zip(labels, predictions) if a == b == 1)
    precision = tp / sum(1 for b in predictions if b == 1)
    recall = tp / sum(1 for a in labels if a == 1)
    assert binary_f1(labels, predictions).value == pytest.approx(2 * precision * recall / (precision + recall), abs=1e-12)


def test_f1_without_any_positive_is_zero_as_scikit_learn_gives():
    assert binary_f1([0, 0, 0], [0, 0, 0]).value == 0.0
    assert binary_f1([1, 0], [0, 0]).value == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_binary_matthews_correlation_is_the_phi_coefficient(seed):
    """For two classes MCC is Pearson's r of the 0/1 labels and predictions."""
    rng = np.random.default_rng(seed)
    labels, predictions = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    assert matthews_correlation(labels, predictions).value == pytest.approx(stats.pearsonr(labels, predictions)[0],
                                                                           abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_multiclass_matthews_correlation_equals_the_covariance_form(seed):
    """Gorodkin's R_K: cov(X, Y) / sqrt(cov(X, X) cov(Y, Y)) with X, Y the one-hot codes (N, K) and cov the
    sum over classes of the columns' covariances."""
    rng = np.random.default_rng(seed)
    labels, predictions = rng.integers(0, 3, 250), rng.integers(0, 3, 250)
    x, y = np.eye(3)[predictions], np.eye(3)[labels]

    def cov(a, b):
        return float(np.sum((a - a.mean(axis=0)) * (b - b.mean(axis=0))))

    expected = cov(x, y) / math.sqrt(cov(x, x) * cov(y, y))
    assert matthews_correlation(labels, predictions).value == pytest.approx(expected, abs=1e-12)


def test_matthews_correlation_known_value_and_one_predicted_class():
    # scikit-learn's documented example: matthews_corrcoef([+1, +1, +1, -1], [+1, -1, +1, +1]) = -0.33...
    assert matthews_correlation([1, 1, 1, 0], [1, 0, 1, 1]).value == pytest.approx(-1 / 3, abs=1e-12)
    # One predicted class: undefined, and 0 as scikit-learn (the GLUE evaluation) returns, not a crash.
    assert matthews_correlation([0, 1, 1, 0], [1, 1, 1, 1]).value == 0.0
    assert matthews_correlation([1, 1], [1, 1]).value == 0.0


def _average_ranks(values):
    """1-based ranks, tied values sharing the mean of their ranks, by a loop over pairs."""
    return np.array([1 + sum(w < v for w in values) + (sum(w == v for w in values) - 1) / 2 for v in values])


def _correlation(a, b):
    da, db = np.asarray(a, float) - np.mean(a), np.asarray(b, float) - np.mean(b)
    return float(da @ db / math.sqrt((da @ da) * (db @ db)))


@pytest.mark.parametrize("seed", range(5))
def test_pearson_and_spearman_equal_the_formulas(seed):
    rng = np.random.default_rng(seed)
    labels = rng.uniform(0, 5, 100)
    scores = labels + rng.normal(0, 2, 100)
    assert pearson(labels, scores).value == pytest.approx(_correlation(scores, labels), abs=1e-12)
    assert spearman(labels, scores).value == pytest.approx(
        _correlation(_average_ranks(scores), _average_ranks(labels)), abs=1e-12)
    # with ties (STS-B labels come in steps of 0.2)
    tied_labels, tied_scores = np.round(labels * 5) / 5, np.round(scores)
    assert spearman(tied_labels, tied_scores).value == pytest.approx(
        _correlation(_average_ranks(tied_scores), _average_ranks(tied_labels)), abs=1e-12)


def test_constant_predictions_give_nan_with_a_reason_not_a_crash():
    for function in (pearson, spearman):
        result = function([0.0, 1.5, 3.0], [2.0, 2.0, 2.0])
        assert math.isnan(result.value) and "predictions are constant" in result.reason
        result = function([1.0, 1.0, 1.0], [0.5, 2.0, 3.0])
        assert math.isnan(result.value) and "labels are constant" in result.reason
        result = function([1.0], [2.0])
        assert math.isnan(result.value) and "1 example" in result.reason


def test_every_glue_task_reports_its_primary_metric_first():
    assert set(GLUE_METRICS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "mnli-mm", "qnli", "rte", "wnli"}
    assert GLUE_METRICS["cola"][0] == "matthews_correlation" and GLUE_METRICS["stsb"] == ("pearson", "spearmanr")
    labels, predictions = RNG.integers(0, 2, 50), RNG.integers(0, 2, 50)
    for task in GLUE_METRICS:
        if task == "stsb":
            continue
        values = task_scores(get_task(task), labels, predictions)
        assert list(values) == list(GLUE_METRICS[task])
        assert all(-1.0 <= v.value <= 1.0 and v.reason is None for v in values.values())
    with pytest.raises(ValueError, match="one length"):
        accuracy([0, 1], [0])

"""Honest statistics over runs that differ only by seed, and the comparison of two such sets.

    python -m utils.seed_statistics A/summary.json B/summary.json [--bootstrap 10000]

prints the difference of B against A on the target's primary metric (or --metric): mean
difference, the difference paired by seed, a paired t-test and a Wilcoxon signed-rank test, and a
bootstrap confidence interval that resamples seeds and, within them, evaluation examples (both
systems on the same draws; the metric is recomputed on each draw, since F1, Matthews and Pearson
are not means over examples).
"""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from utils.run.cli import non_negative_int, seed_int
from utils.run.errors import JSON_TOO_DEEP, DataError
from utils.classification.metrics import METRIC_FUNCTIONS
from utils.data.records import read_jsonl


def summarize(values: Sequence[float], confidence: float = 0.95,
              bounds: tuple[float, float] | None = None) -> dict[str, float]:
    """n, mean, std (ddof 1), the Student-t confidence interval of the mean, min and max.

    CI = mean ± t_{(1+c)/2, n−1} · std / √n. With one value there is no estimate of the spread:
    std and the CI bounds are NaN (never 0, which would claim a run-to-run spread of nothing).
    With `bounds` (a metric's range, e.g. [0, 1] for accuracy) the interval is intersected with
    them: the true mean lies in the range, so the cut part holds no value it could take (with few
    seeds the t-interval of an accuracy can reach below 0 or above 1).
    """
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


def _p_value(value: float, reason: str, result: dict, key: str) -> None:
    """result[key] = the p-value, or null with `<key>_reason` when the test is undefined (NaN)."""
    if math.isfinite(value):
        result[key] = value
    else:
        result[key] = None
        result[f"{key}_reason"] = reason


def read_summary(path: str | Path) -> dict:
    """A summary.json written by run_target_task_GPT2_sst2_multiple.py.

    Raises:
        DataError: missing, malformed, or without per-run results.
    """
    path = Path(path)
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("file not found", file=str(path)) from None
    except json.JSONDecodeError as err:
        raise DataError(f"malformed JSON at line {err.lineno}, column {err.colno}", file=str(path)) from None
    except RecursionError:
        raise DataError(JSON_TOO_DEEP, file=str(path)) from None
    if not isinstance(summary, dict) or not summary.get("runs"):
        raise DataError("not a summary.json of the target script (no 'runs')", file=str(path))
    return summary


def _predictions(summary: dict, summary_path: Path, seed: int) -> dict[str, tuple[float, float]]:
    """example id -> (label, prediction) of one run, from its predictions.jsonl."""
    run = next(r for r in summary["runs"] if r["seed"] == seed)
    path = summary_path.parent / run["predictions"]
    rows = [row for _, row in read_jsonl(path)]  # a malformed or absurdly nested line is a DataError naming it
    return {str(row["id"]): (row["label"], row["prediction"]) for row in rows}


def bootstrap_difference(correct_a: np.ndarray, correct_b: np.ndarray, *, samples: int, seed: int,
                         confidence: float = 0.95) -> tuple[float, float]:
    """Percentile CI of mean accuracy(B) − accuracy(A), resampling seeds, then examples.

    correct_a, correct_b: (S, N) 0/1 matrices, row = seed (paired), column = example (same order).
    Each bootstrap draw picks S seeds with replacement and N examples with replacement, shared by
    both systems, and averages over the drawn cells.
    """
    rng = np.random.default_rng(seed)
    n_seeds, n_examples = correct_a.shape
    differences = correct_b.astype(np.float64) - correct_a.astype(np.float64)   # (S, N)
    draws = np.empty(samples)
    for b in range(samples):
        rows = rng.integers(n_seeds, size=n_seeds)
        columns = rng.integers(n_examples, size=n_examples)
        draws[b] = differences[rows][:, columns].mean()
    tail = (1 - confidence) / 2
    return float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))


def bootstrap_metric_difference(labels: np.ndarray, predictions_a: np.ndarray, predictions_b: np.ndarray,
                                metric: str, *, samples: int, seed: int,
                                confidence: float = 0.95) -> tuple[float, float, int]:
    """Percentile CI of mean_s metric(B_s) − metric(A_s), resampling seeds, then examples, and the
    number of draws where the metric was undefined (left out).

    labels: (N,); predictions_a, predictions_b: (S, N), row = seed (paired), column = example. Each
    draw picks S seeds and N examples with replacement, as `bootstrap_difference` does (with the
    same generator calls, so that for accuracy both give the same interval), and recomputes the
    metric of each drawn seed on the drawn examples.
    """
    function = METRIC_FUNCTIONS[metric]
    rng = np.random.default_rng(seed)
    n_seeds, n_examples = predictions_a.shape
    draws = np.empty(samples)
    for b in range(samples):
        rows = rng.integers(n_seeds, size=n_seeds)
        columns = rng.integers(n_examples, size=n_examples)
        drawn = labels[columns]
        draws[b] = np.mean([function(drawn, predictions_b[s, columns]).value
                            - function(drawn, predictions_a[s, columns]).value for s in rows])
    defined = draws[np.isfinite(draws)]
    if defined.size == 0:
        return math.nan, math.nan, samples
    tail = (1 - confidence) / 2
    return float(np.quantile(defined, tail)), float(np.quantile(defined, 1 - tail)), samples - int(defined.size)


def _run_values(summary: dict, metric: str, path: Path) -> dict[int, float]:
    """seed -> the run's `metric`.

    Raises:
        DataError: a run without it, or where it is undefined (null).
    """
    values = {}
    for run in summary["runs"]:
        if metric not in run:
            known = sorted(key for key in run if key.startswith("eval_"))
            raise DataError(f"run of seed {run.get('seed')} has no {metric}; its metrics are {known}", file=str(path))
        if run[metric] is None:
            raise DataError(f"{metric} is undefined for seed {run['seed']} (see its all_results.json): no comparison "
                            "on it", file=str(path))
        values[run["seed"]] = float(run[metric])
    return values


def _default_metric(a: dict, b: dict, path_b: Path) -> str:
    """eval_<primary metric> of the two summaries (accuracy for summaries that name none).

    Raises:
        DataError: the two are of different targets or metrics.
    """
    if a.get("target_task") != b.get("target_task"):
        raise DataError(f"the summaries are of different targets ({a.get('target_task')} and {b.get('target_task')})",
                        file=str(path_b))
    primary_a, primary_b = a.get("primary_metric", "accuracy"), b.get("primary_metric", "accuracy")
    if primary_a != primary_b:
        raise DataError(f"the summaries name different primary metrics ({primary_a} and {primary_b})", file=str(path_b))
    return f"eval_{primary_a}"


def compare(path_a: str | Path, path_b: str | Path, *, metric: str | None = None, bootstrap: int = 10000,
            seed: int = 0) -> dict:
    """B against A on `metric` (default: the summaries' primary metric): unpaired and paired
    differences, p-values, bootstrap CI (see module doc)."""
    path_a, path_b = Path(path_a), Path(path_b)
    a, b = read_summary(path_a), read_summary(path_b)
    metric = metric or _default_metric(a, b, path_b)
    values_a, values_b = _run_values(a, metric, path_a), _run_values(b, metric, path_b)
    common = sorted(set(values_a) & set(values_b))
    result: dict = {
        "metric": metric, "a": str(path_a), "b": str(path_b),
        "mean_a": float(np.mean(list(values_a.values()))), "mean_b": float(np.mean(list(values_b.values()))),
    }
    result["mean_difference"] = result["mean_b"] - result["mean_a"]
    if len(values_a) > 1 and len(values_b) > 1:
        welch = float(stats.ttest_ind(list(values_b.values()), list(values_a.values()), equal_var=False).pvalue)
        _p_value(welch, "every run of both summaries scored the same: no variance, no t statistic", result,
                 "welch_t_p_value")
    else:
        result["welch_t_p_value"] = None
        result["welch_t_p_value_reason"] = ONE_RUN_REASON
    result["paired_seeds"] = common
    if len(common) >= 2:
        diffs = np.array([values_b[s] - values_a[s] for s in common])
        result["paired_differences"] = diffs.tolist()
        result["paired"] = json_ready(summarize(diffs))
        paired = float(stats.ttest_rel([values_b[s] for s in common], [values_a[s] for s in common]).pvalue)
        _p_value(paired, "B equals A on every paired seed: no difference to test", result, "paired_t_p_value")
        result["wilcoxon_p_value"] = float(stats.wilcoxon(diffs).pvalue) if np.any(diffs != 0) else 1.0
    name = metric.removeprefix("eval_")
    if common and bootstrap > 0 and name in METRIC_FUNCTIONS:
        result["bootstrap"] = _bootstrap(a, path_a, b, path_b, common, name, bootstrap, seed)
    elif bootstrap > 0:
        result["bootstrap"] = None
        result["bootstrap_reason"] = (f"{metric} is not recomputable from predictions.jsonl (one of "
                                      f"{sorted(METRIC_FUNCTIONS)})" if common else "no seed in common")
    return result


def _bootstrap(a: dict, path_a: Path, b: dict, path_b: Path, common: list[int], name: str, samples: int,
               seed: int) -> dict:
    """The bootstrap entry of `compare`: seeds and examples resampled, `name` recomputed per draw."""
    per_a = [_predictions(a, path_a, s) for s in common]
    per_b = [_predictions(b, path_b, s) for s in common]
    ids = sorted(per_a[0])
    if any(sorted(p) != ids for p in per_a + per_b):
        raise DataError("the two summaries were evaluated on different examples", file=str(path_b))
    labels = np.array([per_a[0][i][0] for i in ids])
    matrix_a = np.array([[p[i][1] for i in ids] for p in per_a])
    matrix_b = np.array([[p[i][1] for i in ids] for p in per_b])
    entry: dict = {"samples": samples, "confidence": 0.95, "resampled": "seeds and examples"}
    if name == "accuracy":   # a mean over examples: the draws average 0/1 cells directly (fast)
        low, high = bootstrap_difference(matrix_a == labels, matrix_b == labels, samples=samples, seed=seed)
        return {**entry, "ci_low": low, "ci_high": high}
    low, high, undefined = bootstrap_metric_difference(labels, matrix_a, matrix_b, name, samples=samples, seed=seed)
    entry.update({"ci_low": low if math.isfinite(low) else None, "ci_high": high if math.isfinite(high) else None,
                  "undefined_draws": undefined})
    if undefined:
        entry["undefined_draws_reason"] = f"{name} was undefined on {undefined} draws (constant values); left out"
    return entry


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m utils.seed_statistics`."""
    parser = argparse.ArgumentParser(prog="python -m utils.seed_statistics", description=__doc__.split("\n\n")[0])
    parser.add_argument("summary_a", help="summary.json of the reference (e.g. plain gpt2).")
    parser.add_argument("summary_b", help="summary.json compared with it (e.g. after intermediate training).")
    parser.add_argument("--metric", default=None,
                        help="Per-run key of summary.json to compare (default: eval_<primary metric> of the target, "
                             "e.g. eval_accuracy, eval_matthews_correlation, eval_pearson).")
    parser.add_argument("--bootstrap", type=non_negative_int, default=10000, help="Bootstrap draws (0 to skip).")
    parser.add_argument("--seed", type=seed_int, default=0, help="Seed of the bootstrap.")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Print the comparison as JSON and return it."""
    args = build_parser().parse_args(argv)
    result = compare(args.summary_a, args.summary_b, metric=args.metric, bootstrap=args.bootstrap, seed=args.seed)
    print(json.dumps(result, indent=2, allow_nan=False))  # strict JSON: every undefined value is null with a reason
    return result

"""Honest statistics over runs that differ only by seed, and the comparison of two such sets.

    python -m utils.seed_statistics A/summary.json B/summary.json [--bootstrap 10000]

prints B − A on the primary metric (or --metric): mean and per-seed differences, paired t and
Wilcoxon tests, and a bootstrap interval resampling seeds and examples (both systems on the same
draws; F1, Matthews and Pearson, not means over examples, are recomputed on each draw).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from utils.run.flags import SEED, number
from utils.run.errors import JSON_TOO_DEEP, DataError
from utils.results.metrics import (METRIC_FUNCTIONS, ONE_RUN_REASON, confusion_counts, f1_from_counts, json_ready,
                                   matthews_from_counts, summarize)
from utils.data.records import read_jsonl


def _p_value(value: float, reason: str, result: dict, key: str) -> None:
    """result[key] = the p-value, or null with `<key>_reason` when the test is undefined (NaN)."""
    result[key] = value if math.isfinite(value) else None
    if result[key] is None:
        result[f"{key}_reason"] = reason


def read_summary(path: str | Path) -> dict:
    """A summary.json of the target script; a DataError if missing, malformed or without runs."""
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


def bootstrap_metric_difference(labels: np.ndarray, predictions_a: np.ndarray, predictions_b: np.ndarray,
                                metric: str, *, samples: int, seed: int,
                                confidence: float = 0.95) -> tuple[float, float, int]:
    """Percentile CI of mean_s metric(B_s) − metric(A_s), resampling seeds, then examples, and the
    number of draws where the metric was undefined (left out).

    labels: (N,); predictions_a, predictions_b: (S, N), row = seed (paired), column = example. Each
    draw picks S seeds and N examples with replacement, shared by both systems. Accuracy, a mean
    over examples, averages the drawn 0/1 cells of B − A; the other metrics are recomputed for each
    drawn seed on the drawn examples (F1 and Matthews from every seed's confusion counts at once).
    """
    n_seeds, n_examples = predictions_a.shape
    from_counts = {"f1": f1_from_counts, "matthews_correlation": matthews_from_counts}.get(metric)
    if from_counts is not None:   # classes as codes 0..K-1 (for F1: 1 or not)
        values = np.concatenate([labels[None], predictions_a, predictions_b])   # (1 + 2S, N)
        n_classes, codes = 2, (values == 1).astype(np.int64)
        if metric != "f1":
            classes, codes = np.unique(values, return_inverse=True)
            n_classes, codes = classes.size, codes.reshape(values.shape)
        labels, predictions_a, predictions_b = codes[0], codes[1:n_seeds + 1], codes[n_seeds + 1:]
    correct = (predictions_b == labels).astype(np.float64) - (predictions_a == labels).astype(np.float64)  # (S, N)
    rng = np.random.default_rng(seed)
    draws = np.empty(samples)
    for b in range(samples):
        rows = rng.integers(n_seeds, size=n_seeds)
        columns = rng.integers(n_examples, size=n_examples)
        drawn = labels[columns]
        if metric == "accuracy":
            draws[b] = correct[rows][:, columns].mean()
            continue
        if from_counts is not None:
            per_seed = (from_counts(confusion_counts(drawn, predictions_b[:, columns], n_classes))
                        - from_counts(confusion_counts(drawn, predictions_a[:, columns], n_classes)))
        else:
            function = METRIC_FUNCTIONS[metric]
            per_seed = np.array([function(drawn, predictions_b[s, columns]).value
                                 - function(drawn, predictions_a[s, columns]).value for s in range(n_seeds)])
        draws[b] = np.mean(per_seed[rows])
    defined = draws[np.isfinite(draws)]
    if defined.size == 0:
        return math.nan, math.nan, samples
    tail = (1 - confidence) / 2
    return float(np.quantile(defined, tail)), float(np.quantile(defined, 1 - tail)), samples - int(defined.size)


def _run_values(summary: dict, metric: str, path: Path) -> dict[int, float]:
    """seed -> the run's `metric`; a DataError for a run without it or where it is null."""
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
    """eval_<primary metric> of the two summaries (accuracy if they name none); a DataError if they
    are of different targets or metrics."""
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
        _p_value(math.nan, ONE_RUN_REASON, result, "welch_t_p_value")
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
    low, high, undefined = bootstrap_metric_difference(labels, matrix_a, matrix_b, name, samples=samples, seed=seed)
    if name == "accuracy":   # a mean over examples: defined on every draw
        return {**entry, "ci_low": low, "ci_high": high}
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
    parser.add_argument("--bootstrap", type=number(int, minimum=0), default=10000, help="Bootstrap draws (0 to skip).")
    parser.add_argument("--seed", type=SEED, default=0, help="Seed of the bootstrap.")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Print the comparison as JSON and return it."""
    args = build_parser().parse_args(argv)
    result = compare(args.summary_a, args.summary_b, metric=args.metric, bootstrap=args.bootstrap, seed=args.seed)
    print(json.dumps(result, indent=2, allow_nan=False))  # strict JSON: every undefined value is null with a reason
    return result

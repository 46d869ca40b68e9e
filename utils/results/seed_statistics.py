"""Honest statistics over runs that differ only by seed, and the comparison of two such sets.

    python -m utils.seed_statistics A/summary.json B/summary.json [--bootstrap 10000]

prints the difference of B against A: mean difference, the difference paired by seed, a paired
t-test and a Wilcoxon signed-rank test, and a bootstrap confidence interval that resamples seeds
and, within them, evaluation examples (both systems on the same draws).
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
from utils.data.records import read_jsonl


def summarize(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """n, mean, std (ddof 1), the Student-t confidence interval of the mean, min and max.

    CI = mean ± t_{(1+c)/2, n−1} · std / √n. With one value there is no estimate of the spread:
    std and the CI bounds are NaN (never 0, which would claim a run-to-run spread of nothing).
    """
    array = np.asarray(values, dtype=np.float64)
    n = len(array)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = float(array.mean())
    std = float(array.std(ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * std / math.sqrt(n)) if n > 1 else math.nan
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half,
            "confidence": confidence, "min": float(array.min()), "max": float(array.max())}


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


def _correctness(summary: dict, summary_path: Path, seed: int) -> dict[str, int]:
    """example id -> 1/0 correct for one run, from its predictions.jsonl."""
    run = next(r for r in summary["runs"] if r["seed"] == seed)
    path = summary_path.parent / run["predictions"]
    rows = [row for _, row in read_jsonl(path)]  # a malformed or absurdly nested line is a DataError naming it
    return {str(row["id"]): int(row["prediction"] == row["label"]) for row in rows}


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


def compare(path_a: str | Path, path_b: str | Path, *, metric: str = "eval_accuracy", bootstrap: int = 10000,
            seed: int = 0) -> dict:
    """B against A: unpaired and paired differences, p-values, bootstrap CI (see module doc)."""
    path_a, path_b = Path(path_a), Path(path_b)
    a, b = read_summary(path_a), read_summary(path_b)
    values_a = {r["seed"]: r[metric] for r in a["runs"]}
    values_b = {r["seed"]: r[metric] for r in b["runs"]}
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
    if common and metric == "eval_accuracy" and bootstrap > 0:
        per_a = [_correctness(a, path_a, s) for s in common]
        per_b = [_correctness(b, path_b, s) for s in common]
        ids = sorted(per_a[0])
        if any(sorted(p) != ids for p in per_a + per_b):
            raise DataError("the two summaries were evaluated on different examples", file=str(path_b))
        matrix_a = np.array([[p[i] for i in ids] for p in per_a])
        matrix_b = np.array([[p[i] for i in ids] for p in per_b])
        low, high = bootstrap_difference(matrix_a, matrix_b, samples=bootstrap, seed=seed)
        result["bootstrap"] = {"samples": bootstrap, "ci_low": low, "ci_high": high, "confidence": 0.95,
                               "resampled": "seeds and examples"}
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m utils.seed_statistics`."""
    parser = argparse.ArgumentParser(prog="python -m utils.seed_statistics", description=__doc__.split("\n\n")[0])
    parser.add_argument("summary_a", help="summary.json of the reference (e.g. plain gpt2).")
    parser.add_argument("summary_b", help="summary.json compared with it (e.g. after intermediate training).")
    parser.add_argument("--metric", default="eval_accuracy", help="Per-run key of summary.json to compare.")
    parser.add_argument("--bootstrap", type=non_negative_int, default=10000, help="Bootstrap draws (0 to skip).")
    parser.add_argument("--seed", type=seed_int, default=0, help="Seed of the bootstrap.")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Print the comparison as JSON and return it."""
    args = build_parser().parse_args(argv)
    result = compare(args.summary_a, args.summary_b, metric=args.metric, bootstrap=args.bootstrap, seed=args.seed)
    print(json.dumps(result, indent=2, allow_nan=False))  # strict JSON: every undefined value is null with a reason
    return result

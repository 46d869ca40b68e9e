"""python -m utils.compare_runs: the table of several runs against the plain model, checked by hand."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from tests.conftest import run_module
from utils.results.comparison import compare_runs, holm_adjusted


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3·0.01 = 0.03, 2·0.03 = 0.06, max(0.06, 1·0.04) = 0.06
    assert holm_adjusted([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # None stays and does not count: sorted 0.5, 0.6 -> 2·0.5 = 1.0, max(1.0, 1·0.6) = 1.0
    assert holm_adjusted([0.5, None, 0.6]) == [1.0, None, 1.0]
    assert holm_adjusted([]) == []


def write_run(folder, name, accuracies: dict[int, float], algorithm: str, correct: dict[int, list[int]]):
    """A summary.json of the target script with per-seed accuracy and predictions files."""
    runs = []
    for seed, accuracy in accuracies.items():
        run_dir = folder / name / "runs" / f"seed_{seed}"
        run_dir.mkdir(parents=True)
        run_dir.joinpath("predictions.jsonl").write_text("".join(
            json.dumps({"id": str(i), "label": 1, "prediction": ok}) + "\n" for i, ok in enumerate(correct[seed])))
        runs.append({"seed": seed, "eval_accuracy": accuracy, "predictions": f"runs/seed_{seed}/predictions.jsonl"})
    values = list(accuracies.values())
    half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values))
    summary = {"target_task": "sst2", "primary_metric": "accuracy", "algorithm": algorithm,
               "source_tasks": "" if algorithm == "none" else "squad+drop", "output_dir": str(folder / name),
               "eval_accuracy": {"n": len(values), "mean": float(np.mean(values)), "ci_low": float(np.mean(values) - half),
                                 "ci_high": float(np.mean(values) + half)},
               "source_compute": {"train_flops": None if algorithm == "none" else 1.5e12},
               "target_compute": {"train_flops": 3.0e11}, "runs": runs}
    (folder / name / "summary.json").write_text(json.dumps(summary))
    return folder / name / "summary.json"


def test_each_run_against_the_plain_model(tmp_path):
    rows = {seed: [1] * 8 + [0] * 2 for seed in (1, 2, 3)}
    plain = write_run(tmp_path, "plain", {1: 0.80, 2: 0.82, 3: 0.78}, "none", rows)
    reptile = write_run(tmp_path, "reptile", {1: 0.83, 2: 0.84, 3: 0.80}, "reptile", rows)
    fomaml = write_run(tmp_path, "fomaml", {1: 0.79, 2: 0.83, 3: 0.77}, "fomaml", rows)
    result = compare_runs(plain, [reptile, fomaml], bootstrap=200)
    first, second = result["runs"]
    assert first["against_reference"]["paired_differences"] == pytest.approx([0.03, 0.02, 0.02])
    p_first = stats.ttest_rel([0.83, 0.84, 0.80], [0.80, 0.82, 0.78]).pvalue
    p_second = stats.ttest_rel([0.79, 0.83, 0.77], [0.80, 0.82, 0.78]).pvalue
    assert first["against_reference"]["paired_t_p_value"] == pytest.approx(p_first)
    low, high = sorted([p_first, p_second])
    expected = {p_first: None, p_second: None}
    expected[low] = min(1.0, 2 * low)
    expected[high] = max(expected[low], min(1.0, high))
    assert first["against_reference"]["paired_t_p_value_holm"] == pytest.approx(expected[p_first])
    assert second["against_reference"]["paired_t_p_value_holm"] == pytest.approx(expected[p_second])
    assert (first["algorithm"], second["algorithm"], result["reference"]["algorithm"]) == ("reptile", "fomaml", "none")
    done = run_module("utils.compare_runs", str(plain), str(reptile), str(fomaml), "--bootstrap", "100", "--output",
                      str(tmp_path / "comparison.json"))
    assert done.returncode == 0, done.stderr
    table = done.stdout.splitlines()
    assert table[0].startswith("| run | algorithm |") and len(table) == 5
    assert "| plain | none | (none) | 3 | 0.8000" in table[2] and "reference" in table[2]
    assert "| reptile | reptile | squad+drop | 3 | 0.8233" in table[3] and "1.50e+12" in table[3]
    assert json.loads((tmp_path / "comparison.json").read_text())["comparisons"] == 2

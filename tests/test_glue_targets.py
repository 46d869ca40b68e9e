"""GLUE targets downstream of the data layer: the target script on a sentence-pair task (RTE), every
target reported on its own metrics (checked against scipy and hand computations from the written
predictions), regression selection, older results tables, resumption, and Task2Vec rows of a pair
task holding both texts."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy import stats

import run_target_task_GPT2_sst2_multiple as target
from task2vec.embedding.sequences import task_rows
from tests.conftest import run_module
from utils.data.loading import load_task_data
from utils.data.registry import get_task
from utils.data.loading import sample_file
from utils.models.loading import load_model
from utils.classification.summary import metric_summary


def test_rte_runs_through_the_target_script_with_both_texts(tiny_checkpoint, tmp_path):
    summary = target.main(["--pretrained_model", str(tiny_checkpoint), "--dataset_name", "glue;rte",
                           "--train_file", str(sample_file("rte", "train")),
                           "--validation_file", str(sample_file("rte", "validation")),
                           "--num_runs", "1", "--epochs", "1", "--batch_size", "4", "--selection", "last",
                           "--output_dir", str(tmp_path / "rte"), "--features_cache_dir", str(tmp_path / "cache"),
                           "--no_progress"])
    assert summary["target_task"] == "rte" and summary["eval_accuracy"]["n"] == 1
    predictions = [json.loads(line) for line in (tmp_path / "rte" / "runs" / "seed_13" / "predictions.jsonl").open()]
    dev = load_task_data("rte", "validation", sample_file("rte", "validation")).records
    assert [p["id"] for p in predictions] == [r["id"] for r in dev]
    assert all(len(p["logits"]) == 2 for p in predictions)


def _run(task: str, checkpoint, tmp_path, *extra: str) -> dict:
    return target.main(["--pretrained_model", str(checkpoint), "--dataset_name", task,
                        "--train_file", str(sample_file(task, "train")),
                        "--validation_file", str(sample_file(task, "validation")),
                        "--epochs", "1", "--batch_size", "4", "--features_cache_dir", str(tmp_path / "cache"),
                        "--no_progress", *extra])


def _hand_mcc(y: list[int], p: list[int]) -> float:
    """Binary Matthews correlation from the confusion counts (0 when a margin is empty)."""
    tp = sum(a == 1 and b == 1 for a, b in zip(y, p))
    tn = sum(a == 0 and b == 0 for a, b in zip(y, p))
    fp = sum(a == 0 and b == 1 for a, b in zip(y, p))
    fn = sum(a == 1 and b == 0 for a, b in zip(y, p))
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denominator if denominator else 0.0


def _hand_f1(y: list[int], p: list[int]) -> float:
    tp = sum(a == 1 and b == 1 for a, b in zip(y, p))
    wrong = sum(a != b for a, b in zip(y, p))
    return 2 * tp / (2 * tp + wrong) if tp + wrong else 0.0


def _independent(metric: str, labels: list, predictions: list) -> float:
    if metric == "pearson":
        return float(stats.pearsonr(labels, predictions)[0])
    if metric == "spearmanr":
        return float(stats.spearmanr(labels, predictions)[0])
    if metric == "matthews_correlation":
        return _hand_mcc(labels, predictions)
    if metric == "f1":
        return _hand_f1(labels, predictions)
    return float(np.mean(np.asarray(labels) == np.asarray(predictions)))


@pytest.mark.parametrize("task, metrics", [("cola", ["matthews_correlation"]), ("mrpc", ["f1", "accuracy"]),
                                           ("stsb", ["pearson", "spearmanr"]), ("qqp", ["f1", "accuracy"])])
def test_each_target_is_reported_on_its_own_metrics(task, metrics, tiny_checkpoint, tmp_path):
    table = tmp_path / "results.csv"
    summary = _run(task, tiny_checkpoint, tmp_path, "--seeds", "3", "4", "--selection", "last",
                   "--output_dir", str(tmp_path / task), "--results_table", str(table))
    assert summary["primary_metric"] == metrics[0] and summary["metrics"] == metrics
    dev = load_task_data(task, "validation", sample_file(task, "validation")).records
    per_seed: dict[str, list[float]] = {name: [] for name in metrics}
    for seed in (3, 4):
        rows = [json.loads(line) for line in (tmp_path / task / "runs" / f"seed_{seed}" / "predictions.jsonl").open()]
        assert [row["id"] for row in rows] == [r["id"] for r in dev]
        assert [row["label"] for row in rows] == [r["label"] for r in dev]
        labels, predictions = [row["label"] for row in rows], [row["prediction"] for row in rows]
        if task == "stsb":   # a regression: the prediction is the head's unclipped score
            assert all(isinstance(row["prediction"], float) and "logits" not in row for row in rows)
        else:
            assert all(row["prediction"] == int(np.argmax(row["logits"])) for row in rows)
        results = json.loads((tmp_path / task / "runs" / f"seed_{seed}" / "all_results.json").read_text())
        for name in metrics:
            expected = _independent(name, labels, predictions)
            assert results[f"eval_{name}"] == pytest.approx(expected, abs=1e-9)
            per_seed[name].append(expected)
    for name in metrics:
        statistics = summary[f"eval_{name}"]
        assert statistics["n"] == 2 and statistics["mean"] == pytest.approx(np.mean(per_seed[name]), abs=1e-9)
        assert statistics["std"] == pytest.approx(np.std(per_seed[name], ddof=1), abs=1e-9)
        half = stats.t.ppf(0.975, 1) * np.std(per_seed[name], ddof=1) / math.sqrt(2)
        low, high = (-1.0, 1.0) if name in ("matthews_correlation", "pearson", "spearmanr") else (0.0, 1.0)
        # the t-interval, cut to the metric's range (two seeds: often wider than the range)
        assert statistics["ci_high"] == pytest.approx(min(high, np.mean(per_seed[name]) + half), abs=1e-9)
        assert statistics["ci_low"] == pytest.approx(max(low, np.mean(per_seed[name]) - half), abs=1e-9)
    with open(table, newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["primary_metric"] == metrics[0]
    assert float(row["mean_primary"]) == pytest.approx(np.mean(per_seed[metrics[0]]), abs=1e-9)
    assert row["other_metrics"] == ";".join(f"{name}={summary[f'eval_{name}']['mean']}" for name in metrics[1:])
    if task == "stsb":   # no accuracy for a regression: its columns stay empty
        assert row["mean_accuracy"] == row["std_accuracy"] == row["ci95_low"] == ""
    else:
        assert float(row["mean_accuracy"]) == pytest.approx(summary["eval_accuracy"]["mean"])


def _stsb_file(path, rows: int, seed: int):
    """An STS-B train.tsv in the original layout: pairs of sample words, score = 5 x word overlap."""
    rng = np.random.default_rng(seed)
    words = "a man woman is playing the guitar slicing an onion dog runs cat sleeps".split()
    lines = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
    for index in range(rows):
        first, second = rng.choice(words, 4), rng.choice(words, 4)
        score = 5 * len(set(first) & set(second)) / len(set(first) | set(second))
        lines.append(f"{index}\tmain\tsynthetic\t2012\t{index:04d}\tnone\tnone\t{' '.join(first)}\t"
                     f"{' '.join(second)}\t{score:.3f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_regression_target_selects_its_epoch_on_the_hold_out_pearson(tiny_checkpoint, tmp_path):
    train = _stsb_file(tmp_path / "train.tsv", 120, seed=0)
    summary = target.main(["--pretrained_model", str(tiny_checkpoint), "--dataset_name", "stsb", "--train_file",
                           str(train), "--validation_file", str(sample_file("stsb", "validation")), "--seeds", "5",
                           "--epochs", "3", "--holdout_size", "12", "--batch_size", "8", "--learning_rate", "1e-3",
                           "--output_dir", str(tmp_path / "stsb"), "--features_cache_dir", "none", "--no_progress"])
    results = json.loads((tmp_path / "stsb" / "runs" / "seed_5" / "all_results.json").read_text())
    curve = results["holdout_curve"]
    assert len(curve) == 3 and results["primary_metric"] == "pearson"
    defined = [value for value in curve if value is not None]
    assert defined and results["holdout_pearson"] == max(defined)
    assert curve[results["selected_epoch"] - 1] == results["holdout_pearson"]
    assert summary["runs"][0]["selected_epoch"] == results["selected_epoch"]


def test_an_undefined_metric_is_null_with_its_seeds_named(tmp_path):
    runs = [{"seed": 1, "eval_pearson": 0.5}, {"seed": 2, "eval_pearson": None}]
    statistics = metric_summary(runs, "eval_pearson")
    assert statistics["n"] == 2 and statistics["mean"] is None and "seed(s) 2" in statistics["reason"]


@pytest.mark.slow
def test_a_table_of_an_earlier_version_is_refused_before_training(tiny_checkpoint, tmp_path):
    table = tmp_path / "old.csv"
    old_columns = "created_at,target_task,pretrained_model,mean_accuracy,output_dir\r\n"   # an accuracy-only table
    table.write_text(old_columns)
    done = run_module("run_target_task_GPT2_sst2_multiple.py", "--pretrained_model", str(tiny_checkpoint),
                      "--dataset_name", "stsb", "--train_file", str(sample_file("stsb", "train")),
                      "--validation_file", str(sample_file("stsb", "validation")), "--num_runs", "1", "--epochs", "1",
                      "--output_dir", str(tmp_path / "stsb"), "--results_table", str(table), "--no_progress")
    assert done.returncode == 2 and "Traceback" not in done.stderr and not (tmp_path / "stsb").exists()
    assert "other columns" in done.stderr and "start a new file" in done.stderr
    assert table.read_bytes() == old_columns.encode()   # unchanged


def test_a_resumed_regression_target_reuses_its_finished_seeds(tiny_checkpoint, tmp_path):
    folder = tmp_path / "stsb"
    first = _run("stsb", tiny_checkpoint, tmp_path, "--seeds", "3", "--selection", "last", "--output_dir", str(folder))
    again = _run("stsb", tiny_checkpoint, tmp_path, "--seeds", "3", "4", "--selection", "last", "--output_dir",
                 str(folder), "--resume")
    assert again["runs"][0] == first["runs"][0] and again["eval_pearson"]["n"] == 2


@pytest.mark.parametrize("objective", ["task", "lm"])
def test_task2vec_rows_of_a_pair_task_hold_both_texts(objective, tiny_checkpoint):
    tokenizer = load_model(tiny_checkpoint, "lm").tokenizer
    spec = get_task("rte")
    records = load_task_data(spec, "train", sample_file("rte", "train")).records
    built = task_rows(spec, records, tokenizer, objective, max_length=128)
    first = records[0]
    expected = (tokenizer(first["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                + tokenizer(first["text_pair"], add_special_tokens=False)["input_ids"])
    assert built.rows[0]["input_ids"][:len(expected)] == expected
    assert len(built.rows) == len(records)

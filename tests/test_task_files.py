"""A task of the user's own from a JSON task file: no code, every script that takes a task name
takes the file, its metrics are its own, and a malformed file is a one-line error naming the field."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import run_target_task_GPT2_sst2_multiple as target
from task2vec.embedding.sequences import task_rows
from tests.conftest import run_module
from utils.results.metrics import METRIC_FUNCTIONS
from utils.data.loading import load_task_data
from utils.data.registry import get_task
from utils.data.registry import KNOWN_METRICS
from utils.models.loading import load_model
from utils.run.errors import ToolkitError, UnknownTaskError

WORDS = {"negative": "awful dull boring", "neutral": "fine okay plain", "positive": "great lovely superb"}


def write_reviews(folder, rows: int, seed: int):
    """A three-class CSV whose columns are named as the user likes (review, stars)."""
    rng = np.random.default_rng(seed)
    names = list(WORDS)
    lines = ["id,review,stars"]
    for index in range(rows):
        label = names[int(rng.integers(3))]
        lines.append(f"{index},this film was {' '.join(rng.permutation(WORDS[label].split())[:2])},{label}")
    path = folder / f"reviews_{seed}.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def task_file(folder, **fields):
    entry = {"name": "reviews", "labels": list(WORDS), "text_column": "review", "label_column": "stars",
             "metrics": ["matthews_correlation", "accuracy"]} | fields
    path = folder / "reviews.json"
    path.write_text(json.dumps({key: value for key, value in entry.items() if value is not None}))
    return path


def multiclass_mcc(y: list[int], p: list[int]) -> float:
    """Matthews correlation as the correlation of the one-hot indicator matrices (Gorodkin 2004)."""
    classes = sorted(set(y) | set(p))
    Y = np.array([[a == k for k in classes] for a in y], dtype=float)
    P = np.array([[b == k for k in classes] for b in p], dtype=float)
    cov = lambda A, B: float(np.sum((A - A.mean(0)) * (B - B.mean(0))))   # noqa: E731
    denominator = math.sqrt(cov(Y, Y) * cov(P, P))
    return cov(Y, P) / denominator if denominator else 0.0


def test_known_metrics_are_the_metric_functions():
    assert set(KNOWN_METRICS) == set(METRIC_FUNCTIONS)


def test_a_three_class_task_of_ones_own_runs_through_the_target_script(tiny_checkpoint, tmp_path):
    spec_path = task_file(tmp_path)
    spec = get_task(str(spec_path))
    assert (spec.name, spec.label_names, spec.metric, spec.metrics) == \
        ("reviews", tuple(WORDS), "matthews_correlation", ("matthews_correlation", "accuracy"))
    train, dev = write_reviews(tmp_path, 60, 0), write_reviews(tmp_path, 20, 1)
    summary = target.main(["--pretrained_model", str(tiny_checkpoint), "--dataset_name", str(spec_path),
                           "--train_file", str(train), "--validation_file", str(dev), "--seeds", "3", "4",
                           "--epochs", "2", "--batch_size", "8", "--learning_rate", "1e-3", "--selection", "last",
                           "--output_dir", str(tmp_path / "out"), "--features_cache_dir", "none", "--no_progress",
                           "--results_table", str(tmp_path / "results.csv")])
    assert summary["target_task"] == "reviews" and summary["primary_metric"] == "matthews_correlation"
    values = []
    for seed in (3, 4):
        rows = [json.loads(line) for line in (tmp_path / "out" / "runs" / f"seed_{seed}" / "predictions.jsonl").open()]
        assert len(rows[0]["logits"]) == 3
        values.append(multiclass_mcc([r["label"] for r in rows], [r["prediction"] for r in rows]))
    assert summary["eval_matthews_correlation"]["mean"] == pytest.approx(np.mean(values), abs=1e-9)
    assert ",matthews_correlation," in (tmp_path / "results.csv").read_text()


def test_a_pair_regression_task_of_ones_own_reads_its_columns(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"claim": f"a {i}", "evidence": f"b {i}", "sim": i / 4}) + "\n"
                            for i in range(5)))
    spec_path = task_file(tmp_path, labels=None, score_range=[0, 1], text_column="claim", text_pair_column="evidence",
                          label_column="sim", metrics=None)
    spec = get_task(str(spec_path))
    assert spec.is_regression and spec.text_pair_required and spec.metrics == ("pearson", "spearmanr")
    records = load_task_data(spec, "train", data).records
    assert [(r["text"], r["text_pair"], r["label"]) for r in records[:2]] == [("a 0", "b 0", 0.0), ("a 1", "b 1", 0.25)]
    with pytest.raises(ToolkitError, match="has no Hub dataset"):
        load_task_data(spec, "validation")


@pytest.mark.parametrize("fields, message", [
    ({"name": "rte"}, "is a registered task"),
    ({"score_range": [0, 5]}, 'exactly one of "labels"'),
    ({"metrics": ["f1"]}, "this task has 3 classes"),
    ({"metrics": ["pearson"]}, "is not one for a class task"),
    ({"colour": "red"}, "unknown field(s) ['colour']"),
    ({"labels": ["only"]}, "at least two distinct class names"),
    ({"text_column": ""}, '"text_column" must be a non-empty string'),
])
def test_a_malformed_task_file_is_a_one_line_error_naming_the_field(fields, message, tmp_path):
    path = task_file(tmp_path, **fields)
    with pytest.raises(UnknownTaskError) as refused:
        get_task(str(path))
    assert message in str(refused.value) and str(path) in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.slow
def test_the_commands_take_a_task_file(tiny_checkpoint, tmp_path):
    spec_path, data = task_file(tmp_path), write_reviews(tmp_path, 12, 0)
    done = run_module("utils.data", "--task", str(spec_path), "--file", str(data), "--compact")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["kept"] == 12
    done = run_module("run_target_task_GPT2_sst2_multiple.py", "--dataset_name", str(tmp_path / "missing.json"),
                      "--output_dir", str(tmp_path / "x"))
    assert done.returncode == 2 and "task file" in done.stderr and "not found" in done.stderr
    tokenizer = load_model(tiny_checkpoint, "lm").tokenizer
    records = load_task_data(str(spec_path), "train", data).records
    rows = task_rows(get_task(str(spec_path)), records, tokenizer, "lm", max_length=64)
    assert len(rows.rows) == 12
    # The lm row ends with the record's own class name, as for a registered task.
    first = tokenizer.decode(rows.rows[0]["input_ids"])
    assert first.endswith("Answer: " + list(WORDS)[records[0]["label"]] + tokenizer.eos_token)

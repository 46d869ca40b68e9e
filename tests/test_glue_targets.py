"""GLUE targets downstream of the data layer: the target script on a sentence-pair task scored by accuracy
(RTE), its refusal of targets whose official metric it does not report yet, and Task2Vec rows of a pair
task holding both texts."""
from __future__ import annotations

import json

import pytest

import run_target_task_GPT2_sst2_multiple as target
from task2vec.sequences import task_rows
from tests.conftest import run_module
from utils.data.loading import load_task_data
from utils.data.registry import get_task
from utils.data.samples import sample_file
from utils.models.loading import load_model
from utils.run.errors import ToolkitError


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


@pytest.mark.parametrize("task, metric", [("cola", "matthews_correlation"), ("mrpc", "f1"), ("stsb", "pearson")])
def test_targets_scored_by_another_metric_are_refused_in_one_line(task, metric, tmp_path):
    done = run_module("run_target_task_GPT2_sst2_multiple.py", "--dataset_name", task, "--output_dir",
                      str(tmp_path / task))
    assert done.returncode == 2 and f"official metric is {metric}" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / task).exists()


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


def test_task2vec_refuses_a_regression_target(tiny_checkpoint):
    tokenizer = load_model(tiny_checkpoint, "lm").tokenizer
    spec = get_task("stsb")
    records = load_task_data(spec, "train", sample_file("stsb", "train")).records
    with pytest.raises(ToolkitError, match="regression target"):
        task_rows(spec, records, tokenizer, "task", max_length=128)

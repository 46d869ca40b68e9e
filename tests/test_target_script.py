"""run_target_task_GPT2_sst2_multiple.py end to end."""
import csv
import json

import pytest

import run_intermediate_source_GPT2 as intermediate
import run_target_task_GPT2_sst2_multiple as target
from tests.conftest import REPO_ROOT, run_module
from utils.data.loading import load_task_data
from utils.data.loading import sample_file
from utils.models.tiny import build_tiny_model

TRAIN, DEV = str(sample_file("sst2", "train")), str(sample_file("sst2", "validation"))
FAST = ["--train_file", TRAIN, "--validation_file", DEV, "--epochs", "2", "--batch_size", "8", "--learning_rate",
        "1e-3", "--features_cache_dir", "none"]


def test_same_seed_same_results_and_different_seeds_differ(tiny_checkpoint, tmp_path):
    first = target.main(["--pretrained_model", str(tiny_checkpoint), "--seeds", "3", "4", "--output_dir",
                         str(tmp_path / "a"), *FAST])
    target.main(["--pretrained_model", str(tiny_checkpoint), "--seeds", "3", "--output_dir", str(tmp_path / "b"), *FAST])
    same_a = (tmp_path / "a" / "runs" / "seed_3" / "all_results.json").read_bytes()
    same_b = (tmp_path / "b" / "runs" / "seed_3" / "all_results.json").read_bytes()
    assert same_a == same_b
    other = (tmp_path / "a" / "runs" / "seed_4" / "all_results.json").read_bytes()
    assert other != same_a
    runs = {r["seed"]: r for r in first["runs"]}
    assert runs[3]["eval_loss"] != runs[4]["eval_loss"]
    predictions = [json.loads(line) for line in open(tmp_path / "a" / "runs" / "seed_3" / "predictions.jsonl")]
    assert len(predictions) == 44 and {"id", "label", "prediction", "logits"} <= set(predictions[0])
    results = json.loads(same_a)
    for key in ("eval_accuracy", "eval_loss", "eval_macro_f1", "eval_precision_negative", "eval_recall_positive",
                "eval_f1_positive", "train_loss", "selected_epoch"):
        assert key in results, key
    # The hold-out chose the epoch; the summary's statistics are those of the runs.
    assert results["selected_epoch"] in (1, 2) and len(results["holdout_curve"]) == 2
    accuracies = [runs[3]["eval_accuracy"], runs[4]["eval_accuracy"]]
    assert first["eval_accuracy"]["mean"] == pytest.approx(sum(accuracies) / 2)


@pytest.mark.slow
def test_chain_lineage_and_results_table(tmp_path):
    tiny = build_tiny_model(tmp_path / "tiny", n_positions=256, seed=1)
    squad = tmp_path / "pretrained_model_squad"
    intermediate.main(["--dataset_name", "squad", "--model_name", str(tiny), "--output_dir", str(squad),
                       "--train_file", str(sample_file("squad", "train")), "--validation_file",
                       str(sample_file("squad", "validation")), "--max_steps", "2", "--max_seq_length", "256",
                       "--features_cache_dir", "none"])
    table = tmp_path / "results.csv"
    for source, seeds in ((squad, ["5", "6"]), (tiny, ["5", "6", "7"])):
        summary = target.main(["--pretrained_model", str(source), "--seeds", *seeds, "--output_dir",
                               str(tmp_path / f"target_{source.name}"), "--results_table", str(table),
                               "--selection", "last", *FAST])
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    assert rows[0]["source_chain"] == "utils.tiny_model > squad" and rows[0]["source_tasks"] == "squad"
    assert rows[0]["objectives"] == "span" and rows[0]["seeds"] == "5;6" and rows[1]["seeds"] == "5;6;7"
    assert float(rows[1]["mean_accuracy"]) == pytest.approx(summary["eval_accuracy"]["mean"])
    squad_summary = json.loads((tmp_path / "target_pretrained_model_squad" / "summary.json").read_text())
    assert [entry["task"] for entry in squad_summary["lineage"]["chain"]] == [None, "squad"]
    assert squad_summary["runs"][0]["selected_epoch"] is None  # --selection last
    # The comparison command on the two summaries.
    done = run_module("utils.seed_statistics", str(tmp_path / "target_tiny" / "summary.json"),
                      str(tmp_path / "target_pretrained_model_squad" / "summary.json"), "--bootstrap", "500")
    assert done.returncode == 0, done.stderr
    compared = json.loads(done.stdout)
    assert compared["paired_seeds"] == [5, 6] and len(compared["paired_differences"]) == 2
    assert "ci_low" in compared["bootstrap"]


@pytest.mark.slow
def test_original_usage_with_default_output_dir(tiny_checkpoint, tmp_path):
    done = run_module(str(REPO_ROOT / "run_target_task_GPT2_sst2_multiple.py"), "--pretrained_model",
                      str(tiny_checkpoint), "--num_runs", "1", "--results_table", "table.csv", "--max_eval_samples",
                      "20", *FAST, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = tmp_path / f"target_sst2_{tiny_checkpoint.name}"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["seeds"] == [13] and summary["eval_accuracy"]["n"] == 1
    # One run gives no spread: null in summary.json, "nan" in the table, never 0.
    accuracy = summary["eval_accuracy"]
    assert accuracy["std"] is None and accuracy["ci_low"] is None and accuracy["ci_high"] is None
    with open(tmp_path / "table.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert (row["std_accuracy"], row["ci95_low"], row["ci95_high"]) == ("nan", "nan", "nan")
    assert "no std or confidence interval" in done.stderr
    # The evaluation subset is a seeded random draw whose ids are recorded, not the first 20 lines.
    subsets = json.loads((folder / "data_subsets.json").read_text())
    ids = subsets["validation"]["ids"]
    assert len(ids) == 20 and subsets["validation"]["seed"] == 0 and ids != [f"line {i}" for i in range(2, 22)]
    predictions = [json.loads(line)["id"] for line in open(folder / "runs" / "seed_13" / "predictions.jsonl")]
    assert sorted(predictions) == sorted(ids)


@pytest.mark.slow
def test_user_errors(tiny_checkpoint, tmp_path):
    done = run_module("run_target_task_GPT2_sst2_multiple.py", "--dataset_name", "squad", "--output_dir", str(tmp_path / "a"))
    assert done.returncode == 2 and "run_intermediate_source_GPT2.py" in done.stderr
    done = run_module("run_target_task_GPT2_sst2_multiple.py", "--pretrained_model", str(tiny_checkpoint),
                      "--train_file", TRAIN, "--validation_file", str(sample_file("sst2", "train").parent / "test.tsv"),
                      "--output_dir", str(tmp_path / "b"))
    assert done.returncode == 2 and "no labels" in done.stderr and "Traceback" not in done.stderr
    renamed = tmp_path / "renamed.tsv"     # the label column under another name: the message names the flag
    renamed.write_text("sentence\tsentiment\nA fine film .\t1\nA dull film .\t0\n", encoding="utf-8")
    done = run_module("run_target_task_GPT2_sst2_multiple.py", "--pretrained_model", str(tiny_checkpoint),
                      "--train_file", str(renamed), "--validation_file", str(sample_file("sst2", "validation")),
                      "--output_dir", str(tmp_path / "d"))
    assert done.returncode == 2 and "give it with --label_column NAME" in done.stderr
    assert [r["label"] for r in load_task_data("sst2", "train", renamed, label_column="sentiment").records] == [1, 0]
    done = run_module("run_target_task_GPT2_sst2_multiple.py", "--num_runs", "2", "--seeds", "1", "2", "3",
                      "--output_dir", str(tmp_path / "c"))
    assert done.returncode == 2 and "--num_runs" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_real_learning_signal_on_sst2(family, shared_data, tmp_path):
    """A tiny random model with the real GPT-2 tokenizer, 8,000 SST-2 sentences: dev accuracy >= 0.70, for
    GPT-2 and for the Llama layout (RMSNorm, rotary, SwiGLU, untied output)."""
    tiny = build_tiny_model(tmp_path / "tiny_real_vocab", family=family, n_layer=2, n_embd=64, n_head=4,
                            n_positions=128, tokenizer_path=str(shared_data / "gpt2_tokenizer"), seed=0)
    summary = target.main(["--pretrained_model", str(tiny), "--train_file", str(shared_data / "sst2" / "train.tsv"),
                           "--validation_file", str(shared_data / "sst2" / "dev.tsv"), "--max_train_samples", "8000",
                           "--num_runs", "1", "--epochs", "2", "--batch_size", "32", "--learning_rate", "1e-3",
                           "--output_dir", str(tmp_path / "sst2"), "--features_cache_dir", "none"])
    accuracy = summary["eval_accuracy"]["mean"]
    print(f"SST-2 dev accuracy {accuracy:.4f} (8,000 sentences, 2 epochs, tiny {family})")
    assert accuracy >= 0.70


@pytest.mark.slow
def test_runs_data_parallel_under_torchrun(tiny_checkpoint, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29545",
               str(REPO_ROOT / "run_target_task_GPT2_sst2_multiple.py"), "--pretrained_model", str(tiny_checkpoint),
               "--seeds", "1", "2", "--output_dir", str(out), "--device", "cpu", *FAST]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [1, 2] and summary["eval_accuracy"]["n"] == 2
    for seed in (1, 2):  # every validation sentence predicted exactly once
        ids = [json.loads(line)["id"] for line in open(out / "runs" / f"seed_{seed}" / "predictions.jsonl")]
        assert len(ids) == len(set(ids)) == 44

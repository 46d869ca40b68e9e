"""run_intermediate_source_GPT2.py end to end: learning, resumption, data parallelism, the chain."""
import json
import os
import shutil
import sys

import pytest
import torch
from safetensors.torch import load_file

import run_intermediate_source_GPT2 as script
from tests.conftest import REPO_ROOT, run_module
from utils.models.checkpoint import read_lineage
from utils.data.loading import sample_file
from utils.models.tiny import write_learnable_task
from utils.models.tiny import build_tiny_model

SHORT = ["--max_seq_length", "96", "--doc_stride", "32", "--max_question_length", "16", "--max_answer_length", "8",
         "--features_cache_dir", "none", "--logging_steps", "50", "--warmup_ratio", "0.1", "--weight_decay", "0"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Synthetic QA files and a tiny model whose tokenizer was trained on that text."""
    folder = tmp_path_factory.mktemp("synthetic")
    return folder, write_learnable_task(folder)


def curve(output_dir):
    return [(e["step"], round(e["loss"], 3)) for e in map(json.loads, open(output_dir / "log.jsonl")) if "loss" in e]


@pytest.mark.slow
@pytest.mark.parametrize("objective,steps,learning_rate", [("span", 600, "3e-3"), ("generative", 900, "5e-3")])
def test_both_objectives_learn_a_synthetic_task(synthetic, tmp_path, objective, steps, learning_rate):
    folder, model = synthetic
    results = script.main(["--dataset_name", "squad", "--model_name", str(model), "--objective", objective,
                           "--train_file", str(folder / "train.jsonl"), "--validation_file", str(folder / "dev.jsonl"),
                           "--output_dir", str(tmp_path / objective), "--max_steps", str(steps),
                           "--learning_rate", learning_rate, "--per_device_train_batch_size", "32", "--seed", "0", *SHORT])
    print(f"{objective}: eval_f1 {results['eval_f1']:.1f} after {steps} steps; loss curve {curve(tmp_path / objective)}")
    assert results["eval_f1"] >= 90.0


@pytest.mark.slow
def test_resumed_run_ends_where_the_uninterrupted_one_does(synthetic, tmp_path):
    folder, _ = synthetic
    model = build_tiny_model(tmp_path / "dropout_model", n_layer=2, n_embd=32, n_head=2, n_positions=128,
                             dropout=0.1, tokenizer_path=str(folder / "tokenizer"), seed=3)
    common = ["--dataset_name", "squad", "--model_name", str(model), "--train_file", str(folder / "dev.jsonl"),
              "--validation_file", str(folder / "dev.jsonl"), "--max_steps", "20", "--save_steps", "5", "--eval_steps", "3",
              "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2", "--learning_rate", "1e-3",
              "--seed", "5", *SHORT]
    full = script.main([*common, "--output_dir", str(tmp_path / "full")])
    assert (tmp_path / "full" / "checkpoint-5").is_dir() and (tmp_path / "full" / "checkpoint-15").is_dir()
    assert full["epoch"] > 1  # 200 rows, 16 per step: the run crosses an epoch boundary after step 12
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-5", resumed_dir / "checkpoint-5")
    resumed = script.main([*common, "--output_dir", str(resumed_dir), "--resume_from_checkpoint", "latest"])
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(resumed_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), key
    for key, value in full.items():
        if key.startswith("eval_") or key in ("train_loss", "train_steps"):
            assert resumed[key] == pytest.approx(value, abs=1e-6), key
    # The lineage of the resumed run points at the original parent, not at checkpoint-5.
    assert read_lineage(resumed_dir)["parent"]["path"] == str(model.resolve())
    # Resuming with another shape of run is refused in one line.
    other = tmp_path / "other"
    other.mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-5", other / "checkpoint-5")
    done = run_module("run_intermediate_source_GPT2.py", *[a if a != "8" else "4" for a in common], "--output_dir",
                      str(other), "--resume_from_checkpoint", "latest")
    assert done.returncode == 2 and "another shape" in done.stderr and "Traceback" not in done.stderr


def test_short_epochs_with_accumulation_finish(synthetic, tmp_path):
    folder, model = synthetic
    results = script.main(["--dataset_name", "squad", "--model_name", str(model), "--train_file",
                           str(folder / "dev.jsonl"), "--validation_file", str(folder / "dev.jsonl"),
                           "--max_train_samples", "10", "--max_eval_samples", "10", "--per_device_train_batch_size", "4",
                           "--gradient_accumulation_steps", "8", "--max_steps", "2", "--output_dir", str(tmp_path / "r"),
                           *SHORT])
    assert results["train_steps"] == 2


def test_overwrite_removes_the_previous_run(synthetic, tmp_path):
    folder, model = synthetic
    common = ["--dataset_name", "squad", "--model_name", str(model), "--train_file", str(folder / "dev.jsonl"),
              "--validation_file", str(folder / "dev.jsonl"), "--max_eval_samples", "20",
              "--per_device_train_batch_size", "16", "--output_dir", str(tmp_path / "run"), *SHORT]
    script.main([*common, "--max_steps", "8", "--save_steps", "4"])
    script.main([*common, "--max_steps", "6", "--save_steps", "2", "--save_total_limit", "1", "--overwrite_output_dir"])
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-4"]
    steps = [json.loads(line).get("step") for line in open(tmp_path / "run" / "log.jsonl")]
    assert max(s for s in steps if s is not None) == 6


@pytest.mark.slow
def test_save_total_limit_and_refused_output_dir(synthetic, tmp_path):
    folder, model = synthetic
    common = ["--dataset_name", "squad", "--model_name", str(model), "--train_file", str(folder / "dev.jsonl"),
              "--validation_file", str(folder / "dev.jsonl"), "--max_steps", "6", "--save_steps", "2",
              "--save_total_limit", "1", "--per_device_train_batch_size", "16", *SHORT]
    script.main([*common, "--output_dir", str(tmp_path / "run")])
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-4"]
    done = run_module("run_intermediate_source_GPT2.py", *common, "--output_dir", str(tmp_path / "run"))
    assert done.returncode == 2 and "--overwrite_output_dir" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_data_parallel_under_torchrun(synthetic, tmp_path):
    folder, model = synthetic
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
               str(REPO_ROOT / "run_intermediate_source_GPT2.py"), "--dataset_name", "squad_v2",
               "--model_name", str(model), "--train_file", str(folder / "dev.jsonl"),
               "--validation_file", str(folder / "dev.jsonl"), "--max_eval_samples", "101", "--output_dir", str(out),
               "--max_steps", "4", "--per_device_train_batch_size", "8", "--device", "cpu", *SHORT]
    import subprocess
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "all_results.json").read_text())
    predictions = json.loads((out / "eval_predictions.json").read_text())
    subset = json.loads((out / "data_subsets.json").read_text())["validation"]
    all_ids = [json.loads(line)["id"] for line in open(folder / "dev.jsonl")]
    assert subset["strategy"] == "stratified_by_document" and subset["total"] == len(all_ids)
    assert subset["ids"] != all_ids[:101] and set(subset["ids"]) <= set(all_ids)   # a random draw, not the first 101
    assert sorted(predictions) == sorted(subset["ids"])      # every example once (an odd count: 51 + 50)
    assert results["eval_total"] == 101 and results["train_steps"] == 4
    assert json.loads((out / "run_args.json").read_text())["derived"]["world_size"] == 2
    assert len(list(out.glob("model.safetensors"))) == 1 and not list(out.glob(".*partial*"))
    assert len(read_lineage(out)["chain"]) == 2


@pytest.mark.slow
def test_the_readme_chain_verbatim(tmp_path):
    tiny = build_tiny_model(tmp_path / "tiny_gpt2")  # the demo's model: 512 positions fit 384-token windows
    data = {task: (str(sample_file(task, "train")), str(sample_file(task, "validation")))
            for task in ("squad", "squad_v2", "duorc-p")}
    chain = [("squad", str(tiny), "./pretrained_model_squad"),
             ("squad_v2", "./pretrained_model_squad", "./pretrained_model_squad_v2"),
             ("duorc-p", "./pretrained_model_squad_v2", "./pretrained_model_duorc-p")]
    for task, parent, output in chain:
        done = run_module(str(REPO_ROOT / "run_intermediate_source_GPT2.py"), "--dataset_name", task, "--model_name",
                          parent, "--output_dir", output, "--train_file", data[task][0], "--validation_file",
                          data[task][1], "--max_steps", "3", "--features_cache_dir", str(tmp_path / "cache"),
                          cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    last = tmp_path / "pretrained_model_duorc-p"
    lineage = read_lineage(last)
    assert [entry["task"] for entry in lineage["chain"]][1:] == ["squad", "squad_v2", "duorc-p"]
    assert lineage["parent"]["path"] == str(tmp_path / "pretrained_model_squad_v2")
    v2_dir = tmp_path / "pretrained_model_squad_v2"
    v2_results = json.loads((v2_dir / "all_results.json").read_text())
    for key in ("eval_exact", "eval_f1", "eval_HasAns_exact", "eval_NoAns_exact", "eval_best_f1", "eval_best_f1_thresh",
                "eval_official_best_f1"):
        assert key in v2_results
    # The official evaluation of the files the run wrote gives the numbers it reported (its own
    # best_* sweep is reported as official_best_*; best_* sweeps the best non-null answers).
    official = run_module("utils.squad_metric", data["squad_v2"][1], str(v2_dir / "eval_predictions.json"),
                          "--na-prob-file", str(v2_dir / "eval_null_odds.json"), "--na-prob-thresh", "1e12")
    assert official.returncode == 0, official.stderr
    for key, value in json.loads(official.stdout).items():
        ours = f"eval_official_{key}" if key.startswith("best_") else f"eval_{key}"
        assert v2_results[ours] == pytest.approx(value), key
    # The sweep includes the run's own threshold (0), where it reproduces the reported F1.
    assert v2_results["eval_best_f1"] >= v2_results["eval_f1"] - 1e-9
    v1_results = json.loads((tmp_path / "pretrained_model_squad" / "all_results.json").read_text())
    assert {"eval_exact_match", "eval_f1"} <= set(v1_results)
    assert (tmp_path / "pretrained_model_squad_v2" / "eval_null_odds.json").exists()
    assert not (tmp_path / "pretrained_model_squad" / "eval_null_odds.json").exists()
    for name in ("eval_predictions.json", "eval_nbest_predictions.json", "run_args.json", "log.jsonl", "lineage.json"):
        assert (last / name).exists(), name
    # A second run on the same data reads the cached features instead of tokenizing again.
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(cached) == 6
    done = run_module(str(REPO_ROOT / "run_intermediate_source_GPT2.py"), "--dataset_name", "squad", "--model_name",
                      str(tiny), "--output_dir", "again", "--train_file", data["squad"][0],
                      "--validation_file", data["squad"][1], "--max_steps", "1", "--features_cache_dir",
                      str(tmp_path / "cache"), cwd=tmp_path)
    assert done.returncode == 0 and "features read from cache" in done.stderr
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == cached


@pytest.mark.slow
def test_user_errors_are_one_line(tiny_checkpoint, tmp_path):
    done = run_module("run_intermediate_source_GPT2.py", "--dataset_name", "sst2", "--output_dir", str(tmp_path / "x"))
    assert done.returncode == 2 and "classification task" in done.stderr
    done = run_module("run_intermediate_source_GPT2.py", "--dataset_name", "squad", "--model_name",
                      str(tiny_checkpoint), "--output_dir", str(tmp_path / "y"), "--train_file",
                      str(tmp_path / "missing.json"), "--validation_file", str(tmp_path / "missing.json"))
    assert done.returncode == 2 and "file not found" in done.stderr and "Traceback" not in done.stderr
    done = run_module("run_intermediate_source_GPT2.py", "--dataset_name", "squad", "--max_seq_length", "64",
                      "--output_dir", str(tmp_path / "z"))
    assert done.returncode == 2 and "--doc_stride" in done.stderr
    sample = str(sample_file("squad", "train"))
    done = run_module("run_intermediate_source_GPT2.py", "--dataset_name", "squad", "--model_name", str(tiny_checkpoint),
                      "--train_file", sample, "--validation_file", sample, "--output_dir", str(tmp_path / "w"))
    assert done.returncode == 2 and "exceeds the 128 positions" in done.stderr


@pytest.mark.parametrize("objective", ["span", "generative"])
def test_duorc_every_question_scored_against_all_original_answers(tiny_checkpoint, tmp_path, objective):
    """No evaluation question is dropped or has its gold answers trimmed: the reported numbers are
    DuoRC's own evaluation of the predictions file over every question of the original file."""
    from tests.test_qa_metrics import duorc_reference

    dev = sample_file("duorc-p", "validation")
    out = tmp_path / "duorc"
    results = script.main(["--dataset_name", "duorc;ParaphraseRC", "--model_name", str(tiny_checkpoint),
                           "--objective", objective, "--train_file", str(sample_file("duorc-p", "train")),
                           "--validation_file", str(dev), "--max_steps", "2", "--output_dir", str(out), *SHORT])
    movies = json.loads(dev.read_text())
    predictions = json.loads((out / "eval_predictions.json").read_text())
    assert sorted(predictions) == sorted(qa["id"] for movie in movies for qa in movie["qa"])
    assert all(text.strip() for text in predictions.values())   # an abstention is written as DuoRC's "NA"
    exact, f1 = duorc_reference(movies, predictions)
    assert results["eval_exact_match"] == pytest.approx(exact) and results["eval_f1"] == pytest.approx(f1)
    assert results["eval_samples"] == len(predictions) and results["eval_metric"] == "duorc"
    stats = json.loads((out / "adapter_stats_validation.json").read_text())
    assert results["eval_without_located_answer"] == stats["without_located_answer_total"] > 0

"""Compute accounting: the passes, real tokens and 6·N·tokens FLOPs each run records, checked
against counts made here from the data and the model, and carried along a chain into the results
table."""
from __future__ import annotations

import csv
import json
import math

import pytest

import maml_qa
import run_intermediate_source_GPT2 as intermediate
import run_target_task_GPT2_sst2_multiple as target
from utils.data.loading import load_task_data
from utils.data.loading import sample_file
from utils.models.loading import load_model
from utils.training.runtime import non_embedding_parameters

QA = ["--max_seq_length", "96", "--doc_stride", "32", "--max_question_length", "16", "--max_answer_length", "8",
      "--features_cache_dir", "none", "--no_progress"]


def test_non_embedding_parameters_leave_out_token_and_position_embeddings(tiny_checkpoint):
    model = load_model(tiny_checkpoint, "lm").model
    everything = sum(p.numel() for p in model.parameters())   # the tied lm_head is wte itself
    embeddings = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
    assert non_embedding_parameters(model) == everything - embeddings


def test_a_target_run_records_the_passes_tokens_and_flops_of_its_training(tiny_checkpoint, tmp_path):
    records = load_task_data("sst2", "train", sample_file("sst2", "train")).records
    summary = target.main(["--pretrained_model", str(tiny_checkpoint), "--train_file", str(sample_file("sst2", "train")),
                           "--validation_file", str(sample_file("sst2", "validation")), "--seeds", "3", "4",
                           "--epochs", "2", "--batch_size", "8", "--selection", "last", "--features_cache_dir", "none",
                           "--output_dir", str(tmp_path / "out"), "--no_progress",
                           "--results_table", str(tmp_path / "table.csv")])
    tokenizer = load_model(tiny_checkpoint, "lm").tokenizer
    lengths = [max(1, min(128, len(tokenizer(r["text"], add_special_tokens=False)["input_ids"]))) for r in records]
    model = load_model(tiny_checkpoint, "classification", label_names=("negative", "positive")).model
    parameters = non_embedding_parameters(model)
    for seed in (3, 4):
        results = json.loads((tmp_path / "out" / "runs" / f"seed_{seed}" / "all_results.json").read_text())
        assert results["train_passes"] == 2 * math.ceil(len(records) / 8)   # every batch of both epochs
        assert results["train_tokens"] == 2 * sum(lengths)
        assert results["non_embedding_parameters"] == parameters
        assert results["train_flops"] == 6 * parameters * 2 * sum(lengths)
    assert summary["target_compute"]["train_tokens"] == 4 * sum(lengths)
    with open(tmp_path / "table.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["algorithm"] == "none" and row["source_train_flops"] == ""   # the plain model: no source training
    assert int(row["target_train_tokens"]) == 4 * sum(lengths)


@pytest.mark.parametrize("algorithm", ["fomaml", "multitask"])
def test_the_chain_s_compute_and_algorithm_reach_the_results_table(tiny_checkpoint, tmp_path, algorithm):
    qa = tmp_path / "squad"
    first = intermediate.main(["--dataset_name", "squad", "--model_name", str(tiny_checkpoint), "--output_dir", str(qa),
                               "--train_file", str(sample_file("squad", "train")), "--validation_file",
                               str(sample_file("squad", "validation")), "--max_steps", "2", *QA])
    meta = maml_qa.main(["--tasks", "squad_v2,duorc-s", "--model_name", str(qa), "--algorithm", algorithm,
                         "--task_file", f"squad_v2={sample_file('squad_v2', 'train')}",
                         "--task_file", f"duorc-s={sample_file('duorc-s', 'train')}", "--num_train_iterations", "2",
                         "--num_inner_steps", "2", "--meta_batch_size", "2", "--inner_lr", "1e-3",
                         "--output_dir", str(tmp_path / "meta"), *QA])
    assert meta["train_passes"] == 2 * 2 * (2 + (algorithm == "fomaml"))
    table = tmp_path / "table.csv"
    target.main(["--pretrained_model", str(tmp_path / "meta"), "--train_file", str(sample_file("sst2", "train")),
                 "--validation_file", str(sample_file("sst2", "validation")), "--seeds", "3", "--epochs", "1",
                 "--selection", "last", "--features_cache_dir", "none", "--output_dir", str(tmp_path / "target"),
                 "--no_progress", "--results_table", str(table)])
    with open(table, newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["algorithm"] == "mixed" and row["source_tasks"] == "squad;squad_v2+duorc-s"
    assert int(row["source_train_passes"]) == first["train_passes"] + meta["train_passes"]
    assert int(row["source_train_tokens"]) == first["train_tokens"] + meta["train_tokens"]
    assert float(row["source_train_flops"]) == pytest.approx(first["train_flops"] + meta["train_flops"])


@pytest.mark.parametrize("steps, expected", [
    ([], "none"),
    ([{"task": "squad"}, {"task": "squad_v2"}], "sequential"),
    ([{"task": "squad+drop"}], "reptile"),                                  # a lineage from before "algorithm"
    ([{"task": "squad+drop", "algorithm": "fomaml"}], "fomaml"),
    ([{"task": "squad+drop", "algorithm": "multitask"}], "multitask"),
    ([{"task": "squad"}, {"task": "squad_v2+drop", "algorithm": "reptile"}], "mixed"),
])
def test_the_algorithm_of_a_chain(steps, expected):
    from utils.classification.summary import chain_algorithm

    assert chain_algorithm(steps) == expected


@pytest.mark.parametrize("noise_floor", [True, False])
def test_a_task2vec_embedding_records_its_fisher_tokens_and_flops(tiny_checkpoint, tmp_path, noise_floor):
    """With the lm objective every real token but the first of a row is one counted prediction per
    label sample (K = 2 here), so one Fisher pass reads predictions_counted / K + examples_used
    tokens; the noise floor's reseeded pass reads them again."""
    from task2vec import __main__ as task2vec_cli

    task2vec_cli.main(["--tasks", "sst2", "--model_name", str(tiny_checkpoint), "--use_samples", "--output_dir",
                       str(tmp_path / "emb"), "--batch_size", "4", "--num_batches", "2", "--head_steps", "3",
                       "--num_samples", "2", "--no_progress", *([] if noise_floor else ["--no_noise_floor"])])
    meta = json.loads((tmp_path / "emb" / "sst2" / "embedding.json").read_text())
    compute, examples = meta["compute"], meta["examples"]
    one_pass = examples["predictions_counted"] / 2 + examples["examples_used"]
    assert compute["fisher_tokens"] == (2 if noise_floor else 1) * one_pass
    n = compute["non_embedding_parameters"]
    assert compute["flops"] == (2 + 4 * 2) * n * compute["fisher_tokens"] + 2 * n * compute["head_cache_tokens"]
    assert 0 < compute["head_cache_tokens"]

"""MNLI matched and mismatched from one trained model, as GLUE reports them: a run of `mnli` scores
the same model on both dev sets, the mismatched one found beside --validation_file or named by
--validation_mismatched_file."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import run_target_task_GPT2_sst2_multiple as target
from utils.data.loading import companion_file, load_task_data
from utils.data.loading import sample_file
from utils.models.loading import load_model
from utils.run.errors import ToolkitError


def test_the_mismatched_file_is_found_beside_the_matched_one_or_named(tmp_path):
    matched = tmp_path / "dev_matched.tsv"
    matched.write_text("x")
    with pytest.raises(ToolkitError, match="none of dev_mismatched.tsv, dev_mismatched.tsv lies beside it; give its "
                                           "file with --validation_mismatched_file"):
        companion_file(matched, None, "mismatched", "--validation_mismatched_file")
    (tmp_path / "dev_mismatched.tsv").write_text("y")
    assert companion_file(matched, None, "mismatched", "--flag") == str(tmp_path / "dev_mismatched.tsv")
    own = tmp_path / "validation_matched.jsonl"
    own.write_text("x")
    (tmp_path / "dev_mismatched.tsv").unlink()
    (tmp_path / "validation_mismatched.jsonl").write_text("y")
    assert companion_file(own, None, "mismatched", "--flag") == str(tmp_path / "validation_mismatched.jsonl")
    assert companion_file(own, "elsewhere.tsv", "mismatched", "--flag") == "elsewhere.tsv"
    assert companion_file(None, None, "mismatched", "--flag") is None          # the Hub's split


@pytest.mark.slow
def test_one_mnli_run_reports_matched_and_mismatched_from_one_model(tiny_checkpoint, tmp_path):
    out = tmp_path / "mnli"
    summary = target.main(["--pretrained_model", str(tiny_checkpoint), "--dataset_name", "mnli",
                           "--train_file", str(sample_file("mnli", "train")),
                           "--validation_file", str(sample_file("mnli", "validation")), "--seeds", "5",
                           "--epochs", "1", "--batch_size", "4", "--learning_rate", "1e-3", "--selection", "last",
                           "--save_model", "last", "--output_dir", str(out), "--features_cache_dir", "none",
                           "--no_progress"])
    assert summary["primary_metric"] == "accuracy" and summary["metrics"] == ["accuracy", "accuracy_mismatched"]
    results = json.loads((out / "runs" / "seed_5" / "all_results.json").read_text())
    assert results["eval_accuracy_matched"] == results["eval_accuracy"]
    for suffix, split, key in (("", "mnli", "eval_accuracy_matched"), ("_mismatched", "mnli-mm", "eval_accuracy_mismatched")):
        rows = [json.loads(line) for line in (out / "runs" / "seed_5" / f"predictions{suffix}.jsonl").open()]
        records = load_task_data(split, "validation", sample_file(split, "validation")).records
        assert [row["id"] for row in rows] == [r["id"] for r in records] and len(rows) == 9
        assert results[key] == pytest.approx(np.mean([row["label"] == int(np.argmax(row["logits"])) for row in rows]))
        assert summary[key]["mean"] == results[key]
    # The mismatched logits are the saved model's, one sentence pair at a time: the same model.
    loaded = load_model(str(out / "runs" / "seed_5" / "model"), "classification",
                        label_names=("entailment", "neutral", "contradiction"))
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    rows = [json.loads(line) for line in (out / "runs" / "seed_5" / "predictions_mismatched.jsonl").open()]
    for record, row in zip(load_task_data("mnli-mm", "validation", sample_file("mnli-mm", "validation")).records, rows):
        ids = tokenizer(record["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] \
            + tokenizer(record["text_pair"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        np.testing.assert_allclose(logits.numpy(), row["logits"], rtol=1e-4, atol=1e-5)
    assert json.loads((out / "data_subsets.json").read_text())["validation_mismatched"]["total"] == 9
    assert json.loads((out / "adapter_stats_validation_mismatched.json").read_text())["kept"] == 9


@pytest.mark.slow
def test_a_matched_file_alone_is_refused_and_the_flag_is_for_mnli_only(tiny_checkpoint, tmp_path, capsys):
    alone = tmp_path / "only"
    alone.mkdir()
    shutil.copy(sample_file("mnli", "validation"), alone / "dev_matched.tsv")
    common = ["--pretrained_model", str(tiny_checkpoint), "--train_file", str(sample_file("mnli", "train")),
              "--num_runs", "1", "--epochs", "1", "--features_cache_dir", "none", "--no_progress"]
    with pytest.raises(ToolkitError, match="give its file with --validation_mismatched_file"):
        target.main([*common, "--dataset_name", "mnli", "--validation_file", str(alone / "dev_matched.tsv"),
                     "--output_dir", str(tmp_path / "a")])
    with pytest.raises(SystemExit):
        target.main([*common, "--dataset_name", "rte", "--validation_mismatched_file", "x.tsv",
                     "--output_dir", str(tmp_path / "b")])
    assert "--validation_mismatched_file is for mnli" in capsys.readouterr().err

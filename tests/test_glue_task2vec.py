"""GLUE targets in Task2Vec: STS-B's lm rows (its score, written with one decimal, is the answer
word), the task objective refused for a regression target, and rte and stsb embedded beside two QA
tasks and compared with TaskDiversity.py as a user runs them."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy.spatial.distance import cosine as scipy_cosine

import TaskDiversity
from task2vec import __main__ as task2vec_cli
from task2vec.embedding.sequences import task_rows
from utils.data.loading import load_task_data
from utils.data.registry import get_task
from utils.data.loading import sample_file
from utils.models.loading import load_model
from utils.run.errors import ToolkitError

SMALL = ["--batch_size", "4", "--num_batches", "2", "--head_steps", "5", "--num_samples", "2", "--no_progress"]


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):
    return load_model(str(tiny_checkpoint), "lm").tokenizer


def stsb_records() -> list[dict]:
    return load_task_data(get_task("stsb"), "train", sample_file("stsb", "train")).records


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_stsb_lm_row_is_the_pair_then_the_score_with_one_decimal(tokenizer):
    records = stsb_records()
    built = task_rows(get_task("stsb"), records, tokenizer, "lm", max_length=128)
    assert (built.unused, built.truncated) == (0, 0) and built.record_ids == [r["id"] for r in records]
    eos = tokenizer.eos_token_id
    first = records[0]
    assert first["label"] == 5.0   # data/samples/glue/stsb/train.tsv: "5.000"
    expected = (encode(tokenizer, first["text"]) + [eos] + encode(tokenizer, first["text_pair"])
                + encode(tokenizer, "\nAnswer:") + encode(tokenizer, " 5.0") + [eos])
    assert built.rows[0]["input_ids"] == expected
    assert tokenizer.decode(expected[-len(encode(tokenizer, "\nAnswer: 5.0")) - 1:-1]) == "\nAnswer: 5.0"
    for record, row in zip(records, built.rows):   # every score, e.g. 4.800 -> " 4.8"
        word = " " + ("%.1f" % record["label"])
        assert row["input_ids"] == (encode(tokenizer, record["text"]) + [eos] + encode(tokenizer, record["text_pair"])
                                    + encode(tokenizer, "\nAnswer:") + encode(tokenizer, word) + [eos])


def test_stsb_lm_rows_leave_room_for_the_longest_score_word_of_the_range(tokenizer):
    records = stsb_records()
    built = task_rows(get_task("stsb"), records, tokenizer, "lm", max_length=24)
    # Every score word of STS-B's range [0, 5], whichever records were drawn.
    longest = max(len(encode(tokenizer, " %.1f" % (k / 10))) + 1 for k in range(51))
    assert built.cut_to == 24 - len(encode(tokenizer, "\nAnswer:")) - longest
    assert built.truncated > 0 and all(len(row["input_ids"]) <= 24 for row in built.rows)


def test_task_objective_on_stsb_is_a_one_line_error_naming_the_lm_objective(tokenizer, tiny_checkpoint, tmp_path,
                                                                              capsys):
    with pytest.raises(ToolkitError, match="regression target") as refused:
        task_rows(get_task("stsb"), stsb_records(), tokenizer, "task", max_length=128)
    assert "\n" not in str(refused.value) and "--objective lm" in str(refused.value)
    out = tmp_path / "TaskEmb"
    with pytest.raises(SystemExit) as stopped:   # a parser error, before any probe is loaded
        task2vec_cli.main(["--tasks", "rte,stsb", "--objective", "task", "--model_name", str(tmp_path / "no_model"),
                           "--use_samples", "--output_dir", str(out)])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert stopped.value.code == 2 and error.startswith("python -m task2vec: error: stsb:")
    assert "regression target" in error and "--objective lm" in error
    assert not out.exists()


def reference_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Task2Vec distance written independently: unit means, drop 0/0 coordinates, normalise the pair,
    scipy cosine."""
    a, b = a / a.mean(), b / b.mean()
    keep = (a + b) > 1e-12 * (a.mean() + b.mean())
    return float(scipy_cosine(a[keep] / (a + b)[keep], b[keep] / (a + b)[keep]))


@pytest.mark.slow
def test_rte_and_stsb_are_embedded_and_compared_as_targets(tiny_checkpoint, tmp_path):
    emb = tmp_path / "TaskEmb"
    tasks = ("rte", "stsb", "squad", "duorc-p")
    summary = task2vec_cli.main(["--tasks", ",".join(tasks), "--model_name", str(tiny_checkpoint), "--use_samples",
                                 "--output_dir", str(emb), *SMALL])
    assert set(summary["tasks"]) == set(tasks)
    stsb = json.loads((emb / "stsb" / "embedding.json").read_text(encoding="utf-8"))
    assert stsb["objective"] == "lm" and stsb["probe"]["head"] == "lm"
    # 2 batches of 4 need 8 rows; twice that many of the 26 records are tokenised (subsample_records)
    assert stsb["examples"]["rows"] == 16 and stsb["examples"]["records_without_row"] == 0
    vectors = {task: np.load(emb / task / "embedding.npy").astype(np.float64) for task in tasks}
    for target, other in (("rte", "stsb"), ("stsb", "rte")):
        out = tmp_path / f"diversity_{target}"
        TaskDiversity.main(["--emb_dir", str(emb), "--source_tasks", f"squad,duorc-p,{other}", "--target_task", target,
                            "--subset_size", "2", "--no_plots", "--output_dir", str(out)])
        report = json.loads((out / "diversity.json").read_text(encoding="utf-8"))
        assert report["target"] == target and len(report["subsets"]) == 3
        assert all(math.isfinite(s["distance_to_target"]) for s in report["subsets"])
        with open(out / "task_distances.csv", newline="", encoding="utf-8") as handle:
            rows = {row["task"]: row for row in csv.DictReader(handle)}
        for source in ("squad", "duorc-p", other):
            distance = float(rows[target][source])
            assert math.isfinite(distance) and distance > 0
            assert distance == pytest.approx(reference_distance(vectors[target], vectors[source]), rel=1e-6)

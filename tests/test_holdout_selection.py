"""Epoch selection on a hold-out in the low-resource regime: the hold-out is stratified by label and
holds every class the data allows, a hold-out that cannot tell epochs apart is reported and the last
epoch kept (never the first by accident), and the outputs say how many examples were trained on."""
from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

import run_target_task_GPT2_sst2_multiple as target
from utils.classification.evaluation import choose_epoch, holdout_problem, split_holdout
from utils.data.registry import get_task
from utils.data.loading import sample_file


def class_records(sizes: dict[int, int]) -> list[dict]:
    labels = [label for label, size in sizes.items() for _ in range(size)]
    order = np.random.default_rng(0).permutation(len(labels))
    return [{"id": f"s{i}", "text": f"sentence {i}", "label": labels[j]} for i, j in enumerate(order)]


@pytest.mark.parametrize("total, expected", [(16, 2), (32, 3), (100, 10), (1000, 100)])
def test_the_hold_out_holds_every_class_and_a_tenth(total, expected):
    """70/30 classes, as CoLA: max(2 classes, ⌊N/10⌋) held out, both classes in every draw."""
    records = class_records({1: round(0.7 * total), 0: total - round(0.7 * total)})
    for seed in range(200):
        train, holdout, classes = split_holdout(records, 1000, seed)
        assert len(holdout) == expected and len(train) == total - expected and classes == 2
        assert set(Counter(r["label"] for r in holdout)) == {0, 1}
        assert {r["id"] for r in train} | {r["id"] for r in holdout} == {r["id"] for r in records}
        assert [r["id"] for r in holdout] == [r["id"] for r in records if r in holdout]   # file order kept


def test_the_hold_out_never_takes_a_class_whole_and_respects_its_cap():
    records = class_records({0: 2, 1: 1, 2: 40})
    for seed in range(200):
        train, holdout, classes = split_holdout(records, 1000, seed)
        labels = Counter(r["label"] for r in train)
        assert labels[0] == 1 and labels[1] == 1 and len(holdout) == 4 and classes == 2   # class 1 cannot be held out
    train, holdout, classes = split_holdout(records, 1, seed=0)        # --holdout_size 1: one class, by request
    assert len(holdout) == 1 and classes == 1
    assert split_holdout(class_records({0: 1}), 1000, 0) == ([class_records({0: 1})[0]], [], 0)


def test_regression_hold_outs_take_one_record_of_each_score_bin():
    records = [{"id": f"p{i}", "text": "a", "label": float(y)} for i, y in enumerate(np.linspace(0, 5, 26))]
    _, holdout, bins = split_holdout(records, 1000, seed=0)
    assert len(holdout) == 5 and bins == 5
    # one per quantile bin: the labels fall in five different fifths of [0, 5]
    assert len({min(4, int(r["label"] // 1.0)) for r in holdout}) == 5


def test_what_makes_a_hold_out_degenerate():
    cola, stsb = get_task("cola"), get_task("stsb")
    assert holdout_problem(cola, []) == "the training data is too small to hold any example out"
    assert "same class" in holdout_problem(cola, [1])
    assert "same class" in holdout_problem(cola, [0, 0, 0])
    assert holdout_problem(cola, [0, 1]) is None
    assert "too small" in holdout_problem(stsb, [0.5, 4.0])
    assert "same score" in holdout_problem(stsb, [3.0, 3.0, 3.0])
    assert holdout_problem(stsb, [0.5, 3.0, 4.0]) is None


def test_the_epoch_is_the_best_unless_the_hold_out_cannot_tell_them_apart():
    assert choose_epoch([0.2, 0.7, 0.5], None) == (2, None)
    assert choose_epoch([0.5, 0.7, 0.7], None) == (2, None)            # a tie among the best: the earliest
    assert choose_epoch([-math.inf, 0.1], None) == (2, None)           # undefined counts as worst
    assert choose_epoch([0.4, -math.inf], None) == (1, None)
    assert choose_epoch([0.9], None) == (1, None)                      # one epoch: nothing to choose
    assert choose_epoch([0.0, 0.0, 0.0], None) == (None, "the hold-out metric is 0 at every epoch")
    assert choose_epoch([-math.inf] * 2, None) == (None, "the hold-out metric is undefined at every epoch")
    assert choose_epoch([0.2, 0.7], "too small") == (None, "too small")


def test_the_summary_names_the_seeds_that_fell_back_and_the_rule_they_took():
    from utils.classification.summary import selection_summary

    def run(seed, reason):
        return {"seed": seed, "selection": "holdout", "selection_rule": "last" if reason else "holdout",
                "selection_degenerate": reason is not None, "selection_reason": reason, "holdout_size": 2,
                "holdout_classes": 2}

    constant = "the hold-out metric is 0 at every epoch"
    mixed = selection_summary([run(13, constant), run(21, None), run(42, constant)])
    assert mixed == {"requested": "holdout", "rule": "mixed", "holdout_size": 2, "holdout_classes": 2,
                     "degenerate": True, "reason": f"seeds 13, 42: {constant}; the last epoch was kept"}
    assert selection_summary([run(21, None)])["reason"] is None
    assert selection_summary([{"seed": 1, "selection": "holdout"}]) is None     # seeds of an earlier version


def write_cola(path, total: int) -> None:
    """A CoLA-layout TSV (no header: source, label, mark, sentence), 70% acceptable."""
    rng = np.random.default_rng(1)
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "quickly", "home", "bird", "sang"]
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(total):
            label = int(i % 10 < 7)
            sentence = " ".join(rng.choice(words, size=int(rng.integers(3, 8))))
            handle.write(f"gj04\t{label}\t{'' if label else '*'}\t{sentence}.\n")


def run(task: str, checkpoint, out, train_file, *extra: str) -> dict:
    return target.main(["--pretrained_model", str(checkpoint), "--dataset_name", task, "--train_file", str(train_file),
                        "--validation_file", str(sample_file(task, "validation")), "--seeds", "3", "--epochs", "2",
                        "--batch_size", "4", "--learning_rate", "1e-3", "--output_dir", str(out),
                        "--features_cache_dir", "none", "--no_progress", *extra])


def holdout_labels(out, task: str, train_file) -> Counter:
    from utils.data.loading import load_task_data
    ids = set(json.loads((out / "data_subsets.json").read_text())["holdout"]["ids"])
    return Counter(r["label"] for r in load_task_data(task, "train", str(train_file)).records if r["id"] in ids)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["cola", "mrpc"])
def test_on_the_samples_the_hold_out_holds_both_classes(task, tiny_checkpoint, tmp_path):
    """The 12-row samples at --max_train_samples 16: 2 held out, one of each class, 10 trained on."""
    out = tmp_path / task
    summary = run(task, tiny_checkpoint, out, sample_file(task, "train"), "--max_train_samples", "16")
    assert summary["train_examples"] == 10
    assert summary["selection"]["holdout_size"] == 2 and summary["selection"]["holdout_classes"] == 2
    assert sorted(holdout_labels(out, task, sample_file(task, "train")).values()) == [1, 1]
    results = json.loads((out / "runs" / "seed_3" / "all_results.json").read_text())
    assert results["train_examples"] == 10 and len(results["holdout_curve"]) == 2
    choice = summary["selection"]
    if choice["degenerate"]:          # a constant curve: reported, and the last epoch kept
        assert choice["rule"] == "last" and results["selected_epoch"] == 2 and "every epoch" in choice["reason"]
        assert len(set(results["holdout_curve"])) == 1
    else:
        assert choice["rule"] == "holdout" and results["selected_epoch"] == 1 + int(np.argmax(results["holdout_curve"]))


@pytest.mark.slow
@pytest.mark.parametrize("budget, held, trained", [(32, 3, 29), (100, 10, 90)])
def test_larger_budgets_hold_out_a_tenth_with_both_classes(budget, held, trained, tiny_checkpoint, tmp_path):
    train_file = tmp_path / "train.tsv"
    write_cola(train_file, 120)
    out = tmp_path / "cola"
    summary = run("cola", tiny_checkpoint, out, train_file, "--max_train_samples", str(budget), "--batch_size", "16")
    assert summary["train_examples"] == trained and summary["selection"]["holdout_size"] == held
    assert set(holdout_labels(out, "cola", train_file)) == {0, 1}
    assert json.loads((out / "run_args.json").read_text())["derived"]["train_sentences"] == trained


@pytest.mark.slow
def test_a_one_class_hold_out_is_reported_and_the_last_epoch_kept(tiny_checkpoint, tmp_path, caplog):
    out = tmp_path / "cola"
    summary = run("cola", tiny_checkpoint, out, sample_file("cola", "train"), "--holdout_size", "1")
    choice = summary["selection"]
    assert choice == {"requested": "holdout", "rule": "last", "holdout_size": 1, "holdout_classes": 1,
                      "degenerate": True, "reason": "seed 3: every one of the 1 hold-out examples has the same "
                                                    "class; the last epoch was kept"}
    results = json.loads((out / "runs" / "seed_3" / "all_results.json").read_text())
    assert results["selected_epoch"] == 2 and results["selection_rule"] == "last" and results["train_examples"] == 11
    assert "the hold-out cannot choose the epoch (every one of the 1 hold-out examples" in caplog.text

"""Classification pooling, metrics and seed statistics, checked by hand and against scipy."""
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from utils.models.loading import load_model
from utils.classification.objective import ClassificationObjective, pooled_logits
from utils.results.metrics import summarize
from utils.results.seed_statistics import bootstrap_metric_difference, compare
from utils.data.loading import stratified_sample
from utils.classification.evaluation import classification_report, softmax_cross_entropy, split_holdout
from run_target_task_GPT2_sst2_multiple import resolve_seeds
from utils.run.errors import DataError, ToolkitError

LABELS = ("negative", "positive")


def test_right_padded_batch_equals_each_sentence_alone(tiny_checkpoint):
    loaded = load_model(tiny_checkpoint, "classification", label_names=LABELS)
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    sentences = ["a gorgeous , witty film .", "dull", "it never finds its footing , and the ending drags on ."]
    rows = [{"input_ids": tokenizer(s)["input_ids"], "labels": 0} for s in sentences]
    batch = ClassificationObjective(tokenizer.pad_token_id).collate(rows)
    assert batch["input_ids"].shape[1] % 8 == 0 and "token_type_ids" not in batch
    with torch.no_grad():
        batched = pooled_logits(model, batch["input_ids"], batch["attention_mask"])
        for i, row in enumerate(rows):
            ids = torch.tensor([row["input_ids"]])
            alone = pooled_logits(model, ids, torch.ones_like(ids))
            assert torch.allclose(batched[i], alone[0], atol=1e-5)
            # The model's own forward pools the same token (rightmost non-pad) when run alone.
            assert torch.allclose(model(input_ids=ids).logits[0], alone[0], atol=1e-5)


def test_batch_without_a_pad_id_is_handled(tiny_checkpoint):
    loaded = load_model(tiny_checkpoint, "classification", label_names=LABELS)
    model = loaded.model.eval()
    model.config.pad_token_id = None  # the stock forward raises for batches > 1 here
    ids = [[5, 6, 7], [8, 9]]
    batch = ClassificationObjective(pad_token_id=0).collate([{"input_ids": x, "labels": 1} for x in ids])
    with torch.no_grad():
        logits = pooled_logits(model, batch["input_ids"], batch["attention_mask"])
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_classification_report_by_hand():
    labels = [0, 0, 0, 1, 1, 1, 1]
    predictions = [0, 1, 0, 1, 1, 0, 1]
    report = classification_report(labels, predictions, LABELS)
    # negative: tp 2, predicted 3, support 3 -> p 2/3, r 2/3; positive: tp 3, predicted 4, support 4 -> p 3/4, r 3/4
    assert report["accuracy"] == pytest.approx(5 / 7)
    assert report["precision_negative"] == pytest.approx(2 / 3) and report["recall_positive"] == pytest.approx(3 / 4)
    assert report["macro_f1"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert report["weighted_f1"] == pytest.approx((3 * 2 / 3 + 4 * 3 / 4) / 7)
    assert report["support_positive"] == 4
    assert classification_report([0, 0], [0, 0], LABELS)["precision_positive"] == 0.0


def test_cross_entropy_by_hand():
    logits = np.array([[0.0, math.log(3.0)], [2.0, 2.0]])
    assert softmax_cross_entropy(logits, np.array([1, 0])) == pytest.approx((-math.log(0.75) - math.log(0.5)) / 2)


def test_summary_matches_scipy():
    values = [0.91, 0.925, 0.9, 0.915, 0.93]
    summary = summarize(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert summary["mean"] == pytest.approx(np.mean(values))
    assert summary["std"] == pytest.approx(np.std(values, ddof=1))
    assert (summary["ci_low"], summary["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert (summary["min"], summary["max"], summary["n"]) == (0.9, 0.93, 5)
    # A bounded metric's interval is the t-interval intersected with its range (RTE, two seeds).
    two = [0.25, 0.75]
    t_low, t_high = stats.t.interval(0.95, 1, loc=0.5, scale=stats.sem(two))
    assert t_low < -2 and t_high > 3
    clipped = summarize(two, bounds=(0.0, 1.0))
    assert (clipped["ci_low"], clipped["ci_high"], clipped["mean"]) == (0.0, 1.0, 0.5)
    inside = summarize(values, bounds=(0.0, 1.0))
    assert (inside["ci_low"], inside["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    from utils.classification.summary import metric_summary
    runs = [{"seed": 1, "eval_accuracy": 0.9, "eval_matthews_correlation": -0.9},
            {"seed": 2, "eval_accuracy": 0.2, "eval_matthews_correlation": 0.1}]
    accuracy, mcc = metric_summary(runs, "eval_accuracy"), metric_summary(runs, "eval_matthews_correlation")
    assert (accuracy["ci_low"], accuracy["ci_high"]) == (0.0, 1.0) and (mcc["ci_low"], mcc["ci_high"]) == (-1.0, 1.0)
    single = summarize([0.5])
    # One run says nothing about the spread: NaN, never 0.
    assert single["mean"] == 0.5 and single["n"] == 1
    assert math.isnan(single["std"]) and math.isnan(single["ci_low"]) and math.isnan(single["ci_high"])


def write_summary(folder, accuracies, correct_rows):
    """A summary.json with per-seed accuracies and predictions files (correct_rows: seed -> 0/1 list)."""
    runs = []
    for seed, accuracy in accuracies.items():
        run_dir = folder / "runs" / f"seed_{seed}"
        run_dir.mkdir(parents=True)
        with open(run_dir / "predictions.jsonl", "w") as handle:
            for i, ok in enumerate(correct_rows[seed]):
                handle.write(json.dumps({"id": str(i), "label": 1, "prediction": 1 if ok else 0}) + "\n")
        runs.append({"seed": seed, "eval_accuracy": accuracy, "predictions": f"runs/seed_{seed}/predictions.jsonl"})
    (folder / "summary.json").write_text(json.dumps({"runs": runs}))
    return folder / "summary.json"


def test_comparison_by_hand(tmp_path):
    a = {1: 0.80, 2: 0.82, 3: 0.78}
    b = {1: 0.83, 2: 0.84, 3: 0.80}
    rows_a = {s: [1] * 8 + [0] * 2 for s in a}
    rows_b = {s: [1] * 9 + [0] * 1 for s in b}
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    result = compare(write_summary(tmp_path / "a", a, rows_a), write_summary(tmp_path / "b", b, rows_b),
                     bootstrap=2000)
    # Hand computation: differences 0.03, 0.02, 0.02; mean 0.07/3; sd = sqrt(((1/300)^2*2 + (2/300)^2)/2).
    diffs = [0.03, 0.02, 0.02]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    t = mean / (sd / math.sqrt(3))
    p = 2 * stats.t.sf(abs(t), df=2)
    assert result["paired"]["mean"] == pytest.approx(mean)
    assert result["paired"]["std"] == pytest.approx(sd)
    assert result["paired_t_p_value"] == pytest.approx(p)
    assert result["mean_difference"] == pytest.approx(mean)
    # Per example, B − A is 1 on one of ten examples and 0 elsewhere (the same for every seed): every
    # draw's mean lies in [0, 1] and the interval holds the observed 0.1.
    assert 0 <= result["bootstrap"]["ci_low"] <= 0.1 <= result["bootstrap"]["ci_high"] <= 1


def test_bootstrap_is_exact_on_a_constant_difference():
    labels, a, b = np.ones(50, dtype=int), np.zeros((4, 50), dtype=int), np.ones((4, 50), dtype=int)
    assert bootstrap_metric_difference(labels, a, b, "accuracy", samples=200, seed=0) == (1.0, 1.0, 0)


def test_metric_bootstrap_equals_a_brute_force_loop_and_the_accuracy_path():
    """The recomputing bootstrap against a loop written here with scipy (Pearson), and the 0/1-cell
    bootstrap of accuracy against the same loop over per-seed accuracies."""
    rng = np.random.default_rng(3)
    labels = rng.uniform(0, 5, size=30)
    a = labels + rng.normal(0, 2.0, size=(3, 30))
    b = labels + rng.normal(0, 1.0, size=(3, 30))
    low, high, undefined = bootstrap_metric_difference(labels, a, b, "pearson", samples=300, seed=7)
    draw = np.random.default_rng(7)
    expected = []
    for _ in range(300):
        rows, columns = draw.integers(3, size=3), draw.integers(30, size=30)
        expected.append(np.mean([stats.pearsonr(labels[columns], b[s, columns])[0]
                                 - stats.pearsonr(labels[columns], a[s, columns])[0] for s in rows]))
    assert undefined == 0
    assert (low, high) == (pytest.approx(np.quantile(expected, 0.025)), pytest.approx(np.quantile(expected, 0.975)))
    classes = rng.integers(0, 2, size=40)
    guess_a, guess_b = rng.integers(0, 2, size=(4, 40)), rng.integers(0, 2, size=(4, 40))
    draw, expected = np.random.default_rng(1), []
    for _ in range(200):
        rows, columns = draw.integers(4, size=4), draw.integers(40, size=40)
        expected.append(np.mean([np.mean(guess_b[s, columns] == classes[columns])
                                 - np.mean(guess_a[s, columns] == classes[columns]) for s in rows]))
    assert bootstrap_metric_difference(classes, guess_a, guess_b, "accuracy", samples=200, seed=1) == \
        (pytest.approx(np.quantile(expected, 0.025)), pytest.approx(np.quantile(expected, 0.975)), 0)


def test_comparison_defaults_to_the_primary_metric_and_refuses_other_targets(tmp_path):
    def summary(folder, target, values):
        runs = []
        for seed, (scores, correlation) in values.items():
            run_dir = folder / "runs" / f"seed_{seed}"
            run_dir.mkdir(parents=True)
            run_dir.joinpath("predictions.jsonl").write_text("".join(
                json.dumps({"id": str(i), "label": float(i), "prediction": float(x)}) + "\n" for i, x in enumerate(scores)))
            runs.append({"seed": seed, "eval_pearson": correlation, "predictions": f"runs/seed_{seed}/predictions.jsonl"})
        folder.joinpath("summary.json").write_text(json.dumps({"target_task": target, "primary_metric": "pearson",
                                                               "runs": runs}))
        return folder / "summary.json"

    a = summary(tmp_path / "a", "stsb", {1: ([0, 2, 1, 3], 0.8), 2: ([1, 0, 2, 3], 0.6)})
    b = summary(tmp_path / "b", "stsb", {1: ([0, 1, 2, 3], 1.0), 2: ([0, 1, 3, 2], 0.9)})
    result = compare(a, b, bootstrap=50)
    assert result["metric"] == "eval_pearson" and result["paired_differences"] == pytest.approx([0.2, 0.3])
    assert result["bootstrap"]["samples"] == 50 and "ci_low" in result["bootstrap"]
    other = summary(tmp_path / "c", "cola", {1: ([0, 1, 2, 3], 1.0)})
    with pytest.raises(DataError, match="different targets"):
        compare(a, other, bootstrap=0)


def test_seeds_subsets_and_holdout():
    assert resolve_seeds(None, None) == [13, 21, 42, 87, 100]
    assert resolve_seeds(7, None) == [13, 21, 42, 87, 100, 101, 102]
    assert resolve_seeds(None, [3, 4]) == [3, 4]
    with pytest.raises(ToolkitError):
        resolve_seeds(3, [1, 2])
    records = [{"id": str(i), "text": "x", "label": i % 2} for i in range(100)]
    subset, _ = stratified_sample(records, 30, seed=0)
    assert len(subset) == 30 and subset == stratified_sample(records, 30, seed=0)[0] != stratified_sample(records, 30, seed=1)[0]
    train, holdout, classes = split_holdout(subset, 1000, seed=0)
    assert len(holdout) == 3 and len(train) == 27 and not {r["id"] for r in train} & {r["id"] for r in holdout}
    assert classes == 2

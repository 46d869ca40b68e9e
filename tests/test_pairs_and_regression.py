"""Sentence pairs and regression targets: the pair's truncation rule against a token-by-token simulation,
the features against the tokenizer, the one-output head and its MSE objective against a hand computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from utils.results.metrics import accuracy, pearson
from utils.classification.objective import (ClassificationObjective, RegressionObjective, classification_features,
                                            join_pair, pooled_logits)
from utils.models.loading import load_model
from utils.models.tiny import build_tiny_model, train_tokenizer
from utils.run.outputs import JsonlLog
from utils.training.loop import LoopSettings
from utils.training.runtime import RunContext
from utils.training.loop import train
from utils.training.runtime import resolve_precision, set_seed


def simulate_longest_first(first: list[int], second: list[int], budget: int) -> tuple[list[int], list[int]]:
    """The rule as stated, one token at a time: while too long, the longer text (the first on a tie)
    loses its last token."""
    first, second = list(first), list(second)
    while len(first) + len(second) > budget:
        if len(first) >= len(second):
            first.pop()
        else:
            second.pop()
    return first, second


@pytest.mark.parametrize("seed", range(20))
def test_pair_truncation_equals_the_token_by_token_rule(seed):
    rng = np.random.default_rng(seed)
    first = list(rng.integers(10, 99, rng.integers(1, 40)))
    second = list(rng.integers(100, 199, rng.integers(1, 40)))
    max_length = int(rng.integers(3, 50))
    joined, cut = join_pair(first, second, 0, max_length)
    kept_first, kept_second = simulate_longest_first(first, second, max_length - 1)
    assert joined == kept_first + [0] + kept_second
    assert cut == (len(first) + len(second) + 1 > max_length)
    assert len(joined) <= max_length


def test_pair_truncation_by_hand():
    # 10 + 3 tokens into 8: the first text gives up 6 (down to 4), the separator and the second stay.
    joined, cut = join_pair(list(range(1, 11)), [21, 22, 23], 0, 8)
    assert joined == [1, 2, 3, 4, 0, 21, 22, 23] and cut
    assert join_pair([1, 2], [3], 0, 8) == ([1, 2, 0, 3], False)
    assert join_pair([], [3], 0, 8) == ([0, 0, 3], False)   # an empty text is one separator token
    with pytest.raises(ValueError, match="max_length >= 3"):
        join_pair([1], [2], 0, 2)


def test_pair_features_are_the_two_tokenizations_around_eos(tiny_checkpoint):
    tokenizer = load_model(tiny_checkpoint, "lm").tokenizer
    batch = {"text": ["the cat sat", "a very long first sentence that goes on and on and on"],
             "text_pair": ["on the mat", "short"], "label": [1, 0]}
    features = classification_features(batch, tokenizer, max_length=12)
    first = tokenizer("the cat sat", add_special_tokens=False)["input_ids"]
    second = tokenizer("on the mat", add_special_tokens=False)["input_ids"]
    assert features["input_ids"][0] == first + [tokenizer.eos_token_id] + second
    assert features["truncated"] == [False, True]
    assert len(features["input_ids"][1]) == 12 and features["input_ids"][1][-1] == tokenizer("short")["input_ids"][-1]
    assert features["labels"] == [1, 0]


def test_regression_head_and_mse_objective(tiny_checkpoint):
    set_seed(0)
    loaded = load_model(tiny_checkpoint, "classification", regression=True)
    model = loaded.model.eval()
    assert model.config.num_labels == 1 and model.config.problem_type == "regression"
    objective = RegressionObjective(loaded.tokenizer.pad_token_id)
    rows = [{"input_ids": [5, 6, 7], "labels": 2.5}, {"input_ids": [8, 9], "labels": 0.4}]
    batch = objective.collate(rows)
    assert batch["labels"].dtype == torch.float32
    with torch.no_grad():
        scores = pooled_logits(model, batch["input_ids"], batch["attention_mask"])[:, 0]
        expected = ((scores[0] - 2.5) ** 2 + (scores[1] - 0.4) ** 2) / 2
        assert torch.allclose(objective.loss(model, batch), expected, rtol=1e-6)
        # the model's own regression loss (problem_type) on the same last tokens agrees
        own = model(input_ids=torch.tensor([[5, 6, 7]]), labels=torch.tensor([2.5])).loss
        assert torch.allclose(own, (scores[0] - 2.5) ** 2, rtol=1e-5)
        assert [float(s[0]) for s in objective.forward(model, batch)] == pytest.approx(scores.tolist(), rel=1e-6)


# ----------------------------------------------------------------------------- learning signal

WORDS = "red blue green gold black white pink gray cyan teal lime navy".split()


def synthetic_pairs(rule: str, count: int, seed: int) -> list[dict]:
    """Pairs of colour-word sentences whose label needs both texts or only the second:
    first: do the two sentences start with the same word (half of them do);
    second: is the second sentence's first word among the first six colours (the control: only the
        second text decides, so a model that learns it sees the second text);
    overlap: how many words the two share (3 distinct words each out of 6: 0 to 3, a regression)."""
    rng = np.random.default_rng(seed)
    pool, size = (WORDS[:6], 3) if rule == "overlap" else (WORDS, 4)
    records = []
    for _ in range(count):
        first, second = list(rng.choice(pool, size, replace=False)), list(rng.choice(pool, size, replace=False))
        if rule == "first":
            if rng.random() < 0.5:
                second[0] = first[0]
            elif second[0] == first[0]:
                second[0] = WORDS[(WORDS.index(first[0]) + 1) % len(WORDS)]
            label: float = int(first[0] == second[0])
        elif rule == "second":
            label = int(second[0] in WORDS[:6])
        else:
            label = float(len(set(first) & set(second)))
        records.append({"text": " ".join(first), "text_pair": " ".join(second), "label": label})
    return records


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("colours")
    train_tokenizer(iter([" ".join(WORDS)] * 10), 300).save_pretrained(str(folder / "tokenizer"))
    return build_tiny_model(folder / "tiny", n_layer=2, n_embd=64, n_head=4, n_positions=64, dropout=0.0,
                            tokenizer_path=str(folder / "tokenizer"), seed=0)


@pytest.mark.slow
# Comparing the two first words is learned in a sudden step whose place moves with the library
# versions (at 800 steps one install gave 0.79, the steps around it 0.98): 1,600 steps clear it.
@pytest.mark.parametrize("rule, threshold, steps", [("first", 0.85, 1600), ("second", 0.95, 800),
                                                    ("overlap", 0.5, 800)])
def test_both_texts_reach_the_model(rule, threshold, steps, colour_model, tmp_path):
    """800 or 1,600 steps of the project's loop on 2,000 synthetic pairs, scored on 300 others:
    accuracy (chance 0.5) for the two class rules, Pearson's r for the overlap regression."""
    regression = rule == "overlap"
    set_seed(0)
    loaded = load_model(colour_model, "classification", label_names=None if regression else ("no", "yes"),
                        regression=regression)

    def rows(records: list[dict]) -> list[dict]:
        built = classification_features({key: [r[key] for r in records] for key in ("text", "text_pair", "label")},
                                        loaded.tokenizer, max_length=32)
        return [{"input_ids": ids, "labels": label} for ids, label in zip(built["input_ids"], built["labels"])]

    train_rows, dev_rows = rows(synthetic_pairs(rule, 2000, seed=1)), rows(synthetic_pairs(rule, 300, seed=2))
    objective = (RegressionObjective if regression else ClassificationObjective)(loaded.tokenizer.pad_token_id)
    device = torch.device("cpu")
    ctx = RunContext(device, resolve_precision("fp32", device), output_dir=tmp_path, log=JsonlLog(tmp_path / "log.jsonl"))
    settings = LoopSettings(learning_rate=3e-3, max_steps=steps, per_device_train_batch_size=32, warmup_ratio=0.1,
                            logging_steps=2000)
    train(loaded.model, train_rows, [len(r["input_ids"]) for r in train_rows], objective, settings, ctx,
          save_model=lambda model, folder: None)
    model = loaded.model.eval()
    batch = objective.collate(dev_rows)
    with torch.no_grad():
        outputs = pooled_logits(model, batch["input_ids"], batch["attention_mask"]).float()
    if regression:
        score = pearson(batch["labels"].tolist(), outputs[:, 0].tolist()).value
    else:
        score = accuracy(batch["labels"].tolist(), outputs.argmax(1).tolist()).value
    print(f"{rule}: {'Pearson' if regression else 'accuracy'} {score:.3f} on 300 held-out pairs")
    assert score >= threshold

"""Selectors and their inputs: TextEmb and last-token features against per-text loops, vocabulary
overlap by hand, and a synthetic benchmark with a known ground truth on which the informed
selectors rank sources well and the random one does not."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from utils.models.loading import load_model
from task2vec.selection.selectors import last_token_features, record_text, text_embedding, vocabulary
from task2vec.selection.scores import ndcg_at_k
from task2vec.selection.selectors import SELECTORS, SelectionInputs, predict
from utils.run.errors import ToolkitError

TEXTS = ["a man plays the guitar", "the dog runs", "two kids sit on a bench in the park"]


@pytest.fixture(scope="module")
def lm(tiny_checkpoint):
    loaded = load_model(tiny_checkpoint, "lm")
    return loaded.model.eval(), loaded.tokenizer


def one_by_one(model, tokenizer, text):
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        return model.transformer(input_ids=ids).last_hidden_state[0]                # (T, d)


def test_textemb_is_the_mean_over_every_token_of_every_text(lm):
    model, tokenizer = lm
    states = [one_by_one(model, tokenizer, text) for text in TEXTS]
    expected = torch.cat(states).mean(dim=0).numpy()
    np.testing.assert_allclose(text_embedding(model, tokenizer, TEXTS, batch_size=2), expected, rtol=1e-5, atol=1e-6)
    features = last_token_features(model, tokenizer, TEXTS, batch_size=2)
    np.testing.assert_allclose(features, np.stack([s[-1].numpy() for s in states]), rtol=1e-5, atol=1e-6)


def test_record_text_and_vocabulary_overlap_by_hand():
    assert record_text({"text": "A b", "text_pair": "c"}) == "A b c"
    assert record_text({"question": "Who?", "context": "Ann."}) == "Who? Ann."
    inputs = SelectionInputs(vocabularies={"s1": vocabulary(["The dog runs"]), "s2": vocabulary(["a cat"]),
                                           "t": vocabulary(["the cat runs fast"])})
    # {the, dog, runs} ∪ {a, cat} against {the, cat, runs, fast}: 3 shared of 6 in the union.
    assert predict("vocabulary_overlap", inputs, [("s1", "s2")], "t").scores[0] == pytest.approx(3 / 6)
    assert predict("vocabulary_overlap", inputs, [("s1",)], "t").scores[0] == pytest.approx(2 / 5)


def test_missing_inputs_and_unknown_selectors_are_one_line_errors():
    with pytest.raises(ToolkitError, match="no Task2Vec embedding .* squad"):
        predict("task2vec", SelectionInputs(), [("squad",)], "sst2")
    with pytest.raises(ToolkitError, match="unknown selector 'oracle'; known: task2vec"):
        predict("oracle", SelectionInputs(), [("squad",)], "sst2")


def synthetic_benchmark(seed: int, sources: int = 8):
    """Sources whose transfer gain is a known decreasing function of their distance to the target,
    seen by the selectors through their embeddings, texts' vocabularies and data sizes."""
    rng = np.random.default_rng(seed)
    target = rng.uniform(0.5, 1.5, size=16)                              # Fisher diagonals are non-negative
    names = [f"s{i}" for i in range(sources)]
    offsets = np.linspace(0.1, 2.0, sources)[rng.permutation(sources)]
    embeddings = {"t": target}
    for name, offset in zip(names, offsets):
        direction = rng.normal(size=16)
        embeddings[name] = target * np.exp(offset * direction / np.linalg.norm(direction))
    gain = 0.05 * (2.2 - offsets)                                        # closer helps more, all positive
    words = [f"w{i}" for i in range(100)]
    vocabularies = {"t": frozenset(words[:40])}
    for name, offset in zip(names, offsets):                             # overlap falls with distance
        shared = int(round(40 * (1 - offset / 2.2)))
        vocabularies[name] = frozenset(words[:shared] + words[60:80])
    inputs = SelectionInputs(embeddings=embeddings, vocabularies=vocabularies,
                             data_sizes={name: int(rng.integers(100, 10_000)) for name in names}, seed=seed)
    return inputs, [(name,) for name in names], gain


def test_on_a_known_ground_truth_informed_selectors_rank_well_and_random_does_not(capsys):
    table = {name: [] for name in ("task2vec", "vocabulary_overlap", "data_size", "random")}
    for seed in range(10):
        inputs, sources, gain = synthetic_benchmark(seed)
        for name in table:
            table[name].append(ndcg_at_k(predict(name, inputs, sources, "t").scores, gain, 3).value)
    means = {name: float(np.mean(values)) for name, values in table.items()}
    with capsys.disabled():
        print("NDCG@3 on the synthetic benchmark (10 draws):", {k: round(v, 3) for k, v in means.items()})
    assert means["task2vec"] > 0.98 and means["vocabulary_overlap"] > 0.98
    assert means["random"] < 0.85 and means["data_size"] < 0.85
    assert set(SELECTORS) >= set(table)


def test_one_ranking_uses_one_kind_of_value_for_every_source():
    """Two identical sources, one without its re-embedding: both are ranked on raw values (the
    same number), and the reason is given; with every re-embedding, both are corrected."""
    rng = np.random.default_rng(3)
    target = rng.uniform(0.5, 1.5, size=64)
    source = target * np.exp(0.4 * rng.normal(size=64))
    def noisy(vector, seed):
        return vector * np.exp(0.3 * np.random.default_rng(seed).normal(size=64))
    embeddings = {"a": noisy(source, 1), "b": noisy(source, 1), "t": noisy(target, 2)}
    reseeded = {"a": noisy(source, 4), "b": noisy(source, 4), "t": noisy(target, 5)}
    sets = [("a",), ("b",)]
    full = predict("task2vec", SelectionInputs(embeddings=embeddings, reseeded=reseeded), sets, "t")
    assert full.values == "corrected" and full.reason is None
    assert full.scores[0] == full.scores[1]
    lacking = predict("task2vec", SelectionInputs(embeddings=embeddings, reseeded={**reseeded, "b": None}), sets, "t")
    assert lacking.values == "raw" and "of b" in lacking.reason
    assert lacking.scores[0] == lacking.scores[1]
    # Independent computation: minus the Task2Vec distance, 1 − <u,v>/(|u||v|) with u = a/(a+b),
    # v = b/(a+b) after each is divided by its mean (task2vec.analysis.distances.task2vec_distance).
    a, t = embeddings["a"] / embeddings["a"].mean(), embeddings["t"] / embeddings["t"].mean()
    u, v = a / (a + t), t / (a + t)
    assert lacking.scores[0] == pytest.approx(-(1 - u @ v / (np.linalg.norm(u) * np.linalg.norm(v))), rel=1e-9)
    # Mixed before: the corrected score of a and the raw one of b differed by the noise bias alone.
    assert full.scores[0] > lacking.scores[1]

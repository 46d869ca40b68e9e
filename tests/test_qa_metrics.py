"""Each QA dataset scored with its official metric over every question: DuoRC against all its
original answer strings, DROP and Quoref against the gold read straight from the original files,
the SQuAD v2 threshold sweeps; and the seeded, document-stratified subsets."""
import itertools
import json
import re
import string
from collections import Counter

import numpy as np
import pytest

from utils.data.loading import load_task_data
from utils.drop_metric import drop_golds_from_file
from utils.squad_metric import golds_from_squad_json
from utils.qa.metrics import drop_scores, quoref_scores
from utils.qa.metrics import best_threshold, score_qa
from utils.data.records import make_qa_record
from utils.data.loading import sample_file
from utils.qa.metrics import squad_v2_scores
from utils.data.loading import proportional_quotas, stratified_sample
from utils.data.registry import get_task


# ----------------------------------------------------------------------------- DuoRC

def duorc_reference(movies: list, predictions: dict) -> tuple[float, float]:
    """DuoRC's evaluate.py rules written out here: SQuAD v1.1 normalisation and token F1, max over
    the question's answer strings, ["NA"] when it has none, a missing prediction scores 0."""
    def norm(text):
        text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
        return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())

    def f1(pred, gold):
        p, g = norm(pred).split(), norm(gold).split()
        same = sum((Counter(p) & Counter(g)).values())
        return 0.0 if same == 0 else 2 * (same / len(p)) * (same / len(g)) / (same / len(p) + same / len(g))

    em_total = f1_total = count = 0
    for movie in movies:
        for qa in movie["qa"]:
            count += 1
            if qa["id"] not in predictions:
                continue
            golds = qa["answers"] or ["NA"]
            em_total += max(float(norm(predictions[qa["id"]]) == norm(g)) for g in golds)
            f1_total += max(f1(predictions[qa["id"]], g) for g in golds)
    return 100 * em_total / count, 100 * f1_total / count


def test_duorc_every_question_against_every_original_answer_string():
    path = sample_file("duorc-p", "validation")
    movies = json.loads(path.read_text())
    data = load_task_data("duorc-p", "validation", path)
    assert len(data.records) == sum(len(m["qa"]) for m in movies)          # no question left out
    assert data.stats.without_located_answer["answer_not_in_plot"] > 0      # ... including these
    rng = np.random.default_rng(0)
    predictions = {}
    for movie in movies:
        for qa in movie["qa"]:
            draw = rng.integers(4)
            if draw == 0 and qa["answers"]:
                predictions[qa["id"]] = qa["answers"][-1]                     # an answer string, found or not
            elif draw == 1:
                predictions[qa["id"]] = ""                                    # abstain: written as "NA"
            elif draw == 2:
                words = movie["plot"].split()
                start = int(rng.integers(len(words) - 3))
                predictions[qa["id"]] = " ".join(words[start:start + 3])
    result = score_qa(get_task("duorc-p"), data.records, predictions)
    written = {qid: text or "NA" for qid, text in predictions.items()}
    exact, f1 = duorc_reference(movies, written)
    assert result["exact_match"] == pytest.approx(exact) and result["f1"] == pytest.approx(f1)
    assert result["total"] == result["samples"] == len(data.records)
    assert result["without_located_answer"] == data.stats.without_located_answer["answer_not_in_plot"]
    assert result["HasAns_total"] + result.get("NoAns_total", 0) == len(data.records)


# ----------------------------------------------------------------------------- DROP and Quoref

def test_drop_records_carry_the_official_gold_of_the_file():
    path = sample_file("drop", "validation")
    data = load_task_data("drop", "validation", path)
    rng = np.random.default_rng(1)
    predictions = {}
    for record in data.records:
        choice = rng.integers(3)
        predictions[record["id"]] = (record["gold"][0] if choice == 0 else
                                     str(rng.integers(10)) if choice == 1 else record["context"].split()[0])
    from_records = score_qa(get_task("drop"), data.records, predictions)
    from_file = drop_scores(drop_golds_from_file(json.loads(path.read_text()), str(path)), predictions)
    assert from_records["exact_match"] == pytest.approx(from_file["exact_match"])
    assert from_records["f1"] == pytest.approx(from_file["f1"])
    assert from_records["samples"] == from_file["total"] == len(data.records)
    for kind, values in from_file["per_type"].items():
        assert from_records[f"{kind}_total"] == values["total"]
        assert from_records[f"{kind}_f1"] == pytest.approx(values["f1"])


def test_quoref_records_carry_the_official_gold_of_the_file():
    path = sample_file("quoref", "validation")
    data = load_task_data("quoref", "validation", path)
    predictions = {r["id"]: r["gold"][0][:1] if i % 2 else " ".join(r["gold"][0]) for i, r in enumerate(data.records)}
    from_records = score_qa(get_task("quoref"), data.records, predictions)
    from_file = quoref_scores(golds_from_squad_json(json.loads(path.read_text()), str(path))[0], predictions)
    assert from_records["f1"] == pytest.approx(from_file["f1"]) and from_records["samples"] == from_file["total"]


# ----------------------------------------------------------------------------- threshold sweeps

def test_best_threshold_equals_brute_force_over_every_threshold():
    rng = np.random.default_rng(2)
    for trial in range(200):
        n = int(rng.integers(1, 12))
        ids = [f"q{i}" for i in range(n)]
        answer = {q: float(rng.choice([0.0, 0.5, 1.0])) for q in ids}
        abstain = {q: float(rng.choice([0.0, 1.0])) for q in ids}
        odds = {q: float(rng.integers(-3, 4)) for q in ids}          # small integers: many ties
        best, threshold = best_threshold(answer, abstain, odds)
        brute = max(100 * np.mean([answer[q] if odds[q] <= t else abstain[q] for q in ids])
                    for t in [-np.inf, *odds.values()])
        assert best == pytest.approx(brute)
        t = -np.inf if threshold is None else threshold
        assert best == pytest.approx(100 * np.mean([answer[q] if odds[q] <= t else abstain[q] for q in ids]))


def v2_record(qid, texts):
    return make_qa_record(record_id=qid, task="squad_v2", context="Paris is in France. " * 2, question="?",
                          texts=texts, starts=[0] * len(texts))


def test_squad_v2_best_scores_sweep_the_best_non_null_answers():
    records = [v2_record("a", ["Paris"]), v2_record("b", ["Paris"]), v2_record("c", [])]
    # "a" was thresholded to "" (odds 0.5 > 0) although its best answer is right.
    predictions = {"a": "", "b": "Paris", "c": ""}
    best_non_null = {"a": "Paris", "b": "Paris", "c": "France"}
    odds = {"a": 0.5, "b": -1.0, "c": 2.0}


    result = score_qa(get_task("squad_v2"), records, predictions, null_odds=odds, best_non_null=best_non_null)
    assert result["exact"] == pytest.approx(200 / 3)
    # Oracle: answering a and b, abstaining on c (any threshold in [0.5, 2)) is right everywhere.
    assert result["best_exact"] == pytest.approx(100.0) and result["best_exact_thresh"] == pytest.approx(0.5)
    # The official sweep runs over the thresholded texts: "a" cannot be won back.
    official = squad_v2_scores({"a": ["Paris"], "b": ["Paris"], "c": []}, predictions, odds, na_prob_thresh=None)
    assert result["official_best_exact"] == official["best_exact"] == pytest.approx(200 / 3)


def test_duorc_sweep_abstains_with_na():
    records = [make_qa_record(record_id="x", task="duorc-p", context="Tom runs.", question="?", texts=[], starts=[],
                              gold=[]),
               make_qa_record(record_id="y", task="duorc-p", context="Tom runs.", question="?", texts=["Tom"],
                              starts=[0])]
    result = score_qa(get_task("duorc-p"), records, {"x": "Tom", "y": "Tom"}, null_odds={"x": 3.0, "y": 1.0},
                      best_non_null={"x": "Tom", "y": "Tom"})
    assert result["exact_match"] == pytest.approx(50.0)
    assert result["best_exact"] == pytest.approx(100.0) and result["best_exact_thresh"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- subsets

def test_quotas_are_proportional_and_every_record_equally_likely():
    sizes = [200, 3, 17, 1, 1, 50, 8]
    total = sum(sizes)
    rng = np.random.default_rng(3)
    for count in (1, 7, 40, total):
        quotas = proportional_quotas(sizes, count, rng)
        assert quotas.sum() == count
        assert np.all(np.abs(quotas - count * np.array(sizes) / total) < 1)
    records = [{"id": str(i), "context": f"doc{k}"} for k, size in enumerate(sizes) for i in range(size)]
    records = [{**r, "id": str(i)} for i, r in enumerate(records)]
    draws, count = 3000, 30
    chosen = np.zeros(total)
    for seed in range(draws):
        subset, info = stratified_sample(records, count, seed)
        assert len(subset) == count and info.count == count and [r["id"] for r in subset] == info.ids
        chosen[[int(r["id"]) for r in subset]] += 1
    p = count / total
    assert np.all(np.abs(chosen / draws - p) < 5 * np.sqrt(p * (1 - p) / draws))


def test_a_subset_spreads_over_documents_and_is_seeded():
    # As SQuAD dev: the first 200 questions are one article.
    records = [{"id": f"{a}-{i}", "context": "c", "meta": {"title": f"article{a}"}}
               for a, size in enumerate([200, 60, 60, 60, 60, 60]) for i in range(size)]
    subset, info = stratified_sample(records, 200, seed=7)
    titles = Counter(r["meta"]["title"] for r in subset)
    assert len(titles) == 6 and info.documents_sampled == 6 and titles["article0"] == 80
    again, _ = stratified_sample(records, 200, seed=7)
    other, _ = stratified_sample(records, 200, seed=8)
    assert again == subset and other != subset
    positions = [records.index(r) for r in subset]
    assert positions == sorted(positions)                                      # file order kept
    everything, info = stratified_sample(records, None, seed=0)
    assert everything == records and info.strategy == "all"


def test_no_two_draws_repeat_a_record():
    records = [{"id": str(i), "context": str(i % 5)} for i in range(23)]
    for seed, count in itertools.product(range(20), (1, 5, 22)):
        subset, _ = stratified_sample(records, count, seed)
        assert len({r["id"] for r in subset}) == count


# ----------------------------------------------------------------------------- MLQA

@pytest.mark.parametrize("task,prediction,gold,exact", [
    ("mlqa_en", "the answer\u2014", "answer", 100.0),     # an em dash is punctuation for MLQA (not in ASCII's list)
    ("mlqa_en", "\u201cParis\u201d", "Paris", 100.0),
    ("mlqa_de", "der Hund", "Hund", 100.0),
    ("mlqa_es", "el perro", "perro", 100.0),
    ("mlqa_de", "the dog", "dog", 0.0),                    # English articles are words in German
])
def test_mlqa_normalisation_by_answer_language(task, prediction, gold, exact):
    record = make_qa_record(record_id="q", task=task, context=gold, question="?", texts=[gold], starts=[0])
    result = score_qa(get_task(task), [record], {"q": prediction})
    assert result["exact_match"] == pytest.approx(exact) and result["metric"] == "mlqa"


def test_mlqa_english_differs_from_squad_only_in_punctuation():
    from utils.qa.metrics import squad_v1_scores

    assert squad_v1_scores({"q": ["answer"]}, {"q": "the answer\u2014"})["exact_match"] == 0.0
    assert squad_v1_scores({"q": ["answer"]}, {"q": "the answer!"})["exact_match"] == 100.0

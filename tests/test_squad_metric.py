"""The official SQuAD metric: hand-checked vectors, edge cases, and the real CS224n predictions."""
import json

import pytest

from tests.conftest import run_module
from utils.qa.metrics import f1_v1, f1_v2, normalize_answer, squad_v1_scores, squad_v2_scores


def test_normalisation():
    assert normalize_answer("  The  Cat.") == "cat"
    assert normalize_answer("An apple, a pear!") == "apple pear"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_v1_vectors_from_the_reference_notes():
    golds = {"a": ["Eiffel Tower"], "b": ["Paris"], "c": ["1813", "in the year 1813"]}
    preds = {"a": "the Eiffel Tower", "b": "Paris, France", "c": "in 1813"}
    assert f1_v1("Paris, France", "Paris") == pytest.approx(2 / 3)
    assert f1_v1("in 1813", "in the year 1813") == pytest.approx(0.8)
    scores = squad_v1_scores(golds, preds)
    assert scores["exact_match"] == pytest.approx(100 / 3, abs=1e-4)  # 33.3333
    assert scores["f1"] == pytest.approx(82.2222, abs=1e-4)


def test_v1_missing_prediction_and_empty_prediction_score_zero():
    golds = {"a": ["x"], "b": ["y"]}
    assert squad_v1_scores(golds, {"a": "x"}) == {"exact_match": 50.0, "f1": 50.0}
    assert f1_v1("", "") == 0.0  # the v1.1 script gives 0 even for empty vs empty


def test_v2_vectors_from_the_reference_notes():
    golds = {"1": [], "2": [], "3": ["Paris"], "4": ["Paris"]}
    preds = {"1": "", "2": "Paris", "3": "", "4": "Paris"}
    scores = squad_v2_scores(golds, preds)
    assert (scores["exact"], scores["HasAns_exact"], scores["NoAns_exact"]) == (50.0, 50.0, 50.0)
    assert (scores["total"], scores["HasAns_total"], scores["NoAns_total"]) == (4, 2, 2)
    assert f1_v2("", "") == 1.0 and f1_v2("Paris", "") == 0.0


def test_v2_punctuation_only_gold_is_dropped():
    # "!!!" normalises to "", so the gold becomes [""] and only an abstention is right.
    assert squad_v2_scores({"q": ["!!!"]}, {"q": ""})["exact"] == 100.0
    assert squad_v2_scores({"q": ["!!!", "Rome"]}, {"q": "rome"})["exact"] == 100.0


def brute_force_best(golds, preds, na_probs, per_question):
    """Try every threshold: abstain where na_prob > t; keep the best mean (independent of the sweep)."""
    has_answer = {q: bool(a) for q, a in golds.items()}
    best, best_t = None, None
    for t in [float("-inf")] + sorted(set(na_probs.values())):
        total = sum((0.0 if has_answer[q] else 1.0) if na_probs[q] > t else per_question[q] for q in preds)
        if best is None or total > best + 1e-12:
            best, best_t = total, t
    return 100.0 * best / len(preds), best_t


def test_v2_best_thresholds_against_brute_force():
    golds = {"a": ["x"], "b": [], "c": ["y z"], "d": [], "e": ["w"]}
    preds = {"a": "x", "b": "q", "c": "y", "d": "r", "e": "v"}
    na = {"a": -2.0, "b": 1.5, "c": 0.3, "d": -1.0, "e": 0.9}
    scores = squad_v2_scores(golds, preds, na, na_prob_thresh=None)
    exact_raw = {"a": 1, "b": 0, "c": 0, "d": 0, "e": 0}
    f1_raw = {"a": 1.0, "b": 0.0, "c": 2 * 1 * 0.5 / 1.5, "d": 0.0, "e": 0.0}
    assert scores["best_exact"] == pytest.approx(brute_force_best(golds, preds, na, exact_raw)[0])
    assert scores["best_f1"] == pytest.approx(brute_force_best(golds, preds, na, f1_raw)[0])
    assert scores["best_exact_thresh"] == -2.0  # answer only "a", abstain on the rest: 3/5


@pytest.mark.slow
def test_cs224n_predictions_official_numbers(shared_data, tmp_path):
    data = shared_data / "squad_v2.0" / "cs224n-dev-v2.0.json"
    preds_file = shared_data / "squad_v2.0" / "cs224n-dev-v2.0.bertqa-predictions.json"
    odds_file = shared_data / "squad_v2.0" / "cs224n-dev-v2.0.bertqa-null_odds.json"
    done = run_module("utils.squad_metric", str(data), str(preds_file), "--na-prob-file", str(odds_file))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # PROVENANCE.md: EM 71.0925 / F1 74.1536 over 6,078 questions (3,168 unanswerable).
    assert result["exact"] == pytest.approx(71.0925, abs=1e-4)
    assert result["f1"] == pytest.approx(74.1536, abs=1e-4)
    assert (result["total"], result["NoAns_total"], result["HasAns_total"]) == (6078, 3168, 2910)
    # Independent check of the threshold sweep: a brute force over every threshold.
    payload = json.loads(data.read_text())
    golds = {qa["id"]: [a["text"] for a in qa["answers"]] for art in payload["data"]
             for par in art["paragraphs"] for qa in par["qas"]}
    preds = json.loads(preds_file.read_text())
    odds = json.loads(odds_file.read_text())
    from utils.qa.metrics import squad_v2_raw_scores
    exact_raw, f1_raw = squad_v2_raw_scores(golds, preds)
    assert result["best_exact"] == pytest.approx(brute_force_best(golds, preds, odds, exact_raw)[0], abs=1e-9)
    assert result["best_f1"] == pytest.approx(brute_force_best(golds, preds, odds, f1_raw)[0], abs=1e-9)
    # The official evaluate-v2.0.py definition on these files (recorded values).
    assert result["best_exact"] == pytest.approx(73.47811780190852)
    assert result["best_exact_thresh"] == pytest.approx(-3.623612880706787)
    assert result["best_f1"] == pytest.approx(75.93172252069158)
    assert result["HasAns_f1"] == pytest.approx(80.6205747217895)
    assert result["NoAns_exact"] == pytest.approx(68.21338383838383)
    # NoAns_exact from first principles: share of unanswerable questions predicted "".
    no_answer = [q for q, a in golds.items() if not a]
    assert result["NoAns_exact"] == pytest.approx(100 * sum(preds[q] == "" for q in no_answer) / len(no_answer))


def test_v1_command_line(tmp_path):
    data = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "Paris is big.", "qas": [
        {"id": "q1", "question": "?", "answers": [{"text": "Paris", "answer_start": 0}]},
        {"id": "q2", "question": "?", "answers": [{"text": "big", "answer_start": 9}]}]}]}]}
    (tmp_path / "d.json").write_text(json.dumps(data))
    (tmp_path / "p.json").write_text(json.dumps({"q1": "paris", "q2": "small"}))
    done = run_module("utils.squad_metric", str(tmp_path / "d.json"), str(tmp_path / "p.json"))
    assert json.loads(done.stdout) == {"exact_match": 50.0, "f1": 50.0}
    bad = run_module("utils.squad_metric", str(tmp_path / "d.json"), str(tmp_path / "nope.json"))
    assert bad.returncode == 2 and "file not found" in bad.stderr


def test_command_line_refuses_what_the_official_scripts_choke_on(tmp_path):
    data = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "Paris is big.", "qas": [
        {"id": "q1", "question": "?", "answers": [{"text": "Paris", "answer_start": 0}], "is_impossible": False},
        {"id": "q2", "question": "?", "answers": [], "is_impossible": True}]}]}]}
    (tmp_path / "d.json").write_text(json.dumps(data))
    (tmp_path / "partial.json").write_text(json.dumps({"q1": "Paris"}))
    (tmp_path / "null.json").write_text(json.dumps({"q1": None, "q2": ""}))
    for preds, extra, fragment in (("partial.json", [], "no prediction"), ("null.json", [], "expected a string"),
                                   ("partial.json", ["--version", "1.1"], "use --version 2.0")):
        done = run_module("utils.squad_metric", str(tmp_path / "d.json"), str(tmp_path / preds), *extra)
        assert done.returncode == 2 and fragment in done.stderr and "Traceback" not in done.stderr, done.stderr

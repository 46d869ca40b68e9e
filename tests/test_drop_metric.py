"""The official DROP / Quoref metric: hand-worked cases, the reference implementation's published
test values, and the command line on the original files."""
import json

import pytest

from tests.conftest import run_module
from utils.data.formats import drop_answer_strings
from utils.drop_metric import main
from utils.qa.metrics import GoldAnswer, drop_scores, em_f1, quoref_scores


# ----------------------------------------------------------------------------- one answer, by hand

@pytest.mark.parametrize("predicted,gold,expected", [
    # A multi-span answer is conjunctive: half of it is half the F1 and no EM; order does not
    # matter; an extra span costs its share of max(#gold, #predicted) slots.
    (["Heseltine"], ["Delius", "Heseltine"], (0.0, 0.5)),
    (["Heseltine", "Delius"], ["Delius", "Heseltine"], (1.0, 1.0)),
    (["Delius", "Heseltine", "Warlock"], ["Delius", "Heseltine"], (0.0, 0.67)),
    ("Delius Heseltine", ["Delius", "Heseltine"], (0.0, 0.33)),  # one string is one span: (2/3 + 0) / 2
    # Numbers are compared as floats; words are not numbers.
    ("3", ["3"], (1.0, 1.0)),
    ("3.0", ["3"], (1.0, 1.0)),
    ("three", ["3"], (0.0, 0.0)),
    ("3 yards", ["3"], (0.0, 0.67)),
    ("4 yards", ["3 yards"], (0.0, 0.0)),       # a gold number the prediction lacks: no credit at all
    # Dates: "day month year"; F1 ignores order, EM does not.
    ("7 May 1923", ["7 May 1923"], (1.0, 1.0)),
    ("May 7, 1923", ["7 May 1923"], (0.0, 1.0)),
    ("May 1923", ["7 May 1923"], (0.0, 0.8)),   # one shared number (1923) is enough to compare the bags
    # The reference implementation's own test values (allennlp-models drop_test.py).
    (["td"], ["td", "td"], (0.0, 0.5)),
    (["the", "fat", "cat", "the fat", "fat cat", "the fat cat"], ["cat", "cat dog"], (0.0, 0.25)),
    (["78-yard", "56", "28", "40", "44", "touchdown"], ["78-yard", "56 yard", "1 yard touchdown"], (0.0, 0.28)),
    (["23", "23 yard"], ["23-yard", "56 yards"], (0.0, 0.5)),
    (["John Karman", "Joe Hardy"], ["Joe Karman", "John Hardy"], (0.0, 0.5)),
    (["S.K. Singh"], ["sk singh"], (1.0, 1.0)),
    (["Per.i.o.d...."], [".P....e.r,,i;;;o...d,,"], (1.0, 1.0)),
    (["78"], ["78-yard"], (0.0, 0.67)),
    ([""], ["army"], (0.0, 0.0)),
])
def test_one_answer(predicted, gold, expected):
    assert em_f1(predicted, gold) == expected


def test_answer_strings_follow_the_official_priority():
    assert drop_answer_strings({"number": "2", "spans": ["x"], "date": {}}) == (("2",), "number")
    assert drop_answer_strings({"number": "", "spans": ["a", "b"]}) == (("a", "b"), "spans")
    assert drop_answer_strings({"number": "", "spans": [], "date": {"day": "17", "month": "August", "year": ""}}) \
        == (("17 August ",), "date")
    with pytest.raises(ValueError):
        drop_answer_strings({"number": "", "spans": []})


# ----------------------------------------------------------------------------- whole files

def gold(*answers):
    return [GoldAnswer(*drop_answer_strings(answer)) for answer in answers]


def test_max_over_validated_answers_missing_predictions_and_types():
    golds = {
        "q1": gold({"number": "1"}, {"number": "0"}),
        "q2": gold({"spans": ["0"]}, {"number": "1"}, {"number": "2"}),
        "q3": gold({"date": {"day": "17", "month": "August", "year": ""}}, {"spans": ["August"]}, {"number": "17"}),
        "q4": gold({"spans": ["span1", "span2"]}, {"spans": ["span2"]}),
        "q5": gold({"number": "5"}, {"spans": ["7-meters"]}),
        "q6": gold({"spans": ["answer1"]}),
    }
    predictions = {"q1": "1", "q2": "1", "q3": "17 August", "q4": "span1", "q5": "5-yard"}
    result = drop_scores(golds, predictions)
    # q1-q3 exact (q2 through a validated number, q3 the date); q4 half of a two-span answer: 0.5;
    # q5 "5-yard" against 5: bags {5.0, yard} / {5.0}: F1 2/3 -> 0.67 (the "7-meters" validated
    # answer has a number it lacks: 0); q6 missing: 0.
    assert result["exact_match"] == pytest.approx(50.0)
    assert result["f1"] == pytest.approx(100 * (1 + 1 + 1 + 0.5 + 0.67 + 0) / 6)
    assert result["total"] == 6 and result["missing"] == 1
    # Types: of the last gold answer that reached both maxima (q2: the validated number; q4: the
    # multi-span main answer, its validated span scoring lower); q6 is missing: its main answer's.
    assert {k: v["total"] for k, v in result["per_type"].items()} == {"number": 3, "date": 1, "spans": 1, "span": 1}
    assert result["per_type"]["number"]["f1"] == pytest.approx(100 * (1 + 1 + 0.67) / 3)


def test_quoref_sample_of_the_reference_implementation(shared_data):
    folder = shared_data / "quoref"
    result = main([str(folder / "allennlp_quoref_sample.json"), str(folder / "allennlp_quoref_sample_predictions.json")])
    assert result["exact_match"] == pytest.approx(50.0) and result["f1"] == pytest.approx(62.5)
    assert result["dataset"] == "quoref" and result["total"] == 4 and result["missing"] == 1


def test_quoref_multi_span_is_conjunctive():
    golds = {"a": ["Delius", "Heseltine"], "b": ["Catherine"]}
    result = quoref_scores(golds, {"a": "Heseltine", "b": ["Catherine"]})
    assert result["exact_match"] == pytest.approx(50.0) and result["f1"] == pytest.approx(75.0)
    assert result["per_type"]["spans"]["f1"] == pytest.approx(50.0)


def test_command_line_on_the_drop_fixture(shared_data, tmp_path):
    path = shared_data / "drop" / "allennlp_drop_fixture.json"
    payload = json.loads(path.read_text())
    predictions = {qa["query_id"]: "2" for entry in payload.values() for qa in entry["qa_pairs"]}
    predictions.pop(next(iter(predictions)))
    pred_file = tmp_path / "pred.json"
    pred_file.write_text(json.dumps(predictions))
    done = run_module("utils.drop_metric", str(path), str(pred_file), "--out-file", str(tmp_path / "eval.json"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # All 19 questions, 13 numbers and 6 spans; "2" is the answer of 3 of the numbers.
    assert result["total"] == 19 and result["missing"] == 1 and "1 questions have no prediction" in done.stderr
    assert {k: v["total"] for k, v in result["per_type"].items()} == {"number": 13, "span": 6}
    assert result["exact_match"] == pytest.approx(100 * 3 / 19)
    assert result["per_type"]["number"]["exact_match"] == pytest.approx(100 * 3 / 13)
    assert json.loads((tmp_path / "eval.json").read_text()) == result


def test_command_line_errors_are_one_line(tmp_path):
    gold_file = tmp_path / "gold.json"
    gold_file.write_text(json.dumps({"p": {"passage": "x", "qa_pairs": [{"query_id": "q", "answer": {"number": "1"}}]}}))
    bad = tmp_path / "pred.json"
    bad.write_text(json.dumps({"q": 3}))
    done = run_module("utils.drop_metric", str(gold_file), str(bad))
    assert done.returncode == 2 and "expected a string or a list of strings" in done.stderr
    assert "Traceback" not in done.stderr
    done = run_module("utils.drop_metric", str(gold_file), str(tmp_path / "missing.json"))
    assert done.returncode == 2 and "file not found" in done.stderr

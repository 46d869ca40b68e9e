"""Adapters on small hand-made files in each original format and in the Hub schemas."""
import json

import pytest

from utils.data.loading import load_task_data
from utils.run.errors import DataError
from utils.data.records import write_jsonl

CTX = "Ada Lovelace wrote the first program in 1843. She worked with Charles Babbage in London."


def write(tmp_path, name, payload):
    path = tmp_path / name
    if isinstance(payload, str):
        path.write_text(payload, encoding="utf-8")
    else:
        path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def squad_file(qas, version="1.1"):
    return {"version": version, "data": [{"title": "Ada", "paragraphs": [{"context": CTX, "qas": qas}]}]}


def check_stats(stats):
    assert stats.records_read == stats.kept + sum(stats.dropped.values())
    assert sum(stats.without_located_answer.values()) <= stats.kept


# ----------------------------------------------------------------------------- SQuAD

def test_squad_v1_records(tmp_path):
    path = write(tmp_path, "s.json", squad_file([
        {"id": "q1", "question": "When?", "answers": [{"text": "1843", "answer_start": 40},
                                                      {"text": "in 1843", "answer_start": 37}]},
        {"id": "q2", "question": "With whom?", "answers": [{"text": "Charles Babbage", "answer_start": 62}]},
    ]))
    data = load_task_data("squad", "validation", path)
    assert data.records[0] == {
        "id": "q1", "task": "squad", "context": CTX, "question": "When?",
        "answers": {"text": ["1843", "in 1843"], "answer_start": [40, 37]},
        "is_impossible": False, "gold": [["1843"], ["in 1843"]], "meta": {"title": "Ada"}}
    assert data.records[1]["answers"] == {"text": ["Charles Babbage"], "answer_start": [62]}
    assert data.stats.kept == 2 and not data.stats.dropped
    check_stats(data.stats)


def test_squad_v2_unanswerable_and_plausible(tmp_path):
    path = write(tmp_path, "s2.json", squad_file([
        {"id": "a", "question": "Where?", "answers": [{"text": "London", "answer_start": 81}], "is_impossible": False},
        {"id": "b", "question": "When did Babbage die?", "answers": [], "is_impossible": True,
         "plausible_answers": [{"text": "1843", "answer_start": 40}]},
    ], version="v2.0"))
    data = load_task_data("squad_v2", "train", path)
    impossible = data.records[1]
    assert impossible["is_impossible"] is True
    assert impossible["answers"] == {"text": [], "answer_start": []}
    assert impossible["meta"]["plausible_answers"] == [{"text": "1843", "answer_start": 40}]
    assert impossible["gold"] == [] and data.records[0]["gold"] == [["London"]]
    assert data.stats.notes == {"unanswerable": 1}
    # The same file read as SQuAD v1.1 cannot keep the unanswerable question.
    v1 = load_task_data("squad", "train", path)
    assert [r["id"] for r in v1.records] == ["a"]
    assert v1.stats.dropped == {"unanswerable_in_v1_task": 1}
    check_stats(v1.stats)


def test_squad_missing_field_names_file_record_and_field(tmp_path):
    path = write(tmp_path, "bad.json", squad_file([{"id": "q9", "answers": []}]))
    with pytest.raises(DataError) as err:
        load_task_data("squad", "train", path)
    assert str(path) in str(err.value) and "q9" in str(err.value) and "'question'" in str(err.value)


def test_duplicate_ids_are_an_error(tmp_path):
    qa = {"id": "same", "question": "When?", "answers": [{"text": "1843", "answer_start": 40}]}
    with pytest.raises(DataError, match="duplicate"):
        load_task_data("squad", "train", write(tmp_path, "d.json", squad_file([qa, qa])))


# ----------------------------------------------------------------------------- Quoref

def test_quoref_offsets_repaired_multi_span_conjunctive_and_nothing_dropped(tmp_path):
    path = write(tmp_path, "q.json", squad_file([
        {"id": "off1", "question": "Who wrote?", "answers": [{"text": "Ada Lovelace", "answer_start": 1}]},
        {"id": "gone", "question": "Who?", "answers": [{"text": "Ada Byron", "answer_start": 0}]},
        {"id": "multi", "question": "Which two people?",
         "answers": [{"text": "Ada Lovelace", "answer_start": 0}, {"text": "Charles Babbage", "answer_start": 62}]},
    ]))
    data = load_task_data("quoref", "validation", path)
    by_id = {r["id"]: r for r in data.records}
    assert by_id["off1"]["answers"] == {"text": ["Ada Lovelace"], "answer_start": [0]}
    # Kept for evaluation with its original answer; no span to train on.
    assert by_id["gone"]["answers"]["text"] == [] and by_id["gone"]["gold"] == [["Ada Byron"]]
    assert not by_id["gone"]["is_impossible"] and "gone" not in [r["id"] for r in data.span_records()]
    assert by_id["multi"]["answers"]["text"] == ["Ada Lovelace", "Charles Babbage"]
    # Quoref's gold answer is all the spans together (conjunctive).
    assert by_id["multi"]["gold"] == [["Ada Lovelace", "Charles Babbage"]]
    assert not data.stats.dropped and data.stats.kept == 3
    assert data.stats.without_located_answer == {"answer_offset_unrepairable": 1}
    assert data.stats.notes["answer_offset_repaired"] == 1
    assert data.stats.notes["multi_span_answer"] == 1
    check_stats(data.stats)


# ----------------------------------------------------------------------------- DuoRC

DUORC_PLOT = "Mara finds The Red Door in the attic. Her brother Tom refuses to open it."


def duorc_movies():
    return [{"id": "/m/1", "title": "Door", "plot": DUORC_PLOT, "qa": [
        {"id": "d1", "question": "Who refuses?", "answers": ["Tom"], "no_answer": False},
        {"id": "d2", "question": "What does Mara find?", "answers": ["the red door"], "no_answer": False},
        {"id": "d3", "question": "How does she feel?", "answers": ["She is scared of it."], "no_answer": False},
        {"id": "d4", "question": "What colour is the car?", "answers": [], "no_answer": True},
        {"id": "d5", "question": "Where?", "answers": ["in a barn", "attic"], "no_answer": False},
    ]}]


def test_duorc_original_json(tmp_path):
    data = load_task_data("duorc-p", "train", write(tmp_path, "ParaphraseRC_train.json", duorc_movies()))
    by_id = {r["id"]: r for r in data.records}
    assert list(by_id) == ["d1", "d2", "d3", "d4", "d5"]  # every question, for evaluation
    assert by_id["d1"]["answers"] == {"text": ["Tom"], "answer_start": [DUORC_PLOT.index("Tom")]}
    assert by_id["d2"]["answers"]["text"] == ["The Red Door"]  # the plot's casing
    assert by_id["d2"]["gold"] == [["the red door"]]          # the original string, untouched
    assert by_id["d3"]["answers"]["text"] == [] and by_id["d3"]["gold"] == [["She is scared of it."]]
    assert by_id["d4"]["is_impossible"] and by_id["d4"]["answers"]["text"] == [] and by_id["d4"]["gold"] == []
    assert by_id["d5"]["answers"]["text"] == ["attic"]
    assert by_id["d5"]["gold"] == [["in a barn"], ["attic"]]   # both strings, found or not
    assert not data.stats.dropped and data.stats.without_located_answer == {"answer_not_in_plot": 1}
    assert [r["id"] for r in data.span_records()] == ["d1", "d2", "d4", "d5"]
    assert data.stats.notes["answer_found_case_insensitive"] == 1
    assert data.stats.notes["unanswerable"] == 1
    assert by_id["d1"]["meta"]["title"] == "Door"
    check_stats(data.stats)


def test_duorc_hub_rows_give_the_same_records(tmp_path):
    movie = duorc_movies()[0]
    rows = [{"plot_id": movie["id"], "plot": movie["plot"], "title": movie["title"], "question_id": qa["id"],
             "question": qa["question"], "answers": qa["answers"], "no_answer": qa["no_answer"]}
            for qa in movie["qa"]]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    from_rows = load_task_data("duorc;ParaphraseRC", "train", path)
    from_file = load_task_data("duorc-p", "train", write(tmp_path, "orig.json", duorc_movies()))
    assert from_rows.records == from_file.records
    assert from_rows.stats.format == "jsonl:hub_rows"


# ----------------------------------------------------------------------------- DROP

DROP_PASSAGE = "The Bears beat the Lions 24-10. Jay Cutler threw two touchdowns to Greg Olsen and Devin Hester."


def drop_answer(number="", spans=(), date=None):
    return {"number": number, "date": date or {"day": "", "month": "", "year": ""}, "spans": list(spans)}


def test_drop_original_json_keeps_every_question_with_its_official_gold(tmp_path):
    payload = {"nfl_1": {"passage": DROP_PASSAGE, "qa_pairs": [
        {"query_id": "n", "question": "How many points?", "answer": drop_answer(number="24")},
        {"query_id": "d", "question": "When?", "answer": drop_answer(date={"day": "3", "month": "", "year": "2009"})},
        {"query_id": "s", "question": "Who threw?", "answer": drop_answer(spans=["Jay Cutler"]),
         "validated_answers": [drop_answer(spans=["Cutler"]), drop_answer(number="2")]},
        {"query_id": "m", "question": "Who caught?", "answer": drop_answer(spans=["Greg Olsen", "Devin Hester"])},
        {"query_id": "x", "question": "Who lost?", "answer": drop_answer(spans=["the Detroit Lions"])},
    ]}}
    data = load_task_data("drop", "validation", write(tmp_path, "drop_dataset_dev.json", payload))
    by_id = {r["id"]: r for r in data.records}
    assert list(by_id) == ["n", "d", "s", "m", "x"]
    assert [r["id"] for r in data.span_records()] == ["s"]
    assert by_id["s"]["answers"] == {"text": ["Jay Cutler", "Cutler"],
                                     "answer_start": [DROP_PASSAGE.index("Jay Cutler"), DROP_PASSAGE.index("Cutler")]}
    # The official script's answer strings: a number as given, a date "day month year" with its
    # empty fields, multi-span answers as one tuple; the main answer first, then the validated ones.
    assert by_id["n"]["gold"] == [["24"]] and by_id["n"]["gold_types"] == ["number"]
    assert by_id["d"]["gold"] == [["3  2009"]] and by_id["d"]["gold_types"] == ["date"]
    assert by_id["s"]["gold"] == [["Jay Cutler"], ["Cutler"], ["2"]]
    assert by_id["s"]["gold_types"] == ["span", "span", "number"]
    assert by_id["m"]["gold"] == [["Greg Olsen", "Devin Hester"]] and by_id["m"]["gold_types"] == ["spans"]
    assert not data.stats.dropped
    assert data.stats.without_located_answer == {"number_answer": 1, "date_answer": 1, "multi_span_answer": 1,
                                                 "span_not_in_passage": 1}
    check_stats(data.stats)


def test_drop_hub_rows(tmp_path):
    rows = [
        {"section_id": "nfl_1", "query_id": "s", "passage": DROP_PASSAGE, "question": "Who threw?",
         "answers_spans": {"spans": ["Jay Cutler", "Jay Cutler"], "types": ["span", "span"]}},
        {"section_id": "nfl_1", "query_id": "n", "passage": DROP_PASSAGE, "question": "How many?",
         "answers_spans": {"spans": ["24"], "types": ["number"]}},
        {"section_id": "nfl_1", "query_id": "m", "passage": DROP_PASSAGE, "question": "Who caught?",
         "answers_spans": {"spans": ["Greg Olsen", "Devin Hester"], "types": ["span", "span"]}},
    ]
    data = load_task_data("drop", "train", write(tmp_path, "rows.json", rows))
    assert [r["id"] for r in data.records] == ["s", "n", "m"]
    assert [r["id"] for r in data.span_records()] == ["s"]
    assert data.records[2]["gold"] == [["Greg Olsen"], ["Devin Hester"]]  # the Hub's flattened answers
    assert data.stats.without_located_answer == {"number_answer": 1, "multi_span_answer": 1}
    assert data.stats.notes["answers_flattened_by_hub"] == 1


# ----------------------------------------------------------------------------- Hub SQuAD rows, saved datasets

def squad_rows():
    return [{"id": "h1", "title": "Ada", "context": CTX, "question": "When?",
             "answers": {"text": ["1843"], "answer_start": [40]}},
            {"id": "h2", "title": "Ada", "context": CTX, "question": "Who died?",
             "answers": {"text": [], "answer_start": []}}]


def test_squad_hub_rows_v2_and_v1(tmp_path):
    path = write(tmp_path, "rows.json", squad_rows())
    v2 = load_task_data("squad_v2", "train", path)
    assert [r["is_impossible"] for r in v2.records] == [False, True]
    v1 = load_task_data("squad", "train", path)
    assert [r["id"] for r in v1.records] == ["h1"]


def test_saved_dataset_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "saved"
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(squad_rows())}).save_to_disk(str(folder))
    data = load_task_data("squad_v2", "validation", folder)
    assert [r["id"] for r in data.records] == ["h1", "h2"]
    assert data.stats.format == "saved_dataset:hub_rows"


# ----------------------------------------------------------------------------- canonical JSON lines

def test_canonical_round_trip(tmp_path):
    original = load_task_data("duorc-s", "train", write(tmp_path, "o.json", duorc_movies()))
    out = write_jsonl(tmp_path / "canon.jsonl", original.records)
    again = load_task_data("duorc-s", "train", out)
    assert again.records == original.records
    assert again.stats.format == "jsonl:canonical"


def test_canonical_offset_mismatch_is_an_error(tmp_path):
    record = {"id": "c1", "task": "squad", "context": CTX, "question": "When?",
              "answers": {"text": ["1843"], "answer_start": [41]}, "is_impossible": False}
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_task_data("squad", "train", path)
    message = str(err.value)
    assert str(path) in message and "c1" in message and "answers.answer_start" in message


def test_canonical_impossible_flag_must_agree(tmp_path):
    record = {"id": "c2", "task": "squad_v2", "context": CTX, "question": "?",
              "answers": {"text": [], "answer_start": []}, "is_impossible": False}
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="is_impossible"):
        load_task_data("squad_v2", "train", path)
    path.write_text(json.dumps({**record, "gold": [], "is_impossible": False}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="is_impossible"):
        load_task_data("squad_v2", "train", path)
    path.write_text(json.dumps({**record, "gold": [["Paris"]], "is_impossible": True}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="is_impossible"):
        load_task_data("squad_v2", "train", path)
    path.write_text(json.dumps({**record, "gold": [["Paris", 3]]}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="gold"):
        load_task_data("squad_v2", "train", path)


def test_canonical_without_gold_gets_it_from_the_answers(tmp_path):
    record = {"id": "c3", "task": "quoref", "context": CTX, "question": "Who?",
              "answers": {"text": ["Ada Lovelace", "Charles Babbage"], "answer_start": [0, 62]}, "is_impossible": False}
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    assert load_task_data("quoref", "train", path).records[0]["gold"] == [["Ada Lovelace", "Charles Babbage"]]
    assert load_task_data("squad", "train", path).records[0]["gold"] == [["Ada Lovelace"], ["Charles Babbage"]]
    # An evaluation-only record (gold, no located span) round-trips.
    unlocated = {**record, "answers": {"text": [], "answer_start": []}, "gold": [["seven"]]}
    path.write_text(json.dumps(unlocated) + "\n", encoding="utf-8")
    data = load_task_data("drop", "validation", path)
    assert data.records[0]["gold"] == [["seven"]] and data.span_records() == []
    assert data.stats.without_located_answer == {"answer_not_located": 1}


def test_format_of_another_dataset_is_refused(tmp_path):
    with pytest.raises(DataError, match="DuoRC JSON"):
        load_task_data("squad", "train", write(tmp_path, "m.json", duorc_movies()))


# ----------------------------------------------------------------------------- SST-2 / classification

def test_glue_tsv_with_and_without_labels(tmp_path):
    train = write(tmp_path, "train.tsv", "sentence\tlabel\na gorgeous , witty film . \t1\nflat and dull \t0\n")
    data = load_task_data("sst2", "train", train)
    assert data.records == [{"id": "line 2", "text": "a gorgeous , witty film .", "label": 1},
                            {"id": "line 3", "text": "flat and dull", "label": 0}]
    assert data.stats.notes == {"label_negative": 1, "label_positive": 1}
    test = write(tmp_path, "test.tsv", "index\tsentence\n0\tsome \"quoted\" text\n1\tanother\n")
    unlabelled = load_task_data("sst2", "validation", test)
    assert unlabelled.records[0] == {"id": "0", "text": 'some "quoted" text', "label": -1}
    assert unlabelled.stats.notes == {"label_unlabelled": 2}


def test_tsv_missing_label_names_the_line(tmp_path):
    path = write(tmp_path, "t.tsv", "sentence\tlabel\ngood\t1\nno label here\n")
    with pytest.raises(DataError) as err:
        load_task_data("sst2", "train", path)
    assert "line 3" in str(err.value) and "'label'" in str(err.value)
    empty = write(tmp_path, "e.tsv", "sentence\tlabel\ngood\t\n")
    with pytest.raises(DataError, match="label is missing"):
        load_task_data("sst2", "train", empty)


def test_csv_label_names_and_custom_columns(tmp_path):
    path = write(tmp_path, "r.csv", 'review,sentiment\n"great, really",positive\nbad,negative\n')
    data = load_task_data("sst2", "train", path, text_column="review", label_column="sentiment")
    assert [(r["text"], r["label"]) for r in data.records] == [("great, really", 1), ("bad", 0)]
    with pytest.raises(DataError, match="outside"):
        load_task_data("sst2", "train", write(tmp_path, "x.csv", "text,label\nhm,2\n"))


def test_glue_hub_rows_and_canonical_classification(tmp_path):
    rows = write(tmp_path, "glue.jsonl", '{"sentence": "fine", "label": 1, "idx": 7}\n')
    assert load_task_data("glue;sst2", "train", rows).records == [{"id": "7", "text": "fine", "label": 1}]
    canonical = write(tmp_path, "c.jsonl", '{"id": "a", "text": "fine", "label": 0}\n')
    assert load_task_data("sst2", "train", canonical).records == [{"id": "a", "text": "fine", "label": 0}]


def test_empty_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no records"):
        load_task_data("sst2", "train", write(tmp_path, "empty.tsv", "sentence\tlabel\n"))
    with pytest.raises(DataError, match="no records"):
        load_task_data("squad", "train", write(tmp_path, "empty.json", {"data": []}))


# ----------------------------------------------------------------------------- empty questions and answers

def test_empty_question_is_evaluated_but_not_trained_on_and_counted_by_name(tmp_path):
    path = write(tmp_path, "eq.json", squad_file([
        {"id": "blank", "question": "  ", "answers": [{"text": "1843", "answer_start": 40}]},
        {"id": "fine", "question": "When?", "answers": [{"text": "1843", "answer_start": 40}]},
    ]))
    data = load_task_data("squad", "validation", path)
    assert [r["id"] for r in data.records] == ["blank", "fine"]          # evaluation scores both
    assert data.records[0]["gold"] == [["1843"]]                          # its gold answer untouched
    assert [r["id"] for r in data.span_records()] == ["fine"]            # training only the other
    assert data.stats.without_located_answer == {"empty_question": 1}
    check_stats(data.stats)


def test_empty_answer_text_is_not_an_offset_problem(tmp_path):
    path = write(tmp_path, "ea.json", squad_file([
        {"id": "empty", "question": "When?", "answers": [{"text": "", "answer_start": 40}]},
        {"id": "mixed", "question": "When?", "answers": [{"text": "", "answer_start": 3},
                                                         {"text": "1843", "answer_start": 40}]},
    ]))
    data = load_task_data("quoref", "validation", path)
    by_id = {r["id"]: r for r in data.records}
    assert by_id["mixed"]["answers"] == {"text": ["1843"], "answer_start": [40]}
    assert by_id["empty"]["answers"]["text"] == []
    assert data.stats.without_located_answer == {"empty_answer_text": 1}
    assert data.stats.notes["empty_answer_text"] == 2
    assert "answer_offset_unrepairable" not in data.stats.notes
    check_stats(data.stats)

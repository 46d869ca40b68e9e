"""`python -m utils.data` as a user runs it: statistics on stdout, one-line errors on bad input."""
import json

import pytest

from tests.conftest import run_module
from utils.data.loading import SAMPLE_FILES, SAMPLES_DIR


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(SAMPLE_FILES))
def test_statistics_for_every_bundled_sample(task, tmp_path):
    out = tmp_path / "records.jsonl"
    done = run_module("utils.data", "--task", task, "--file", str(SAMPLES_DIR / SAMPLE_FILES[task]["train"]),
                      "--to_jsonl", str(out))
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["task"] == task and stats["kept"] > 0
    assert stats["records_read"] == stats["kept"] + stats["dropped_total"]
    assert len(out.read_text(encoding="utf-8").splitlines()) == stats["kept"]


def one_line_error(done, *fragments):
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_missing_file(tmp_path):
    one_line_error(run_module("utils.data", "--task", "squad", "--file", str(tmp_path / "nope.json")),
                   "nope.json", "file not found")


def test_malformed_json_gives_the_position(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"data": [\n  {"title": "x",\n   "paragraphs": [}\n]}', encoding="utf-8")
    one_line_error(run_module("utils.data", "--task", "squad", "--file", str(path)),
                   str(path), "malformed JSON", "line 3", "column 19")


def test_record_missing_a_field(tmp_path):
    path = tmp_path / "missing.json"
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": "abc", "qas": [
        {"id": "q-17", "answers": [{"text": "b", "answer_start": 1}]}]}]}]}), encoding="utf-8")
    one_line_error(run_module("utils.data", "--task", "squad", "--file", str(path)),
                   str(path), "record q-17", "field 'question'", "missing")


def test_canonical_offset_mismatch(tmp_path):
    path = tmp_path / "canonical.jsonl"
    path.write_text(json.dumps({"id": "c-3", "task": "squad", "context": "Paris is in France.", "question": "?",
                                "answers": {"text": ["France"], "answer_start": [3]}, "is_impossible": False}) + "\n")
    one_line_error(run_module("utils.data", "--task", "squad", "--file", str(path)),
                   str(path), "record c-3", "field 'answers.answer_start'", "'France'", "offset 3")


def test_unknown_task_lists_known_names(tmp_path):
    line = one_line_error(run_module("utils.data", "--task", "squad3", "--file", "x.json"), "unknown task 'squad3'")
    for name in ("squad", "squad_v2", "duorc-p", "duorc;SelfRC", "drop", "quoref", "mlqa_en", "sst2"):
        assert name in line


def test_tsv_with_a_missing_label(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\nfine film \t1\nno label \n", encoding="utf-8")
    one_line_error(run_module("utils.data", "--task", "sst2", "--file", str(path)),
                   str(path), "line 3", "field 'label'")


def test_hub_name_offline_fails_with_one_line():
    done = run_module("utils.data", "--task", "squad", env={"HF_HUB_OFFLINE": "1"}, timeout=120)
    one_line_error(done, "rajpurkar/squad", "--file")


def test_list_tasks():
    done = run_module("utils.data", "--list_tasks")
    assert done.returncode == 0
    assert [t["name"] for t in json.loads(done.stdout)][:3] == ["squad", "squad_v2", "duorc-p"]


def test_rows_of_the_wrong_type(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"sentence": "fine", "label": 1}\n[1, 2]\n', encoding="utf-8")
    one_line_error(run_module("utils.data", "--task", "sst2", "--file", str(path)), "record 2",
                   "expected a JSON object")
    rows = tmp_path / "hub.jsonl"
    rows.write_text(json.dumps({"id": "h", "context": "abc", "question": "?",
                                "answers": {"text": ["b"], "answer_start": ["1"]}}) + "\n", encoding="utf-8")
    one_line_error(run_module("utils.data", "--task", "squad", "--file", str(rows)), "record h", "field 'answers'")
    drop = tmp_path / "drop.json"
    drop.write_text(json.dumps({"p1": {"passage": "x", "qa_pairs": [
        {"query_id": "d1", "question": "?", "answer": {"number": "", "date": {}, "spans": [1]}}]}}))
    one_line_error(run_module("utils.data", "--task", "drop", "--file", str(drop)), "record d1", "field 'answer.spans'")


def test_text_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.tsv"
    path.write_bytes("sentence\tlabel\ncaf\xe9 cr\xe8me \t1\n".encode("latin-1"))
    one_line_error(run_module("utils.data", "--task", "sst2", "--file", str(path)), str(path), "not UTF-8")


def test_unwritable_outputs_are_one_line_errors(tmp_path):
    sample = str(SAMPLES_DIR / SAMPLE_FILES["squad"]["train"])
    one_line_error(run_module("utils.data", "--task", "squad", "--file", sample, "--stats_file", str(tmp_path)),
                   str(tmp_path))
    (tmp_path / "a_file").write_text("x")
    one_line_error(run_module("utils.data", "--task", "squad", "--file", sample, "--to_jsonl",
                              str(tmp_path / "a_file" / "x.jsonl")), "a_file")


def test_a_file_with_nothing_usable(tmp_path):
    path = tmp_path / "unanswerable_only.json"
    path.write_text(json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "They scored 7.", "qas": [
        {"id": "u1", "question": "Who lost?", "answers": [], "is_impossible": True}]}]}]}))
    one_line_error(run_module("utils.data", "--task", "squad", "--file", str(path)), "none of its 1 records",
                   "unanswerable_in_v1_task: 1")


def test_questions_without_a_located_answer_are_kept_and_counted(tmp_path):
    path = tmp_path / "numbers_only.json"
    path.write_text(json.dumps({"p1": {"passage": "They scored 7.", "qa_pairs": [
        {"query_id": "n1", "question": "How many?", "answer": {"number": "7", "date": {}, "spans": []}}]}}))
    done = run_module("utils.data", "--task", "drop", "--file", str(path))
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["kept"] == 1 and stats["without_located_answer"] == {"number_answer": 1}


def test_json_lines_under_a_json_name(tmp_path):
    path = tmp_path / "export.json"
    path.write_text('{"sentence": "fine", "label": 1}\n{"sentence": "bad", "label": 0}\n', encoding="utf-8")
    done = run_module("utils.data", "--task", "sst2", "--file", str(path))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["kept"] == 2

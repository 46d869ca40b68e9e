"""`python -m utils.data` as a user runs it: statistics on stdout, one-line errors on bad input."""
import json
import time

import pytest

from tests.conftest import run_module
from utils.samples import SAMPLE_FILES, SAMPLES_DIR


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


def test_hub_name_offline_fails_within_seconds():
    started = time.monotonic()
    done = run_module("utils.data", "--task", "squad", env={"HF_HUB_OFFLINE": "1"}, timeout=120)
    elapsed = time.monotonic() - started
    one_line_error(done, "rajpurkar/squad", "--file")
    assert elapsed < 60, elapsed


def test_list_tasks():
    done = run_module("utils.data", "--list_tasks")
    assert done.returncode == 0
    assert [t["name"] for t in json.loads(done.stdout)][:3] == ["squad", "squad_v2", "duorc-p"]

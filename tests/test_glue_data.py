"""The GLUE targets' data layer: registry entries, each task's original TSV layout read from the bundled
samples, Hub rows, canonical pair and regression records, and one-line errors for wrong layouts and
labels outside the label space. The expectations are written out here, independently of the registry
and the adapters: the files are parsed with `csv`, the label spaces copied from the Hub's GLUE cards."""
import csv
import json
from collections import Counter

import pytest

from tests.conftest import REPO_ROOT, run_module
from utils.classification.evaluation import GLUE_METRICS
import utils.data.__main__ as cli
from utils.data.loading import load_task_data
from utils.data.records import validate_classification_record, write_jsonl
from utils.data.registry import get_task
from utils.data.loading import SAMPLE_FILES, SAMPLES_DIR
from utils.run.errors import DataError, ToolkitError

GLUE = SAMPLES_DIR / "glue"
# task -> (train file, validation file), under data/samples/glue
FILES = {
    "cola": ("cola/train.tsv", "cola/dev.tsv"),
    "mrpc": ("mrpc/train.tsv", "mrpc/dev.tsv"),
    "stsb": ("stsb/train.tsv", "stsb/dev.tsv"),
    "qqp": ("qqp/train.tsv", "qqp/dev.tsv"),
    "mnli": ("mnli/train.tsv", "mnli/dev_matched.tsv"),
    "mnli-mm": ("mnli/train.tsv", "mnli/dev_mismatched.tsv"),
    "qnli": ("qnli/train.tsv", "qnli/dev.tsv"),
    "rte": ("rte/train.tsv", "rte/dev.tsv"),
    "wnli": ("wnli/train.tsv", "wnli/dev.tsv"),
}
NLI2 = ("entailment", "not_entailment")
MNLI = ("entailment", "neutral", "contradiction")
# task -> (text column, second-text column, label column, label names (None: a score in [0, 5]));
# CoLA's release has no header, so its columns are positions.
LAYOUTS = {
    "cola": (3, None, 1, ("unacceptable", "acceptable")),
    "mrpc": ("#1 String", "#2 String", "Quality", ("not_equivalent", "equivalent")),
    "stsb": ("sentence1", "sentence2", "score", None),
    "qqp": ("question1", "question2", "is_duplicate", ("not_duplicate", "duplicate")),
    "mnli": ("sentence1", "sentence2", "gold_label", MNLI),
    "mnli-mm": ("sentence1", "sentence2", "gold_label", MNLI),
    "qnli": ("question", "sentence", "label", NLI2),
    "rte": ("sentence1", "sentence2", "label", NLI2),
    "wnli": ("sentence1", "sentence2", "label", ("not_entailment", "entailment")),
}
SPLITS = ("train", "validation")


def read_table(path, header=True):
    """The rows of a sample TSV, parsed here with csv (the byte-order mark of MRPC's files skipped)."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = [row for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if row]
    return [dict(zip(rows[0], row)) for row in rows[1:]] if header else [dict(enumerate(row)) for row in rows]


def expected_records(task, split):
    """(text, second text, label) of every row of a sample, from the file and the LAYOUTS above."""
    text, pair, label, names = LAYOUTS[task]
    rows = read_table(GLUE / FILES[task][SPLITS.index(split)], header=task != "cola")
    out = []
    for row in rows:
        value = row[label]
        if names is None:
            value = float(value)
        else:
            value = int(value) if value.isdigit() else names.index(value)
        out.append((row[text], row[pair] if pair else None, value))
    return out


def write(tmp_path, name, text, bom=False):
    path = tmp_path / name
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return path


def one_line(err):
    message = str(err.value)
    assert "\n" not in message, message
    return message


# ----------------------------------------------------------------------------- registry

@pytest.mark.parametrize("task", sorted(LAYOUTS))
def test_registry_entry(task):
    spec = get_task(task)
    names = LAYOUTS[task][3]
    assert spec.kind == "classification" and spec.adapter == "glue" and spec.hub_id == "nyu-mll/glue"
    assert spec.hub_config == ("mnli" if task == "mnli-mm" else task)
    assert spec.label_names == names
    assert spec.is_regression == (names is None)
    assert spec.regression_range == (None if names else (0.0, 5.0))
    assert spec.label_space == (len(names) if names else (0.0, 5.0))
    assert spec.text_pair_required == (task != "cola")
    assert spec.metric == GLUE_METRICS["mnli" if task == "mnli-mm" else task][0]
    assert get_task(f"glue;{task.replace('-mm', '_mismatched')}").name == task
    assert get_task(task.upper()).name == task
    validation = {"mnli": "validation_matched", "mnli-mm": "validation_mismatched"}.get(task, "validation")
    assert (spec.hub_split("train"), spec.hub_split("validation")) == ("train", validation)


def test_aliases_and_primary_metrics():
    for alias, name in {"sts-b": "stsb", "glue-rte": "rte", "RTE": "rte", "mnli-m": "mnli", "mnli_matched": "mnli",
                        "mnli_mismatched": "mnli-mm", "glue": "sst2", "glue;sst2": "sst2"}.items():
        assert get_task(alias).name == name
    assert {name: get_task(name).metric for name in ("cola", "mrpc", "qqp", "stsb", "sst2", "qnli")} == {
        "cola": "matthews_correlation", "mrpc": "f1", "qqp": "f1", "stsb": "pearson", "sst2": "accuracy",
        "qnli": "accuracy"}
    sst2 = get_task("sst2")   # unchanged
    assert (sst2.text_pair_required, sst2.is_regression, sst2.label_space) == (False, False, 2)


# ----------------------------------------------------------------------------- the samples

def test_sample_files_are_registered():
    for task, (train, validation) in FILES.items():
        assert dict(SAMPLE_FILES[task]) == {"train": f"glue/{train}", "validation": f"glue/{validation}"}
    assert dict(SAMPLE_FILES["sst2"]) == {"train": "sst2/train.tsv", "validation": "sst2/dev.tsv"}


@pytest.mark.parametrize("task,split", [(task, split) for task in sorted(FILES) for split in SPLITS])
def test_each_sample_loads_with_the_right_counts_and_labels(task, split):
    path = SAMPLES_DIR / SAMPLE_FILES[task][split]
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    data = load_task_data(task, split, path)
    assert len(data.records) == len(lines) - (task != "cola")   # CoLA's file has no header line
    assert data.stats.kept == data.stats.records_read == len(data.records) and not data.stats.dropped
    expected = expected_records(task, split)
    got = [(r["text"], r.get("text_pair"), r["label"]) for r in data.records]
    assert got == [(text.strip(), pair.strip() if pair else None, label) for text, pair, label in expected]
    names = LAYOUTS[task][3]
    for record in data.records:
        assert set(record) == ({"id", "text", "label"} | ({"text_pair"} if task != "cola" else set()))
        if names is None:
            assert type(record["label"]) is float and 0 <= record["label"] <= 5
        else:
            assert type(record["label"]) is int
    if names is not None:
        counts = Counter(label for _, _, label in expected)
        assert set(counts) == set(range(len(names))) and min(counts.values()) >= 2   # every class, twice
        assert data.stats.notes == {f"label_{names[k]}": n for k, n in counts.items()}
    else:
        scores = [label for _, _, label in expected]
        assert min(scores) == 0.0 and max(scores) == 5.0 and sum(data.stats.notes.values()) == len(scores)


def test_mnli_dev_files_give_the_matched_and_mismatched_tasks():
    train_genres = {row["genre"] for row in read_table(GLUE / "mnli/train.tsv")}
    matched = load_task_data("mnli", "validation", SAMPLES_DIR / SAMPLE_FILES["mnli"]["validation"])
    mismatched = load_task_data("mnli_mismatched", "validation", SAMPLES_DIR / SAMPLE_FILES["mnli-mm"]["validation"])
    assert matched.stats.source.endswith("dev_matched.tsv") and mismatched.stats.source.endswith("dev_mismatched.tsv")
    assert {row["genre"] for row in read_table(GLUE / "mnli/dev_matched.tsv")} <= train_genres
    assert not {row["genre"] for row in read_table(GLUE / "mnli/dev_mismatched.tsv")} & train_genres
    # The label is the annotators' consensus, gold_label, not the first annotator's label1.
    rows = read_table(GLUE / "mnli/dev_matched.tsv")
    disagreeing = [i for i, row in enumerate(rows) if row["label1"] != row["gold_label"] or
                   len({row[f"label{k}"] for k in range(1, 6)}) > 1]
    assert disagreeing
    for i in disagreeing:
        assert matched.records[i]["label"] == MNLI.index(rows[i]["gold_label"])
    assert SAMPLE_FILES["mnli"]["train"] == SAMPLE_FILES["mnli-mm"]["train"]


def test_cola_test_layout_with_a_header_is_unlabelled(tmp_path):
    path = write(tmp_path, "test.tsv", "index\tsentence\n0\tThe dog barked.\n1\tBarked the dog.\n")
    data = load_task_data("cola", "validation", path)
    assert [(r["id"], r["text"], r["label"]) for r in data.records] == [("0", "The dog barked.", -1),
                                                                          ("1", "Barked the dog.", -1)]
    assert data.stats.format == "tsv"


def test_utils_data_reads_every_glue_sample(capsys):
    for task in FILES:
        for split in SPLITS:
            stats = cli.main(["--task", task, "--split", split, "--file", str(SAMPLES_DIR / SAMPLE_FILES[task][split]),
                              "--compact"])
            assert stats["task"] == task and stats["split"] == split
            assert stats["kept"] == len(expected_records(task, split)) and stats["dropped_total"] == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(printed) == 2 * len(FILES)
    table = {row["name"]: row for row in cli.main(["--list_tasks"])["tasks"]}
    assert table["stsb"]["is_regression"] and table["stsb"]["regression_range"] == [0.0, 5.0]
    assert table["mnli-mm"]["hub_splits"]["validation"] == "validation_mismatched"
    assert table["rte"]["text_pair_required"] and not table["sst2"]["text_pair_required"]
    assert table["mrpc"]["table"]["text_columns"] == ["#1 String", "#2 String"]


def test_utils_data_command_on_the_rte_dev_sample():
    done = run_module("utils.data", "--task", "rte", "--split", "validation", "--file", "data/samples/glue/rte/dev.tsv",
                      "--compact", cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert (stats["task"], stats["kept"]) == ("rte", 8)
    assert stats["notes"] == {"label_entailment": 4, "label_not_entailment": 4}


# ----------------------------------------------------------------------------- wrong layouts and labels

def test_a_missing_header_column_is_a_one_line_error_from_the_command(tmp_path):
    path = write(tmp_path, "dev.tsv", "index\tsentence1\tlabel\n0\tA man sleeps.\tentailment\n")
    done = run_module("utils.data", "--task", "rte", "--file", str(path))
    assert done.returncode == 2, done.stdout
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for fragment in (str(path), "line 1", "field 'sentence2'", "--text_pair_column"):
        assert fragment in lines[0], lines[0]


RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"


@pytest.mark.parametrize("task,text,fragments", [
    # a short line: the first missing column is named
    ("rte", RTE_HEADER + "0\tA man sleeps.\tA man rests.\tentailment\n1\tA cat sits.\tentailment\n",
     ("line 3", "field 'label'", "has 3 of 4 columns")),
    # a line with a value past the header's columns
    ("rte", RTE_HEADER + "0\tA man sleeps.\tA man rests.\tentailment\tyes\n", ("line 2", "field 'column 5'", "5 columns")),
    # CoLA's headerless layout needs its 4 columns
    ("cola", "ab01\t1\t\tThe dog barked.\nab01\t0\tBarked the dog.\n", ("line 2", "field 'sentence'", "3 of 4 columns")),
    # a class name outside the task's label space
    ("mnli", "index\tsentence1\tsentence2\tgold_label\n0\tIt rained.\tThe ground is wet.\tmaybe\n",
     ("line 2", "field 'gold_label'", "'maybe'", "entailment")),
    ("mrpc", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n2\t1\t2\tA man sleeps.\tA man rests.\n",
     ("line 2", "field 'Quality'", "outside 0..1")),
    ("wnli", RTE_HEADER + "0\tA man sleeps.\tA man rests.\tentailment\n1\tIt fell.\tThe vase fell.\t\n",
     ("line 3", "field 'label'", "label is missing")),
    # a score outside [0, 5], or not a number
    ("stsb", "index\tsentence1\tsentence2\tscore\n0\tA cat.\tA cat.\t5.000\n1\tA dog.\tA cat.\t5.200\n",
     ("line 3", "field 'score'", "score 5.2 is outside [0, 5]")),
    ("stsb", "index\tsentence1\tsentence2\tscore\n0\tA cat.\tA dog.\tn/a\n", ("line 2", "field 'score'", "not a number")),
    # a regression task has no unlabelled file
    ("stsb", "index\tsentence1\tsentence2\n0\tA cat.\tA dog.\n", ("line 1", "field 'score'", "regression")),
    # a pair task's first text
    ("qnli", "index\tsentence\tlabel\n0\tThe tower is 68 metres tall.\tentailment\n", ("line 1", "field 'question'")),
])
def test_wrong_layouts_and_labels_name_file_line_and_field(tmp_path, task, text, fragments):
    path = write(tmp_path, "bad.tsv", text)
    with pytest.raises(DataError) as err:
        load_task_data(task, "train", path)
    message = one_line(err)
    for fragment in (str(path), *fragments):
        assert fragment in message, message


def test_an_empty_second_text_is_dropped_and_counted(tmp_path):
    path = write(tmp_path, "t.tsv", RTE_HEADER + "0\tA man sleeps.\t \tentailment\n1\tA cat sits.\tA cat rests.\tentailment\n")
    data = load_task_data("rte", "train", path)
    assert [r["id"] for r in data.records] == ["1"]
    assert data.stats.dropped == {"empty_text_pair": 1} and data.stats.records_read == 2


def test_canonical_records_are_checked_against_the_task(tmp_path):
    good = {"id": "a", "text": "It rained.", "text_pair": "The ground is wet.", "label": 0}
    assert validate_classification_record(good, 3, file="f", where=1, text_pair=True) == good
    score = validate_classification_record({**good, "label": 4}, (0.0, 5.0), file="f", where=1, text_pair=True)
    assert score["label"] == 4.0 and type(score["label"]) is float
    cases = [
        ({k: v for k, v in good.items() if k != "text_pair"}, 3, True, ("field 'text_pair'", "missing")),
        ({**good, "text_pair": "  "}, 3, True, ("field 'text_pair'", "empty")),
        (good, 2, False, ("field 'text_pair'", "one text")),             # a pair record for SST-2
        ({**good, "label": 3}, 3, True, ("field 'label'", "outside 0..2")),
        ({**good, "label": 5.5}, (0.0, 5.0), True, ("field 'label'", "outside [0, 5]")),
        ({**good, "label": -1}, (0.0, 5.0), True, ("field 'label'", "no unlabelled")),
        ({**good, "label": True}, (0.0, 5.0), True, ("field 'label'",)),
        ({**good, "label": 1.0}, 3, True, ("field 'label'", "expected int")),
    ]
    for record, labels, pair, fragments in cases:
        with pytest.raises(DataError) as err:
            validate_classification_record(record, labels, file="canon.jsonl", where="line 4", text_pair=pair)
        message = one_line(err)
        for fragment in ("canon.jsonl", "record a", *fragments):
            assert fragment in message, (record, message)


@pytest.mark.parametrize("task", ["mrpc", "stsb", "mnli-mm", "cola"])
def test_canonical_round_trip(tmp_path, task):
    original = load_task_data(task, "validation", SAMPLES_DIR / SAMPLE_FILES[task]["validation"])
    again = load_task_data(task, "validation", write_jsonl(tmp_path / "c.jsonl", original.records))
    assert again.records == original.records and again.stats.format == "jsonl:canonical"
    assert again.stats.notes == original.stats.notes


def test_canonical_pair_file_for_a_one_text_task_is_refused(tmp_path):
    records = load_task_data("rte", "train", SAMPLES_DIR / SAMPLE_FILES["rte"]["train"]).records
    path = write_jsonl(tmp_path / "rte.jsonl", records)
    with pytest.raises(DataError, match="field 'text_pair'"):
        load_task_data("sst2", "train", path)


# ----------------------------------------------------------------------------- the Hub's rows, the user's tables

def test_hub_rows_of_pair_and_regression_tasks(tmp_path):
    mnli = write(tmp_path, "mnli.jsonl", json.dumps({"premise": "It rained.", "hypothesis": "The ground is dry.",
                                                      "label": 2, "idx": 5}) + "\n")
    assert load_task_data("mnli", "train", mnli).records == [
        {"id": "5", "text": "It rained.", "text_pair": "The ground is dry.", "label": 2}]
    qnli = write(tmp_path, "qnli.jsonl", json.dumps({"question": "How tall?", "sentence": "It is 68 m tall.",
                                                      "label": 0, "idx": 0}) + "\n")
    assert load_task_data("qnli", "train", qnli).records[0]["text_pair"] == "It is 68 m tall."
    stsb = write(tmp_path, "stsb.jsonl", json.dumps({"sentence1": "A cat.", "sentence2": "A kitten.", "label": 4.25,
                                                      "idx": 3}) + "\n")
    assert load_task_data("stsb", "train", stsb).records == [
        {"id": "3", "text": "A cat.", "text_pair": "A kitten.", "label": 4.25}]
    qqp = write(tmp_path, "qqp.json", json.dumps([{"question1": "Why?", "question2": "How come?", "label": 1, "idx": 9}]))
    assert load_task_data("qqp", "train", qqp).records[0]["label"] == 1
    hidden = write(tmp_path, "stsb_test.jsonl", json.dumps({"sentence1": "A.", "sentence2": "B.", "label": -1.0,
                                                             "idx": 0}) + "\n")
    with pytest.raises(DataError, match="no unlabelled"):
        load_task_data("stsb", "validation", hidden)


def test_a_table_of_the_users_with_named_columns_needs_no_code(tmp_path, capsys):
    csv_path = write(tmp_path, "claims.csv", 'premise,claim,verdict\n"The shop, on Main St, opened in May.",'
                     'The shop opened in May.,entailment\nIt snowed.,It was warm.,not_entailment\n')
    data = load_task_data("rte", "train", csv_path, text_column="premise", text_pair_column="claim",
                          label_column="verdict")
    assert [(r["text"], r["text_pair"], r["label"]) for r in data.records] == [
        ("The shop, on Main St, opened in May.", "The shop opened in May.", 0), ("It snowed.", "It was warm.", 1)]
    # The same through the command line, written as canonical records.
    out = tmp_path / "claims.jsonl"
    cli.main(["--task", "glue;rte", "--file", str(csv_path), "--text_column", "premise", "--text_pair_column", "claim",
              "--label_column", "verdict", "--to_jsonl", str(out), "--compact"])
    capsys.readouterr()
    assert [json.loads(line) for line in out.read_text().splitlines()] == data.records
    # Generic column names need no flags at all.
    plain = write(tmp_path, "plain.csv", "text,text_pair,label\nIt rained.,The ground is wet.,1\nA cat.,A dog.,0\n")
    assert [r["label"] for r in load_task_data("mrpc", "train", plain).records] == [1, 0]
    scores = write(tmp_path, "sim.jsonl", json.dumps({"a": "A cat.", "b": "A kitten.", "sim": "3.5"}) + "\n")
    assert load_task_data("stsb", "train", scores, text_column="a", text_pair_column="b",
                          label_column="sim").records[0]["label"] == 3.5
    with pytest.raises(DataError) as err:
        load_task_data("rte", "train", csv_path, text_column="premise", text_pair_column="hypothesis")
    assert "field 'hypothesis'" in one_line(err) and "line 1" in str(err.value)
    with pytest.raises(ToolkitError, match="one text"):
        load_task_data("sst2", "train", csv_path, text_column="premise", text_pair_column="claim")


def test_sst2_records_are_unchanged():
    data = load_task_data("sst2", "validation", SAMPLES_DIR / SAMPLE_FILES["sst2"]["validation"])
    assert all(set(r) == {"id", "text", "label"} and type(r["label"]) is int for r in data.records)
    assert data.stats.format == "tsv" and data.records[0]["id"] == "line 2"

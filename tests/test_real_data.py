"""The adapters on the real public files in ../shared/data (skipped when it is absent).

Expected numbers come from PROVENANCE.md or are recomputed here from the raw JSON with plain
string operations, independently of the adapters' code."""
import json
import re

import pytest

from tests.conftest import run_module
from utils.data.loading import load_task_data


def raw_squad_questions(path):
    payload = json.loads(path.read_text(encoding="utf-8"))
    for article in payload["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                yield paragraph["context"], qa


def assert_invariant(records):
    for record in records:
        for text, start in zip(record["answers"]["text"], record["answers"]["answer_start"]):
            assert record["context"][start:start + len(text)] == text, record["id"]


def test_squad_v1_dev_all_kept(shared_data):
    path = shared_data / "squad_v1.1" / "dev-v1.1.json"
    data = load_task_data("squad", "validation", path)
    assert data.stats.records_read == data.stats.kept == 10570
    assert not data.stats.dropped and not data.stats.notes
    assert_invariant(data.records)
    # Every published answer survives unchanged (same texts, same offsets, same order).
    raw = {qa["id"]: qa for _, qa in raw_squad_questions(path)}
    for record in data.records:
        answers = raw[record["id"]]["answers"]
        pairs = list(dict.fromkeys((a["text"], a["answer_start"]) for a in answers))
        assert list(zip(record["answers"]["text"], record["answers"]["answer_start"])) == pairs


def test_squad_v2_dev_subset(shared_data):
    data = load_task_data("squad_v2", "validation", shared_data / "squad_v2.0" / "dev-v2.0.first2articles.json")
    assert data.stats.kept == 626
    assert sum(r["is_impossible"] for r in data.records) == 333
    assert data.stats.notes["unanswerable"] == 333
    assert_invariant(data.records)


def test_quoref_dev_offsets(shared_data):
    path = shared_data / "quoref" / "quoref-dev-v0.1.json"
    misaligned = sum(1 for context, qa in raw_squad_questions(path) for a in qa["answers"]
                     if context[a["answer_start"]:a["answer_start"] + len(a["text"])] != a["text"])
    assert misaligned == 50  # PROVENANCE.md
    # Every misaligned answer has its text within 32 characters of the published offset.
    near = sum(1 for context, qa in raw_squad_questions(path) for a in qa["answers"]
               if context[a["answer_start"]:a["answer_start"] + len(a["text"])] != a["text"]
               and a["text"] in context[max(0, a["answer_start"] - 32):a["answer_start"] + len(a["text"]) + 32])
    assert near == 50
    data = load_task_data("quoref", "validation", path)
    assert (data.stats.records_read, data.stats.kept, sum(data.stats.dropped.values())) == (2418, 2418, 0)
    assert data.stats.notes["answer_offset_repaired"] == 50
    multi = sum(1 for _, qa in raw_squad_questions(path)
                if len({(a["text"], a["answer_start"]) for a in qa["answers"]}) > 1)
    assert data.stats.notes["multi_span_answer"] == multi == 221
    assert_invariant(data.records)


@pytest.mark.parametrize("name,task", [("ParaphraseRC_train", "duorc-p"), ("ParaphraseRC_dev", "duorc-p"),
                                       ("SelfRC_train", "duorc-s"), ("SelfRC_dev", "duorc-s")])
def test_duorc_samples(shared_data, name, task):
    path = shared_data / "duorc" / f"{name}.sample.json"
    movies = json.loads(path.read_text(encoding="utf-8"))
    expected_impossible = expected_found = expected_lost = gold_strings = 0
    for movie in movies:
        plot = movie["plot"].lower()
        for qa in movie["qa"]:
            gold_strings += len(qa["answers"])
            if qa["no_answer"]:
                expected_impossible += 1
            elif any(a.lower() in plot or a.strip().rstrip(".").strip().lower() in plot
                     for a in qa["answers"] if a.strip()):
                expected_found += 1
            else:
                expected_lost += 1
    data = load_task_data(task, "train", path)
    assert data.stats.notes.get("unanswerable", 0) == expected_impossible
    # Every question is kept, with every original answer string, for evaluation; training uses
    # those whose answer was found in the plot.
    assert data.stats.kept == len(data.records) == expected_impossible + expected_found + expected_lost
    assert sum(len(record["gold"]) for record in data.records) == gold_strings
    assert len(data.span_records()) == expected_impossible + expected_found
    assert data.stats.without_located_answer.get("answer_not_in_plot", 0) == expected_lost
    assert_invariant(data.records)
    # A span that cuts a word ("China" inside "Chinatown") is only chosen when the answer occurs
    # nowhere as whole words; checked with a regular expression, independently of the adapter.
    for record in data.records:
        for text, start in zip(record["answers"]["text"], record["answers"]["answer_start"]):
            context = record["context"]
            cuts_word = (start > 0 and context[start - 1].isalnum() and text[0].isalnum()) or \
                (start + len(text) < len(context) and context[start + len(text)].isalnum() and text[-1].isalnum())
            if cuts_word:
                whole = re.search(r"(?<![^\W_])" + re.escape(text) + r"(?![^\W_])", context, re.IGNORECASE)
                assert whole is None, (record["id"], text)


@pytest.mark.parametrize("name", ["drop_dataset_train.sample.json", "drop_dataset_dev.sample.json",
                                  "allennlp_drop_fixture.json"])
def test_drop_files(shared_data, name):
    payload = json.loads((shared_data / "drop" / name).read_text(encoding="utf-8"))
    kinds = {"number": 0, "single": 0, "other": 0}
    for entry in payload.values():
        for qa in entry["qa_pairs"]:
            answer = qa["answer"]
            if answer["number"]:
                kinds["number"] += 1
            elif len(answer["spans"]) == 1 and answer["spans"][0] in entry["passage"]:
                kinds["single"] += 1
            else:
                kinds["other"] += 1
    data = load_task_data("drop", "train", shared_data / "drop" / name)
    assert data.stats.without_located_answer.get("number_answer", 0) == kinds["number"]
    assert len(data.span_records()) == kinds["single"]
    assert data.stats.kept == data.stats.records_read == sum(kinds.values())  # every question, for evaluation
    assert_invariant(data.records)


def test_quoref_allennlp_sample(shared_data):
    data = load_task_data("quoref", "validation", shared_data / "quoref" / "allennlp_quoref_sample.json")
    assert data.stats.records_read == 4
    assert_invariant(data.records)


def test_sst2(shared_data):
    train = load_task_data("sst2", "train", shared_data / "sst2" / "train.tsv")
    dev = load_task_data("sst2", "validation", shared_data / "sst2" / "dev.tsv")
    test = load_task_data("sst2", "validation", shared_data / "sst2" / "test.tsv")
    assert len(train.records) == 67349 and len(dev.records) == 872 and len(test.records) == 1821
    assert train.stats.notes == {"label_negative": 29780, "label_positive": 37569}  # PROVENANCE.md
    assert dev.stats.notes == {"label_negative": 428, "label_positive": 444}
    assert all(r["label"] == -1 for r in test.records)
    assert all(r["text"] and "\t" not in r["text"] for r in train.records)


def test_command_line_on_real_file(shared_data, tmp_path):
    out = tmp_path / "squad.jsonl"
    done = run_module("utils.data", "--task", "squad_v2", "--file",
                      str(shared_data / "squad_v2.0" / "dev-v2.0.first2articles.json"), "--to_jsonl", str(out),
                      "--stats_file", str(tmp_path / "adapter_stats.json"))
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["kept"] == 626 and printed["notes"]["unanswerable"] == 333
    assert json.loads((tmp_path / "adapter_stats.json").read_text())["kept"] == 626
    assert len(out.read_text().splitlines()) == 626
    again = load_task_data("squad_v2", "validation", out)
    assert again.stats.kept == 626


@pytest.mark.slow
def test_task2vec_on_real_files_with_the_real_tokenizer(shared_data, tmp_path):
    """A tiny probe with the GPT-2 vocabulary embeds real SST-2 and SQuAD text; the two tasks lie far
    above their noise floors (the recorded run with all seven tasks: benchmarks/task2vec_noise_floor.py)."""
    from task2vec.__main__ import main as embed_main
    from task2vec.analysis.distances import task2vec_distance
    from task2vec.embedding.io import load_task_embedding
    from utils.models.tiny import build_tiny_model

    probe = build_tiny_model(tmp_path / "probe", n_layer=2, n_embd=32, n_head=2, n_positions=128,
                             tokenizer_path=str(shared_data / "gpt2_tokenizer"), dropout=0.0, seed=0)
    embed_main(["--tasks", "sst2,squad", "--task_file", f"sst2={shared_data / 'sst2' / 'train.tsv'}",
                "--task_file", f"squad={shared_data / 'squad_v1.1' / 'dev-v1.1.json'}", "--model_name", str(probe),
                "--output_dir", str(tmp_path / "TaskEmb"), "--batch_size", "8", "--num_batches", "2",
                "--head_steps", "5", "--num_samples", "2", "--no_progress"])
    sst2, squad = (load_task_embedding(tmp_path / "TaskEmb", task) for task in ("sst2", "squad"))
    assert sst2.metadata["probe"]["config"]["vocab_size"] == 50257
    floor = max(sst2.metadata["noise_floor"]["task"], squad.metadata["noise_floor"]["task"])
    assert task2vec_distance(sst2.vector, squad.vector) > 3 * floor


WINDOWS = ["--max_seq_length", "128", "--doc_stride", "32", "--max_question_length", "16", "--max_answer_length", "8",
           "--features_cache_dir", "none", "--max_steps", "2", "--per_device_train_batch_size", "4", "--no_progress"]


@pytest.mark.slow
def test_duorc_paraphrase_dev_every_question_through_the_script(shared_data, tiny_checkpoint, tmp_path):
    """All 48 questions of the real ParaphraseRC dev sample are predicted and scored against all
    87 original answer strings (13 of these questions have no answer findable in the plot)."""
    import run_intermediate_source_GPT2 as script
    from tests.test_qa_metrics import duorc_reference

    dev = shared_data / "duorc" / "ParaphraseRC_dev.sample.json"
    out = tmp_path / "duorc"
    results = script.main(["--dataset_name", "duorc-p", "--model_name", str(tiny_checkpoint), "--train_file",
                           str(shared_data / "duorc" / "ParaphraseRC_train.sample.json"), "--validation_file", str(dev),
                           "--output_dir", str(out), *WINDOWS])
    movies = json.loads(dev.read_text())
    predictions = json.loads((out / "eval_predictions.json").read_text())
    assert len(predictions) == results["eval_samples"] == 48
    assert sum(len(qa["answers"]) for movie in movies for qa in movie["qa"]) == 87
    exact, f1 = duorc_reference(movies, predictions)
    assert results["eval_exact_match"] == pytest.approx(exact) and results["eval_f1"] == pytest.approx(f1)
    assert results["eval_without_located_answer"] == 13


def test_drop_fixture_every_question_and_generative_training_on_numbers(shared_data, tmp_path):
    """All 19 questions of the DROP fixture are evaluated with the official metric, per answer type;
    the generative objective trains on number answers of the bundled DROP sample (passages that
    fit in one 384-token window)."""
    import run_intermediate_source_GPT2 as script
    from utils.data.loading import sample_file
    from utils.models.tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny", n_layer=1, n_embd=16, n_head=2, n_positions=384, seed=0)
    fixture = shared_data / "drop" / "allennlp_drop_fixture.json"
    out = tmp_path / "drop"
    results = script.main(["--dataset_name", "drop", "--objective", "generative", "--model_name", str(model),
                           "--train_file", str(sample_file("drop", "train")),
                           "--validation_file", str(fixture), "--output_dir", str(out), *WINDOWS,
                           "--max_seq_length", "384", "--doc_stride", "128"])
    assert results["eval_samples"] == results["eval_total"] == 19
    assert (results["eval_number_total"], results["eval_span_total"]) == (13, 6)
    assert results["train_examples_without_located_answer"] > 0       # numbers and dates, in their text form
    official = run_module("utils.drop_metric", str(fixture), str(out / "eval_predictions.json"))
    assert official.returncode == 0, official.stderr
    printed = json.loads(official.stdout)
    assert results["eval_exact_match"] == pytest.approx(printed["exact_match"])
    assert results["eval_f1"] == pytest.approx(printed["f1"])

"""Every bad value a user can type gets one clear line (`error: ...` or argparse's usage + error) and
exit status 2 before any work, never a stack trace: number flags, seeds, learning rates, stray task
files, absurdly nested JSON, Excel's byte-order mark, unwritable output paths, sequences longer
than the model's positions."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

import maml_qa
import run_intermediate_source_GPT2
import run_target_task_GPT2_sst2_multiple
import TaskDiversity
from task2vec import __main__ as task2vec_cli
from task2vec.embedding.io import load_task_embedding
from tests.conftest import REPO_ROOT, run_module
from utils.data import __main__ as data_cli
from utils import tiny_model
from utils import drop_metric, squad_metric
from task2vec.selection import __main__ as selection_command
from utils.results import comparison, seed_statistics
from utils.models.loading import require_positions
from utils.data.registry import files_by_task
from utils.run.flags import LEARNING_RATE, SEED, number
from utils.data.loading import load_task_data
from utils.run.errors import DataError, ToolkitError
from utils.data.records import read_jsonl
from utils.data.registry import get_task

MISSING = "/nonexistent-bad-values"
BAD_NUMBERS = ("nan", "inf", "-1", "0")
# Flags for which a negative number is a real setting (a score difference, a probability threshold).
NEGATIVE_ALLOWED = {"--null_score_diff_threshold", "--na-prob-thresh"}


# ----------------------------------------------------------------------------- the argparse types

@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "1e999"])
@pytest.mark.parametrize("kind", [number(float), number(float, minimum=0), number(float, above=0, below=1),
                                  LEARNING_RATE])
def test_number_refuses_values_that_are_not_finite(kind, text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected a finite number"):
        kind(text)


def test_number_keeps_closed_and_open_bounds_and_says_what_it_expected():
    closed, half_open = number(float, minimum=0, maximum=1), number(float, above=0)
    assert number(float)("-2.5") == -2.5 and closed("0") == 0.0 and closed("1") == 1.0 and half_open("1e-9") == 1e-9
    for text in ("-0.1", "1.01"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"expected a number between 0 and 1, got {text}"):
            closed(text)
    with pytest.raises(argparse.ArgumentTypeError, match="expected a number > 0, got 0.0"):
        half_open("0")
    with pytest.raises(argparse.ArgumentTypeError, match="strictly between 0 and 1, got 1.0"):
        number(float, above=0, below=1)("1")
    assert LEARNING_RATE("1") == 1.0 and LEARNING_RATE("3e-5") == 3e-5
    with pytest.raises(argparse.ArgumentTypeError, match="> 0 and <= 1, got 2.0; typical"):
        LEARNING_RATE("2")
    positive = number(int, minimum=1)
    assert positive("3") == 3 and isinstance(positive("3"), int)
    with pytest.raises(argparse.ArgumentTypeError, match="expected an integer, got '1.5'"):
        positive("1.5")
    assert SEED("0") == 0 and SEED(str(2**32 - 1)) == 2**32 - 1
    for text in ("-1", str(2**32), "1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="integer"):
            SEED(text)


# ----------------------------------------------------------------------------- every numeric flag of every script

def entry_point_status(main: Callable[[list[str]], object], argv: list[str], capsys) -> tuple[int, str]:
    """(exit status, stderr) of `main(argv)` as `utils.run.progress.run_entry_point` reports it; any other
    exception is a bug and propagates (the test fails with its traceback)."""
    try:
        main(argv)
        status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else 1
    except (ToolkitError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        status = 2
    return status, capsys.readouterr().err


def script_cases(work: Path) -> list[tuple[str, argparse.ArgumentParser, Callable, Callable[[str], list[str]]]]:
    """(name, parser, main, argv for one extra flag) per command. Each argv is valid but for a file or
    checkpoint that does not exist, so a run that gets past its flags stops at once with exit 2."""
    def folder(name: str) -> str:
        return tempfile.mkdtemp(prefix=f"{name}-", dir=work) + "/out"   # a fresh output folder per case

    return [
        ("run_intermediate_source_GPT2.py", run_intermediate_source_GPT2.build_parser(),
         run_intermediate_source_GPT2.main,
         lambda name: ["--model_name", MISSING, "--train_file", f"{MISSING}/t.json", "--validation_file",
                       f"{MISSING}/v.json", "--output_dir", folder(name)]),
        ("run_target_task_GPT2_sst2_multiple.py", run_target_task_GPT2_sst2_multiple.build_parser(),
         run_target_task_GPT2_sst2_multiple.main,
         lambda name: ["--pretrained_model", MISSING, "--train_file", f"{MISSING}/t.tsv", "--validation_file",
                       f"{MISSING}/v.tsv", "--output_dir", folder(name)]),
        ("maml_qa.py", maml_qa.build_parser(), maml_qa.main,
         lambda name: ["--model_name", MISSING, "--tasks", "squad", "--task_file", f"squad={MISSING}/t.json",
                       "--output_dir", folder(name)]),
        ("python -m task2vec", task2vec_cli.build_parser(), task2vec_cli.main,
         lambda name: ["--model_name", MISSING, "--tasks", "squad", "--task_file", f"squad={MISSING}/t.json",
                       "--output_dir", folder(name)]),
        ("TaskDiversity.py", TaskDiversity.build_parser(), TaskDiversity.main,
         lambda name: ["--emb_dir", MISSING, "--output_dir", folder(name)]),
        ("python -m utils.data", data_cli.build_parser(), data_cli.main,
         lambda name: ["--task", "squad", "--file", f"{MISSING}/t.json"]),
        ("python -m utils.seed_statistics", seed_statistics.build_parser(), seed_statistics.main,
         lambda name: [f"{MISSING}/a.json", f"{MISSING}/b.json"]),
        ("python -m task2vec.selection", selection_command.build_parser(), selection_command.main,
         lambda name: ["--results_table", f"{MISSING}/results.csv", "--output_dir", folder(name)]),
        ("python -m utils.compare_runs", comparison.build_parser(), comparison.main,
         lambda name: [f"{MISSING}/a.json", f"{MISSING}/b.json"]),
        ("python -m utils.squad_metric", squad_metric.build_parser(), squad_metric.main,
         lambda name: [f"{MISSING}/data.json", f"{MISSING}/pred.json"]),
        ("python -m utils.drop_metric", drop_metric.build_parser(), drop_metric.main,
         lambda name: [f"{MISSING}/gold.json", f"{MISSING}/pred.json"]),
        ("python -m utils.tiny_model", tiny_model.build_parser(), tiny_model.main,
         lambda name: ["--output_dir", folder(name), "--tokenizer", MISSING]),
    ]


def parses_numbers(kind: Callable[[str], object]) -> bool:
    """The type turns "1" (or "0.5", for a type of the open interval (0, 1)) into a number or a list
    of numbers."""
    for text in ("1", "0.5"):
        try:
            parsed = kind(text)
        except Exception:  # noqa: BLE001 - a task name, a NAME=PATH pair, a number out of range
            continue
        values = parsed if isinstance(parsed, list) else [parsed]
        return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    return False


def numeric_flags(parser: argparse.ArgumentParser) -> list[str]:
    """The long option of every action whose type parses numbers."""
    return [next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])
            for action in parser._actions
            if action.option_strings and callable(action.type) and parses_numbers(action.type)]


def test_the_walk_finds_the_numeric_flags():
    """The discovery itself, against flags known by name (so an empty walk cannot pass)."""
    found = {name: set(numeric_flags(parser)) for name, parser, _, _ in script_cases(Path(tempfile.gettempdir()))}
    assert {"--learning_rate", "--warmup_ratio", "--seed", "--data_seed", "--max_seq_length",
            "--null_score_diff_threshold", "--max_train_samples"} <= found["run_intermediate_source_GPT2.py"]
    assert {"--seeds", "--max_length", "--epochs", "--batch_size"} <= found["run_target_task_GPT2_sst2_multiple.py"]
    assert {"--inner_lr", "--outer_lr", "--outer_lr_final", "--eval_adapt_steps"} <= found["maml_qa.py"]
    assert {"--head_learning_rate", "--head_steps", "--max_length"} <= found["python -m task2vec"]
    assert found["TaskDiversity.py"] == {"--subset_size", "--confidence", "--seed"}
    assert found["python -m utils.seed_statistics"] == found["python -m utils.compare_runs"] == {"--bootstrap", "--seed"}
    assert found["python -m task2vec.selection"] == {"--max_texts", "--max_length", "--k", "--bootstrap", "--confidence",
                                                    "--seed"}
    assert found["python -m utils.squad_metric"] == {"--na-prob-thresh"}
    assert found["python -m utils.data"] == found["python -m utils.drop_metric"] == set()


def test_every_numeric_flag_of_every_script_refuses_bad_numbers_in_one_line(tmp_path, capsys):
    """nan, inf, -1 and 0 for every numeric flag: exit 2, one error, no traceback; nan and inf (and
    -1, except where negative numbers are settings) are refused by the flag itself."""
    checked = 0
    for name, parser, main, argv in script_cases(tmp_path):
        for flag in numeric_flags(parser):
            for value in BAD_NUMBERS:
                status, stderr = entry_point_status(main, [*argv(name), flag, value], capsys)
                where = f"{name} {flag} {value}"
                assert status == 2, f"{where}: exit {status}\n{stderr}"
                assert "Traceback" not in stderr and "error:" in stderr, f"{where}:\n{stderr}"
                if value in ("nan", "inf") or (value == "-1" and flag not in NEGATIVE_ALLOWED):
                    assert f"argument {flag}" in stderr, f"{where} was not refused by the flag:\n{stderr}"
                checked += 1
    assert checked > 250


@pytest.mark.slow
def test_the_scripts_as_a_user_runs_them_answer_as_the_in_process_helper(tmp_path, capsys):
    """Two kinds of case above as real processes (a value argparse refuses, a valid one whose run stops
    at a missing checkpoint): same status, same last line as the in-process helper."""
    cases = [
        ("run_target_task_GPT2_sst2_multiple.py", run_target_task_GPT2_sst2_multiple.main,
         ["--pretrained_model", MISSING, "--train_file", f"{MISSING}/t.tsv", "--learning_rate", "nan"],
         "--learning_rate"),
        ("maml_qa.py", maml_qa.main, ["--model_name", MISSING, "--tasks", "squad", "--output_dir",
                                      str(tmp_path / "m"), "--outer_lr", "0"], f"{MISSING} is not a folder"),
    ]
    for script, main, argv, expected in cases:
        done = run_module(str(REPO_ROOT / script), *argv, cwd=tmp_path)
        status, stderr = entry_point_status(main, argv, capsys)
        assert done.returncode == status == 2, done.stderr
        assert "Traceback" not in done.stderr and expected in done.stderr and expected in stderr
        # The last line, without argparse's program name (pytest's own in-process).
        assert (done.stderr.strip().splitlines()[-1].split("error: ", 1)[1]
                == stderr.strip().splitlines()[-1].split("error: ", 1)[1])


# ----------------------------------------------------------------------------- learning rates, warm-up, seeds

def test_absurd_learning_rate_and_warmup_ratio_are_refused_with_what_to_use(tmp_path, capsys):
    base = ["--pretrained_model", MISSING, "--train_file", f"{MISSING}/t.tsv", "--output_dir", str(tmp_path / "o")]
    target = run_target_task_GPT2_sst2_multiple.main
    status, stderr = entry_point_status(target, [*base, "--learning_rate", "5"], capsys)
    assert status == 2 and "argument --learning_rate" in stderr and "1e-5" in stderr
    status, stderr = entry_point_status(target, [*base, "--warmup_ratio", "1.5"], capsys)
    assert status == 2 and "argument --warmup_ratio" in stderr and "between 0 and 1" in stderr
    status, stderr = entry_point_status(maml_qa.main, ["--model_name", MISSING, "--outer_lr", "1.5"], capsys)
    assert status == 2 and "argument --outer_lr" in stderr
    status, stderr = entry_point_status(target, [*base, "--seeds", "1", "-3"], capsys)
    assert status == 2 and "argument --seeds" in stderr and "-3" in stderr


# ----------------------------------------------------------------------------- task files for tasks not in the run

def test_a_task_file_for_a_task_outside_the_run_is_an_error_naming_both(tmp_path):
    specs = [get_task("squad"), get_task("drop")]
    assert files_by_task([("SQuAD_v1", "a.json")], specs, "--task_file") == {"squad": "a.json"}
    with pytest.raises(ToolkitError) as err:
        files_by_task([("squad", "a.json"), ("duorc;SelfRC", "b.json")], specs, "--task_file")
    message = str(err.value)
    assert "duorc-s" in message and "squad, drop" in message and "b.json" in message
    with pytest.raises(ToolkitError, match="squad_v2 is not among this run's tasks"):
        maml_qa.main(["--tasks", "squad", "--task_file", f"squad_v2={MISSING}/x.json", "--model_name", MISSING,
                      "--output_dir", str(tmp_path / "m")])
    with pytest.raises(ToolkitError, match="sst2 is not among this run's tasks"):
        task2vec_cli.main(["--tasks", "squad", "--task_file", f"sst2={MISSING}/x.tsv", "--model_name", MISSING,
                           "--output_dir", str(tmp_path / "t")])


# ----------------------------------------------------------------------------- JSON nested absurdly deep

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("reader", ["train_file", "jsonl", "metric", "summary", "embedding_metadata"])
def test_json_nested_too_deeply_is_a_data_error_naming_the_file(tmp_path, reader):
    if reader == "train_file":
        path = tmp_path / "train.json"
        path.write_text(DEEP)
        read = lambda: load_task_data("squad", "train", path)  # noqa: E731
    elif reader == "jsonl":
        path = tmp_path / "rows.jsonl"
        path.write_text('{"id": 1}\n' + DEEP + "\n")
        read = lambda: list(read_jsonl(path))  # noqa: E731
    elif reader == "metric":
        path = tmp_path / "pred.json"
        path.write_text(DEEP)
        read = lambda: squad_metric.read_json_file(str(path))  # noqa: E731
    elif reader == "summary":
        path = tmp_path / "summary.json"
        path.write_text(DEEP)
        read = lambda: seed_statistics.read_summary(path)  # noqa: E731
    else:
        folder = tmp_path / "TaskEmb" / "squad"
        folder.mkdir(parents=True)
        import numpy as np

        np.save(folder / "embedding.npy", np.ones(4, dtype=np.float32))
        path = folder / "embedding.json"
        path.write_text(DEEP)
        read = lambda: load_task_embedding(tmp_path / "TaskEmb", "squad")  # noqa: E731
    with pytest.raises(DataError) as err:
        read()
    assert str(path) in str(err.value) and "nested too deeply to be a data file" in str(err.value)


def test_deep_json_through_the_data_command_is_one_line(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(DEEP)
    done = run_module("utils.data", "--task", "squad", "--file", str(path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"error: {path}: JSON nested too deeply to be a data file"]


# ----------------------------------------------------------------------------- a byte-order mark (Excel)

def test_a_tsv_saved_with_a_byte_order_mark_reads_like_one_without(tmp_path):
    rows = "sentence\tlabel\na gripping , funny film \t1\nflat and dull \t0\n"
    plain, marked = tmp_path / "plain.tsv", tmp_path / "excel.tsv"
    plain.write_text(rows, encoding="utf-8")
    marked.write_bytes(b"\xef\xbb\xbf" + rows.encode("utf-8"))
    expected = load_task_data("sst2", "train", plain).records
    assert [r["label"] for r in expected] == [1, 0]
    assert load_task_data("sst2", "train", marked).records == expected
    csv_file = tmp_path / "excel.csv"
    csv_file.write_bytes(b"\xef\xbb\xbf" + b"text,label\nfine,positive\n")
    assert [(r["text"], r["label"]) for r in load_task_data("sst2", "train", csv_file).records] == [("fine", 1)]


# ----------------------------------------------------------------------------- --to_jsonl names the user's path

def sample_args(tmp_path: Path) -> list[str]:
    path = tmp_path / "dev.tsv"
    path.write_text("sentence\tlabel\ngood\t1\n", encoding="utf-8")
    return ["--task", "sst2", "--file", str(path)]


def test_to_jsonl_errors_name_the_path_the_user_gave(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out in (folder, a_file / "out.jsonl"):
        status, stderr = entry_point_status(data_cli.main, [*sample_args(tmp_path), "--to_jsonl", str(out)], capsys)
        assert status == 2 and str(out) in stderr and "Traceback" not in stderr
    # A failure while writing (no permission, a full disk) names OUT, not the temporary file beside it.
    import utils.run.outputs as fs

    def refuse(prefix: str, dir: Path) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied", str(Path(dir) / f"{prefix}x1y2"))

    monkeypatch.setattr(fs.tempfile, "mkstemp", refuse)
    out = tmp_path / "records.jsonl"
    status, stderr = entry_point_status(data_cli.main, [*sample_args(tmp_path), "--to_jsonl", str(out)], capsys)
    assert status == 2 and f"'{out}'" in stderr and "x1y2" not in stderr and "Permission denied" in stderr


# ----------------------------------------------------------------------------- sequences longer than the model

def test_require_positions_names_the_flag_the_limit_and_the_checkpoint():
    class Config:
        n_positions = 128

    require_positions(128, Config(), "--max_length", "tiny")
    with pytest.raises(ToolkitError) as err:
        require_positions(129, Config(), "--max_length", "ckpt/tiny")
    assert str(err.value) == ("--max_length 129 exceeds the 128 positions of ckpt/tiny; use --max_length 128 "
                              "or less")

    class Other:  # configs of other families call it max_position_embeddings
        max_position_embeddings = 512

    with pytest.raises(ToolkitError, match="512 positions"):
        require_positions(1024, Other(), "--max_seq_length", "x")


# ----------------------------------------------------------------------------- the metric commands

def test_metric_commands_refuse_empty_gold_files_and_non_finite_no_answer_probabilities(tmp_path, capsys):
    empty_drop, empty_squad, predictions = tmp_path / "drop.json", tmp_path / "squad.json", tmp_path / "pred.json"
    empty_drop.write_text("{}")
    empty_squad.write_text('{"data": []}')
    predictions.write_text('{"q1": ""}')
    for main, gold in ((drop_metric.main, empty_drop), (drop_metric.main, empty_squad),
                       (squad_metric.main, empty_squad)):
        status, stderr = entry_point_status(main, [str(gold), str(predictions)], capsys)
        assert status == 2 and stderr == f"error: {gold}: holds no questions to score\n"
    data = tmp_path / "dev.json"
    data.write_text(json.dumps({"data": [{"paragraphs": [{"context": "Ada wrote.", "qas": [
        {"id": "q1", "question": "Who?", "answers": [], "is_impossible": True}]}]}]}))
    na_probs = tmp_path / "na.json"
    na_probs.write_text('{"q1": NaN}')   # Python's json reads it; it is no probability
    argv = [str(data), str(predictions), "--na-prob-file", str(na_probs)]
    status, stderr = entry_point_status(squad_metric.main, argv, capsys)
    assert status == 2 and stderr == f"error: {na_probs}: record q1: expected a finite number\n"


def test_max_length_beyond_the_model_positions_is_one_line(tiny_checkpoint, tmp_path):
    """Before, the target script and python -m task2vec crashed with an IndexError in the forward pass."""
    import run_target_task_GPT2_sst2_multiple as target
    import task2vec.__main__
    from utils.run.errors import ToolkitError
    from utils.data.loading import sample_file

    with pytest.raises(ToolkitError, match="--max_length 200 exceeds the 128 positions"):
        target.main(["--pretrained_model", str(tiny_checkpoint), "--train_file", str(sample_file("sst2", "train")),
                     "--validation_file", str(sample_file("sst2", "validation")), "--max_length", "200",
                     "--output_dir", str(tmp_path / "target"), "--features_cache_dir", "none"])
    with pytest.raises(ToolkitError, match="--max_length 200 exceeds the 128 positions"):
        task2vec.__main__.main(["--tasks", "sst2", "--use_samples", "--model_name", str(tiny_checkpoint), "--max_length", "200",
                           "--output_dir", str(tmp_path / "emb")])
    assert list(tmp_path.iterdir()) == []  # and the failed starts left no folders

"""Run plumbing: seeds, device and precision choice, the output files of every run, shared flags."""
import argparse
import json
import random
from importlib import metadata

import numpy as np
import pytest
import torch

from utils.run.flags import add_data_file_args, add_output_args, add_runtime_args
from utils.data.registry import task_name
from utils.run.errors import ToolkitError
from utils.run.outputs import JsonlLog, hold_run_folder, write_all_results, write_run_args
from utils.training.runtime import make_generator, resolve_device, resolve_precision, set_seed


def draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_set_seed_fixes_every_generator():
    set_seed(7)
    first = draws()
    set_seed(7)
    assert draws() == first
    set_seed(8)
    assert draws() != first
    with pytest.raises(TypeError):
        set_seed(None)


def test_explicit_generator():
    assert torch.equal(torch.rand(3, generator=make_generator(1)), torch.rand(3, generator=make_generator(1)))


def test_device_and_precision():
    assert resolve_device("cpu").type == "cpu"
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu).name == "fp32" and resolve_precision("auto", cpu).autocast_dtype is None
    assert resolve_precision("bf16", cpu).autocast_dtype is torch.bfloat16
    with pytest.raises(ToolkitError, match="fp16"):
        resolve_precision("fp16", cpu)
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ToolkitError, match="no CUDA"):
            resolve_device("cuda")


def test_output_dir_refused_unless_overwrite_or_resume(tmp_path):
    out = tmp_path / "run"
    with hold_run_folder(out, overwrite=False):  # new
        (out / "x").write_text("1")
    with pytest.raises(ToolkitError, match="--overwrite_output_dir"):
        with hold_run_folder(out, overwrite=False):
            pass
    with hold_run_folder(out, overwrite=False, resuming=True):
        assert (out / "x").exists()
    with hold_run_folder(out, overwrite=True):
        assert not (out / "x").exists()


def parser_with_everything():
    parser = argparse.ArgumentParser()
    add_runtime_args(parser)
    add_output_args(parser)
    add_data_file_args(parser)
    parser.add_argument("--dataset_name", type=task_name, default="squad", help="task")
    return parser


def test_shared_flags_have_defaults_and_help():
    parser = parser_with_everything()
    args = parser.parse_args(["--output_dir", "o", "--dataset_name", "duorc;SelfRC"])
    assert args.seed == 42 and args.device == "auto" and args.precision == "auto"
    assert args.dataset_name == "duorc-s" and args.max_train_samples is None
    for action in parser._actions:
        if action.dest != "help":
            assert action.help, action.dest
    with pytest.raises(SystemExit):
        parser.parse_args(["--output_dir", "o", "--max_train_samples", "0"])


def test_unknown_dataset_name_is_a_parser_error(capsys):
    with pytest.raises(SystemExit):
        parser_with_everything().parse_args(["--output_dir", "o", "--dataset_name", "nope"])
    assert "Known tasks" in capsys.readouterr().err


def test_run_files(tmp_path):
    args = parser_with_everything().parse_args(["--output_dir", str(tmp_path), "--seed", "3"])
    before = dict(vars(args))
    path = write_run_args(tmp_path, args, {"total_steps": 10, "effective_batch_size": 32})
    assert vars(args) == before  # derived values go beside the arguments, never into them
    record = json.loads(path.read_text())
    assert record["args"]["seed"] == 3 and record["derived"]["total_steps"] == 10
    assert record["versions"]["torch"] == metadata.version("torch")
    assert {"commit", "dirty"} <= set(record["git"]) and record["started_at"]

    log = JsonlLog(tmp_path / "log.jsonl")
    log.log({"step": 1, "loss": 2.5})
    log.log({"step": 2, "eval_f1": 10.0})
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2] and "time" in lines[0]
    marked = JsonlLog(tmp_path / "marked.jsonl", run_id="abc123")
    marked.log({"step": 3, "loss": float("nan"), "curve": [1.0, float("inf")]})
    text = (tmp_path / "marked.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text  # valid JSON, which has neither
    line = json.loads(text)
    assert line["run_id"] == "abc123" and line["loss"] is None and "nan" in line["loss_reason"]
    assert line["curve"] == [1.0, None]

    write_all_results(tmp_path, {"eval_f1": 50.0, "train_loss": 1.25})
    assert json.loads((tmp_path / "all_results.json").read_text()) == {"eval_f1": 50.0, "train_loss": 1.25}
    with pytest.raises(ValueError, match="flat"):
        write_all_results(tmp_path, {"eval": {"f1": 1.0}})
    with pytest.raises(ValueError, match="finite"):
        write_all_results(tmp_path, {"train_loss": float("nan")})


def test_a_file_is_written_whole_or_not_at_all(tmp_path):
    """write_json and write_jsonl share utils.run.outputs.atomic_text_file: a failure part-way leaves the
    previous file as it was and no temporary file beside it."""
    from utils.data.records import write_jsonl
    from utils.run.outputs import atomic_text_file

    target = tmp_path / "out.jsonl"
    write_jsonl(target, [{"a": 1}])
    before = target.read_bytes()

    def records():
        yield {"a": 2}
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match=f"No space left on device: '{target}'"):
        write_jsonl(target, records())
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]
    with pytest.raises(ValueError):
        with atomic_text_file(target) as out:
            out.write("half")
            raise ValueError("a bug")
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]

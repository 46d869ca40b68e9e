"""Long runs as a researcher runs them: concurrent runs on one folder, resumption with changed
arguments, a target run killed part-way, a full disk at the final save, and failed starts."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import SafetensorError

import maml_qa
import run_intermediate_source_GPT2 as intermediate
import run_target_task_GPT2_sst2_multiple as target
import utils.models.checkpoint
from tests.conftest import REPO_ROOT
from utils.run.errors import DiskFullError, ToolkitError
from utils.data.loading import sample_file

SQUAD = ["--dataset_name", "squad", "--train_file", str(sample_file("squad", "train")), "--validation_file",
         str(sample_file("squad", "validation")), "--max_seq_length", "96", "--doc_stride", "32",
         "--max_question_length", "16", "--max_answer_length", "8", "--features_cache_dir", "none",
         "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--seed", "1"]
SST2 = ["--train_file", str(sample_file("sst2", "train")), "--validation_file", str(sample_file("sst2", "validation")),
        "--batch_size", "8", "--learning_rate", "1e-3", "--features_cache_dir", "none"]


def log_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_a_second_run_on_a_busy_folder_is_refused(tiny_checkpoint, tmp_path):
    """Before, both runs succeeded and mixed their checkpoints and log lines."""
    out = tmp_path / "run"
    command = [sys.executable, "run_intermediate_source_GPT2.py", "--model_name", str(tiny_checkpoint), *SQUAD,
               "--output_dir", str(out), "--logging_steps", "1"]
    first = subprocess.Popen([*command, "--max_steps", "600", "--save_steps", "200"], cwd=REPO_ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "run_args.json").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, first.communicate()[1]
    second = subprocess.run([*command, "--max_steps", "5", "--overwrite_output_dir", "--seed", "2"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    still_running = first.poll() is None
    _, first_err = first.communicate(timeout=300)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"in use by another run (pid {first.pid}" in second.stderr
    assert still_running  # the refusal came while the first run was still running: it did not wait for it
    assert first.returncode == 0, first_err
    ids = {line.get("run_id") for line in log_lines(out / "log.jsonl")}
    assert len(ids) == 1 and None not in ids
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-200", "checkpoint-400"]


def test_resuming_with_changed_arguments(tiny_checkpoint, tmp_path):
    """Before, a changed --learning_rate or --model_name was silently ignored on resumption while
    run_args.json recorded the new value."""
    out = tmp_path / "run"
    common = ["--model_name", str(tiny_checkpoint), *SQUAD, "--output_dir", str(out), "--max_steps", "10",
              "--save_steps", "5", "--logging_steps", "1", "--warmup_ratio", "0"]
    intermediate.main(common)
    full_lr = {line["step"]: line["learning_rate"] for line in log_lines(out / "log.jsonl") if "learning_rate" in line}
    resume = [*common, "--resume_from_checkpoint", str(out / "checkpoint-5")]
    with pytest.raises(ToolkitError, match=r"--learning_rate 0.001 -> 0.0005.*--allow_changed_args"):
        intermediate.main([*resume, "--learning_rate", "5e-4"])
    with pytest.raises(ToolkitError, match="--model_name"):
        intermediate.main([*resume, "--model_name", str(tmp_path / "elsewhere")])
    with pytest.raises(ToolkitError, match="does not have: \\['learning_rat'\\]"):
        intermediate.main([*resume, "--learning_rate", "5e-4", "--allow_changed_args", "learning_rat"])

    intermediate.main([*resume, "--learning_rate", "5e-4", "--allow_changed_args", "learning_rate"])
    record = json.loads((out / "run_args.json").read_text())
    assert record["args"]["learning_rate"] == 5e-4
    assert record["derived"]["resume"]["changed"] == {"learning_rate": [1e-3, 5e-4]}
    resumed_lines = [line for line in log_lines(out / "log.jsonl") if "learning_rate" in line][-5:]
    for line in resumed_lines:  # steps 6-10 ran at half the learning rate of the same schedule
        assert line["learning_rate"] == pytest.approx(full_lr[line["step"]] / 2, rel=1e-9)
    # The starting weights come from the checkpoint: an allowed --model_name is recorded as it was.
    intermediate.main([*resume, "--learning_rate", "5e-4", "--model_name", str(tmp_path / "elsewhere"),
                       "--allow_changed_args", "model_name"])
    assert json.loads((out / "run_args.json").read_text())["args"]["model_name"] == str(tiny_checkpoint)


SEEDS = ["13", "21", "42", "87", "100"]


@pytest.mark.slow
def test_target_run_killed_after_three_seeds_resumes(tiny_checkpoint, tmp_path):
    """Before, the finished seeds of a killed run could not be reused."""
    common = [sys.executable, "run_target_task_GPT2_sst2_multiple.py", "--pretrained_model", str(tiny_checkpoint),
              *SST2, "--epochs", "6", "--num_runs", "5"]
    out = tmp_path / "killed"
    run = subprocess.Popen([*common, "--output_dir", str(out)], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    third = out / "runs" / "seed_42" / "all_results.json"
    deadline = time.monotonic() + 240
    while not third.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.communicate()
    assert third.exists()
    finished = {seed: (out / "runs" / f"seed_{seed}" / "all_results.json") for seed in SEEDS[:3]}
    stamps = {seed: path.stat().st_mtime_ns for seed, path in finished.items()}
    assert not (out / "summary.json").exists()

    again = subprocess.run([*common, "--output_dir", str(out)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr  # a non-empty folder is not silently reused
    resumed = target.main([*map(str, common[2:]), "--output_dir", str(out), "--resume"])
    assert {seed: path.stat().st_mtime_ns for seed, path in finished.items()} == stamps  # not retrained
    uninterrupted = target.main([*map(str, common[2:]), "--output_dir", str(tmp_path / "whole")])
    assert resumed["runs"] == [{**run, "results": run["results"], "predictions": run["predictions"]}
                               for run in uninterrupted["runs"]]
    assert resumed["eval_accuracy"] == uninterrupted["eval_accuracy"]
    assert resumed["seeds"] == [int(s) for s in SEEDS]


def test_resume_refuses_changed_target_arguments(tiny_checkpoint, tmp_path):
    out = tmp_path / "t"
    common = ["--pretrained_model", str(tiny_checkpoint), *SST2, "--epochs", "1", "--output_dir", str(out)]
    target.main([*common, "--seeds", "3"])
    with pytest.raises(ToolkitError, match="--max_length 128 -> 64"):
        target.main([*common, "--seeds", "3", "4", "--resume", "--max_length", "64"])
    grown = target.main([*common, "--seeds", "3", "4", "--resume"])  # more seeds: a resumable extension
    assert grown["seeds"] == [3, 4]


def test_disk_full_at_the_final_save_leaves_nothing_mixed(tiny_checkpoint, tmp_path, monkeypatch):
    """A full disk at the final save: one DiskFullError, no half checkpoint, and no weights of the run
    --overwrite_output_dir cleared beside the new run's files. Resumed into its own finished folder, a
    run whose save fails keeps the complete checkpoint there: the old one goes only once the new one
    is complete."""
    out = tmp_path / "run"
    common = ["--model_name", str(tiny_checkpoint), *SQUAD, "--output_dir", str(out), "--max_steps", "4"]
    intermediate.main([*common, "--save_steps", "2"])
    old_weights = (out / "model.safetensors").read_bytes()

    def full_disk(*args, **kwargs):  # what safetensors raises when the disk fills mid-write
        raise SafetensorError('Error while serializing: I/O error: No space left on device (os error 28)')

    monkeypatch.setattr(utils.models.checkpoint, "write_json", full_disk)  # the last write of a save
    with pytest.raises(DiskFullError, match=r"the disk is full; it needs at least \d+\.\d kB"):
        intermediate.main([*common, "--save_steps", "2", "--resume_from_checkpoint", "latest"])
    assert (out / "model.safetensors").read_bytes() == old_weights
    with pytest.raises(DiskFullError, match=r"the disk is full; it needs at least \d+\.\d kB"):
        intermediate.main([*common, "--overwrite_output_dir", "--seed", "2"])
    monkeypatch.undo()
    visible = {p.name for p in out.iterdir()}
    assert not visible & {"model.safetensors", "config.json", "lineage.json", "all_results.json", "checkpoint-2"}
    assert json.loads((out / "run_args.json").read_text())["args"]["seed"] == 2
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name or ".old-" in p.name]


@pytest.mark.slow
def test_disk_full_is_one_line(tiny_checkpoint, tmp_path):
    """On a real small file system (where the machine lets us mount a tmpfs)."""
    mount = tmp_path / "small"
    mount.mkdir()
    # Room for the run's small files (run_args.json, predictions, ...), not for the weights (~180 kB).
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        done = subprocess.run([sys.executable, "run_intermediate_source_GPT2.py", "--model_name", str(tiny_checkpoint),
                               *SQUAD, "--output_dir", str(mount / "run"), "--max_steps", "2"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        # at least the weights (~180 kB) and tokenizer.json (~20 kB): refused before writing them
        assert len(errors) == 1 and re.search(r"the disk is full; it needs at least 2\d\d\.\d kB", errors[0]), done.stderr
        assert not [p for p in (mount / "run").iterdir() if p.name.startswith(".")] if (mount / "run").exists() else True
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_failed_starts_leave_no_folders(tmp_path, monkeypatch):
    """Before, target_sst2_<model>/ and logs/qa_tasks_reptile/ stayed behind, empty."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ToolkitError):
        target.main(["--pretrained_model", str(tmp_path / "no_model"), *SST2])
    with pytest.raises(ToolkitError):
        maml_qa.main(["--model_name", str(tmp_path / "no_model"), "--debug", "--tasks", "squad,squad_v2",
                      "--task_file", f"squad={sample_file('squad', 'train')}",
                      "--task_file", f"squad_v2={sample_file('squad_v2', 'train')}"])
    assert sorted(os.listdir(tmp_path)) == []


def test_every_training_command_holds_its_folder(tiny_checkpoint, tmp_path):
    """maml_qa.py and python -m task2vec take the same lock as the two scripts."""
    import task2vec.__main__
    from utils.run.outputs import hold_run_folder

    out = tmp_path / "busy"
    commands = {
        "intermediate": lambda: intermediate.main(["--model_name", str(tiny_checkpoint), *SQUAD, "--output_dir", str(out)]),
        "target": lambda: target.main(["--pretrained_model", str(tiny_checkpoint), *SST2, "--output_dir", str(out)]),
        "maml": lambda: maml_qa.main(["--model_name", str(tiny_checkpoint), "--debug", "--output_dir", str(out),
                                      "--tasks", "squad", "--task_file", f"squad={sample_file('squad', 'train')}"]),
        "task2vec": lambda: task2vec.__main__.main(["--tasks", "sst2", "--use_samples", "--model_name", str(tiny_checkpoint),
                                               "--output_dir", str(out)]),
    }
    with hold_run_folder(out, overwrite=False):
        for name, command in commands.items():
            with pytest.raises(ToolkitError, match=f"in use by another run \\(pid {os.getpid()}"):
                command()


def test_restored_optimizer_keeps_the_moments_and_this_runs_hyper_parameters():
    """Reptile's carried inner optimizer and the training loop restore through this: before, a
    resumed run's (allowed) new learning rate was replaced by the saved one."""
    import torch

    from utils.training.checkpoints import restore_optimizer_state

    weight = torch.nn.Parameter(torch.ones(3))
    first = torch.optim.AdamW([weight], lr=1e-3, weight_decay=0.1)
    weight.grad = torch.tensor([1.0, -2.0, 3.0])
    first.step()
    saved = first.state_dict()
    second = torch.optim.AdamW([weight], lr=5e-4, weight_decay=0.0)
    restore_optimizer_state(second, saved)
    assert second.param_groups[0]["lr"] == 5e-4 and second.param_groups[0]["weight_decay"] == 0.0
    assert torch.equal(second.state[weight]["exp_avg"], first.state[weight]["exp_avg"])
    assert float(second.state[weight]["step"]) == 1.0

"""The output folder of a run: one holder at a time, leftovers of killed saves, overwriting without
mixing, and no empty folders after a failed start."""
from __future__ import annotations

import logging
import os

import pytest

from utils.run.errors import ToolkitError
from utils.run.fs import atomic_folder, exchange_paths
from utils.run.folder import PREVIOUS_RUN_DIR, hold_run_folder, lock_path


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    out = tmp_path / "run"
    with hold_run_folder(out, overwrite=False) as held:
        assert lock_path(out).exists() and held.run_id
        with pytest.raises(ToolkitError, match=f"in use by another run: pid {os.getpid()} .*run {held.run_id}"):
            with hold_run_folder(out, overwrite=True):
                pass
        assert out.is_dir()  # the refused run removed nothing
    assert not lock_path(out).exists()  # released and removed at the end
    with hold_run_folder(out, overwrite=False):  # free again
        pass


def test_failed_start_leaves_no_folder(tmp_path):
    """Before, a failed start left e.g. target_sst2_gpt2/ or logs/qa_tasks_reptile/ behind."""
    with pytest.raises(ToolkitError, match="bad input"):
        with hold_run_folder(tmp_path / "logs" / "qa_tasks_reptile", overwrite=False):
            raise ToolkitError("bad input")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(ToolkitError):
        with hold_run_folder(tmp_path / "kept", overwrite=False):
            (tmp_path / "kept" / "run_args.json").write_text("{}")
            raise ToolkitError("after writing")
    assert (tmp_path / "kept" / "run_args.json").exists()  # a folder with files stays


def write_run(folder, tag: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "lineage.json", "run_args.json", "all_results.json", "log.jsonl"):
        (folder / name).write_text(tag)
    (folder / "checkpoint-5").mkdir()
    (folder / "checkpoint-5" / "trainer_state.json").write_text(tag)
    (folder / "notes.txt").write_text("the user's own file")


def test_overwrite_moves_the_previous_run_aside_until_the_new_one_finishes(tmp_path):
    out = tmp_path / "run"
    write_run(out, "old")
    with pytest.raises(ToolkitError, match="disk full"):  # the new run fails at its final save
        with hold_run_folder(out, overwrite=True):
            (out / "run_args.json").write_text("new")
            raise ToolkitError("disk full")
    # Not mixed: none of the old run's files sit beside the new run's; the old run is kept aside.
    visible = sorted(p.name for p in out.iterdir())
    assert visible == [PREVIOUS_RUN_DIR, "notes.txt", "run_args.json"]
    assert (out / "run_args.json").read_text() == "new"
    assert (out / PREVIOUS_RUN_DIR / "model.safetensors").read_text() == "old"
    # Another overwrite: the unfinished run's files go, the last finished run stays aside.
    with hold_run_folder(out, overwrite=True) as held:
        assert not (out / "run_args.json").exists()
        assert (out / PREVIOUS_RUN_DIR / "run_args.json").read_text() == "old"
        (out / "run_args.json").write_text("newer")
        held.finish()
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "run_args.json"]


def test_a_run_that_fails_before_writing_gives_the_previous_run_back(tmp_path):
    """--overwrite_output_dir with a wrong model path must not hide the previous run."""
    out = tmp_path / "run"
    write_run(out, "old")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(ToolkitError, match="no such model"):
        with hold_run_folder(out, overwrite=True):
            assert not (out / "model.safetensors").exists()  # moved aside while the run runs
            raise ToolkitError("no such model")
    assert sorted(p.name for p in out.iterdir()) == before
    assert (out / "model.safetensors").read_text() == "old"


def test_leftovers_of_a_killed_save_are_removed_and_run_files_put_back(tmp_path, caplog):
    """A kill right after the folder exchange left run_args.json, log.jsonl and checkpoint-5 in the
    staging folder, and `--resume_from_checkpoint latest` then found nothing."""
    out = tmp_path / "run"
    write_run(out, "old")
    staging = tmp_path / ".run.partial-abc123"
    staging.mkdir()
    for name in ("config.json", "model.safetensors", "lineage.json"):
        (staging / name).write_text("new")
    assert exchange_paths(staging, out)  # ... and the process is killed here
    assert not (out / "checkpoint-5").exists()
    inner = out / ".checkpoint-10.partial-x1y2z3"  # a training checkpoint killed while being assembled
    inner.mkdir()
    (inner / "model.safetensors").write_bytes(b"\0" * 1000)
    with caplog.at_level(logging.INFO, logger="utils.run.folder"):
        with hold_run_folder(out, overwrite=False, resuming=True):
            pass
    assert (out / "checkpoint-5" / "trainer_state.json").read_text() == "old"
    assert (out / "run_args.json").read_text() == "old" and (out / "log.jsonl").exists()
    assert (out / "model.safetensors").read_text() == "new"  # the completed save stays in place
    assert not staging.exists() and not inner.exists()
    assert "removed 2 staging folder(s)" in caplog.text


def test_an_old_folder_set_aside_comes_back(tmp_path):
    """Where no atomic exchange exists the old folder is renamed aside first; a kill between the two
    renames left no folder at the destination."""
    out = tmp_path / "run"
    aside = tmp_path / ".run.old-1a2b3c4d"
    write_run(aside, "old")
    with hold_run_folder(out, overwrite=False, resuming=True):
        pass
    assert (out / "run_args.json").read_text() == "old" and not aside.exists()
    assert (out / "model.safetensors").read_text() == "old" and (out / "checkpoint-5").is_dir()


def test_atomic_folder_is_whole_or_absent_and_can_keep_a_finished_twin(tmp_path):
    """One helper writes folders whole (the feature cache, task embeddings, checkpoints through
    replace_folder): an error leaves the previous folder and no staging folder; keep_existing keeps a
    folder another process finished first."""

    target = tmp_path / "emb"
    with atomic_folder(target) as staging:
        (staging / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as staging:
            (staging / "a.txt").write_text("half")
            raise RuntimeError("killed mid-write")
    assert (target / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb"]
    with atomic_folder(target) as staging:
        (staging / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]   # replaced whole, not merged
    with atomic_folder(target, keep_existing=True) as staging:
        (staging / "c.txt").write_text("twin")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb"]

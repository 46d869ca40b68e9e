"""The output folder of a run: one holder at a time, a non-empty folder refused unless the run
continues it or --overwrite_output_dir clears it, no empty folders after a failed start, and
folders and files written whole or not at all."""
from __future__ import annotations

import os

import pytest

from utils.run.errors import ToolkitError
from utils.run.outputs import atomic_folder, atomic_text_file, hold_run_folder, lock_path, replace_folder


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    out = tmp_path / "run"
    with hold_run_folder(out, overwrite=False) as held:
        assert lock_path(out).exists() and held.run_id
        with pytest.raises(ToolkitError, match=f"in use by another run \\(pid {os.getpid()} .*run {held.run_id}"):
            with hold_run_folder(out, overwrite=True):
                pass
        assert out.is_dir()  # the refused run removed nothing
    with hold_run_folder(out, overwrite=False):  # free again
        pass


def test_failed_start_leaves_no_folder(tmp_path):
    """A failed start leaves neither e.g. logs/qa_tasks_reptile/ nor its lock file behind."""
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
    for name in ("model.safetensors", "run_args.json", "log.jsonl"):
        (folder / name).write_text(tag)
    (folder / "checkpoint-5").mkdir()
    (folder / "checkpoint-5" / "trainer_state.json").write_text(tag)


def test_a_non_empty_folder_is_refused_without_overwrite_and_cleared_with_it(tmp_path):
    out = tmp_path / "run"
    write_run(out, "old")
    with pytest.raises(ToolkitError, match="not empty; pass --overwrite_output_dir .* --resume to continue it"):
        with hold_run_folder(out, overwrite=False, resume_flag="--resume"):
            pass
    assert (out / "model.safetensors").read_text() == "old"  # refused: nothing touched
    with hold_run_folder(out, overwrite=False, resuming=True):  # a resumed run keeps its files
        assert (out / "checkpoint-5" / "trainer_state.json").read_text() == "old"
    with hold_run_folder(out, overwrite=True):  # Hugging Face's rule: the old run is deleted first
        assert list(out.iterdir()) == []
        (out / "run_args.json").write_text("new")
    assert [p.name for p in out.iterdir()] == ["run_args.json"]
    with hold_run_folder(out, overwrite=True, resuming=True):  # a folder several runs add to (Task2Vec's)
        assert (out / "run_args.json").read_text() == "new"


def test_an_interrupted_write_leaves_the_old_content(tmp_path, monkeypatch):
    """A kill inside atomic_text_file / atomic_folder, or a failure between the two renames of
    replace_folder, leaves the previous file or folder whole and no temporary sibling."""
    path = tmp_path / "all_results.json"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_text_file(path) as out:
            out.write("half")
            raise KeyboardInterrupt
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["all_results.json"]

    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "w").write_text("old")
    new = tmp_path / "new"
    new.mkdir()
    real_replace = os.replace

    def fail_second(src, dst):
        if str(src) == str(new):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_second)
    with pytest.raises(OSError):
        replace_folder(new, target)
    assert (target / "w").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [
        "all_results.json", "ckpt", "new"]


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

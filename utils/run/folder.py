"""One run per output folder, for the run's whole lifetime, and a folder left clean after it.

`hold_run_folder` is the context every training command runs in:

- **Lock.** An exclusive advisory lock (`fcntl.flock`) on `.<folder name>.lock` beside the folder
  (outside it: a final checkpoint save exchanges the whole folder), which names its holder (pid,
  host, run id, start time). A second run on the same folder stops at once with one line naming
  the holder; two runs never mix checkpoints or log lines. The kernel drops the lock when the
  holder dies, so a killed run never leaves the folder locked.
- **Leftovers of a killed save.** Staging folders (`.NAME.partial-*`, `.NAME.old-*`; see
  utils.models.checkpoint) cannot belong to a live run once the lock is held, so they are removed, after
  carrying back any run files (run_args.json, log.jsonl, checkpoint-N) that a kill right after the
  folder exchange left in them.
- **Overwriting.** With --overwrite_output_dir the previous run's files are moved aside into
  `.previous_run/` (a rename: no disk space needed) and deleted only when the new run finishes, so
  a run that fails (a full disk at the final save) never leaves the old weights beside the new
  run's files, and the previous run can still be moved back by hand. A run that fails before
  writing anything (a wrong path) puts the previous run's files back itself.
- **Failed starts** leave no folder behind: folders this run created are removed on failure if
  they are still empty.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from utils.run.errors import ToolkitError
from utils.run.outputs import utc_now

logger = logging.getLogger(__name__)

PREVIOUS_RUN_DIR = ".previous_run"
# What a previous run leaves in an output folder; overwriting moves these aside, so that its logs,
# predictions and checkpoint-N folders cannot mix with the new run's (rotation and `latest` would
# otherwise pick up the old checkpoints). Other files are left alone.
PREVIOUS_RUN_PATTERNS = ("checkpoint-*", "runs", "log.jsonl", "meta_log.jsonl", "all_results.json", "run_args.json",
                         "summary.json", "eval_*.json", "adapter_stats*.json", "data_subsets.json", "meta_final.json",
                         "config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
                         "model-*.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                         "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "lineage.json",
                         "model")
# A staging folder of utils.models.checkpoint: `.NAME.partial-XXXX` (being assembled, or the old folder
# right after an exchange) or `.NAME.old-XXXX` (the old folder, set aside where no exchange exists).
STAGING_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-[A-Za-z0-9_]+$")


@dataclass
class RunFolder:
    """A held output folder. `run_id` marks every log line of the run."""

    path: Path
    run_id: str
    created: list[Path] = field(default_factory=list)
    moved_aside: Path | None = None
    lock_fd: int | None = None

    def finish(self) -> None:
        """The run has written everything: the previous run's files moved aside go now."""
        previous = self.path / PREVIOUS_RUN_DIR
        if previous.exists():
            shutil.rmtree(previous)


def new_run_id() -> str:
    """A short random id, unique enough to tell runs in one folder apart."""
    return uuid.uuid4().hex[:12]


# ----------------------------------------------------------------------------- the lock

def _holder(lock_file: Path) -> str:
    try:
        info = json.loads(lock_file.read_text(encoding="utf-8") or "{}")
    except (OSError, json.JSONDecodeError):
        info = {}
    if not info:
        return "another process (it has not written its pid yet)"
    return (f"pid {info.get('pid')} on {info.get('host')} (run {info.get('run_id')}, started "
            f"{info.get('started_at')})")


def lock_path(folder: Path) -> Path:
    """The lock file of `folder`: a hidden sibling."""
    folder = folder.resolve()
    return folder.parent / f".{folder.name}.lock"


def acquire_lock(folder: Path, run_id: str) -> int:
    """Lock `folder` for this process and write who holds it into the lock file.

    Returns the lock file's descriptor; closing it (or the process ending) releases the lock.

    Raises:
        ToolkitError: another live process holds the folder.
    """
    lock_file = lock_path(folder)
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise ToolkitError(f"{folder} is in use by another run: {_holder(lock_file)}; wait for it to finish or "
                               "choose another output folder") from None
        # A holder that just finished removed the file it locked; ours must be the one at the path.
        try:
            same = os.stat(lock_file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "run_id": run_id, "started_at": utc_now()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return fd


def release_lock(folder: Path, fd: int) -> None:
    """Remove the lock file (while still holding it, so no one waits on a stale file) and unlock."""
    try:
        lock_path(folder).unlink(missing_ok=True)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- leftovers

def recover_interrupted_saves(folder: Path) -> list[Path]:
    """Remove the staging folders a killed save left for `folder` (beside it) and inside it.

    Call only while holding `folder`'s lock. A staging folder's run files (anything a checkpoint
    does not consist of) go back into its destination where that lacks them; an `.old` folder
    whose destination is missing or empty (a kill between the two renames) becomes the
    destination again.
    Returns the folders removed or restored.
    """
    from utils.models.checkpoint import CHECKPOINT_FILES  # it imports torch and transformers

    candidates = list(folder.parent.glob(f".{folder.name}.partial-*")) + list(folder.parent.glob(f".{folder.name}.old-*"))
    candidates += [path for path in folder.rglob(".*") if path.is_dir() and STAGING_NAME.match(path.name)]
    handled = []
    for staging in sorted(set(candidates), key=lambda p: len(p.parts)):
        match = STAGING_NAME.match(staging.name)
        if match is None or not staging.is_dir():
            continue
        destination = staging.parent / match.group("name")
        if match.group("kind") == "old" and (not destination.exists() or
                                             (destination.is_dir() and not any(destination.iterdir()))):
            os.replace(staging, destination)  # replaces an empty folder (this run's mkdir) too
        else:
            for entry in staging.iterdir():
                if entry.name not in CHECKPOINT_FILES and destination.is_dir() and not (destination / entry.name).exists():
                    os.replace(entry, destination / entry.name)
            shutil.rmtree(staging)
        handled.append(staging)
    return handled


# ----------------------------------------------------------------------------- the context

def launch_rank() -> int:
    """This process's rank under torchrun / accelerate launch (0 without one), from the environment
    they set, so that it is known before torch loads."""
    return int(os.environ.get("RANK", "0"))


@contextmanager
def hold_output_dir(path: str | os.PathLike, **options) -> Iterator[RunFolder | None]:
    """`hold_run_folder(path, **options)` on the main process of a launch, None on the others
    (rank 0 alone writes the folder). Standard library only: the scripts take it before torch and
    transformers load, so that a busy folder or a bad flag is answered at once."""
    if launch_rank() != 0:
        yield None
        return
    with hold_run_folder(path, **options) as held:
        yield held


def _make_folder(path: Path) -> list[Path]:
    """mkdir -p; returns the folders it created, outermost first."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    path.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def _run_files(folder: Path) -> list[Path]:
    return [entry for entry in folder.iterdir() if entry.name != PREVIOUS_RUN_DIR]


def _previous_run_files(folder: Path, patterns: tuple[str, ...]) -> list[Path]:
    """The files and folders of `folder` a run writes (matching `patterns`)."""
    return sorted({path for pattern in patterns for path in folder.glob(pattern) if path.name != PREVIOUS_RUN_DIR})


def _move_previous_run_aside(folder: Path, patterns: tuple[str, ...]) -> Path | None:
    """Move a previous run's files into `.previous_run/`. If one is there already, the run that
    put it there never finished: its own files are deleted and the last finished run's are kept."""
    previous = folder / PREVIOUS_RUN_DIR
    found = _previous_run_files(folder, patterns)
    if not found:
        return None
    if previous.exists():
        for path in found:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        logger.info("removed the files of an unfinished run in %s; the last finished run's stay in %s until this "
                    "run finishes", folder, previous)
        return previous
    previous.mkdir()
    for path in found:
        os.replace(path, previous / path.name)
    logger.info("--overwrite_output_dir: the previous run's files in %s are moved to %s and deleted when this run "
                "finishes (move them back if it fails)", folder, previous)
    return previous


def _restore_previous_run(folder: Path) -> None:
    """A run that failed before writing anything (a wrong path, a bad file) gives the previous
    run's files back, as if it had never started."""
    previous = folder / PREVIOUS_RUN_DIR
    if not previous.is_dir():
        return
    for entry in previous.iterdir():
        os.replace(entry, folder / entry.name)
    previous.rmdir()
    logger.info("the run failed before writing anything: the previous run's files are back in %s", folder)


@contextmanager
def hold_run_folder(path: str | os.PathLike, *, overwrite: bool, resuming: bool = False, check_empty: bool = True,
                    outputs: tuple[str, ...] = (), run_id: str | None = None,
                    resume_flag: str = "--resume_from_checkpoint") -> Iterator[RunFolder]:
    """Hold an output folder for a run's lifetime (module docstring); when the run ends without an
    exception, the previous run's files moved aside are deleted.

    Args:
        overwrite: --overwrite_output_dir: move a previous run's files aside (unless resuming).
        resuming: the run continues the one in the folder; its files stay.
        check_empty: refuse a non-empty folder without `overwrite` or `resuming`, and move a
            previous run aside with `overwrite` (False for a folder several runs add to, such as
            Task2Vec's: the script decides what it replaces).
        outputs: the script's own output patterns, beyond PREVIOUS_RUN_PATTERNS.
        resume_flag: the script's flag for continuing a run, for the message.

    Raises:
        ToolkitError: the path is a file, another run holds the folder, or it is not empty and
            neither --overwrite_output_dir nor resumption was given.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ToolkitError(f"output folder {folder} is a file, not a folder")
    held = RunFolder(path=folder, run_id=run_id or new_run_id())
    held.created = _make_folder(folder)
    succeeded = False
    try:
        held.lock_fd = acquire_lock(folder, held.run_id)
        recovered = recover_interrupted_saves(folder)
        if recovered:
            logger.info("removed %d staging folder(s) an interrupted save left in %s (run files in them were put "
                        "back): %s", len(recovered), folder, ", ".join(p.name for p in recovered))
        if check_empty and _run_files(folder) and not (overwrite or resuming):
            raise ToolkitError(f"output folder {folder} already exists and is not empty; pass --overwrite_output_dir "
                               f"to replace its run, {resume_flag} to continue it, or choose another folder")
        if overwrite and not resuming and check_empty:
            held.moved_aside = _move_previous_run_aside(folder, (*PREVIOUS_RUN_PATTERNS, *outputs))
        yield held
        held.finish()
        succeeded = True
    finally:
        if not succeeded and folder.is_dir() and not _previous_run_files(folder, (*PREVIOUS_RUN_PATTERNS, *outputs)):
            _restore_previous_run(folder)
        if held.lock_fd is not None:
            release_lock(folder, held.lock_fd)
        if not succeeded:
            for created in reversed(held.created):
                if created.is_dir() and not any(created.iterdir()):
                    created.rmdir()

"""What every run writes into its --output_dir (run_args.json, log.jsonl, all_results.json), each
written to a temporary sibling and renamed into place; one run per folder; one error for a full disk."""
from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from filelock import FileLock, Timeout

from utils.run.errors import DiskFullError, ToolkitError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONED_PACKAGES = ("torch", "transformers", "tokenizers", "datasets", "accelerate", "numpy")


def utc_now() -> str:
    """The current time as an ISO 8601 string in UTC."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_shareable(path: Path) -> None:
    """Give a file or folder made by mkstemp/mkdtemp (0600/0700) the permissions of an ordinary one
    under the umask, so that others on a shared machine can read the results."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


@contextmanager
def atomic_text_file(path: str | os.PathLike) -> Iterator[TextIO]:
    """Write a text file whole or not at all, through a temporary sibling; an OSError names `path`."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder; give a file name", str(target))
    temporary: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            yield out
        make_shareable(Path(temporary))
        os.replace(temporary, target)
    except BaseException as err:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(err, OSError):  # the errno keeps the kind (PermissionError, ENOSPC); the path is the user's
            raise OSError(err.errno, err.strerror or str(err), str(target)) from err
        raise


def staging_folder(destination: Path) -> Path:
    """A new hidden sibling of `destination` (`.NAME.partial-XXXX`) to assemble it in."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    make_shareable(staging)
    return staging


def replace_folder(staging: Path, destination: Path) -> Path | None:
    """Put the complete folder `staging` at `destination`: the old one is renamed aside (put back if
    the move fails) and returned for the caller to take files from and delete (None: there was none)."""
    if not destination.exists():
        os.replace(staging, destination)
        return None
    old = destination.parent / f".{destination.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(destination, old)
    try:
        os.replace(staging, destination)
    except BaseException:
        os.replace(old, destination)
        raise
    return old


@contextmanager
def atomic_folder(destination: str | os.PathLike, *, keep_existing: bool = False) -> Iterator[Path]:
    """Write a folder whole or not at all: the block fills a staging sibling, which then replaces
    `destination` (the old one deleted only after). keep_existing: keep a `destination` another
    process finished first (content-addressed folders)."""
    destination = Path(destination)
    staging = staging_folder(destination)
    try:
        yield staging
        if not (keep_existing and destination.exists()):
            try:
                old = replace_folder(staging, destination)
            except OSError:
                if not (keep_existing and destination.exists()):
                    raise
                old = None  # another process finished the same folder between the check and the move
            if old is not None:
                shutil.rmtree(old)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def is_disk_full(err: BaseException) -> bool:
    """An error that means the file system ran out of space or quota (safetensors and torch.save
    raise their own exception types, with the system's message inside)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return "No space left on device" in text or "Disk quota exceeded" in text or (
        isinstance(err, RuntimeError) and "PytorchStreamWriter failed writing" in text)


def disk_full_error(what: str, folder: Path, needed: int) -> DiskFullError:
    """The one-line error for a full disk: what needed at least how much, and what is free."""
    def size(count: int) -> str:
        return f"{count / 2**20:,.0f} MB" if count >= 2**20 else f"{count / 2**10:,.1f} kB"
    return DiskFullError(f"{what}: the disk is full; it needs at least {size(needed)} and {folder} has "
                         f"{size(shutil.disk_usage(folder).free)} free. Free some space (or point the output "
                         "elsewhere) and run again; earlier checkpoints are intact")


def require_free_space(folder: Path, needed: int, what: str) -> None:
    """Raise `disk_full_error` before a write of at least `needed` bytes into `folder` that cannot fit."""
    if shutil.disk_usage(folder).free < needed:
        raise disk_full_error(what, folder, needed)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented strict JSON, whole or not at all."""
    with atomic_text_file(path) as out:
        json.dump(obj, out, indent=2, allow_nan=False)
        out.write("\n")
    return Path(path)


def read_json_object(path: Path, remedy: str) -> dict | None:
    """A JSON object file this toolkit wrote (run_args.json, ...), or None if there is none; a
    ToolkitError ending with `remedy` if it is not a JSON object."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, RecursionError) as err:
        where = f" at line {err.lineno}" if isinstance(err, json.JSONDecodeError) else ""
        raise ToolkitError(f"{path}: malformed JSON{where}; {remedy}") from None
    if not isinstance(value, dict):
        raise ToolkitError(f"{path}: expected a JSON object; {remedy}")
    return value


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that decide a run's numbers (None: not installed)."""
    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None
    return {"python": platform.python_version(), **{package: version(package) for package in VERSIONED_PACKAGES}}


def git_state() -> dict[str, Any]:
    """The commit the code ran from and whether the work tree had uncommitted changes (None: unknown)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def write_run_args(output_dir: str | os.PathLike, args: argparse.Namespace, derived: dict[str, Any] | None = None) -> Path:
    """`run_args.json`: arguments exactly as parsed, derived values kept apart, environment."""
    return write_json(Path(output_dir) / "run_args.json", {
        "args": vars(args), "derived": derived or {}, "argv": sys.argv, "versions": library_versions(),
        "git": git_state(), "started_at": utc_now()})


def finite_json(value: Any) -> Any:
    """`value` with every non-finite float of its dicts replaced by None and a `<key>_reason`
    ("not a finite number (nan)") beside it; lists keep their length (None in place)."""
    def bad(item: Any) -> bool:
        return isinstance(item, float) and not math.isfinite(item)
    if isinstance(value, (list, tuple)):
        return [None if bad(item) else finite_json(item) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        out[key] = None if bad(item) else finite_json(item)
        if bad(item):
            out[f"{key}_reason"] = f"not a finite number ({item})"
    return out


class JsonlLog:
    """Append-only `log.jsonl`: one JSON object per event, each written whole in one append and
    marked with the run's id, so that lines of two runs can never be confused."""

    def __init__(self, path: str | os.PathLike, *, run_id: str | None = None) -> None:
        self.path, self.run_id = Path(path), run_id
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, event: dict[str, Any]) -> None:
        """Append one event, with `time` and `run_id`, through `finite_json` (JSON has no NaN)."""
        marks = {"time": utc_now(), **({"run_id": self.run_id} if self.run_id else {})}
        line = json.dumps(finite_json({**event, **marks}), allow_nan=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)


def write_all_results(output_dir: str | os.PathLike, results: dict[str, Any], records: tuple[str, ...] = ()) -> Path:
    """`all_results.json`: flat split-prefixed metrics, finite scalars or lists (a ValueError
    otherwise), except under the keys in `records`: one object on how the run was set up."""
    for key, value in results.items():
        if isinstance(value, dict) and key not in records:
            raise ValueError(f"all_results.json is flat; {key!r} holds a dict")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"all_results.json value {key!r} is not finite: {value}")
    return write_json(Path(output_dir) / "all_results.json", results)


@dataclass(frozen=True)
class RunFolder:
    """A held output folder; `run_id` marks every log line of the run."""
    path: Path
    run_id: str


def new_run_id() -> str:
    """A short random id, unique enough to tell runs in one folder apart."""
    return uuid.uuid4().hex[:12]


def lock_path(folder: Path) -> Path:
    """The lock file of `folder`: a hidden sibling (outside it: a checkpoint save replaces the folder)."""
    folder = folder.resolve()
    return folder.parent / f".{folder.name}.lock"


@contextmanager
def hold_run_folder(path: str | os.PathLike, *, overwrite: bool, resuming: bool = False, run_id: str | None = None,
                    resume_flag: str = "--resume_from_checkpoint") -> Iterator[RunFolder | None]:
    """Hold an output folder for a run's lifetime: create it, lock it, and refuse (a ToolkitError) or,
    with `overwrite`, clear a previous run's files; with `resuming` (the run continues what the folder
    holds) nothing is refused or deleted. None on the other processes of a launch (rank 0 alone
    writes the folder). Folders created here are removed again if the run fails while they are empty."""
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun / accelerate launch set it: known before torch loads
        yield None
        return
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ToolkitError(f"output folder {folder} is a file, not a folder")
    created = [parent for parent in (folder, *folder.parents) if not parent.exists()]  # innermost first
    folder.mkdir(parents=True, exist_ok=True)
    held = RunFolder(path=folder, run_id=run_id or new_run_id())
    lock = FileLock(lock_path(folder), timeout=0)
    try:
        try:
            lock.acquire()
        except Timeout:
            holder = lock_path(folder).read_text(encoding="utf-8").strip() or "another process"
            raise ToolkitError(f"{folder} is in use by another run ({holder}); wait for it to finish or choose "
                               "another output folder") from None
        try:
            lock_path(folder).write_text(f"pid {os.getpid()} on {socket.gethostname()}, run {held.run_id}, started "
                                         f"{utc_now()}\n", encoding="utf-8")
            entries = [] if resuming else list(folder.iterdir())
            if entries and not overwrite:
                raise ToolkitError(f"output folder {folder} already exists and is not empty; pass "
                                   f"--overwrite_output_dir to replace its run, {resume_flag} to continue it, or "
                                   "choose another folder")
            if entries:
                logger.info("--overwrite_output_dir: deleting the %d entries of %s", len(entries), folder)
            for entry in entries:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            yield held
        finally:
            lock.release()
    except BaseException:
        if folder in created:  # a failed start leaves no folder behind, nor the lock file beside it
            lock_path(folder).unlink(missing_ok=True)
        for parent in created:
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        raise

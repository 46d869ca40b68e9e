"""What every run writes into its --output_dir (DESIGN.md section 4).

- `run_args.json`: the parsed arguments as given, derived values, library versions, git commit.
- `log.jsonl`: one JSON object per logging or evaluation event.
- `all_results.json`: flat, split-prefixed metrics (`eval_f1`, `train_loss`, ...).

JSON files are written atomically (temporary file, then rename), so a killed run never leaves a
half-written file that a later step would read.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from utils.errors import ToolkitError
from utils.fs import make_shareable

REPO_ROOT = Path(__file__).resolve().parent.parent
VERSIONED_PACKAGES = ("torch", "transformers", "tokenizers", "datasets", "accelerate", "numpy")


def utc_now() -> str:
    """The current time as an ISO 8601 string in UTC."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON, atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(obj, out, indent=2, sort_keys=False, allow_nan=False)
            out.write("\n")
        make_shareable(Path(temporary))
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def prepare_output_dir(path: str | os.PathLike, *, overwrite: bool, resuming: bool = False,
                       outputs: tuple[str, ...] = ()) -> Path:
    """Create --output_dir, refusing to mix a new run into an existing non-empty one.

    With --overwrite_output_dir, a previous run's files (PREVIOUS_RUN_PATTERNS and the script's own
    `outputs` patterns) are removed first.

    Raises:
        ToolkitError: the folder exists, is not empty, and neither --overwrite_output_dir nor
            --resume_from_checkpoint was given; or the path is a file.
    """
    output_dir = Path(path)
    if output_dir.exists() and not output_dir.is_dir():
        raise ToolkitError(f"--output_dir {output_dir} is a file, not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not (overwrite or resuming):
        raise ToolkitError(f"--output_dir {output_dir} already exists and is not empty; pass "
                           "--overwrite_output_dir to write into it, or choose another folder")
    if overwrite and not resuming and output_dir.is_dir():
        clear_previous_run(output_dir, outputs)
    output_dir.mkdir(parents=True, exist_ok=True)
    return output_dir


# What a previous run leaves in an output folder. Overwriting removes these, so that its logs,
# predictions and checkpoint-N folders cannot mix with the new run's (rotation and `latest` would
# otherwise pick up the old checkpoints). Other files are left alone.
PREVIOUS_RUN_PATTERNS = ("checkpoint-*", "runs", "log.jsonl", "all_results.json", "run_args.json", "summary.json",
                         "eval_*.json", "adapter_stats*.json", "meta_log.jsonl")


def clear_previous_run(output_dir: Path, outputs: tuple[str, ...] = ()) -> None:
    """Remove a previous run's outputs (PREVIOUS_RUN_PATTERNS and `outputs`) from `output_dir`."""
    for pattern in (*PREVIOUS_RUN_PATTERNS, *outputs):
        for path in output_dir.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that decide a run's numbers."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def git_state(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """The commit the code ran from and whether the work tree had uncommitted changes."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                                  timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def write_run_args(output_dir: str | os.PathLike, args: argparse.Namespace,
                   derived: dict[str, Any] | None = None) -> Path:
    """`run_args.json`: arguments exactly as parsed, derived values kept apart, environment."""
    record = {
        "args": vars(args),
        "derived": derived or {},
        "argv": sys.argv,
        "versions": library_versions(),
        "git": git_state(),
        "started_at": utc_now(),
    }
    return write_json(Path(output_dir) / "run_args.json", record)


class JsonlLog:
    """Append-only `log.jsonl`: one JSON object per event, flushed as it is written."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, event: dict[str, Any]) -> None:
        """Append one event (a `time` field is added)."""
        line = json.dumps({**event, "time": utc_now()}, allow_nan=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def write_all_results(output_dir: str | os.PathLike, results: dict[str, Any]) -> Path:
    """`all_results.json`: flat split-prefixed metrics. Values must be JSON scalars or lists.

    Raises:
        ValueError: a nested dict (results are flat by contract) or a non-finite number.
    """
    for key, value in results.items():
        if isinstance(value, dict):
            raise ValueError(f"all_results.json is flat; {key!r} holds a dict")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"all_results.json value {key!r} is not finite: {value}")
    return write_json(Path(output_dir) / "all_results.json", results)

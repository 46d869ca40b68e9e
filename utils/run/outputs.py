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
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from utils.run.errors import ToolkitError
from utils.run.fs import atomic_text_file

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONED_PACKAGES = ("torch", "transformers", "tokenizers", "datasets", "accelerate", "numpy")


def utc_now() -> str:
    """The current time as an ISO 8601 string in UTC."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented strict JSON, whole or not at all (utils.run.fs.atomic_text_file)."""
    with atomic_text_file(path) as out:
        json.dump(obj, out, indent=2, sort_keys=False, allow_nan=False)
        out.write("\n")
    return Path(path)


def read_json_object(path: Path, remedy: str) -> dict | None:
    """A JSON object file this toolkit wrote (run_args.json, all_results.json), or None if there is
    none.

    Raises:
        ToolkitError: the file is not a JSON object; the message ends with `remedy`.
    """
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
    """Append-only `log.jsonl`: one JSON object per event, each written whole in one append and
    marked with the run's id, so that lines of two runs can never be confused."""

    def __init__(self, path: str | os.PathLike, *, run_id: str | None = None) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, event: dict[str, Any]) -> None:
        """Append one event (`time` and `run_id` fields are added; a non-finite number becomes
        null with a `<key>_reason` field, as JSON has no NaN)."""
        marks = {"time": utc_now(), **({"run_id": self.run_id} if self.run_id else {})}
        line = json.dumps(finite_json({**event, **marks}), allow_nan=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)


def finite_json(value: Any) -> Any:
    """`value` with every non-finite float of its dicts replaced by None and a `<key>_reason`
    ("nan", "inf", "-inf") beside it; lists keep their length (None in place)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(item, float) and not math.isfinite(item):
                out[key] = None
                out[f"{key}_reason"] = f"not a finite number ({item})"
            else:
                out[key] = finite_json(item)
        return out
    if isinstance(value, (list, tuple)):
        return [None if isinstance(item, float) and not math.isfinite(item) else finite_json(item) for item in value]
    return value


def write_all_results(output_dir: str | os.PathLike, results: dict[str, Any], records: tuple[str, ...] = ()) -> Path:
    """`all_results.json`: flat split-prefixed metrics. Values must be JSON scalars or lists, except
    under the keys named in `records`: one object describing how the run was set up (e.g.
    maml_qa.py's `compute_match`), never a metric.

    Raises:
        ValueError: a nested dict elsewhere (results are flat by contract) or a non-finite number.
    """
    for key, value in results.items():
        if isinstance(value, dict) and key not in records:
            raise ValueError(f"all_results.json is flat; {key!r} holds a dict")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"all_results.json value {key!r} is not finite: {value}")
    return write_json(Path(output_dir) / "all_results.json", results)

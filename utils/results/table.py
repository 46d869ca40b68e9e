"""The results table: a CSV that many runs append one row each to, and the analyses read.

A sweep appends from many processes, often overnight, to one file, so an append is all or
nothing: under an exclusive advisory lock (`fcntl.flock`) on the table, the whole row (and the
header, for a new file) is written in one `write`, flushed and fsynced; if any of that fails (a
full disk, a quota) the file is truncated back to its size before the append, so the table is
byte-identical to what it was. Readers refuse a malformed row (a cell count that differs from the
header's, or a last row without its newline: an append cut short by a crash) with its line number
instead of reading around it.
"""
from __future__ import annotations

import csv
import errno
import fcntl
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from utils.run.errors import DataError, ToolkitError

# The columns of run_target_task_GPT2_sst2_multiple.py --results_table, one row per invocation
# (TaskDiversity.py reads them). The accuracy columns (ci95_low/high are accuracy's) are empty for a
# regression target; the *_primary columns hold the target's primary metric, which `primary_metric`
# names, and other_metrics the means of the task's other metrics ("f1=0.81;accuracy=0.75").
RESULTS_TABLE_COLUMNS = ("created_at", "target_task", "pretrained_model", "source_chain", "source_tasks",
                         "objectives", "max_train_samples", "selection", "seeds", "n", "mean_accuracy",
                         "std_accuracy", "ci95_low", "ci95_high", "min_accuracy", "max_accuracy", "primary_metric",
                         "mean_primary", "std_primary", "ci95_low_primary", "ci95_high_primary", "min_primary",
                         "max_primary", "other_metrics", "algorithm", "source_train_passes", "source_train_tokens",
                         "source_train_flops", "target_train_passes", "target_train_tokens", "target_train_flops",
                         "output_dir")
# algorithm: how the source was trained (none, sequential, reptile, fomaml, multitask, mixed;
# utils.classification.summary.chain_description). source_train_*: the training compute of the
# checkpoint's chain (the stages that recorded it); target_train_*: of this invocation's seeds
# together (utils.training.compute; FLOPs are the 6·N·tokens estimate).
# The table of versions that reported accuracy only; still read, and still appended to for targets
# scored by accuracy.
LEGACY_RESULTS_TABLE_COLUMNS = ("created_at", "target_task", "pretrained_model", "source_chain", "source_tasks",
                                "objectives", "max_train_samples", "selection", "seeds", "n", "mean_accuracy",
                                "std_accuracy", "ci95_low", "ci95_high", "min_accuracy", "max_accuracy", "output_dir")
# What a reader needs from a table of either version, besides the score columns (`row_score`).
RESULTS_TABLE_KEY_COLUMNS = ("created_at", "target_task", "pretrained_model", "source_chain", "source_tasks",
                             "objectives", "max_train_samples", "selection", "seeds", "n", "output_dir")


def row_score(row: Mapping[str, str]) -> tuple[str, str, str]:
    """(metric, mean column, std column) of a results-table row: its primary metric's, or accuracy's
    in a table of the accuracy-only version (no primary_metric cell)."""
    if (row.get("primary_metric") or "").strip():
        return row["primary_metric"].strip(), "mean_primary", "std_primary"
    return "accuracy", "mean_accuracy", "std_accuracy"


def legacy_table_problem(path: str | os.PathLike, target: str, metric: str) -> str | None:
    """Why a target scored by `metric` cannot be appended to the table at `path` (an accuracy-only
    table of an earlier version, and a metric other than accuracy), or None when it can."""
    if metric == "accuracy" or existing_columns(path) != LEGACY_RESULTS_TABLE_COLUMNS:
        return None
    return (f"--results_table {path} has the accuracy-only columns of an earlier version, and {target} is scored by "
            f"{metric}; give a new file (TaskDiversity.py reads tables of both versions)")


def existing_columns(path: str | os.PathLike) -> tuple[str, ...] | None:
    """The header of the CSV at `path`, or None when there is no such file or it is empty."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    with open(path, "rb") as handle:
        return tuple(_header_of(handle)[0])


def format_row(columns: Sequence[str], row: Mapping[str, object]) -> str:
    """One CSV line (ending in CRLF, as csv writes by default and RFC 4180 asks) holding `row`'s
    values in the order of `columns`."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow(["" if row.get(c) is None else row[c] for c in columns])
    return buffer.getvalue()


def _header_of(handle) -> tuple[list[str], bytes]:
    """(header cells, the whole file's bytes) of an open binary handle."""
    handle.seek(0)
    content = handle.read()
    first = content.split(b"\n", 1)[0].decode("utf-8-sig")
    return next(csv.reader([first]), []), content


def append_row(path: str | os.PathLike, columns: Sequence[str], row: Mapping[str, object], *, flag: str) -> None:
    """Append `row` to the CSV at `path` (written with a header first if the file is new or empty).

    All or nothing, and safe with several processes appending at once (module docstring).

    Args:
        flag: the command-line flag that named the file, for messages (e.g. "--results_table").

    Raises:
        ToolkitError: the file has other columns, its last row is cut short, or the write failed
            (the file is then as it was before).
    """
    unknown = sorted(set(row) - set(columns))
    if unknown:
        raise ValueError(f"row has columns the table does not: {unknown}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = format_row(columns, row).encode("utf-8")
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        header, content = _header_of(handle)
        size = len(content)
        if size and tuple(header) != tuple(columns):
            raise ToolkitError(f"{flag} {path} has other columns ({header}); use a new file")
        if size and not content.endswith(b"\n"):
            last_line = content.count(b"\n") + 1
            raise ToolkitError(f"{flag} {path}: its last line ({last_line}) is cut short (a write that did not "
                               "finish); remove that line, then run again")
        payload = line if size else format_row(columns, dict(zip(columns, columns))).encode("utf-8") + line
        try:
            written = os.write(handle.fileno(), payload)
            if written != len(payload):  # a short write: the file system ran out part-way
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            os.fsync(handle.fileno())
        except OSError as err:
            os.ftruncate(handle.fileno(), size)
            os.fsync(handle.fileno())
            raise ToolkitError(f"{flag} {path}: appending a row of {len(payload)} bytes failed ({err.strerror}); "
                               "the table is unchanged") from err


def read_rows(path: str | os.PathLike, columns: Sequence[str], *, flag: str, writer: str) -> list[dict]:
    """Every row of the CSV at `path` as a dict of its cells plus "line" (its line number).

    Args:
        columns: the columns the table must have (it may have more).
        flag, writer: how the file was named and which command writes it, for messages.

    Raises:
        DataError: the file is missing, lacks a column, or has a malformed row (the message gives
            its line number).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file; write it with {writer} {flag}", file=str(path))
    text = path.read_bytes().decode("utf-8-sig")
    if text and not text.endswith("\n"):
        raise DataError(f"line {text.count(chr(10)) + 1} is cut short (no newline at the end of the file: a write that "
                        "did not finish); remove that line", file=str(path))
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise DataError(f"empty file, not a table written by {writer} {flag}", file=str(path))
    missing = [column for column in columns if column not in header]
    if missing:
        raise DataError(f"not a table written by {writer} {flag} (missing columns {missing})", file=str(path))
    rows = []
    for cells in reader:
        if len(cells) != len(header):
            raise DataError(f"line {reader.line_num} has {len(cells)} cells where the header has {len(header)} "
                            "(a damaged or hand-edited row); fix or remove it", file=str(path))
        rows.append({**dict(zip(header, cells)), "line": reader.line_num})
    return rows

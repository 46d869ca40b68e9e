"""The results table: a CSV that many runs append one row each to, and the analyses read.

A sweep appends from many processes to one file, so an append is all or nothing: under an
exclusive `fcntl.flock` the whole row (and a new file's header) is written in one `write` and
fsynced; if that fails (a full disk) the file is truncated back to its size before. Readers refuse
a malformed row (a wrong cell count, or a last row without its newline) with its line number.
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

# One row per target invocation. The accuracy columns (ci95_low/high are accuracy's) are empty for a
# regression; *_primary hold the primary metric's, other_metrics the other metrics' means.
RESULTS_TABLE_COLUMNS = ("created_at", "target_task", "pretrained_model", "source_chain", "source_tasks",
                         "objectives", "max_train_samples", "selection", "seeds", "n", "mean_accuracy",
                         "std_accuracy", "ci95_low", "ci95_high", "min_accuracy", "max_accuracy", "primary_metric",
                         "mean_primary", "std_primary", "ci95_low_primary", "ci95_high_primary", "min_primary",
                         "max_primary", "other_metrics", "algorithm", "source_train_passes", "source_train_tokens",
                         "source_train_flops", "target_train_passes", "target_train_tokens", "target_train_flops",
                         "output_dir")
# algorithm: how the source was trained (none, sequential, reptile, fomaml, multitask, mixed);
# source_/target_train_*: the compute of the checkpoint's chain / of this invocation's seeds.
# What a reader needs from a table besides its other scores.
RESULTS_TABLE_KEY_COLUMNS = ("created_at", "target_task", "pretrained_model", "source_chain", "source_tasks",
                             "objectives", "max_train_samples", "selection", "seeds", "n", "primary_metric",
                             "mean_primary", "std_primary", "output_dir")


def row_score(row: Mapping[str, str]) -> tuple[str, str, str]:
    """(metric, mean column, std column) of a results-table row: its primary metric's."""
    return row["primary_metric"].strip(), "mean_primary", "std_primary"


def table_problem(path: str | os.PathLike, columns: Sequence[str], *, flag: str) -> str | None:
    """Why rows with `columns` cannot be appended to the CSV at `path` (it has other columns, e.g.
    a table of an earlier version), or None (no file, an empty one, or the same columns)."""
    header = existing_columns(path)
    if header is None or header == tuple(columns):
        return None
    return f"{flag} {path} has other columns than this version's table (an older table?); start a new file"


def existing_columns(path: str | os.PathLike) -> tuple[str, ...] | None:
    """The header of the CSV at `path`, or None when there is no such file or it is empty."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    with open(path, "rb") as handle:
        return tuple(_header_of(handle)[0])


def format_row(columns: Sequence[str], row: Mapping[str, object]) -> str:
    """One CSV line (CRLF-terminated, as RFC 4180 asks) of `row`'s values in the order of `columns`."""
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
    """Append `row` to the CSV at `path` (a header first if the file is new or empty), all or nothing
    (module docstring); a ToolkitError naming `flag` if the file has other columns, its last row
    is cut short, or the write failed."""
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
            raise ToolkitError(table_problem(path, columns, flag=flag))
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
    """Every row of the CSV at `path` as a dict of its cells plus "line" (its line number); a
    DataError if the file is missing, lacks one of `columns` or has a malformed row (`flag` and
    `writer`, the command that writes it, are named in messages)."""
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

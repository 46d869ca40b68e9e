"""The adapter of classification tables (a GLUE TSV, a CSV, Hub rows such as SST-2's) -> records.

A record is {id, text, label}, plus text_pair for a sentence-pair task (utils.data.records). Class
labels may be integers, digit strings or label names; a regression task's label is a score
(utils.data.records.score_label). Which columns hold the texts and the label comes from the
user's column flags, else from the task's original release layout and Hub fields
(`registry.TableLayout`), else from generic names (`resolve_columns`). A TSV/CSV is read strictly
(`read_table`): every line as wide as the header, CoLA's header-less release files by position.
Canonical classification records are read by `utils.data.adapters.adapt_canonical_classification`.
"""
from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.run.errors import DataError, ToolkitError
from utils.data.adapters import AdapterStats, note_label_counts
from utils.data.records import UNLABELLED, score_label
from utils.data.registry import TaskSpec


def _label_index(value: Any, label_names: tuple[str, ...], *, file: str, where: str | int,
                 field_name: str) -> int:
    """An integer label from an int, a digit string or a label name."""
    if isinstance(value, bool):
        raise DataError("expected an integer label", file=file, record=where, field=field_name)
    if isinstance(value, int):
        index = value
    else:
        text = str(value).strip()
        if text == "":
            raise DataError("label is missing", file=file, record=where, field=field_name)
        if text.lstrip("-").isdigit():
            index = int(text)
        elif text.lower() in (name.lower() for name in label_names):
            index = [name.lower() for name in label_names].index(text.lower())
        else:
            raise DataError(f"label {text!r} is neither an integer nor one of {list(label_names)}",
                            file=file, record=where, field=field_name)
    if index != UNLABELLED and not 0 <= index < len(label_names):
        raise DataError(f"label {index} is outside 0..{len(label_names) - 1}", file=file, record=where,
                        field=field_name)
    return index


def row_label(spec: TaskSpec, row: dict, label_column: str | None, *, file: str, where: str | int) -> int | float:
    """The label of one table row: a class index (-1 without a label column) or a regression score.

    Raises:
        DataError: the label is missing or outside the task's label space; a regression task's
            row without a label column.
    """
    if label_column is None:
        if spec.is_regression:
            raise DataError(f"task {spec.name} is a regression task and needs a score in every record; "
                            "a file without labels (the GLUE test file) cannot be used", file=file, record=where)
        return UNLABELLED
    if label_column not in row or row[label_column] is None:
        raise DataError("label is missing", file=file, record=where, field=label_column)
    if spec.regression_range is not None:
        return score_label(row[label_column], spec.regression_range, file=file, where=where, field=label_column)
    return _label_index(row[label_column], spec.label_names or (), file=file, where=where, field_name=label_column)


def adapt_classification_rows(spec: TaskSpec, rows: Iterable[tuple[str | int, dict]], stats: AdapterStats,
                              *, text_column: str, label_column: str | None,
                              text_pair_column: str | None = None) -> list[dict]:
    """Rows of a table (GLUE TSV, CSV, Hub rows) -> {id, text, label} (+ text_pair for a pair task).

    `rows` yields (where, row) pairs, `where` being how the user finds the row (a line number or
    an index). With no label column the records are unlabelled (label -1), as in GLUE's test file;
    a regression task refuses that. A pair task's row whose second text is empty is dropped and
    counted as `empty_text_pair` (a pair task's record always has both texts); a single-text row
    keeps its text as it is.

    Raises:
        DataError: a row without its text column, or with a label outside the task's label space.
    """
    if spec.text_pair_required != (text_pair_column is not None):
        raise ValueError(f"task {spec.name}: text_pair_column must be given exactly for a sentence-pair task")
    file = stats.source
    out: list[dict] = []
    for where, row in rows:
        text = row.get(text_column)
        if text is None:
            raise DataError("missing required field", file=file, record=where, field=text_column)
        record: dict[str, Any] = {"id": "", "text": str(text).strip()}
        if text_pair_column is not None:
            second = row.get(text_pair_column)
            if second is None:
                raise DataError("missing required field", file=file, record=where, field=text_pair_column)
            if not str(second).strip():
                stats.drop("empty_text_pair")
                continue
            record["text_pair"] = str(second).strip()
        record["label"] = row_label(spec, row, label_column, file=file, where=where)
        record["id"] = str(row.get("idx", row.get("index", row.get("id", where))))
        out.append(record)
        stats.keep()
    note_label_counts(spec, [record["label"] for record in out], stats)
    return out


# ----------------------------------------------------------------------------- tables and their columns

def adapt_table(spec: TaskSpec, path: Path, fmt: str, stats: AdapterStats, text_column: str | None,
                label_column: str | None, text_pair_column: str | None) -> list[dict]:
    """Records of a TSV/CSV: the task's original release layout or a table with named columns.

    Args:
        fmt: "tsv" or "csv".
        text_column, label_column, text_pair_column: the user's column names (None: the task's own,
            see `resolve_columns`); any of them means the table has a header line.

    Raises:
        DataError: a line of the wrong width, a column the task needs missing, or a label outside
            the task's label space (file, line and column named).
    """
    table = spec.table
    # Only the original TSV can lack a header line (CoLA's train/dev); a CSV, or a table whose
    # columns the user names, has one.
    headerless = table.headerless if table and fmt == "tsv" and text_column is None and label_column is None \
        and text_pair_column is None else None
    header_names = frozenset({"sentence", "text", "label", "index", "id", *(table.text_columns if table else ())})
    header, rows, positional = read_table(path, "\t" if fmt == "tsv" else ",", headerless, header_names)
    columns = resolve_columns(spec, header, file=str(path), where="line 1", text_column=text_column,
                              text_pair_column=text_pair_column, label_column=label_column)
    if positional:
        stats.format += ":no_header"
    return adapt_classification_rows(spec, rows, stats, text_column=columns.text, label_column=columns.label,
                                     text_pair_column=columns.text_pair)


def read_table(path: Path, delimiter: str, headerless: tuple[str, ...] | None = None,
               header_names: frozenset[str] = frozenset()) -> tuple[list[str], list[tuple[str, dict]], bool]:
    """Column names, ("line N", row) pairs of a TSV/CSV, and whether the file had no header line.

    The first line is the header, except in a layout without one (`headerless`: CoLA's train and
    dev files), which is used when the first line holds none of `header_names`. Every line must
    have as many columns as the header (blank cells past the end are ignored): a short or long
    line is an error naming the line and the column.

    Raises:
        DataError: an empty file, a line of the wrong width, text that is not UTF-8.
    """
    # GLUE sentences contain bare quotes, so TSVs are read without quote processing.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    rows = []
    line_number = 0
    # utf-8-sig: a table saved by Excel (and MRPC's release files) starts with a byte-order mark,
    # which would otherwise become part of the first column's name ("\ufeffQuality") and hide it.
    with open(path, encoding="utf-8-sig", newline="") as handle:
        try:
            reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
            first = next(reader, [])
            line_number = 1
            if not first:
                raise DataError("is empty (no header line)", file=str(path))
            header = [name.strip() for name in first]
            while header and not header[-1]:  # a trailing delimiter names no column
                header.pop()
            lines: Iterable[tuple[int, list[str]]] = enumerate(reader, start=2)
            positional = headerless is not None and not header_names & set(header)
            if positional:
                header = list(headerless)
                lines = itertools.chain([(1, first)], lines)
            for line_number, values in lines:
                if not values or all(not value.strip() for value in values):
                    continue
                _check_width(values, header, path, line_number, positional)
                rows.append((f"line {line_number}", dict(zip(header, values))))
        except UnicodeDecodeError as err:
            raise DataError(f"not UTF-8 text (near line {line_number + 1}, byte {err.start})", file=str(path)) from None
        except csv.Error as err:
            raise DataError(f"unreadable table at line {line_number + 1}: {err}", file=str(path)) from None
    return header, rows, positional


def _check_width(values: list[str], header: list[str], path: Path, line_number: int, positional: bool) -> None:
    """A line with fewer columns than the header, or with more that are not blank, is an error."""
    layout = (f"the task's original layout has no header line and {len(header)} columns: {', '.join(header)}; "
              "a table with a header of other names needs --text_column and --label_column") if positional \
        else f"the header has {len(header)}"
    if len(values) < len(header):
        raise DataError(f"has {len(values)} of {len(header)} columns ({layout})", file=str(path),
                        record=f"line {line_number}", field=header[len(values)])
    if any(value.strip() for value in values[len(header):]):
        raise DataError(f"has {len(values)} columns but {layout} (a stray tab or delimiter?)", file=str(path),
                        record=f"line {line_number}", field=f"column {len(header) + 1}")


@dataclass(frozen=True)
class TableColumns:
    """Which column (or row field) of a table holds the text, the second text of a pair and the label."""

    text: str
    text_pair: str | None
    label: str | None


def _candidates(*names: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for name in names if name))


def resolve_columns(spec: TaskSpec, header: list[str], *, file: str, where: str | int,
                    text_column: str | None, text_pair_column: str | None,
                    label_column: str | None) -> TableColumns:
    """The columns of the task's fields in a table or in rows, from the user's flags or else the task's layout.

    Defaults, in order: the original release TSV's column (TableLayout), the Hub rows' field,
    then the generic names `sentence`/`text` (one-text tasks), `text` and `text_pair` (pair
    tasks), `label`. A task without a TableLayout uses the generic names.

    Raises:
        DataError: a column the task needs is not there (named by `where`, the header line or
            the first row, and the field looked for first).
        ToolkitError: --text_pair_column for a task that reads one text.
    """
    table = spec.table
    pair = spec.text_pair_required
    if text_pair_column is not None and not pair:
        raise ToolkitError(f"--text_pair_column is for sentence-pair tasks; task {spec.name} reads one text")
    at = {"header": header, "file": file, "where": where}
    texts = table.text_columns if table else ()
    hub = table.hub_fields if table else ()
    if pair:
        text_names = _candidates(texts[0] if texts else None, hub[0] if hub else None, "text")
        pair_names = _candidates(texts[1] if len(texts) > 1 else None, hub[1] if len(hub) > 1 else None, "text_pair")
    else:
        text_names = _candidates(texts[0] if texts else None, hub[0] if hub else None, "sentence", "text")
        pair_names = ()
    label_names = _candidates(table.label_column if table else None, "label")
    text = _pick_column(text_column, text_names, "first text" if pair else "text", "--text_column", **at)
    second = _pick_column(text_pair_column, pair_names, "second text", "--text_pair_column", **at) if pair else None
    if second is not None and second == text:
        raise DataError(f"column {text!r} cannot be both texts of a pair", file=file, record=where, field=text)
    regression = f": task {spec.name} is a regression task and needs a score in every record " \
                 "(a file without scores, such as the GLUE test file, cannot be used)" if spec.is_regression else ""
    label = _pick_column(label_column, label_names, "score" if spec.is_regression else "label", "--label_column",
                         required=spec.is_regression, why=regression, **at)
    return TableColumns(text, second, label)


def _pick_column(wanted: str | None, candidates: tuple[str, ...], what: str, flag: str, *, header: list[str],
                 file: str, where: str | int, required: bool = True, why: str = "") -> str | None:
    """The column the user named (which must exist), else the first candidate present, else an error
    naming the first candidate (or None when the column is optional)."""
    if wanted is not None:
        if wanted not in header:
            raise DataError(f"has no column {wanted!r} (columns: {header})", file=file, record=where, field=wanted)
        return wanted
    for name in candidates:
        if name in header:
            return name
    if required:
        raise DataError(f"has no {what} column (looked for {list(candidates)}; columns: {header}){why}; "
                        f"name it with {flag}", file=file, record=where, field=candidates[0])
    return None

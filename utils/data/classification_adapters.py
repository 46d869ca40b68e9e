"""The adapter of classification tables (a GLUE TSV, a CSV, Hub rows such as SST-2's) -> {id, text, label}.

Labels may be integers, digit strings or label names; canonical classification records are read
by `utils.data.adapters.adapt_canonical_classification`.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from utils.run.errors import DataError
from utils.data.adapters import AdapterStats
from utils.data.records import UNLABELLED
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


def adapt_classification_rows(spec: TaskSpec, rows: Iterable[tuple[str | int, dict]], stats: AdapterStats,
                              *, text_column: str, label_column: str | None) -> list[dict]:
    """Rows of a table (GLUE TSV, CSV, Hub rows) -> {id, text, label}.

    `rows` yields (where, row) pairs, `where` being how the user finds the row (a line number or
    an index). With no label column the records are unlabelled (label -1), as in GLUE's test file.
    """
    file = stats.source
    label_names = spec.label_names or ()
    out: list[dict] = []
    counts: Counter = Counter()
    for where, row in rows:
        text = row.get(text_column)
        if text is None:
            raise DataError("missing required field", file=file, record=where, field=text_column)
        if label_column is None:
            label = UNLABELLED
        else:
            if label_column not in row or row[label_column] is None:
                raise DataError("label is missing", file=file, record=where, field=label_column)
            label = _label_index(row[label_column], label_names, file=file, where=where,
                                 field_name=label_column)
        record_id = row.get("idx", row.get("index", row.get("id", where)))
        out.append({"id": str(record_id), "text": str(text).strip(), "label": label})
        counts[label] += 1
        stats.keep()
    for label, count in sorted(counts.items()):
        name = "unlabelled" if label == UNLABELLED else label_names[label]
        stats.note(f"label_{name}", count)
    return out

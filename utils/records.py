"""The canonical records every adapter emits, their validation, and JSON-lines I/O.

QA record (DESIGN.md section 5):
    {"id": str, "task": str, "context": str, "question": str,
     "answers": {"text": [str, ...], "answer_start": [int, ...]}, "is_impossible": bool,
     "meta": {...}}                      # optional: title, plausible answers, how spans were found
An unanswerable question has empty answer lists and is_impossible = True. Every answer satisfies
`context[s:s+len(t)] == t`.

Classification record: {"id": str, "text": str, "label": int}; label -1 marks an unlabelled
example (e.g. the GLUE test file), which training refuses.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from utils.answer_spans import span_matches
from utils.errors import DataError
from utils.fs import make_shareable

QA_REQUIRED_FIELDS = ("id", "context", "question", "answers")
CLASSIFICATION_REQUIRED_FIELDS = ("id", "text", "label")
UNLABELLED = -1


def make_qa_record(*, record_id: str, task: str, context: str, question: str,
                   texts: list[str], starts: list[int], meta: dict[str, Any] | None = None) -> dict:
    """Assemble a canonical QA record; `is_impossible` follows from the answers being empty."""
    record = {
        "id": record_id,
        "task": task,
        "context": context,
        "question": question,
        "answers": {"text": list(texts), "answer_start": list(starts)},
        "is_impossible": len(texts) == 0,
    }
    if meta:
        record["meta"] = meta
    return record


def _require(record: dict, field: str, kind: type | tuple[type, ...], *, file: str | None,
             where: str | int) -> Any:
    if field not in record:
        raise DataError("missing required field", file=file, record=where, field=field)
    value = record[field]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"expected {names}, got {type(value).__name__}", file=file, record=where,
                        field=field)
    return value


def validate_qa_record(record: Any, *, file: str | None, where: str | int) -> dict:
    """Check one canonical QA record and return it with defaults filled in.

    Raises:
        DataError: a field is missing or of the wrong type, the answer lists differ in length,
            an answer offset does not match the context, or is_impossible contradicts the answers.
    """
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}", file=file, record=where)
    record_id = _require(record, "id", (str, int), file=file, where=where)
    where = str(record_id)
    context = _require(record, "context", str, file=file, where=where)
    _require(record, "question", str, file=file, where=where)
    answers = _require(record, "answers", dict, file=file, where=where)
    texts = answers.get("text")
    starts = answers.get("answer_start")
    if not isinstance(texts, list) or not isinstance(starts, list):
        raise DataError("must hold two lists, 'text' and 'answer_start'", file=file, record=where,
                        field="answers")
    if len(texts) != len(starts):
        raise DataError(f"{len(texts)} texts but {len(starts)} offsets", file=file, record=where,
                        field="answers")
    for i, (text, start) in enumerate(zip(texts, starts)):
        if not isinstance(text, str) or not isinstance(start, int) or isinstance(start, bool):
            raise DataError(f"answer {i} must be a string with an integer offset", file=file,
                            record=where, field="answers")
        if not span_matches(context, text, start):
            found = context[max(start, 0):max(start, 0) + len(text)]
            raise DataError(f"answer {i} {text!r} does not match the context at offset {start} "
                            f"(context there reads {found!r})", file=file, record=where,
                            field="answers.answer_start")
    impossible = record.get("is_impossible", len(texts) == 0)
    if not isinstance(impossible, bool):
        raise DataError("expected true or false", file=file, record=where, field="is_impossible")
    if impossible != (len(texts) == 0):
        state = "true but answers are given" if impossible else "false but there is no answer"
        raise DataError(f"is {state}", file=file, record=where, field="is_impossible")
    return {**record, "id": str(record_id), "is_impossible": impossible}


def validate_classification_record(record: Any, num_labels: int, *, file: str | None,
                                   where: str | int) -> dict:
    """Check one canonical classification record (label in [0, num_labels) or -1 = unlabelled).

    Raises:
        DataError: a missing or mistyped field, or a label outside the task's label set.
    """
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}", file=file, record=where)
    record_id = _require(record, "id", (str, int), file=file, where=where)
    where = str(record_id)
    text = _require(record, "text", str, file=file, where=where)
    label = _require(record, "label", int, file=file, where=where)
    if label != UNLABELLED and not 0 <= label < num_labels:
        raise DataError(f"label {label} is outside 0..{num_labels - 1}", file=file, record=where,
                        field="label")
    return {"id": str(record_id), "text": text, "label": label}


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object) for each non-blank line of a JSON-lines file.

    Raises:
        DataError: a line is not valid JSON (the message gives line and column).
    """
    with open(path, encoding="utf-8") as handle:
        line_number = 0
        try:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                yield line_number, json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"malformed JSON at line {line_number}, column {err.colno}: {err.msg}",
                            file=str(path)) from None
        except UnicodeDecodeError as err:
            raise DataError(f"not UTF-8 text (line {line_number + 1}, byte {err.start})", file=str(path)) from None


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> Path:
    """Write records as JSON lines, atomically (a temporary file renamed into place)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        make_shareable(Path(temporary))
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target

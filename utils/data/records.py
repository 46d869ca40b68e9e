"""The canonical records every adapter emits, their validation, and JSON-lines I/O.

QA record (DESIGN.md section 5):
    {"id": str, "task": str, "context": str, "question": str,
     "answers": {"text": [str, ...], "answer_start": [int, ...]},   # located spans: training labels
     "is_impossible": bool,                                           # the dataset says: no answer
     "gold": [[str, ...], ...],          # every original gold answer, for the official metric
     "gold_types": [str, ...],           # optional: DROP's type of each gold answer
     "meta": {...}}                      # optional: title, plausible answers, document ids

`answers` holds the spans found in the context; every one satisfies `context[s:s+len(t)] == t`.
`gold` holds what the dataset's own evaluation scores against, untouched: a list of acceptable
answers, each a list of strings that must ALL be given (one string for SQuAD, DuoRC and a DROP
number or date; several for a Quoref or DROP multi-span answer). An unanswerable question has
`gold == []`, empty `answers` and is_impossible = True. An answerable question whose answer
could not be located in the context (a DuoRC free-form answer, a DROP number) has a non-empty
`gold` and empty `answers`: it is evaluated like every other question, but the span objective
cannot learn from it (`has_training_span`). So has an answerable question whose question text is
empty: the adapters give it no located span.

Classification record: {"id": str, "text": str, "label": int}; label -1 marks an unlabelled
example (e.g. the GLUE test file), which training refuses. A sentence-pair task's record also has
"text_pair": str, never empty (MNLI's hypothesis, QQP's second question, ...); a single-text task's
record has none. A regression task's label is a float score in the task's range (STS-B: [0, 5]);
a regression task has no unlabelled records.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from utils.qa.answer_spans import span_matches
from utils.run.errors import JSON_TOO_DEEP, DataError
from utils.run.fs import atomic_text_file

QA_REQUIRED_FIELDS = ("id", "context", "question", "answers")
CLASSIFICATION_REQUIRED_FIELDS = ("id", "text", "label")
UNLABELLED = -1


def make_qa_record(*, record_id: str, task: str, context: str, question: str,
                   texts: list[str], starts: list[int], gold: Sequence[Sequence[str]] | None = None,
                   gold_types: Sequence[str] | None = None, meta: dict[str, Any] | None = None) -> dict:
    """Assemble a canonical QA record.

    Args:
        texts, starts: the answers located in the context (training labels).
        gold: every original gold answer, each a list of strings; None means one gold answer
            per located text (the SQuAD case). `is_impossible` is `gold == []`.
        gold_types: DROP's answer type of each gold answer, if known.
    """
    gold_answers = [[text] for text in texts] if gold is None else [list(answer) for answer in gold]
    record = {
        "id": record_id,
        "task": task,
        "context": context,
        "question": question,
        "answers": {"text": list(texts), "answer_start": list(starts)},
        "is_impossible": len(gold_answers) == 0,
        "gold": gold_answers,
    }
    if gold_types is not None:
        record["gold_types"] = list(gold_types)
    if meta:
        record["meta"] = meta
    return record


def has_training_span(record: dict) -> bool:
    """A span objective can learn from the record: an answer located in the context, or none at all."""
    return bool(record["is_impossible"] or record["answers"]["text"])


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


def _gold_answers(record: dict, *, file: str | None, where: str) -> list[list[str]] | None:
    """The record's `gold` field, checked (None when absent)."""
    if "gold" not in record:
        return None
    gold = record["gold"]
    if not isinstance(gold, list) or not all(
            isinstance(answer, list) and answer and all(isinstance(text, str) for text in answer) for answer in gold):
        raise DataError("must be a list of answers, each a non-empty list of strings", file=file, record=where,
                        field="gold")
    types = record.get("gold_types")
    if types is not None and (not isinstance(types, list) or len(types) != len(gold)
                              or not all(isinstance(t, str) for t in types)):
        raise DataError(f"must be a list of {len(gold)} strings, one per gold answer", file=file, record=where,
                        field="gold_types")
    return gold


def validate_qa_record(record: Any, *, file: str | None, where: str | int) -> dict:
    """Check one canonical QA record and return it with defaults filled in.

    `gold` may be absent (records written before it existed); callers that know the task's
    metric fill it in. `is_impossible` defaults to "no gold answer" (or, without `gold`, to "no
    located answer").

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
    gold = _gold_answers(record, file=file, where=where)
    has_answer = bool(gold) if gold is not None else bool(texts)
    impossible = record.get("is_impossible", not has_answer)
    if not isinstance(impossible, bool):
        raise DataError("expected true or false", file=file, record=where, field="is_impossible")
    if impossible == has_answer:
        what = "gold answers" if gold is not None else "answers"
        state = f"true but {what} are given" if impossible else f"false but there is no answer in '{what}'"
        raise DataError(f"is {state}", file=file, record=where, field="is_impossible")
    if impossible and texts:
        raise DataError("is true but answers are given", file=file, record=where, field="is_impossible")
    return {**record, "id": str(record_id), "is_impossible": impossible}


def validate_classification_record(record: Any, labels: int | tuple[float, float], *, file: str | None,
                                   where: str | int, text_pair: bool = False) -> dict:
    """Check one canonical classification record against its task's label space and text fields.

    Args:
        labels: the number of classes (a label is an int in [0, labels) or -1 = unlabelled), or a
            regression task's score range (low, high): a label is then a number in it, returned as
            a float.
        text_pair: the task reads a pair of texts: the record must have a non-empty string
            `text_pair`; otherwise it must have none.

    Returns:
        {"id", "text", "label"} plus "text_pair" for a pair task (other fields are dropped).

    Raises:
        DataError: a missing or mistyped field, an empty or unexpected `text_pair`, or a label
            outside the task's label space.
    """
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}", file=file, record=where)
    record_id = _require(record, "id", (str, int), file=file, where=where)
    where = str(record_id)
    text = _require(record, "text", str, file=file, where=where)
    out: dict[str, Any] = {"id": str(record_id), "text": text}
    if text_pair:
        second = _require(record, "text_pair", str, file=file, where=where)
        if not second.strip():
            raise DataError("the second text of a sentence-pair task is empty", file=file, record=where,
                            field="text_pair")
        out["text_pair"] = second
    elif "text_pair" in record:
        raise DataError("this task reads one text; the record has a second one (a sentence-pair task's "
                        "record?)", file=file, record=where, field="text_pair")
    if isinstance(labels, tuple):
        out["label"] = score_label(_require(record, "label", (int, float), file=file, where=where), labels,
                                   file=file, where=where, field="label")
        return out
    label = _require(record, "label", int, file=file, where=where)
    if label != UNLABELLED and not 0 <= label < labels:
        raise DataError(f"label {label} is outside 0..{labels - 1}", file=file, record=where,
                        field="label")
    out["label"] = label
    return out


def score_label(value: Any, score_range: tuple[float, float], *, file: str | None, where: str | int,
                field: str) -> float:
    """A regression label: a finite number in [low, high], as a float (a number or a numeric string).

    Raises:
        DataError: not a number, not finite, or outside the range (a regression task has no
            unlabelled records, so GLUE's -1 for a hidden test score is refused too).
    """
    low, high = score_range
    if isinstance(value, bool):
        raise DataError("expected a number (a score), got a boolean", file=file, record=where, field=field)
    if isinstance(value, str):
        if not value.strip():
            raise DataError("label is missing", file=file, record=where, field=field)
        try:
            value = float(value)
        except ValueError:
            raise DataError(f"score {value.strip()!r} is not a number", file=file, record=where,
                            field=field) from None
    score = float(value)
    if not math.isfinite(score):
        raise DataError(f"score {score} is not a finite number", file=file, record=where, field=field)
    if not low <= score <= high:
        hint = " (a regression task has no unlabelled records)" if score == UNLABELLED else ""
        raise DataError(f"score {score:g} is outside [{low:g}, {high:g}]{hint}", file=file, record=where,
                        field=field)
    return score


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object) for each non-blank line of a JSON-lines file.

    Raises:
        DataError: a line is not valid JSON (the message gives line and column) or is nested too
            deeply to parse.
    """
    with open(path, encoding="utf-8-sig") as handle:  # -sig: a byte-order mark is skipped, not an error
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
        except RecursionError:
            raise DataError(JSON_TOO_DEEP, file=str(path), record=f"line {line_number}") from None


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> Path:
    """Write records as JSON lines, whole or not at all (utils.run.fs.atomic_text_file).

    Raises:
        OSError: `path` is a folder, or it (or its folder) cannot be written; the error names
            `path`, never the temporary file the user did not ask for.
    """
    with atomic_text_file(path) as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return Path(path)

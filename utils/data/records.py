"""The canonical records every adapter emits, their validation, answer spans, and JSON-lines I/O.

QA record:
    {"id", "task", "context", "question",
     "answers": {"text": [...], "answer_start": [...]},   # spans located in the context: training labels
     "is_impossible": bool, "gold": [[str, ...], ...],     # every original gold answer, for the metric
     "gold_types": [...], "meta": {...}}                   # optional: DROP answer types; title, document ids

Every located span satisfies `context[s:s+len(t)] == t`. Each gold answer is a list of strings that
must ALL be given (several for a Quoref or DROP multi-span answer). An unanswerable question has
`gold == []` and no spans; an answerable one whose answer was not found in the context (a DuoRC
free-form answer, a DROP number) has gold but no spans: it is evaluated, not span-trained.

Classification record: {"id", "text", "label"} (+ "text_pair", never empty, for a sentence-pair
task); label -1 marks an unlabelled example (GLUE's test file); a regression task's label is a
float score in its range, and it has no unlabelled records.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from utils.run.errors import JSON_TOO_DEEP, DataError
from utils.run.outputs import atomic_text_file

UNLABELLED = -1


def make_qa_record(*, record_id: str, task: str, context: str, question: str, texts: list[str], starts: list[int],
                   gold: Sequence[Sequence[str]] | None = None, gold_types: Sequence[str] | None = None,
                   meta: dict[str, Any] | None = None) -> dict:
    """A canonical QA record: located spans (texts, starts) and gold answers (None: one per located
    text, the SQuAD case); `is_impossible` is `gold == []`."""
    gold_answers = [[text] for text in texts] if gold is None else [list(answer) for answer in gold]
    record = {"id": record_id, "task": task, "context": context, "question": question,
              "answers": {"text": list(texts), "answer_start": list(starts)},
              "is_impossible": len(gold_answers) == 0, "gold": gold_answers}
    if gold_types is not None:
        record["gold_types"] = list(gold_types)
    return {**record, "meta": meta} if meta else record


def has_training_span(record: dict) -> bool:
    """A span objective can learn from the record: an answer located in the context, or none at all."""
    return bool(record["is_impossible"] or record["answers"]["text"])


def required_field(obj: Any, name: str, kind: type | tuple[type, ...], *, file: str | None, where: str | int) -> Any:
    """obj[name], checked for type (a bool is no int), or a DataError naming file, record and field."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}", file=file, record=where)
    if name not in obj:
        raise DataError("missing required field", file=file, record=where, field=name)
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"expected {expected}, got {type(value).__name__}", file=file, record=where, field=name)
    return value


def validate_qa_record(record: Any, *, file: str | None, where: str | int) -> dict:
    """Check one canonical QA record (a DataError names what is wrong) and return it with
    `is_impossible` filled in ("no gold answer", or without `gold`, "no located answer")."""
    where = str(required_field(record, "id", (str, int), file=file, where=where))
    context = required_field(record, "context", str, file=file, where=where)
    required_field(record, "question", str, file=file, where=where)
    answers = required_field(record, "answers", dict, file=file, where=where)
    texts, starts = answers.get("text"), answers.get("answer_start")
    if not isinstance(texts, list) or not isinstance(starts, list):
        raise DataError("must hold two lists, 'text' and 'answer_start'", file=file, record=where, field="answers")
    if len(texts) != len(starts):
        raise DataError(f"{len(texts)} texts but {len(starts)} offsets", file=file, record=where, field="answers")
    for i, (text, start) in enumerate(zip(texts, starts)):
        if not isinstance(text, str) or not isinstance(start, int) or isinstance(start, bool):
            raise DataError(f"answer {i} must be a string with an integer offset", file=file, record=where,
                            field="answers")
        if not span_matches(context, text, start):
            found = context[max(start, 0):max(start, 0) + len(text)]
            raise DataError(f"answer {i} {text!r} does not match the context at offset {start} (context there "
                            f"reads {found!r})", file=file, record=where, field="answers.answer_start")
    gold = record.get("gold")
    if gold is not None and (not isinstance(gold, list) or not all(
            isinstance(answer, list) and answer and all(isinstance(text, str) for text in answer) for answer in gold)):
        raise DataError("must be a list of answers, each a non-empty list of strings", file=file, record=where,
                        field="gold")
    types = record.get("gold_types")
    if gold is not None and types is not None and (not isinstance(types, list) or len(types) != len(gold)
                              or not all(isinstance(t, str) for t in types)):
        raise DataError(f"must be a list of {len(gold)} strings, one per gold answer", file=file, record=where,
                        field="gold_types")
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
    return {**record, "id": where, "is_impossible": impossible}


def validate_classification_record(record: Any, labels: int | tuple[float, float], *, file: str | None,
                                   where: str | int, text_pair: bool = False) -> dict:
    """Check one canonical classification record; return {"id", "text", "label"} (+ "text_pair", which
    a pair task must have, non-empty, and another task must not). `labels` is the number of classes (a
    label is an int in [0, labels) or -1) or a regression task's score range (a label is a float in it)."""
    where = str(required_field(record, "id", (str, int), file=file, where=where))
    out: dict[str, Any] = {"id": where, "text": required_field(record, "text", str, file=file, where=where)}
    if text_pair:
        out["text_pair"] = required_field(record, "text_pair", str, file=file, where=where)
        if not out["text_pair"].strip():
            raise DataError("the second text of a sentence-pair task is empty", file=file, record=where,
                            field="text_pair")
    elif "text_pair" in record:
        raise DataError("this task reads one text; the record has a second one (a sentence-pair task's record?)",
                        file=file, record=where, field="text_pair")
    if isinstance(labels, tuple):
        value = required_field(record, "label", (int, float), file=file, where=where)
        return {**out, "label": score_label(value, labels, file=file, where=where, field="label")}
    label = required_field(record, "label", int, file=file, where=where)
    if label != UNLABELLED and not 0 <= label < labels:
        raise DataError(f"label {label} is outside 0..{labels - 1}", file=file, record=where, field="label")
    return {**out, "label": label}


def score_label(value: Any, score_range: tuple[float, float], *, file: str | None, where: str | int,
                field: str) -> float:
    """A regression label (a number or a numeric string) as a float; a DataError unless it is finite
    and in [low, high] (a regression task has no unlabelled records: GLUE's hidden -1 is refused)."""
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
    """Yield (line number, parsed object) for each non-blank line of a JSON-lines file (a DataError
    gives the line of bad JSON or text that is not UTF-8)."""
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
    """Write records as JSON lines, whole or not at all (an OSError names `path`, never a temporary file)."""
    with atomic_text_file(path) as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return Path(path)


# ----------------------------------------------------------------------------- answer spans

MatchKind = Literal["exact", "case_insensitive", "trimmed"]


@dataclass(frozen=True)
class Located:
    """An answer found in its context: the span as it reads there, how, among how many occurrences."""

    start: int
    text: str
    how: MatchKind
    occurrences: int
    inside_word: bool = False


def span_matches(context: str, text: str, start: int) -> bool:
    """The canonical invariant for one answer: `context[start:start+len(text)] == text`."""
    return 0 <= start and text != "" and context[start:start + len(text)] == text


def locate_answer(context: str, answer: str) -> Located | None:
    """Find a free-form answer string in the context, or None.

    Tries, in order: the exact string; ignoring letter case (the span keeps the context's casing);
    without surrounding whitespace and a final full stop, exact then ignoring case. The first form
    with an occurrence standing as whole words wins ("China" in "in China." rather than in
    "Chinatown"); only when none has one is an occurrence inside a word used (`inside_word`).
    """
    candidates: list[tuple[str, bool]] = [(answer, False), (answer, True)]
    trimmed = answer.strip().rstrip(".").strip()
    if trimmed and trimmed != answer:
        candidates += [(trimmed, False), (trimmed, True)]
    fallback: Located | None = None
    for index, (needle, ignore_case) in enumerate(candidates):
        if not needle:
            continue
        matches = list(re.finditer(re.escape(needle), context, re.IGNORECASE if ignore_case else 0))
        if not matches:
            continue
        how: MatchKind = "trimmed" if index >= 2 else ("case_insensitive" if ignore_case else "exact")
        whole = [m for m in matches if _whole_words(context, m.start(), m.end())]
        if whole:
            return Located(whole[0].start(), context[whole[0].start():whole[0].end()], how, len(matches))
        if fallback is None:
            first = matches[0]
            fallback = Located(first.start(), context[first.start():first.end()], how, len(matches), inside_word=True)
    return fallback


def _whole_words(context: str, start: int, end: int) -> bool:
    """The span does not cut a word: no letter or digit glued to either edge of it."""
    glued_left = start > 0 and context[start].isalnum() and context[start - 1].isalnum()
    glued_right = end < len(context) and context[end - 1].isalnum() and context[end].isalnum()
    return not (glued_left or glued_right)


def repair_offset(context: str, text: str, start: int, max_shift: int) -> int | None:
    """The occurrence of `text` nearest to `start` (ties: the earlier) within `max_shift` characters:
    published offsets a few characters off (Quoref's dev set has 50, most off by one)."""
    if not text:
        return None
    best: int | None = None
    lo = max(0, start - max_shift)
    hi = min(len(context), start + max_shift + len(text))
    position = context.find(text, lo, hi)
    while position != -1:
        if abs(position - start) <= max_shift and (best is None or abs(position - start) < abs(best - start)):
            best = position
        position = context.find(text, position + 1, hi)
    return best

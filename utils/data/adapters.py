"""Adapters from each dataset's own layouts to the canonical records of `utils.data.records`: what
they share, and the canonical JSON lines.

Each QA dataset arrives in two shapes: its ORIGINAL release file (SQuAD JSON, DuoRC's list of
movies, DROP's passage dictionary, ...) and the row schema of its Hugging Face Hub version (also
what a `datasets` save_to_disk folder or a JSON-lines export holds). Both go through the same
per-question logic, so a task gives the same records whichever way it was obtained. The adapters
of each dataset family are in their own modules: `squad_adapters` (SQuAD v1.1/v2.0, Quoref,
MLQA), `duorc_adapters`, `drop_adapters` and `classification_adapters` (GLUE TSV, CSV, Hub rows).
This module holds what they share (`AdapterStats`, field checks, keeping a question with its gold
answers, locating free-form answers) and the adapters of our own canonical JSON lines.

Nothing is dropped silently: `AdapterStats` counts every record read, kept and dropped (by
reason), plus notes on what was kept but changed (repaired offsets, case-insensitive matches).

Evaluation data is never altered: every question of a file is kept with every original gold
answer (the record's `gold`), whether or not its answer can be found in the context. Only the
located spans (`answers`), which training needs, depend on the search; questions without one are
counted by reason under `without_located_answer` (training leaves them out, evaluation scores
them with the dataset's official metric).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from utils.qa.answer_spans import locate_answer
from utils.run.errors import DataError
from utils.data.records import (UNLABELLED, make_qa_record, validate_classification_record,
                           validate_qa_record)
from utils.data.registry import TaskSpec

@dataclass
class AdapterStats:
    """Counts of what an adapter read, kept and dropped, written as `adapter_stats.json`.

    `records_read == kept + sum(dropped.values())` always holds. `without_located_answer` counts
    the kept questions that have gold answers but no span located in the context (by reason:
    e.g. `answer_offset_unrepairable`, `answer_not_in_plot`, `empty_answer_text`,
    `empty_question`): they are evaluated, and left out of span training.
    """

    task: str
    source: str
    format: str
    split: str | None = None
    records_read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    without_located_answer: Counter = field(default_factory=Counter)

    def keep(self) -> None:
        """Count one record read and kept."""
        self.records_read += 1
        self.kept += 1

    def keep_unlocated(self, reason: str) -> None:
        """Count one question kept (for evaluation) whose answer has no span in the context, and why."""
        self.keep()
        self.without_located_answer[reason] += 1

    def drop(self, reason: str) -> None:
        """Count one record read and dropped, and why."""
        self.records_read += 1
        self.dropped[reason] += 1

    def note(self, what: str, count: int = 1) -> None:
        """Count something done to kept records (a repaired offset, a case-insensitive match)."""
        self.notes[what] += count

    def to_dict(self) -> dict[str, Any]:
        """The statistics as written to adapter_stats.json."""
        return {
            "task": self.task,
            "split": self.split,
            "source": self.source,
            "format": self.format,
            "records_read": self.records_read,
            "kept": self.kept,
            "dropped_total": sum(self.dropped.values()),
            "dropped": dict(sorted(self.dropped.items())),
            "notes": dict(sorted(self.notes.items())),
            "without_located_answer_total": sum(self.without_located_answer.values()),
            "without_located_answer": dict(sorted(self.without_located_answer.items())),
        }


# ----------------------------------------------------------------------------- shared QA logic

def required_field(obj: Any, name: str, kind: type | tuple[type, ...], *, file: str, where: str | int) -> Any:
    """obj[name], checked for type, or a DataError that names file, record and field."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}", file=file, record=where)
    if name not in obj:
        raise DataError("missing required field", file=file, record=where, field=name)
    value = obj[name]
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"expected {expected}, got {type(value).__name__}", file=file, record=where,
                        field=name)
    return value


class UniqueIds:
    """Question ids must be unique within a file: predictions and metrics are keyed by them."""

    def __init__(self, file: str) -> None:
        self._seen: set[str] = set()
        self._file = file

    def check(self, record_id: str) -> None:
        """Remember `record_id`; raise DataError if the file used it before."""
        if record_id in self._seen:
            raise DataError("duplicate question id", file=self._file, record=record_id, field="id")
        self._seen.add(record_id)


def emit_qa(spec: TaskSpec, stats: AdapterStats, out: list[dict], *, record_id: str, context: str,
            question: str, texts: list[str], starts: list[int], gold: list[list[str]],
            unlocated_reason: str, gold_types: list[str] | None = None, meta: dict | None = None) -> None:
    """Keep one question with its gold answers and the spans located for them.

    `gold == []` is an unanswerable question (refused by a task without unanswerable questions);
    a question with gold answers but no located span is kept and counted as `unlocated_reason`.
    An empty (or blank) question is kept for evaluation, since the official metric scores every
    question, but an answerable one gets no training span (nothing in it says which span to
    pick): it is counted as `empty_question` under `without_located_answer`; an unanswerable one
    is noted as `empty_question` (its null label is still right).
    """
    empty_question = not question.strip()
    if empty_question:
        texts, starts = [], []
        unlocated_reason = "empty_question"
    if not gold:
        if not spec.version_2_with_negative:
            stats.drop("unanswerable_in_v1_task")
            return
        # SQuAD v2 keeps plausible (wrong) answers apart; an unanswerable question has no span.
        texts, starts = [], []
        stats.note("unanswerable")
        if empty_question:
            stats.note("empty_question")
    out.append(make_qa_record(record_id=record_id, task=spec.name, context=context, question=question,
                              texts=texts, starts=starts, gold=gold, gold_types=gold_types, meta=meta))
    if gold and not texts:
        stats.keep_unlocated(unlocated_reason)
    else:
        stats.keep()


def default_gold(spec: TaskSpec, texts: list[str]) -> list[list[str]]:
    """Gold answers from a question's answer texts: one answer per text, or for Quoref all texts as
    one conjunctive answer."""
    if not texts:
        return []
    return [list(texts)] if spec.metric == "quoref" else [[text] for text in texts]


def free_form_answers(answers: Iterable[str], context: str, stats: AdapterStats) -> tuple[list[str], list[int]]:
    """Answers given as bare strings (DuoRC, DROP spans): locate each in the context (an empty
    string is noted as `empty_answer_text`: there is nothing to look for)."""
    texts: list[str] = []
    starts: list[int] = []
    for answer in answers:
        if not answer.strip():
            stats.note("empty_answer_text")
            continue
        located = locate_answer(context, answer)
        if located is None:
            continue
        if located.how != "exact":
            stats.note(f"answer_found_{located.how}")
        if located.occurrences > 1:
            stats.note("answer_ambiguous_first_occurrence_used")
        if located.inside_word:
            stats.note("answer_found_inside_a_word")
        if (located.text, located.start) not in zip(texts, starts):
            texts.append(located.text)
            starts.append(located.start)
    return texts, starts


# ----------------------------------------------------------------------------- canonical JSONL

def adapt_canonical_qa(spec: TaskSpec, rows: Iterable[tuple[int, Any]], stats: AdapterStats) -> list[dict]:
    """Canonical QA records (our own JSON lines). These are checked strictly: a record that breaks
    the schema or the span invariant is an error, not a drop, because we wrote it ourselves. A
    record without `gold` gets one from its located answers (`default_gold`)."""
    file = stats.source
    out: list[dict] = []
    ids = UniqueIds(file)
    for line_number, row in rows:
        record = validate_qa_record(row, file=file, where=f"line {line_number}")
        ids.check(record["id"])
        if record.get("task") not in (None, spec.name):
            stats.note("task_field_relabelled")
        texts = record["answers"]["text"]
        gold = record["gold"] if "gold" in record else default_gold(spec, texts)
        emit_qa(spec, stats, out, record_id=record["id"], context=record["context"],
                question=record["question"], texts=texts, starts=record["answers"]["answer_start"],
                gold=[] if record["is_impossible"] else gold, gold_types=record.get("gold_types"),
                unlocated_reason="answer_not_located", meta=record.get("meta"))
    return out


def adapt_canonical_classification(spec: TaskSpec, rows: Iterable[tuple[int, Any]],
                                   stats: AdapterStats) -> list[dict]:
    """Canonical classification records (JSON lines {id, text, label}, plus text_pair for a pair
    task; a regression task's label a score), checked strictly against the task."""
    records = [validate_classification_record(row, spec.label_space, file=stats.source, where=f"line {n}",
                                              text_pair=spec.text_pair_required)
               for n, row in rows]
    for _ in records:
        stats.keep()
    note_label_counts(spec, [record["label"] for record in records], stats)
    return records


# A regression task's scores are counted in this many equal bins of its range (adapter_stats.json).
SCORE_BINS = 5


def note_label_counts(spec: TaskSpec, labels: list[int | float], stats: AdapterStats) -> None:
    """Note how many records have each label (`label_NAME`, `label_unlabelled`), or for a regression
    task how many scores fall in each fifth of its range (`score_LOW-HIGH`, the last bin closed)."""
    if spec.regression_range is None:
        for label, count in sorted(Counter(labels).items()):
            name = "unlabelled" if label == UNLABELLED else (spec.label_names or ())[label]
            stats.note(f"label_{name}", count)
        return
    low, high = spec.regression_range
    width = (high - low) / SCORE_BINS
    counts = Counter(min(int((score - low) // width), SCORE_BINS - 1) for score in labels)
    for index, count in sorted(counts.items()):
        stats.note(f"score_{low + index * width:g}-{low + (index + 1) * width:g}", count)

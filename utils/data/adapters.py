"""Adapters from each dataset's own layouts to the canonical records of `utils.data.records`.

Each QA dataset arrives in two shapes: its ORIGINAL release file (SQuAD JSON, DuoRC's list of
movies, DROP's passage dictionary, ...) and the row schema of its Hugging Face Hub version (also
what a `datasets` save_to_disk folder or a JSON-lines export holds). Both go through the same
per-question logic, so a task gives the same records whichever way it was obtained.

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

from utils.qa.answer_spans import locate_answer, repair_offset, span_matches
from utils.qa.drop_metric import drop_answer_strings
from utils.run.errors import DataError
from utils.data.records import (UNLABELLED, make_qa_record, validate_classification_record,
                           validate_qa_record)
from utils.data.registry import TaskSpec

# Published offsets further than this from the answer are not "off by a few characters" any more.
MAX_OFFSET_REPAIR_SHIFT = 32


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

def _field(obj: Any, name: str, kind: type | tuple[type, ...], *, file: str, where: str | int) -> Any:
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


class _UniqueIds:
    """Question ids must be unique within a file: predictions and metrics are keyed by them."""

    def __init__(self, file: str) -> None:
        self._seen: set[str] = set()
        self._file = file

    def check(self, record_id: str) -> None:
        if record_id in self._seen:
            raise DataError("duplicate question id", file=self._file, record=record_id, field="id")
        self._seen.add(record_id)


def _emit_qa(spec: TaskSpec, stats: AdapterStats, out: list[dict], *, record_id: str, context: str,
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


def _offset_answers(raw: list[tuple[str, int]], context: str, stats: AdapterStats) -> tuple[list[str], list[int], int]:
    """Answers given with offsets (SQuAD, Quoref, MLQA): keep those that match, repair those a
    few characters off (`repair_offset`), drop the rest. An empty answer text has no span to
    match or repair: it is noted as `empty_answer_text`, not as an offset problem. Returns texts,
    starts and the number of non-empty answers dropped."""
    texts: list[str] = []
    starts: list[int] = []
    lost = 0
    for text, start in raw:
        if not text.strip():
            stats.note("empty_answer_text")
            continue
        if span_matches(context, text, start):
            position = start
        else:
            position = repair_offset(context, text, start, MAX_OFFSET_REPAIR_SHIFT)
            if position is None:
                lost += 1
                continue
            stats.note("answer_offset_repaired")
        if (text, position) not in zip(texts, starts):
            texts.append(text)
            starts.append(position)
    if lost:
        stats.note("answer_offset_unrepairable", lost)
    return texts, starts, lost


def _squad_like_question(spec: TaskSpec, stats: AdapterStats, out: list[dict], *, record_id: str,
                         context: str, question: str, raw: list[tuple[str, int]], impossible: bool,
                         meta: dict | None) -> None:
    if not impossible and not raw:
        stats.drop("no_answer_given")
        return
    texts, starts, _ = _offset_answers(raw, context, stats) if not impossible else ([], [], 0)
    if len(raw) > 1 and spec.metric == "quoref":
        stats.note("multi_span_answer")
    gold = [] if impossible else default_gold(spec, [text for text, _ in raw])
    only_empty = all(not text.strip() for text, _ in raw)
    _emit_qa(spec, stats, out, record_id=record_id, context=context, question=question, texts=texts,
             starts=starts, gold=gold, meta=meta,
             unlocated_reason="empty_answer_text" if only_empty else "answer_offset_unrepairable")


def _free_form_answers(answers: Iterable[str], context: str, stats: AdapterStats) -> tuple[list[str], list[int]]:
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


# ----------------------------------------------------------------------------- SQuAD-format files

def adapt_squad_json(spec: TaskSpec, payload: Any, stats: AdapterStats) -> list[dict]:
    """SQuAD v1.1 / v2.0 JSON, also used by Quoref and MLQA: data -> paragraphs -> qas.

    v2.0 questions carry `is_impossible` and `plausible_answers`; the latter go to `meta`.
    """
    file = stats.source
    articles = _field(payload, "data", list, file=file, where="(top level)")
    out: list[dict] = []
    ids = _UniqueIds(file)
    for a_index, article in enumerate(articles):
        paragraphs = _field(article, "paragraphs", list, file=file, where=f"data[{a_index}]")
        title = article.get("title") if isinstance(article, dict) else None
        for p_index, paragraph in enumerate(paragraphs):
            where = f"data[{a_index}].paragraphs[{p_index}]"
            context = _field(paragraph, "context", str, file=file, where=where)
            for q_index, qa in enumerate(_field(paragraph, "qas", list, file=file, where=where)):
                qa_where = f"{where}.qas[{q_index}]"
                record_id = str(_field(qa, "id", (str, int), file=file, where=qa_where))
                ids.check(record_id)
                question = _field(qa, "question", str, file=file, where=record_id)
                answers = _field(qa, "answers", list, file=file, where=record_id)
                raw = []
                for i, answer in enumerate(answers):
                    text = _field(answer, "text", str, file=file, where=f"{record_id}.answers[{i}]")
                    start = _field(answer, "answer_start", int, file=file, where=f"{record_id}.answers[{i}]")
                    raw.append((text, start))
                impossible = bool(qa.get("is_impossible", False))
                meta = {"title": title} if title else {}
                if impossible and qa.get("plausible_answers"):
                    meta["plausible_answers"] = qa["plausible_answers"]
                _squad_like_question(spec, stats, out, record_id=record_id, context=context,
                                     question=question, raw=raw, impossible=impossible, meta=meta)
    return out


def adapt_squad_rows(spec: TaskSpec, rows: Iterable[dict], stats: AdapterStats) -> list[dict]:
    """Hub rows of SQuAD, SQuAD v2, Quoref and MLQA: {id, context, question, answers{text, answer_start}}.

    On the Hub an unanswerable SQuAD v2 question is one with empty answer lists.
    """
    file = stats.source
    out: list[dict] = []
    ids = _UniqueIds(file)
    for index, row in enumerate(rows):
        record_id = str(_field(row, "id", (str, int), file=file, where=index))
        ids.check(record_id)
        context = _field(row, "context", str, file=file, where=record_id)
        question = _field(row, "question", str, file=file, where=record_id)
        answers = _field(row, "answers", dict, file=file, where=record_id)
        texts = answers.get("text", [])
        starts = answers.get("answer_start", [])
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise DataError("must hold equally long lists 'text' and 'answer_start'", file=file,
                            record=record_id, field="answers")
        if not all(isinstance(t, str) for t in texts) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                               for v in starts):
            raise DataError("answer texts must be strings and offsets integers", file=file, record=record_id,
                            field="answers")
        raw = list(zip(texts, starts))
        meta = {"title": row["title"]} if row.get("title") else None
        _squad_like_question(spec, stats, out, record_id=record_id, context=context, question=question,
                             raw=raw, impossible=not raw, meta=meta)
    return out


# ----------------------------------------------------------------------------- DuoRC

def _duorc_question(spec: TaskSpec, stats: AdapterStats, out: list[dict], *, record_id: str,
                    plot: str, question: str, answers: list[str], no_answer: bool, meta: dict) -> None:
    """DuoRC's own evaluation scores against `answers` and treats an empty list as "no answer"
    whatever the `no_answer` flag says; a flag that disagrees is noted."""
    if not all(isinstance(answer, str) for answer in answers):
        raise DataError("must be a list of strings", file=stats.source, record=record_id, field="answers")
    if no_answer and answers:
        stats.note("no_answer_flag_with_answers")
    if not no_answer and not answers:
        stats.note("no_answers_without_no_answer_flag")
    texts, starts = _free_form_answers(answers, plot, stats)
    only_empty = all(not answer.strip() for answer in answers)
    _emit_qa(spec, stats, out, record_id=record_id, context=plot, question=question, texts=texts,
             starts=starts, gold=default_gold(spec, list(answers)), meta=meta,
             unlocated_reason="empty_answer_text" if only_empty else "answer_not_in_plot")


def adapt_duorc_json(spec: TaskSpec, payload: Any, stats: AdapterStats) -> list[dict]:
    """DuoRC's original JSON: a list of movies {id, title, plot, qa: [{id, question, answers, no_answer}]}.

    Answers are free-form strings: each is searched for in the plot (exact, then ignoring case)
    for training; every original string stays a gold answer. A question with no answer strings
    is unanswerable; one none of whose answers is found is kept for evaluation and counted as
    `answer_not_in_plot`.
    """
    file = stats.source
    if not isinstance(payload, list):
        raise DataError("expected a list of movies", file=file, record="(top level)")
    out: list[dict] = []
    ids = _UniqueIds(file)
    for m_index, movie in enumerate(payload):
        plot = _field(movie, "plot", str, file=file, where=f"movie[{m_index}]")
        meta = {"title": movie.get("title"), "movie_id": movie.get("id")}
        for q_index, qa in enumerate(_field(movie, "qa", list, file=file, where=f"movie[{m_index}]")):
            record_id = str(_field(qa, "id", (str, int), file=file, where=f"movie[{m_index}].qa[{q_index}]"))
            ids.check(record_id)
            _duorc_question(spec, stats, out, record_id=record_id, plot=plot,
                            question=_field(qa, "question", str, file=file, where=record_id),
                            answers=_field(qa, "answers", list, file=file, where=record_id),
                            no_answer=bool(qa.get("no_answer", False)), meta=meta)
    return out


def adapt_duorc_rows(spec: TaskSpec, rows: Iterable[dict], stats: AdapterStats) -> list[dict]:
    """Hub rows of ibm/duorc: {plot_id, plot, title, question_id, question, answers, no_answer}."""
    file = stats.source
    out: list[dict] = []
    ids = _UniqueIds(file)
    for index, row in enumerate(rows):
        record_id = str(_field(row, "question_id", (str, int), file=file, where=index))
        ids.check(record_id)
        _duorc_question(spec, stats, out, record_id=record_id,
                        plot=_field(row, "plot", str, file=file, where=record_id),
                        question=_field(row, "question", str, file=file, where=record_id),
                        answers=_field(row, "answers", list, file=file, where=record_id),
                        no_answer=bool(row.get("no_answer", False)),
                        meta={"title": row.get("title"), "movie_id": row.get("plot_id")})
    return out


# ----------------------------------------------------------------------------- DROP

def _drop_answer_kind(answer: dict) -> str:
    """'number', 'date', 'span', 'multi_span' or 'empty' for one DROP answer object."""
    if str(answer.get("number", "")).strip():
        return "number"
    date = answer.get("date") or {}
    if any(str(date.get(key, "")).strip() for key in ("day", "month", "year")):
        return "date"
    spans = [span for span in answer.get("spans") or [] if span.strip()]
    if len(spans) == 1:
        return "span"
    return "multi_span" if spans else "empty"


def _drop_question(spec: TaskSpec, stats: AdapterStats, out: list[dict], *, record_id: str,
                   passage: str, question: str, kind: str, spans: list[str], extra_spans: list[str],
                   gold: list[list[str]], gold_types: list[str], meta: dict) -> None:
    """Keep a DROP question with all its gold answers; locate its answer when it is one span.

    Validated answers from other annotators that are single spans of the passage count as extra
    training spans, as SQuAD's several answers per question.
    """
    texts: list[str] = []
    starts: list[int] = []
    if kind == "span":
        texts, starts = _free_form_answers(spans, passage, stats)
        if texts:
            more_texts, more_starts = _free_form_answers(extra_spans, passage, stats)
            for text, start in zip(more_texts, more_starts):
                if (text, start) not in zip(texts, starts):
                    texts.append(text)
                    starts.append(start)
    reason = "span_not_in_passage" if kind == "span" else f"{kind}_answer"
    _emit_qa(spec, stats, out, record_id=record_id, context=passage, question=question, texts=texts,
             starts=starts, gold=gold, gold_types=gold_types, unlocated_reason=reason, meta=meta)


def adapt_drop_json(spec: TaskSpec, payload: Any, stats: AdapterStats) -> list[dict]:
    """DROP's original JSON: {passage_id: {passage, qa_pairs: [{question, answer, query_id,
    validated_answers?}]}}.

    Every question is kept with its gold answers as the official script reads them (the main
    answer, then each validated answer: a number, its spans, or a "day month year" date). A
    question gets a training span iff its answer is a single span found in the passage; the
    others are counted by kind (number, date, multi-span, span not in the passage).
    """
    file = stats.source
    if not isinstance(payload, dict):
        raise DataError("expected an object of passages", file=file, record="(top level)")
    out: list[dict] = []
    ids = _UniqueIds(file)
    for passage_id, entry in payload.items():
        passage = _field(entry, "passage", str, file=file, where=passage_id)
        for q_index, qa in enumerate(_field(entry, "qa_pairs", list, file=file, where=passage_id)):
            record_id = str(_field(qa, "query_id", (str, int), file=file, where=f"{passage_id}.qa_pairs[{q_index}]"))
            ids.check(record_id)
            answer = _field(qa, "answer", dict, file=file, where=record_id)
            validated = [v for v in qa.get("validated_answers") or [] if isinstance(v, dict)]
            gold, gold_types = [], []
            for index, checked in enumerate((answer, *validated)):
                spans = checked.get("spans") or []
                where_field = "answer" if index == 0 else f"validated_answers[{index - 1}]"
                if not isinstance(spans, list) or not all(isinstance(span, str) for span in spans):
                    raise DataError("spans must be a list of strings", file=file, record=record_id,
                                    field=f"{where_field}.spans")
                try:
                    strings, kind = drop_answer_strings(checked)
                except ValueError:
                    raise DataError("has no number, spans or date", file=file, record=record_id,
                                    field=where_field) from None
                gold.append(list(strings))
                gold_types.append(kind)
            extra = [v["spans"][0] for v in validated if _drop_answer_kind(v) == "span"]
            _drop_question(spec, stats, out, record_id=record_id, passage=passage,
                           question=_field(qa, "question", str, file=file, where=record_id),
                           kind=_drop_answer_kind(answer),
                           spans=[s for s in answer.get("spans") or [] if s.strip()],
                           extra_spans=extra, gold=gold, gold_types=gold_types, meta={"passage_id": passage_id})
    return out


def adapt_drop_rows(spec: TaskSpec, rows: Iterable[dict], stats: AdapterStats) -> list[dict]:
    """Hub rows of ucinlp/drop: {section_id, query_id, passage, question, answers_spans{spans, types}}.

    The Hub flattens the gold answers into one list of typed strings (the validated answers only
    in its validation split, multi-span answers merged), so the original answer tuples cannot be
    rebuilt: each distinct string becomes one gold answer (noted `answers_flattened_by_hub`
    where there are several). Scores on Hub rows are therefore not the official DROP numbers.
    A row gets a training span iff all its strings are one span found in the passage.
    """
    file = stats.source
    out: list[dict] = []
    ids = _UniqueIds(file)
    for index, row in enumerate(rows):
        record_id = str(_field(row, "query_id", (str, int), file=file, where=index))
        ids.check(record_id)
        spans_field = _field(row, "answers_spans", dict, file=file, where=record_id)
        raw_spans = spans_field.get("spans") or []
        if not isinstance(raw_spans, list) or not all(isinstance(span, str) for span in raw_spans):
            raise DataError("spans must be a list of strings", file=file, record=record_id, field="answers_spans")
        types = list(spans_field.get("types") or [])
        typed = [(span, types[i] if i < len(types) else "span") for i, span in enumerate(raw_spans) if span.strip()]
        distinct = list(dict.fromkeys(typed))
        if len({span for span, _ in distinct}) > 1:
            stats.note("answers_flattened_by_hub")
        kinds = {kind for _, kind in distinct}
        if "number" in kinds:
            kind = "number"
        elif "date" in kinds:
            kind = "date"
        elif not distinct:
            kind = "empty"
        else:
            kind = "span" if len({span for span, _ in distinct}) == 1 else "multi_span"
        gold = [[span] for span, _ in distinct] or [[""]]
        gold_types = [kind_ for _, kind_ in distinct] or ["span"]
        _drop_question(spec, stats, out, record_id=record_id,
                       passage=_field(row, "passage", str, file=file, where=record_id),
                       question=_field(row, "question", str, file=file, where=record_id),
                       kind=kind, spans=[distinct[0][0]] if distinct else [], extra_spans=[],
                       gold=gold, gold_types=gold_types, meta={"passage_id": row.get("section_id")})
    return out


# ----------------------------------------------------------------------------- canonical JSONL

def adapt_canonical_qa(spec: TaskSpec, rows: Iterable[tuple[int, Any]], stats: AdapterStats) -> list[dict]:
    """Canonical QA records (our own JSON lines). These are checked strictly: a record that breaks
    the schema or the span invariant is an error, not a drop, because we wrote it ourselves. A
    record without `gold` gets one from its located answers (`default_gold`)."""
    file = stats.source
    out: list[dict] = []
    ids = _UniqueIds(file)
    for line_number, row in rows:
        record = validate_qa_record(row, file=file, where=f"line {line_number}")
        ids.check(record["id"])
        if record.get("task") not in (None, spec.name):
            stats.note("task_field_relabelled")
        texts = record["answers"]["text"]
        gold = record["gold"] if "gold" in record else default_gold(spec, texts)
        _emit_qa(spec, stats, out, record_id=record["id"], context=record["context"],
                 question=record["question"], texts=texts, starts=record["answers"]["answer_start"],
                 gold=[] if record["is_impossible"] else gold, gold_types=record.get("gold_types"),
                 unlocated_reason="answer_not_located", meta=record.get("meta"))
    return out


# ----------------------------------------------------------------------------- classification

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


def adapt_canonical_classification(spec: TaskSpec, rows: Iterable[tuple[int, Any]],
                                   stats: AdapterStats) -> list[dict]:
    """Canonical classification records (JSON lines {id, text, label}), checked strictly."""
    num_labels = len(spec.label_names or ())
    records = [validate_classification_record(row, num_labels, file=stats.source, where=f"line {n}")
               for n, row in rows]
    counts = Counter(record["label"] for record in records)
    for _ in records:
        stats.keep()
    for label, count in sorted(counts.items()):
        name = "unlabelled" if label == UNLABELLED else (spec.label_names or ())[label]
        stats.note(f"label_{name}", count)
    return records

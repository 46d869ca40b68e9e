"""Dataset adapters: each dataset's own layouts (release files, Hub rows, tables, our canonical JSON
lines) -> the canonical records of `utils.data.records`, counted in `AdapterStats`. Every question
keeps every original gold answer; only the located spans, which training needs, depend on the search.
"""
from __future__ import annotations

import csv
import itertools
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.data.records import (UNLABELLED, locate_answer, make_qa_record, repair_offset, required_field, score_label,
                                span_matches, validate_classification_record, validate_qa_record)
from utils.data.registry import TaskSpec
from utils.run.errors import DataError, ToolkitError

# Published offsets further than this from the answer are not "off by a few characters" any more.
MAX_OFFSET_REPAIR_SHIFT = 32
# A regression task's scores are counted in this many equal bins of its range (adapter_stats.json).
SCORE_BINS = 5


@dataclass
class AdapterStats:
    """What an adapter read, kept and dropped (`records_read == kept + sum(dropped)`), and the kept
    questions without a located span, by reason: `adapter_stats.json`."""

    task: str
    source: str
    format: str
    split: str | None = None
    records_read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    without_located_answer: Counter = field(default_factory=Counter)
    question_ids: set[str] = field(default_factory=set, repr=False)

    def question_id(self, obj: Any, name: str, where: str | int) -> str:
        """obj[name], a question id: unique within a file, since predictions and metrics are keyed by it."""
        record_id = str(required_field(obj, name, (str, int), file=self.source, where=where))
        if record_id in self.question_ids:
            raise DataError("duplicate question id", file=self.source, record=record_id, field="id")
        self.question_ids.add(record_id)
        return record_id

    def keep(self, unlocated_reason: str | None = None) -> None:
        """Count one record read and kept (and why it has no located span, if it has none)."""
        self.records_read += 1
        self.kept += 1
        if unlocated_reason is not None:
            self.without_located_answer[unlocated_reason] += 1

    def drop(self, reason: str) -> None:
        """Count one record read and dropped, and why."""
        self.records_read += 1
        self.dropped[reason] += 1

    def note(self, what: str, count: int = 1) -> None:
        """Count something done to kept records (a repaired offset, a case-insensitive match)."""
        self.notes[what] += count

    def to_dict(self) -> dict[str, Any]:
        """The statistics as written to adapter_stats.json."""
        return {"task": self.task, "split": self.split, "source": self.source, "format": self.format,
                "records_read": self.records_read, "kept": self.kept,
                "dropped_total": sum(self.dropped.values()), "dropped": dict(sorted(self.dropped.items())),
                "notes": dict(sorted(self.notes.items())),
                "without_located_answer_total": sum(self.without_located_answer.values()),
                "without_located_answer": dict(sorted(self.without_located_answer.items()))}


# ----------------------------------------------------------------------------- shared QA logic

def emit_qa(spec: TaskSpec, stats: AdapterStats, out: list[dict], *, record_id: str, context: str,
            question: str, texts: list[str], starts: list[int], gold: list[list[str]],
            unlocated_reason: str, gold_types: list[str] | None = None, meta: dict | None = None) -> None:
    """Keep one question with its gold answers (`[]`: unanswerable, dropped by a v1 task) and located
    spans. An empty question is kept for evaluation but gets no training span: nothing in it says
    which span to pick."""
    empty_question = not question.strip()
    if empty_question:
        texts, starts, unlocated_reason = [], [], "empty_question"
    if not gold:
        if not spec.version_2_with_negative:
            stats.drop("unanswerable_in_v1_task")
            return
        texts, starts = [], []      # SQuAD v2 keeps plausible (wrong) answers apart, in meta
        stats.note("unanswerable")
        if empty_question:
            stats.note("empty_question")
    out.append(make_qa_record(record_id=record_id, task=spec.name, context=context, question=question,
                              texts=texts, starts=starts, gold=gold, gold_types=gold_types, meta=meta))
    stats.keep(unlocated_reason if gold and not texts else None)


def default_gold(spec: TaskSpec, texts: list[str]) -> list[list[str]]:
    """One gold answer per answer text, or for Quoref all texts as one conjunctive answer."""
    return [list(texts)] if texts and spec.metric == "quoref" else [[text] for text in texts]


def _add_span(texts: list[str], starts: list[int], text: str, start: int) -> None:
    if (text, start) not in zip(texts, starts):
        texts.append(text)
        starts.append(start)


def free_form_answers(answers: Iterable[str], context: str, stats: AdapterStats) -> tuple[list[str], list[int]]:
    """Locate answers given as bare strings (DuoRC, DROP spans) in the context; an empty string is
    noted as `empty_answer_text`."""
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
        _add_span(texts, starts, located.text, located.start)
    return texts, starts


def _unlocated(answers: Iterable[str], reason: str) -> str:
    """Why a question has no located span: all its answer texts are empty, or `reason`."""
    return "empty_answer_text" if all(not text.strip() for text in answers) else reason


# ----------------------------------------------------------------------------- canonical JSON lines

def adapt_canonical_qa(spec: TaskSpec, rows: Iterable[tuple[Any, Any]], stats: AdapterStats) -> list[dict]:
    """Our own QA records, checked strictly (a broken record is an error, not a drop: we wrote it).
    A record without `gold` gets one from its located answers."""
    out: list[dict] = []
    for line_number, row in rows:
        record = validate_qa_record(row, file=stats.source, where=f"line {line_number}")
        stats.question_id(record, "id", record["id"])
        if record.get("task") not in (None, spec.name):
            stats.note("task_field_relabelled")
        texts = record["answers"]["text"]
        gold = record["gold"] if "gold" in record else default_gold(spec, texts)
        emit_qa(spec, stats, out, record_id=record["id"], context=record["context"],
                question=record["question"], texts=texts, starts=record["answers"]["answer_start"],
                gold=[] if record["is_impossible"] else gold, gold_types=record.get("gold_types"),
                unlocated_reason="answer_not_located", meta=record.get("meta"))
    return out


def adapt_canonical_classification(spec: TaskSpec, rows: Iterable[tuple[Any, Any]],
                                   stats: AdapterStats) -> list[dict]:
    """Our own classification records ({id, text, label}, + text_pair), checked strictly."""
    records = [validate_classification_record(row, spec.label_space, file=stats.source, where=f"line {n}",
                                              text_pair=spec.text_pair_required) for n, row in rows]
    stats.records_read += len(records)
    stats.kept += len(records)
    note_label_counts(spec, [record["label"] for record in records], stats)
    return records


def note_label_counts(spec: TaskSpec, labels: list[int | float], stats: AdapterStats) -> None:
    """Note the records of each label (`label_NAME`, `label_unlabelled`), or for a regression task
    the scores in each fifth of its range (`score_LOW-HIGH`, the last bin closed)."""
    if spec.regression_range is None:
        for label, count in sorted(Counter(labels).items()):
            stats.note(f"label_{'unlabelled' if label == UNLABELLED else (spec.label_names or ())[label]}", count)
        return
    low, high = spec.regression_range
    width = (high - low) / SCORE_BINS
    counts = Counter(min(int((score - low) // width), SCORE_BINS - 1) for score in labels)
    for index, count in sorted(counts.items()):
        stats.note(f"score_{low + index * width:g}-{low + (index + 1) * width:g}", count)


# ----------------------------------------------------------------------------- SQuAD, Quoref, MLQA

def _squad_like_question(spec: TaskSpec, stats: AdapterStats, out: list[dict], *, record_id: str,
                         context: str, question: str, raw: list[tuple[str, int]], impossible: bool,
                         meta: dict | None) -> None:
    """Answers with offsets: keep those that match, repair those a few characters off, count the rest."""
    if not impossible and not raw:
        stats.drop("no_answer_given")
        return
    texts: list[str] = []
    starts: list[int] = []
    lost = 0
    for text, start in [] if impossible else raw:
        if not text.strip():
            stats.note("empty_answer_text")
            continue
        position = start if span_matches(context, text, start) else \
            repair_offset(context, text, start, MAX_OFFSET_REPAIR_SHIFT)
        if position is None:
            lost += 1
            continue
        if position != start:
            stats.note("answer_offset_repaired")
        _add_span(texts, starts, text, position)
    if lost:
        stats.note("answer_offset_unrepairable", lost)
    if len(raw) > 1 and spec.metric == "quoref":
        stats.note("multi_span_answer")
    gold = [] if impossible else default_gold(spec, [text for text, _ in raw])
    emit_qa(spec, stats, out, record_id=record_id, context=context, question=question, texts=texts,
            starts=starts, gold=gold, meta=meta,
            unlocated_reason=_unlocated([text for text, _ in raw], "answer_offset_unrepairable"))


def adapt_squad_json(spec: TaskSpec, payload: Any, stats: AdapterStats) -> list[dict]:
    """SQuAD v1.1 / v2.0 JSON (also Quoref's and MLQA's): data -> paragraphs -> qas; v2.0's
    `plausible_answers` go to `meta`."""
    file = stats.source
    out: list[dict] = []
    for a_index, article in enumerate(required_field(payload, "data", list, file=file, where="(top level)")):
        paragraphs = required_field(article, "paragraphs", list, file=file, where=f"data[{a_index}]")
        title = article.get("title")
        for p_index, paragraph in enumerate(paragraphs):
            where = f"data[{a_index}].paragraphs[{p_index}]"
            context = required_field(paragraph, "context", str, file=file, where=where)
            for q_index, qa in enumerate(required_field(paragraph, "qas", list, file=file, where=where)):
                record_id = stats.question_id(qa, "id", f"{where}.qas[{q_index}]")
                answers = required_field(qa, "answers", list, file=file, where=record_id)
                raw = [(required_field(answer, "text", str, file=file, where=f"{record_id}.answers[{i}]"),
                        required_field(answer, "answer_start", int, file=file, where=f"{record_id}.answers[{i}]"))
                       for i, answer in enumerate(answers)]
                impossible = bool(qa.get("is_impossible", False))
                meta = {"title": title} if title else {}
                if impossible and qa.get("plausible_answers"):
                    meta["plausible_answers"] = qa["plausible_answers"]
                _squad_like_question(spec, stats, out, record_id=record_id, context=context,
                                     question=required_field(qa, "question", str, file=file, where=record_id),
                                     raw=raw, impossible=impossible, meta=meta)
    return out


def adapt_squad_rows(spec: TaskSpec, rows: Iterable[dict], stats: AdapterStats) -> list[dict]:
    """Hub rows {id, context, question, answers{text, answer_start}}; empty answer lists mean unanswerable."""
    file = stats.source
    out: list[dict] = []
    for index, row in enumerate(rows):
        record_id = stats.question_id(row, "id", index)
        context = required_field(row, "context", str, file=file, where=record_id)
        answers = required_field(row, "answers", dict, file=file, where=record_id)
        texts, starts = answers.get("text", []), answers.get("answer_start", [])
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise DataError("must hold equally long lists 'text' and 'answer_start'", file=file,
                            record=record_id, field="answers")
        if not all(isinstance(t, str) for t in texts) or \
                not all(isinstance(v, int) and not isinstance(v, bool) for v in starts):
            raise DataError("answer texts must be strings and offsets integers", file=file, record=record_id,
                            field="answers")
        _squad_like_question(spec, stats, out, record_id=record_id, context=context,
                             question=required_field(row, "question", str, file=file, where=record_id),
                             raw=list(zip(texts, starts)), impossible=not texts,
                             meta={"title": row["title"]} if row.get("title") else None)
    return out


# ----------------------------------------------------------------------------- DuoRC

def _duorc_question(spec: TaskSpec, stats: AdapterStats, out: list[dict], *, record_id: str,
                    plot: str, question: str, answers: list[str], no_answer: bool, meta: dict) -> None:
    """DuoRC's own evaluation scores against `answers` (free-form strings, searched for in the plot)
    and treats an empty list as "no answer" whatever `no_answer` says; a flag that disagrees is noted."""
    if not all(isinstance(answer, str) for answer in answers):
        raise DataError("must be a list of strings", file=stats.source, record=record_id, field="answers")
    if no_answer and answers:
        stats.note("no_answer_flag_with_answers")
    if not no_answer and not answers:
        stats.note("no_answers_without_no_answer_flag")
    texts, starts = free_form_answers(answers, plot, stats)
    emit_qa(spec, stats, out, record_id=record_id, context=plot, question=question, texts=texts,
            starts=starts, gold=default_gold(spec, list(answers)), meta=meta,
            unlocated_reason=_unlocated(answers, "answer_not_in_plot"))


def adapt_duorc_json(spec: TaskSpec, payload: Any, stats: AdapterStats) -> list[dict]:
    """DuoRC's original JSON: a list of movies {id, title, plot, qa: [{id, question, answers, no_answer}]}."""
    file = stats.source
    if not isinstance(payload, list):
        raise DataError("expected a list of movies", file=file, record="(top level)")
    out: list[dict] = []
    for m_index, movie in enumerate(payload):
        plot = required_field(movie, "plot", str, file=file, where=f"movie[{m_index}]")
        meta = {"title": movie.get("title"), "movie_id": movie.get("id")}
        for q_index, qa in enumerate(required_field(movie, "qa", list, file=file, where=f"movie[{m_index}]")):
            record_id = stats.question_id(qa, "id", f"movie[{m_index}].qa[{q_index}]")
            _duorc_question(spec, stats, out, record_id=record_id, plot=plot,
                            question=required_field(qa, "question", str, file=file, where=record_id),
                            answers=required_field(qa, "answers", list, file=file, where=record_id),
                            no_answer=bool(qa.get("no_answer", False)), meta=meta)
    return out


def adapt_duorc_rows(spec: TaskSpec, rows: Iterable[dict], stats: AdapterStats) -> list[dict]:
    """Hub rows of ibm/duorc: {plot_id, plot, title, question_id, question, answers, no_answer}."""
    file = stats.source
    out: list[dict] = []
    for index, row in enumerate(rows):
        record_id = stats.question_id(row, "question_id", index)
        _duorc_question(spec, stats, out, record_id=record_id,
                        plot=required_field(row, "plot", str, file=file, where=record_id),
                        question=required_field(row, "question", str, file=file, where=record_id),
                        answers=required_field(row, "answers", list, file=file, where=record_id),
                        no_answer=bool(row.get("no_answer", False)),
                        meta={"title": row.get("title"), "movie_id": row.get("plot_id")})
    return out


# ----------------------------------------------------------------------------- DROP

def drop_answer_strings(answer: Mapping[str, Any]) -> tuple[tuple[str, ...], str]:
    """The strings and type of one DROP answer object as the official script reads it: a number,
    else its spans, else its date ("day month year", empty fields included); else a ValueError."""
    if answer.get("number"):
        return (str(answer["number"]),), "number"
    spans = answer.get("spans") or []
    if spans:
        return tuple(spans), "span" if len(spans) == 1 else "spans"
    if "date" in answer:
        date = answer["date"] or {}
        return (f"{date.get('day', '')} {date.get('month', '')} {date.get('year', '')}",), "date"
    raise ValueError(f"a DROP answer needs a number, spans or a date: {json.dumps(answer)}")


def _drop_answer_kind(answer: dict) -> str:
    """'number', 'date', 'span', 'multi_span' or 'empty' for one DROP answer object."""
    if str(answer.get("number", "")).strip():
        return "number"
    date = answer.get("date") or {}
    if any(str(date.get(key, "")).strip() for key in ("day", "month", "year")):
        return "date"
    spans = [span for span in answer.get("spans") or [] if span.strip()]
    return ("span" if len(spans) == 1 else "multi_span") if spans else "empty"


def _drop_question(spec: TaskSpec, stats: AdapterStats, out: list[dict], *, record_id: str, passage: str,
                   question: str, kind: str, spans: list[str], extra_spans: list[str], gold: list[list[str]],
                   gold_types: list[str], meta: dict) -> None:
    """Keep a DROP question with all its gold answers; locate its answer when it is one span (other
    annotators' single-span answers found in the passage are extra training spans)."""
    texts: list[str] = []
    starts: list[int] = []
    if kind == "span":
        texts, starts = free_form_answers(spans, passage, stats)
        if texts:
            for text, start in zip(*free_form_answers(extra_spans, passage, stats)):
                _add_span(texts, starts, text, start)
    emit_qa(spec, stats, out, record_id=record_id, context=passage, question=question, texts=texts,
            starts=starts, gold=gold, gold_types=gold_types, meta=meta,
            unlocated_reason="span_not_in_passage" if kind == "span" else f"{kind}_answer")


def adapt_drop_json(spec: TaskSpec, payload: Any, stats: AdapterStats) -> list[dict]:
    """DROP's original JSON: {passage_id: {passage, qa_pairs: [{question, answer, query_id,
    validated_answers?}]}}; the gold answers are the main answer, then each validated one."""
    file = stats.source
    if not isinstance(payload, dict):
        raise DataError("expected an object of passages", file=file, record="(top level)")
    out: list[dict] = []
    for passage_id, entry in payload.items():
        passage = required_field(entry, "passage", str, file=file, where=passage_id)
        for q_index, qa in enumerate(required_field(entry, "qa_pairs", list, file=file, where=passage_id)):
            record_id = stats.question_id(qa, "query_id", f"{passage_id}.qa_pairs[{q_index}]")
            answer = required_field(qa, "answer", dict, file=file, where=record_id)
            validated = [v for v in qa.get("validated_answers") or [] if isinstance(v, dict)]
            gold, gold_types = [], []
            for index, checked in enumerate((answer, *validated)):
                where_field = "answer" if index == 0 else f"validated_answers[{index - 1}]"
                spans = checked.get("spans") or []
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
            _drop_question(spec, stats, out, record_id=record_id, passage=passage,
                           question=required_field(qa, "question", str, file=file, where=record_id),
                           kind=_drop_answer_kind(answer), spans=[s for s in answer.get("spans") or [] if s.strip()],
                           extra_spans=[v["spans"][0] for v in validated if _drop_answer_kind(v) == "span"],
                           gold=gold, gold_types=gold_types, meta={"passage_id": passage_id})
    return out


def adapt_drop_rows(spec: TaskSpec, rows: Iterable[dict], stats: AdapterStats) -> list[dict]:
    """Hub rows of ucinlp/drop: {section_id, query_id, passage, question, answers_spans{spans, types}}.
    The Hub flattens the gold answers, so each distinct string becomes one gold answer (noted
    `answers_flattened_by_hub`): scores on Hub rows are not the official DROP numbers."""
    file = stats.source
    out: list[dict] = []
    for index, row in enumerate(rows):
        record_id = stats.question_id(row, "query_id", index)
        spans_field = required_field(row, "answers_spans", dict, file=file, where=record_id)
        raw_spans = spans_field.get("spans") or []
        if not isinstance(raw_spans, list) or not all(isinstance(span, str) for span in raw_spans):
            raise DataError("spans must be a list of strings", file=file, record=record_id, field="answers_spans")
        types = list(spans_field.get("types") or [])
        distinct = list(dict.fromkeys((span, types[i] if i < len(types) else "span")
                                      for i, span in enumerate(raw_spans) if span.strip()))
        strings = {span for span, _ in distinct}
        if len(strings) > 1:
            stats.note("answers_flattened_by_hub")
        kinds = {kind for _, kind in distinct}
        kind = next((k for k in ("number", "date") if k in kinds), None) or \
            ("empty" if not distinct else "span" if len(strings) == 1 else "multi_span")
        _drop_question(spec, stats, out, record_id=record_id,
                       passage=required_field(row, "passage", str, file=file, where=record_id),
                       question=required_field(row, "question", str, file=file, where=record_id),
                       kind=kind, spans=[distinct[0][0]] if distinct else [], extra_spans=[],
                       gold=[[span] for span, _ in distinct] or [[""]],
                       gold_types=[kind_ for _, kind_ in distinct] or ["span"],
                       meta={"passage_id": row.get("section_id")})
    return out


# ----------------------------------------------------------------------------- classification tables

def row_label(spec: TaskSpec, row: dict, label_column: str | None, *, file: str, where: str | int) -> int | float:
    """A table row's label: a class index from an int, a digit string or a class name (-1 without a
    label column), or a regression score; a DataError when missing or outside the label space."""
    if label_column is None:
        if spec.is_regression:
            raise DataError(f"task {spec.name} is a regression task and needs a score in every record; "
                            "a file without labels (the GLUE test file) cannot be used", file=file, record=where)
        return UNLABELLED
    value = row.get(label_column)
    if value is None:
        raise DataError("label is missing", file=file, record=where, field=label_column)
    if spec.regression_range is not None:
        return score_label(value, spec.regression_range, file=file, where=where, field=label_column)
    names = [name.lower() for name in spec.label_names or ()]
    text = str(value).strip()
    if isinstance(value, bool):
        raise DataError("expected an integer label", file=file, record=where, field=label_column)
    if text == "":
        raise DataError("label is missing", file=file, record=where, field=label_column)
    if isinstance(value, int) or text.lstrip("-").isdigit():
        index = int(value) if isinstance(value, int) else int(text)
    elif text.lower() in names:
        index = names.index(text.lower())
    else:
        raise DataError(f"label {text!r} is neither an integer nor one of {list(spec.label_names or ())}",
                        file=file, record=where, field=label_column)
    if index != UNLABELLED and not 0 <= index < len(names):
        raise DataError(f"label {index} is outside 0..{len(names) - 1}", file=file, record=where, field=label_column)
    return index


def adapt_classification_rows(spec: TaskSpec, rows: Iterable[tuple[str | int, dict]], stats: AdapterStats,
                              columns: TableColumns) -> list[dict]:
    """(where, row) pairs of a table or Hub rows -> {id, text, label} (+ text_pair; a pair task's row
    with an empty second text is dropped as `empty_text_pair`)."""
    out: list[dict] = []
    for where, row in rows:
        record: dict[str, Any] = {}
        for key, column in (("text", columns.text), ("text_pair", columns.text_pair)):
            if column is not None and row.get(column) is None:
                raise DataError("missing required field", file=stats.source, record=where, field=column)
            if column is not None:
                record[key] = str(row[column]).strip()
        if "text_pair" in record and not record["text_pair"]:
            stats.drop("empty_text_pair")
            continue
        record["label"] = row_label(spec, row, columns.label, file=stats.source, where=where)
        out.append({"id": str(row.get("idx", row.get("index", row.get("id", where)))), **record})
        stats.keep()
    note_label_counts(spec, [record["label"] for record in out], stats)
    return out


def adapt_table(spec: TaskSpec, path: Path, fmt: str, stats: AdapterStats, text_column: str | None,
                label_column: str | None, text_pair_column: str | None) -> list[dict]:
    """Records of a TSV/CSV (`fmt`): the task's release layout, or columns the user names (which
    imply a header line); a DataError names the file, line and column of what is wrong."""
    table = spec.table
    # Only the original TSV can lack a header line (CoLA's train/dev).
    named = text_column is not None or label_column is not None or text_pair_column is not None
    headerless = table.headerless if table and fmt == "tsv" and not named else None
    header_names = frozenset({"sentence", "text", "label", "index", "id", *(table.text_columns if table else ())})
    header, rows, positional = read_table(path, "\t" if fmt == "tsv" else ",", headerless, header_names)
    columns = resolve_columns(spec, header, file=str(path), where="line 1", text_column=text_column,
                              text_pair_column=text_pair_column, label_column=label_column)
    if positional:
        stats.format += ":no_header"
    return adapt_classification_rows(spec, rows, stats, columns)


def read_table(path: Path, delimiter: str, headerless: tuple[str, ...] | None = None,
               header_names: frozenset[str] = frozenset()) -> tuple[list[str], list[tuple[str, dict]], bool]:
    """Column names, ("line N", row) pairs of a TSV/CSV, and whether it had no header line (a layout
    without one, `headerless`, is used when the first line holds none of `header_names`)."""
    # GLUE sentences contain bare quotes, so TSVs are read without quote processing.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    rows = []
    line_number = 0
    # utf-8-sig: Excel's tables (and MRPC's files) start with a byte-order mark, which would
    # otherwise hide the first column's name.
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
            layout = (f"the task's original layout has no header line and {len(header)} columns: "
                      f"{', '.join(header)}; a table with a header of other names needs --text_column and "
                      "--label_column") if positional else f"the header has {len(header)}"
            for line_number, values in lines:
                if not values or all(not value.strip() for value in values):
                    continue
                if len(values) < len(header):
                    raise DataError(f"has {len(values)} of {len(header)} columns ({layout})", file=str(path),
                                    record=f"line {line_number}", field=header[len(values)])
                if any(value.strip() for value in values[len(header):]):
                    raise DataError(f"has {len(values)} columns but {layout} (a stray tab or delimiter?)",
                                    file=str(path), record=f"line {line_number}", field=f"column {len(header) + 1}")
                rows.append((f"line {line_number}", dict(zip(header, values))))
        except UnicodeDecodeError as err:
            raise DataError(f"not UTF-8 text (near line {line_number + 1}, byte {err.start})", file=str(path)) from None
        except csv.Error as err:
            raise DataError(f"unreadable table at line {line_number + 1}: {err}", file=str(path)) from None
    return header, rows, positional


@dataclass(frozen=True)
class TableColumns:
    """Which column (or row field) of a table holds the text, the second text of a pair and the label."""

    text: str
    text_pair: str | None
    label: str | None


def resolve_columns(spec: TaskSpec, header: list[str], *, file: str, where: str | int, text_column: str | None,
                    text_pair_column: str | None, label_column: str | None) -> TableColumns:
    """The columns of the task's fields: the user's flags, else the release TSV's columns, the Hub
    fields, then `sentence`/`text` (`text`, `text_pair` for a pair task), `label`; a DataError for a
    missing column names the flag that sets it."""
    table, pair = spec.table, spec.text_pair_required
    if text_pair_column is not None and not pair:
        raise ToolkitError(f"--text_pair_column is for sentence-pair tasks; task {spec.name} reads one text")

    def pick(wanted: str | None, candidates: Iterable[str | None], what: str, flag: str, required: bool = True,
             why: str = "") -> str | None:
        names = list(dict.fromkeys(name for name in candidates if name))
        if wanted is not None and wanted not in header:
            raise DataError(f"has no column {wanted!r} (columns: {header})", file=file, record=where, field=wanted)
        found = wanted or next((name for name in names if name in header), None)
        if found is None and required:
            raise DataError(f"has no {what} column (looked for {names}; columns: {header}){why}; name it with {flag}",
                            file=file, record=where, field=names[0])
        return found

    layout = list(zip(table.text_columns, table.hub_fields)) if table else []   # (TSV column, Hub field) per text
    if pair:
        text = pick(text_column, [*(layout[0] if layout else ()), "text"], "first text", "--text_column")
        second = pick(text_pair_column, [*(layout[1] if len(layout) > 1 else ()), "text_pair"], "second text",
                      "--text_pair_column")
        if second == text:
            raise DataError(f"column {text!r} cannot be both texts of a pair", file=file, record=where, field=text)
    else:
        text = pick(text_column, [*(layout[0] if layout else ()), "sentence", "text"], "text", "--text_column")
        second = None
    why = (f": task {spec.name} is a regression task and needs a score in every record (a file without scores, "
           "such as the GLUE test file, cannot be used)") if spec.is_regression else ""
    label = pick(label_column, [table.label_column if table else None, "label"],
                 "score" if spec.is_regression else "label", "--label_column", required=spec.is_regression, why=why)
    return TableColumns(text, second, label)

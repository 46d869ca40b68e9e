"""Adapters of DROP: its original JSON (passage ids -> passage, qa_pairs) and its Hub rows (ucinlp/drop).

Every question is kept with its gold answers (numbers, dates, one or several spans); only a
single-span answer found in the passage gives a training span (see `utils.data.adapters`).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from utils.qa.drop_metric import drop_answer_strings
from utils.run.errors import DataError
from utils.data.adapters import AdapterStats, UniqueIds, emit_qa, free_form_answers, required_field
from utils.data.registry import TaskSpec


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
        texts, starts = free_form_answers(spans, passage, stats)
        if texts:
            more_texts, more_starts = free_form_answers(extra_spans, passage, stats)
            for text, start in zip(more_texts, more_starts):
                if (text, start) not in zip(texts, starts):
                    texts.append(text)
                    starts.append(start)
    reason = "span_not_in_passage" if kind == "span" else f"{kind}_answer"
    emit_qa(spec, stats, out, record_id=record_id, context=passage, question=question, texts=texts,
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
    ids = UniqueIds(file)
    for passage_id, entry in payload.items():
        passage = required_field(entry, "passage", str, file=file, where=passage_id)
        for q_index, qa in enumerate(required_field(entry, "qa_pairs", list, file=file, where=passage_id)):
            record_id = str(required_field(qa, "query_id", (str, int), file=file,
                                           where=f"{passage_id}.qa_pairs[{q_index}]"))
            ids.check(record_id)
            answer = required_field(qa, "answer", dict, file=file, where=record_id)
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
                           question=required_field(qa, "question", str, file=file, where=record_id),
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
    ids = UniqueIds(file)
    for index, row in enumerate(rows):
        record_id = str(required_field(row, "query_id", (str, int), file=file, where=index))
        ids.check(record_id)
        spans_field = required_field(row, "answers_spans", dict, file=file, where=record_id)
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
                       passage=required_field(row, "passage", str, file=file, where=record_id),
                       question=required_field(row, "question", str, file=file, where=record_id),
                       kind=kind, spans=[distinct[0][0]] if distinct else [], extra_spans=[],
                       gold=gold, gold_types=gold_types, meta={"passage_id": row.get("section_id")})
    return out


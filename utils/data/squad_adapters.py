"""Adapters of the SQuAD format and its Hub rows, used by SQuAD v1.1, SQuAD v2.0, Quoref and MLQA.

Answers come with character offsets: those that match the context are kept, those a few
characters off are repaired, the rest are counted (see `utils.data.adapters` for what every
adapter shares).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from utils.qa.answer_spans import repair_offset, span_matches
from utils.run.errors import DataError
from utils.data.adapters import AdapterStats, UniqueIds, default_gold, emit_qa, required_field
from utils.data.registry import TaskSpec

# Published offsets further than this from the answer are not "off by a few characters" any more.
MAX_OFFSET_REPAIR_SHIFT = 32


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
    emit_qa(spec, stats, out, record_id=record_id, context=context, question=question, texts=texts,
            starts=starts, gold=gold, meta=meta,
            unlocated_reason="empty_answer_text" if only_empty else "answer_offset_unrepairable")


def adapt_squad_json(spec: TaskSpec, payload: Any, stats: AdapterStats) -> list[dict]:
    """SQuAD v1.1 / v2.0 JSON, also used by Quoref and MLQA: data -> paragraphs -> qas.

    v2.0 questions carry `is_impossible` and `plausible_answers`; the latter go to `meta`.
    """
    file = stats.source
    articles = required_field(payload, "data", list, file=file, where="(top level)")
    out: list[dict] = []
    ids = UniqueIds(file)
    for a_index, article in enumerate(articles):
        paragraphs = required_field(article, "paragraphs", list, file=file, where=f"data[{a_index}]")
        title = article.get("title") if isinstance(article, dict) else None
        for p_index, paragraph in enumerate(paragraphs):
            where = f"data[{a_index}].paragraphs[{p_index}]"
            context = required_field(paragraph, "context", str, file=file, where=where)
            for q_index, qa in enumerate(required_field(paragraph, "qas", list, file=file, where=where)):
                qa_where = f"{where}.qas[{q_index}]"
                record_id = str(required_field(qa, "id", (str, int), file=file, where=qa_where))
                ids.check(record_id)
                question = required_field(qa, "question", str, file=file, where=record_id)
                answers = required_field(qa, "answers", list, file=file, where=record_id)
                raw = []
                for i, answer in enumerate(answers):
                    text = required_field(answer, "text", str, file=file, where=f"{record_id}.answers[{i}]")
                    start = required_field(answer, "answer_start", int, file=file, where=f"{record_id}.answers[{i}]")
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
    ids = UniqueIds(file)
    for index, row in enumerate(rows):
        record_id = str(required_field(row, "id", (str, int), file=file, where=index))
        ids.check(record_id)
        context = required_field(row, "context", str, file=file, where=record_id)
        question = required_field(row, "question", str, file=file, where=record_id)
        answers = required_field(row, "answers", dict, file=file, where=record_id)
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

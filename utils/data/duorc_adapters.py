"""Adapters of DuoRC: its original JSON (a list of movies) and its Hub rows (ibm/duorc).

Answers are free-form strings, searched for in the plot (see `utils.data.adapters`).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from utils.run.errors import DataError
from utils.data.adapters import AdapterStats, UniqueIds, default_gold, emit_qa, free_form_answers, required_field
from utils.data.registry import TaskSpec


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
    texts, starts = free_form_answers(answers, plot, stats)
    only_empty = all(not answer.strip() for answer in answers)
    emit_qa(spec, stats, out, record_id=record_id, context=plot, question=question, texts=texts,
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
    ids = UniqueIds(file)
    for m_index, movie in enumerate(payload):
        plot = required_field(movie, "plot", str, file=file, where=f"movie[{m_index}]")
        meta = {"title": movie.get("title"), "movie_id": movie.get("id")}
        for q_index, qa in enumerate(required_field(movie, "qa", list, file=file, where=f"movie[{m_index}]")):
            record_id = str(required_field(qa, "id", (str, int), file=file, where=f"movie[{m_index}].qa[{q_index}]"))
            ids.check(record_id)
            _duorc_question(spec, stats, out, record_id=record_id, plot=plot,
                            question=required_field(qa, "question", str, file=file, where=record_id),
                            answers=required_field(qa, "answers", list, file=file, where=record_id),
                            no_answer=bool(qa.get("no_answer", False)), meta=meta)
    return out


def adapt_duorc_rows(spec: TaskSpec, rows: Iterable[dict], stats: AdapterStats) -> list[dict]:
    """Hub rows of ibm/duorc: {plot_id, plot, title, question_id, question, answers, no_answer}."""
    file = stats.source
    out: list[dict] = []
    ids = UniqueIds(file)
    for index, row in enumerate(rows):
        record_id = str(required_field(row, "question_id", (str, int), file=file, where=index))
        ids.check(record_id)
        _duorc_question(spec, stats, out, record_id=record_id,
                        plot=required_field(row, "plot", str, file=file, where=record_id),
                        question=required_field(row, "question", str, file=file, where=record_id),
                        answers=required_field(row, "answers", list, file=file, where=record_id),
                        no_answer=bool(row.get("no_answer", False)),
                        meta={"title": row.get("title"), "movie_id": row.get("plot_id")})
    return out


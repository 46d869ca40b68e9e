"""A task's records as the probe's input rows, for each objective.

`lm` rows (every real next token counts):
- QA: a context window holding the answer, then "\\nQuestion: <question>\\nAnswer: <answer><EOS>"
  (utils.qa.generative's layout, the text a QA model reads).
- classification: "<sentence>\\nAnswer: <label word><EOS>" (a pair: "<text><EOS><text_pair>"), cut
  to the room the longest label word leaves; a regression score's word is f" {score:.1f}".
`task` rows (the task's own head):
- QA span: one window per question (the first holding the answer, else the first), with its labels.
- classification: the sentence with its label; none for a regression task (softmax heads only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from utils.run.errors import ToolkitError
from utils.qa.features import GenerativeConfig, SpanFeatureConfig, span_features
from utils.qa.generative import ANSWER_PREFIX, generative_features
from utils.classification.objective import classification_features, join_pair
from utils.data.registry import TaskSpec

# lm: next-token loss on the task's text; task: the task's own head (span or classes).
OBJECTIVES = ("lm", "task")

@dataclass(frozen=True)
class TaskRows:
    """Probe input rows of one task and how many records could not become a row."""

    rows: list[dict]          # each with input_ids (and labels / span fields for the task objective)
    record_ids: list[str]     # the record behind each row
    unused: int               # records that gave no row (e.g. an answer no window can hold)
    truncated: int = 0        # classification records whose sentence was cut to `cut_to` tokens
    cut_to: int | None = None


def _columns(records: list[dict], fields: tuple[str, ...]) -> dict[str, list]:
    return {field: [record[field] for record in records] for field in fields}


def _qa_lm_rows(records: list[dict], tokenizer: Any, max_length: int) -> TaskRows:
    quarter = max(8, max_length // 4)
    config = GenerativeConfig(max_seq_length=max_length, doc_stride=quarter, max_question_tokens=quarter,
                              max_answer_tokens=max(4, max_length // 8))
    config.validate()
    features = generative_features(_columns(records, ("id", "context", "question", "answers")), tokenizer,
                                   config, training=True)
    rows = [{"input_ids": ids} for ids in features["input_ids"]]
    return TaskRows(rows, list(features["example_id"]), len(records) - len(rows))


def score_word(score: float) -> str:
    """A regression label as its answer word: the score with one decimal after a space (" 3.8")."""
    return f" {score:.1f}"


def label_words(spec: TaskSpec, records: list[dict]) -> tuple[list[str], list[str]]:
    """Each record's answer word (its leading space included) and the words the row layout must
    leave room for: every class name of a class task; for a regression task every score word of its
    range at steps of 0.1, whichever records were drawn."""
    if spec.is_regression:
        # Every word the score range can give, so the room (and the rows) does not depend on
        # which records a subsample drew.
        low, high = spec.regression_range
        vocabulary = sorted({score_word(low + step / 10) for step in range(round((high - low) * 10) + 1)})
        return [score_word(record["label"]) for record in records], vocabulary
    names = [" " + name for name in spec.label_names]
    return [names[record["label"]] for record in records], names


def _classification_lm_rows(records: list[dict], tokenizer: Any, max_length: int, answers: list[str],
                            vocabulary: list[str]) -> TaskRows:
    """Rows "<sentence>\\nAnswer:<answer><EOS>", each record's `answers` word after its sentence, the
    sentence cut to the room the longest word of `vocabulary` leaves."""
    prefix = tokenizer(ANSWER_PREFIX, add_special_tokens=False)["input_ids"]
    words = {word: tokenizer(word, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
             for word in vocabulary}
    room = max_length - len(prefix) - max((len(w) for w in words.values()), default=1)
    if room < 1:
        raise ToolkitError(f"--max_length {max_length} leaves no room for the sentence before the label word")
    # One token more than kept tells a cut sentence (see utils.classification.objective.classification_features).
    first = tokenizer([r["text"] for r in records], add_special_tokens=False, truncation=True,
                      max_length=room + 1)["input_ids"]
    cut = [len(sentence) > room for sentence in first]
    encoded = [sentence[:room] for sentence in first]
    if records and "text_pair" in records[0]:   # a pair: text <eos> text_pair, cut longest-first to `room`
        if room < 3:
            raise ToolkitError(f"--max_length {max_length} leaves no room for a sentence pair before the label word")
        second = tokenizer([r["text_pair"] for r in records], add_special_tokens=False, truncation=True,
                           max_length=room + 1)["input_ids"]
        joined = [join_pair(a, b, tokenizer.eos_token_id, room) for a, b in zip(first, second)]
        encoded, cut = [ids for ids, _ in joined], [was_cut for _, was_cut in joined]
    rows, ids = [], []
    for record, sentence, answer in zip(records, encoded, answers):
        if sentence:
            rows.append({"input_ids": sentence + prefix + words[answer]})
            ids.append(record["id"])
    truncated = sum(cut)
    return TaskRows(rows, ids, len(records) - len(rows), truncated, room)


def _span_rows(records: list[dict], tokenizer: Any, max_length: int) -> TaskRows:
    quarter = max(8, max_length // 4)
    config = SpanFeatureConfig(max_seq_length=max_length, doc_stride=quarter, max_question_tokens=quarter)
    config.validate()
    features = span_features(_columns(records, ("id", "context", "question", "answers")), tokenizer, config,
                             with_labels=True, with_offsets=False)
    chosen: dict[int, int] = {}
    for position, example in enumerate(features["example_index"]):
        holds_answer = features["start_positions"][position] != features["null_index"][position]
        if example not in chosen or (holds_answer and features["start_positions"][chosen[example]]
                                     == features["null_index"][chosen[example]]):
            chosen[example] = position
    keys = ("input_ids", "context_start", "context_end", "null_index", "start_positions", "end_positions")
    rows = [{key: features[key][position] for key in keys} for position in chosen.values()]
    return TaskRows(rows, [features["example_id"][p] for p in chosen.values()], len(records) - len(rows))


def _classification_task_rows(records: list[dict], tokenizer: Any, max_length: int) -> TaskRows:
    keys = ("text", "text_pair", "label") if records and "text_pair" in records[0] else ("text", "label")
    features = classification_features(_columns(records, keys), tokenizer, max_length)
    rows = [{"input_ids": ids, "labels": label} for ids, label in zip(features["input_ids"], features["labels"])]
    return TaskRows(rows, [r["id"] for r in records], 0, sum(features["truncated"]), max_length)


def task_rows(spec: TaskSpec, records: list[dict], tokenizer: Any, objective: str, max_length: int) -> TaskRows:
    """The probe rows of a task's records for an objective ("lm" or "task")."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if spec.kind == "classification":
        if spec.is_regression and objective == "task":
            raise ToolkitError(f"{spec.name} is a regression target: the task objective's probe heads are softmax "
                               "classifiers (no Gaussian head for a score is built); embed it with --objective lm")
        unlabelled = sum(1 for r in records if r["label"] < 0)
        if unlabelled:
            raise ToolkitError(f"{spec.name}: {unlabelled} records have no label (a test split?); "
                               "embed a labelled split (--split train or validation)")
        if objective == "lm":
            return _classification_lm_rows(records, tokenizer, max_length, *label_words(spec, records))
        return _classification_task_rows(records, tokenizer, max_length)
    if objective == "lm":
        return _qa_lm_rows(records, tokenizer, max_length)
    return _span_rows(records, tokenizer, max_length)


def subsample_records(records: list[dict], needed: int, seed: int, margin: float = 2.0) -> list[dict]:
    """At most `margin * needed` records (room for records that give no row), a seeded draw
    without replacement, in file order."""
    limit = int(np.ceil(margin * needed))
    if len(records) <= limit:
        return list(records)
    chosen = np.sort(np.random.default_rng(seed).choice(len(records), size=limit, replace=False))
    return [records[i] for i in chosen]

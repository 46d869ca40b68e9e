"""QA features: the settings and flags that shape them, span-extraction windows, and span answers.

Span features for GPT-2. A causal model only sees what comes before a token, so the question goes
FIRST and every context token can attend to it:

    [question tokens (at most `max_question_tokens`, ending in "\\n")] [context window] [EOS]

The final EOS is the *null slot*: its start/end logits give the window's no-answer score; it labels
windows without the answer. Long contexts are cut into windows of the room left by the question,
overlapping by `doc_stride` tokens; padding goes on the right; no `token_type_ids` (GPT-2 would add
them through its word embedding). Columns: input_ids, context_start/context_end (the context's
positions, [start, end)), null_index, example_index, example_id, token_start/token_end (character
offsets into the context, -1 outside it), and for training start_positions / end_positions.

Span answers: per question, over all its windows, the `n_best_size` best start and end positions
among context tokens, pairs with end >= start and at most `max_answer_length` tokens, score =
start logit + end logit. A question's null score is the smallest over its windows (the window most
sure that an answer exists); in v2 mode the prediction is "" when null score - best span score >
`null_score_diff_threshold`.

Standard library and NumPy only: scripts add these flags and check them before torch loads.
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from utils.run.errors import ToolkitError
from utils.run.flags import add_features_cache_arg, number

OBJECTIVES = ("span", "generative")
QA_HEAD_CHOICES = ("keep", "reinit")


def add_qa_args(parser: argparse.ArgumentParser) -> None:
    """--objective and the window, answer, post-processing and feature-cache flags of the QA scripts."""
    parser.add_argument("--objective", type=str, default="span", choices=OBJECTIVES,
                        help="span: a QA head picks start/end tokens; generative: the LM writes the answer.")
    group = parser.add_argument_group("QA features and answers")
    positive = number(int, minimum=1)
    group.add_argument("--max_seq_length", type=positive, default=384, help="Tokens per window (question included).")
    group.add_argument("--doc_stride", type=positive, default=128, help="Overlap in tokens between windows of a long context.")
    group.add_argument("--max_question_length", type=positive, default=64, help="Questions are cut to this many tokens.")
    group.add_argument("--max_answer_length", type=positive, default=30,
                       help="Longest answer in tokens: span length cap (span) or tokens generated (generative).")
    group.add_argument("--n_best_size", type=positive, default=20, help="Candidate answers kept per question.")
    group.add_argument("--null_score_diff_threshold", type=number(float), default=0.0,
                       help="Tasks with unanswerable questions: answer \"\" when null score - best answer score exceeds this.")
    add_features_cache_arg(group)


@dataclass(frozen=True)
class SpanFeatureConfig:
    """Windowing settings (the run_qa defaults: 384 tokens, stride 128, questions cut at 64)."""

    max_seq_length: int = 384
    doc_stride: int = 128
    max_question_tokens: int = 64

    def validate(self) -> None:
        """Raises ToolkitError when a window could not advance or questions would vanish."""
        if self.max_question_tokens < 2:
            raise ToolkitError("--max_question_length must be at least 2 (the question and its line break)")
        room = self.max_seq_length - self.max_question_tokens - 1
        if room <= self.doc_stride:
            raise ToolkitError(
                f"--max_seq_length {self.max_seq_length} leaves {room} context tokens per window after a "
                f"{self.max_question_tokens}-token question and the null slot, which must exceed "
                f"--doc_stride {self.doc_stride}; raise --max_seq_length or lower --doc_stride")


@dataclass(frozen=True)
class GenerativeConfig(SpanFeatureConfig):
    """Windowing and decoding settings of the generative objective (utils.qa.generative)."""

    max_answer_tokens: int = 32
    unanswerable_text: str = "unanswerable"

    def validate(self) -> None:
        """Raises ToolkitError when a window (after the prompt words and the answer) could not advance."""
        room = self.max_seq_length - self.max_question_tokens - self.max_answer_tokens - 8
        if room <= self.doc_stride:
            raise ToolkitError(
                f"--max_seq_length {self.max_seq_length} leaves {room} context tokens per window after the "
                f"question ({self.max_question_tokens}), the answer ({self.max_answer_tokens}) and the prompt "
                f"words; it must exceed --doc_stride {self.doc_stride}")


@dataclass(frozen=True)
class PostprocessConfig:
    """run_qa's defaults: 20 candidates, answers of at most 30 tokens, threshold 0."""

    n_best_size: int = 20
    max_answer_length: int = 30
    null_score_diff_threshold: float = 0.0
    version_2_with_negative: bool = False


@dataclass(frozen=True)
class QASettings:
    """Everything that shapes features, decoding and post-processing."""

    objective: str
    span: SpanFeatureConfig
    generative: GenerativeConfig
    postprocess: PostprocessConfig


def qa_settings(args: argparse.Namespace, version_2_with_negative: bool) -> QASettings:
    """QASettings from the flags of add_qa_args (validated; raises ToolkitError)."""
    span = SpanFeatureConfig(args.max_seq_length, args.doc_stride, args.max_question_length)
    generative = GenerativeConfig(args.max_seq_length, args.doc_stride, args.max_question_length, args.max_answer_length)
    (span if args.objective == "span" else generative).validate()
    return QASettings(args.objective, span, generative,
                      PostprocessConfig(args.n_best_size, args.max_answer_length, args.null_score_diff_threshold,
                                        version_2_with_negative))


@dataclass
class QAPredictions:
    """predictions: id -> text ("" = no answer); best_non_null: id -> best answer text even where
    the null won (what the abstention sweeps need); nbest: id -> candidate list; null_odds: id ->
    null score - best answer score (tasks with unanswerable questions only)."""

    predictions: dict[str, str] = field(default_factory=dict)
    best_non_null: dict[str, str] = field(default_factory=dict)
    nbest: dict[str, list[dict]] = field(default_factory=dict)
    null_odds: dict[str, float] = field(default_factory=dict)


def group_by_example(example_index: Sequence[int]) -> dict[int, list[int]]:
    """example index -> the indices of its features, in feature order."""
    by_example: dict[int, list[int]] = defaultdict(list)
    for feature_index, example in enumerate(example_index):
        by_example[example].append(feature_index)
    return by_example


def window_starts(num_tokens: int, room: int, doc_stride: int) -> list[int]:
    """First token of each window of `room` tokens, overlapping by `doc_stride`; the last ends at the
    last token, and an empty context still gets one (empty) window."""
    starts = [0]
    while starts[-1] + room < num_tokens:
        starts.append(starts[-1] + room - doc_stride)
    return starts


def token_span(offsets: list[tuple[int, int]], first: int, last: int, char_start: int, char_end: int
               ) -> tuple[int, int] | None:
    """Token indices [s, e] (inclusive) of the characters [char_start, char_end) if tokens first..last-1
    contain them whole, else None: s = the last token starting at or before char_start, e = the first
    ending at or after char_end (the run_qa walk; correct with offsets that include a leading space)."""
    if first >= last or offsets[first][0] > char_start or offsets[last - 1][1] < char_end:
        return None
    start = first
    while start + 1 < last and offsets[start + 1][0] <= char_start:
        start += 1
    end = last - 1
    while end - 1 >= start and offsets[end - 1][1] >= char_end:
        end -= 1
    return start, end


def questions_cut(tokenizer: Any, questions: list[str], max_question_tokens: int, generative: bool = False) -> int:
    """How many questions the features cut to `max_question_tokens`: span features count the line
    break after the question, generative ones tokenise " " + question."""
    limit = max_question_tokens - (0 if generative else len(tokenizer("\n", add_special_tokens=False)["input_ids"]))
    texts = [(" " if generative else "") + q.strip() for q in questions]
    return sum(len(ids) > limit for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])


def _question_ids(tokenizer: Any, questions: list[str], max_question_tokens: int) -> list[list[int]]:
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    encoded = tokenizer([q.strip() for q in questions], add_special_tokens=False, truncation=True,
                        max_length=max_question_tokens - len(newline))["input_ids"]
    return [ids + newline for ids in encoded]


def encode_contexts(tokenizer: Any, contexts: list[str]) -> dict[str, tuple[list[int], list[tuple[int, int]]]]:
    """Each distinct context tokenised once (SQuAD has ~5 questions per paragraph)."""
    unique = list(dict.fromkeys(contexts))
    encoded = tokenizer(unique, add_special_tokens=False, return_offsets_mapping=True)
    return {text: (ids, [tuple(o) for o in offsets])
            for text, ids, offsets in zip(unique, encoded["input_ids"], encoded["offset_mapping"])}


def span_features(batch: dict[str, list], tokenizer: Any, config: SpanFeatureConfig, *, with_labels: bool,
                  with_offsets: bool, example_offset: int = 0) -> dict[str, list]:
    """Features of a batch of canonical QA records (columns, as `datasets.map(batched=True)` passes
    them); `example_offset` is the index of the batch's first record in the split. Labels (kept
    `with_labels`) come from the FIRST gold answer; a window that does not contain it whole, and
    every window of an unanswerable question, is labelled at its null slot. token_start/token_end
    are large and kept only `with_offsets` (evaluation)."""
    eos = tokenizer.eos_token_id
    questions = _question_ids(tokenizer, batch["question"], config.max_question_tokens)
    contexts = encode_contexts(tokenizer, batch["context"])
    out: dict[str, list] = {name: [] for name in (
        "input_ids", "context_start", "context_end", "null_index", "example_index", "example_id",
        "token_start", "token_end", "start_positions", "end_positions")}
    for i, (question_ids, context) in enumerate(zip(questions, batch["context"])):
        context_ids, offsets = contexts[context]
        room = config.max_seq_length - len(question_ids) - 1
        answers = batch["answers"][i]
        answer = (answers["answer_start"][0], answers["answer_start"][0] + len(answers["text"][0])) \
            if answers["text"] else None
        context_start = len(question_ids)
        for first in window_starts(len(context_ids), room, config.doc_stride):
            last = min(first + room, len(context_ids))
            null_index = context_start + last - first
            span = token_span(offsets, first, last, *answer) if answer else None
            labels = (null_index, null_index) if span is None else (context_start + span[0] - first,
                                                                     context_start + span[1] - first)
            position_offsets = [(-1, -1)] * context_start + offsets[first:last] + [(-1, -1)]
            row = {"input_ids": question_ids + context_ids[first:last] + [eos], "context_start": context_start,
                   "context_end": null_index, "null_index": null_index, "example_index": example_offset + i,
                   "example_id": batch["id"][i], "token_start": [s for s, _ in position_offsets],
                   "token_end": [e for _, e in position_offsets], "start_positions": labels[0],
                   "end_positions": labels[1]}
            for name, value in row.items():
                out[name].append(value)
    if not with_labels:
        del out["start_positions"], out["end_positions"]
    if not with_offsets:
        del out["token_start"], out["token_end"]
    return out


def _window_candidates(start: np.ndarray, end: np.ndarray, lo: int, hi: int, n_best: int,
                       max_length: int) -> list[tuple[float, int, int]]:
    """(score, start, end) of the best valid pairs inside positions [lo, hi), best first."""
    if hi <= lo:
        return []
    k = min(n_best, hi - lo)
    starts = lo + np.argsort(-start[lo:hi], kind="stable")[:k]   # (k,)
    ends = lo + np.argsort(-end[lo:hi], kind="stable")[:k]       # (k,)
    scores = start[starts][:, None] + end[ends][None, :]          # (k, k)
    length = ends[None, :] - starts[:, None]                      # (k, k) tokens − 1
    scores = np.where((length >= 0) & (length < max_length), scores, -np.inf)
    order = np.argsort(-scores, axis=None, kind="stable")[:n_best]
    rows, cols = np.unravel_index(order, scores.shape)
    return [(float(scores[r, c]), int(starts[r]), int(ends[c])) for r, c in zip(rows, cols)
            if np.isfinite(scores[r, c])]


def postprocess_span_predictions(examples: Sequence[dict], features: dict[str, list],
                                 start_logits: Sequence[np.ndarray], end_logits: Sequence[np.ndarray],
                                 config: PostprocessConfig) -> QAPredictions:
    """Answer every example (canonical QA records, indexed by the features' `example_index`) from
    the 1-D start and end logits of each of its features (columns as in the module docstring)."""
    by_example = group_by_example(features["example_index"])
    result = QAPredictions()
    for example_index, example in enumerate(examples):
        qid = example["id"]
        candidates: list[dict] = []
        null_score = None
        for f in by_example.get(example_index, []):
            start, end = np.asarray(start_logits[f], dtype=np.float64), np.asarray(end_logits[f], dtype=np.float64)
            null = features["null_index"][f]
            window_null = float(start[null] + end[null])
            null_score = window_null if null_score is None else min(null_score, window_null)
            token_start, token_end = features["token_start"][f], features["token_end"][f]
            for score, s, e in _window_candidates(start, end, features["context_start"][f],
                                                  features["context_end"][f], config.n_best_size,
                                                  config.max_answer_length):
                candidates.append({"text": example["context"][token_start[s]:token_end[e]].strip(), "score": score,
                                   "start_logit": float(start[s]), "end_logit": float(end[e]),
                                   "char_start": token_start[s], "char_end": token_end[e]})
        nbest = sorted(candidates, key=lambda c: -c["score"])[:config.n_best_size]
        result.best_non_null[qid] = result.predictions[qid] = nbest[0]["text"] if nbest else ""
        if config.version_2_with_negative and null_score is not None:
            odds = null_score - (nbest[0]["score"] if nbest else -np.inf)
            result.null_odds[qid] = float(odds) if np.isfinite(odds) else 1e9
            if odds > config.null_score_diff_threshold:
                result.predictions[qid] = ""
            nbest = sorted(nbest + [{"text": "", "score": null_score, "start_logit": None, "end_logit": None}],
                           key=lambda c: -c["score"])[:config.n_best_size]
        if nbest:
            scores = np.array([c["score"] for c in nbest], dtype=np.float64)
            scores = np.exp(scores - scores.max())
            for candidate, probability in zip(nbest, (scores / scores.sum()).tolist()):
                candidate["probability"] = probability
        result.nbest[qid] = nbest
    return result

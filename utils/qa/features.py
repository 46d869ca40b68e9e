"""Span-extraction features for GPT-2: question first, a context window, then one null slot.

A causal model only sees what comes before a token, so the question goes FIRST: every context
token can then attend to it. Each feature is

    [question tokens (at most `max_question_tokens`, ending in "\\n")] [context window] [EOS]

The final EOS is the *null slot*: its start/end logits give the no-answer score of the window and
it is the label of windows that do not contain the answer (and of unanswerable questions). Long
contexts are cut into windows of the room left by the question, overlapping by `doc_stride`
tokens. Padding goes on the right at collation; no `token_type_ids` are ever produced (GPT-2 would
add them through its word embedding).

Columns of a feature (lists, one entry per feature):
    input_ids, context_start, context_end (feature positions of the window's context tokens,
    [start, end)), null_index, example_index, example_id, token_start/token_end (character
    offsets into the context, -1 outside the window), and for training start_positions /
    end_positions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from utils.run.errors import ToolkitError


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


def window_starts(num_tokens: int, room: int, doc_stride: int) -> list[int]:
    """First token of each window: windows of `room` tokens overlapping by `doc_stride`.

    The last window ends at the last token; an empty context still gets one (empty) window.
    """
    starts = [0]
    while starts[-1] + room < num_tokens:
        starts.append(starts[-1] + room - doc_stride)
    return starts


def token_span(offsets: list[tuple[int, int]], first: int, last: int, char_start: int, char_end: int
               ) -> tuple[int, int] | None:
    """Token indices [s, e] (inclusive, in `offsets`' numbering) of the characters [char_start, char_end),
    if the window of tokens first..last-1 contains them whole; else None.

    Start = the last token starting at or before char_start; end = the first token ending at or
    after char_end (the run_qa walk; correct with offsets that include a leading space).
    """
    if first >= last or offsets[first][0] > char_start or offsets[last - 1][1] < char_end:
        return None
    start = first
    while start + 1 < last and offsets[start + 1][0] <= char_start:
        start += 1
    end = last - 1
    while end - 1 >= start and offsets[end - 1][1] >= char_end:
        end -= 1
    return start, end


def questions_cut(tokenizer: Any, questions: list[str], max_question_tokens: int) -> int:
    """How many questions `span_features` cuts (their tokens and the line break exceed
    `max_question_tokens`)."""
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    lengths = [len(ids) for ids in tokenizer([q.strip() for q in questions], add_special_tokens=False)["input_ids"]]
    return sum(length > max_question_tokens - len(newline) for length in lengths)


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
    """Features of a batch of canonical QA records (columns: id, context, question, answers).

    Training labels come from the FIRST gold answer; a window that does not contain it whole, and
    every window of an unanswerable question, is labelled at its null slot.

    Args:
        batch: columns of canonical records (as `datasets.map(batched=True)` passes them).
        with_labels: keep start_positions / end_positions (training).
        with_offsets: keep token_start / token_end (evaluation; they are large and training
            does not need them).
        example_offset: index of the batch's first record in the whole split.
    """
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
        for first in window_starts(len(context_ids), room, config.doc_stride):
            last = min(first + room, len(context_ids))
            input_ids = question_ids + context_ids[first:last] + [eos]
            context_start = len(question_ids)
            null_index = len(input_ids) - 1
            span = token_span(offsets, first, last, *answer) if answer else None
            out["input_ids"].append(input_ids)
            out["context_start"].append(context_start)
            out["context_end"].append(null_index)
            out["null_index"].append(null_index)
            out["example_index"].append(example_offset + i)
            out["example_id"].append(batch["id"][i])
            position_offsets = [(-1, -1)] * context_start + offsets[first:last] + [(-1, -1)]
            out["token_start"].append([s for s, _ in position_offsets])
            out["token_end"].append([e for _, e in position_offsets])
            if span is None:
                out["start_positions"].append(null_index)
                out["end_positions"].append(null_index)
            else:
                out["start_positions"].append(context_start + span[0] - first)
                out["end_positions"].append(context_start + span[1] - first)
    if not with_labels:
        del out["start_positions"], out["end_positions"]
    if not with_offsets:
        del out["token_start"], out["token_end"]
    return out

"""Generative QA with a causal LM: `context / question / answer`, loss on the answer only.

Layout of a training sequence (the context first, so the answer tokens see everything):

    [context window] "\\nQuestion: " [question] "\\nAnswer:" " " [answer] [EOS]

Labels are -100 on every prompt token; the answer tokens AND the closing EOS are supervised (a
collator that masks pad ids would also mask that EOS, since GPT-2's pad is EOS, and the model
would never learn to stop). Unanswerable questions target the fixed word `unanswerable`, read
back as "". Long contexts are cut into windows as for the span objective: training uses the
first window holding the located answer (the first window for unanswerable questions). An
answer that is not a span of the context (a DROP number or date, a DuoRC free-form answer) is
trained on in its text form ("3", "7 May 1923") when the whole context fits in one window, so
that the model sees all the evidence; otherwise the question is not trained on.

Evaluation decodes every window greedily. As for the span objective, a question's answer is its
best non-null answer over the windows (highest mean token log-probability), and for tasks with
unanswerable questions its null score is the LEAST confident "unanswerable" over the windows
(the teacher-forced mean log-probability of ` unanswerable<EOS>` in each window, minimum over
windows): a window that does not hold the answer should not veto the one that does.
"""
from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from utils.run.errors import ToolkitError
from utils.qa.features import encode_contexts, token_span, window_starts

QUESTION_PREFIX = "\nQuestion:"
ANSWER_PREFIX = "\nAnswer:"


@dataclass(frozen=True)
class GenerativeConfig:
    """Windowing and decoding settings of the generative objective."""

    max_seq_length: int = 384
    doc_stride: int = 128
    max_question_tokens: int = 64
    max_answer_tokens: int = 32
    unanswerable_text: str = "unanswerable"

    def validate(self) -> None:
        room = self.max_seq_length - self.max_question_tokens - self.max_answer_tokens - 8
        if room <= self.doc_stride:
            raise ToolkitError(
                f"--max_seq_length {self.max_seq_length} leaves {room} context tokens per window after the "
                f"question ({self.max_question_tokens}), the answer ({self.max_answer_tokens}) and the prompt "
                f"words; it must exceed --doc_stride {self.doc_stride}")


def questions_cut(tokenizer: Any, questions: list[str], max_question_tokens: int) -> int:
    """How many questions `generative_features` cuts to `max_question_tokens`."""
    lengths = [len(ids) for ids in tokenizer([" " + q.strip() for q in questions], add_special_tokens=False)["input_ids"]]
    return sum(length > max_question_tokens for length in lengths)


def _prompt_tail(tokenizer: Any, questions: list[str], max_question_tokens: int) -> list[list[int]]:
    """Token ids of "\\nQuestion: <question>\\nAnswer:" for each question (question capped)."""
    prefix = tokenizer(QUESTION_PREFIX, add_special_tokens=False)["input_ids"]
    suffix = tokenizer(ANSWER_PREFIX, add_special_tokens=False)["input_ids"]
    # " " + question: GPT-2 tokenizes words with their leading space, as the rest of the prompt.
    encoded = tokenizer([" " + q.strip() for q in questions], add_special_tokens=False, truncation=True,
                        max_length=max_question_tokens)["input_ids"]
    return [prefix + ids + suffix for ids in encoded]


def generative_features(batch: dict[str, list], tokenizer: Any, config: GenerativeConfig, *, training: bool,
                        example_offset: int = 0) -> dict[str, list]:
    """Training rows {input_ids, labels} or evaluation prompts {input_ids, example_index, example_id}.

    Args:
        batch: columns of canonical QA records (id, context, question, answers, and gold when the
            records have it).
        training: one labelled sequence per question; otherwise one prompt per window.
    """
    eos = tokenizer.eos_token_id
    tails = _prompt_tail(tokenizer, batch["question"], config.max_question_tokens)
    contexts = encode_contexts(tokenizer, batch["context"])
    out: dict[str, list] = {"input_ids": [], "example_index": [], "example_id": []}
    if training:
        out["labels"] = []
    for i, (tail, context) in enumerate(zip(tails, batch["context"])):
        context_ids, offsets = contexts[context]
        room = config.max_seq_length - len(tail) - config.max_answer_tokens - 1
        starts = window_starts(len(context_ids), room, config.doc_stride)
        answers = batch["answers"][i]
        if not training:
            for first in starts:
                out["input_ids"].append(context_ids[first:first + room] + tail)
                out["example_index"].append(example_offset + i)
                out["example_id"].append(batch["id"][i])
            continue
        gold = batch["gold"][i] if "gold" in batch else [[text] for text in answers["text"]]
        if answers["text"]:
            begin = answers["answer_start"][0]
            end = begin + len(answers["text"][0])
            holding = [f for f in starts if token_span(offsets, f, min(f + room, len(context_ids)), begin, end)]
            if not holding:
                continue  # the answer is longer than a window; nothing to learn from this question
            first, target = holding[0], " " + answers["text"][0].strip()
        elif not gold:
            first, target = starts[0], " " + config.unanswerable_text
        elif len(gold[0]) == 1 and gold[0][0].strip() and len(starts) == 1:
            first, target = starts[0], " " + " ".join(gold[0][0].split())
        else:
            continue  # a multi-span answer, or evidence that may lie outside the one window trained on
        answer_ids = tokenizer(target, add_special_tokens=False)["input_ids"][:config.max_answer_tokens] + [eos]
        prompt = context_ids[first:first + room] + tail
        out["input_ids"].append(prompt + answer_ids)
        out["labels"].append([-100] * len(prompt) + answer_ids)
        out["example_index"].append(example_offset + i)
        out["example_id"].append(batch["id"][i])
    return out


def left_padded(prompts: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded prompts with their attention mask and the positions GPT-2 must use.

    GPT-2 has absolute position embeddings: with left padding, positions must count real tokens
    only (cumsum of the mask − 1), or every logit shifts.
    """
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)     # (B, T)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)                 # (B, T)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt):] = torch.as_tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def _cache_keyword(model: torch.nn.Module) -> str:
    """transformers renamed `past_key_values` to `cache` in 5.2x; accept both."""
    forward = model.module.forward if hasattr(model, "module") else model.forward
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def _returned_cache(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


@torch.no_grad()
def greedy_decode(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  max_new_tokens: int, stop_ids: Sequence[int]) -> list[tuple[list[int], float]]:
    """Greedy continuation of left-padded prompts, with a KV cache.

    Each row stops at the first token in `stop_ids` (not included in its output). Returns, per row,
    the generated token ids and the mean log-probability of the tokens chosen (stop token included,
    since choosing to stop is part of the answer).
    """
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)                     # (B, T)
    cache_keyword = _cache_keyword(model)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True,
                logits_to_keep=1)
    batch = input_ids.size(0)
    stops = torch.tensor(list(stop_ids), device=input_ids.device)
    tokens: list[list[int]] = [[] for _ in range(batch)]
    logprob_sum = torch.zeros(batch, dtype=torch.float64)
    counts = torch.zeros(batch, dtype=torch.long)
    done = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    next_position = positions[:, -1] + 1                                         # (B,)
    logits, past = out.logits[:, -1].float(), _returned_cache(out)
    for step in range(max_new_tokens + 1):
        logprobs = torch.log_softmax(logits, dim=-1)                            # (B, V)
        chosen = logprobs.argmax(dim=-1)                                         # (B,)
        chosen_lp = logprobs.gather(1, chosen[:, None]).squeeze(1)
        is_stop = torch.isin(chosen, stops)
        # After max_new_tokens answer tokens only a stop may still be scored: a cut-off answer is
        # scored on the tokens it has.
        counted = ~done & (is_stop if step == max_new_tokens else torch.ones_like(is_stop))
        logprob_sum += torch.where(counted, chosen_lp, 0.0).double().cpu()
        counts += counted.long().cpu()
        if step < max_new_tokens:
            for row in torch.nonzero(~done & ~is_stop).flatten().tolist():
                tokens[row].append(int(chosen[row]))
        done |= is_stop
        if bool(done.all()) or step == max_new_tokens:
            break
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
        out = model(input_ids=chosen[:, None], attention_mask=attention_mask, position_ids=next_position[:, None],
                    use_cache=True, **{cache_keyword: past})
        logits, past = out.logits[:, -1].float(), _returned_cache(out)
        next_position = next_position + 1
    return [(tokens[row], float(logprob_sum[row] / max(1, counts[row]))) for row in range(batch)]


@torch.no_grad()
def continuation_logprob(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         continuation: Sequence[int]) -> list[float]:
    """Mean log-probability of the same `continuation` tokens after each left-padded prompt.

    One teacher-forced forward over [prompt, continuation]; logits only at the C + 1 last
    positions (position T − 1 + j predicts continuation token j), never over the whole prompt.
    """
    batch, width = input_ids.shape
    tokens = torch.as_tensor(list(continuation), dtype=torch.long, device=input_ids.device)
    count = tokens.numel()
    ids = torch.cat([input_ids, tokens.expand(batch, count)], dim=1)                     # (B, T + C)
    mask = torch.cat([attention_mask, torch.ones((batch, count), dtype=attention_mask.dtype,
                                                 device=attention_mask.device)], dim=1)  # (B, T + C)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=count + 1).logits
    logprobs = torch.log_softmax(logits[:, :count].float(), dim=-1)                      # (B, C, V)
    chosen = logprobs.gather(-1, tokens.expand(batch, count)[..., None]).squeeze(-1)     # (B, C)
    return chosen.mean(dim=-1).tolist()


@dataclass
class GenerativePredictions:
    """As SpanPredictions: predictions, best non-null texts, per-window candidates, null odds."""

    predictions: dict[str, str] = field(default_factory=dict)
    best_non_null: dict[str, str] = field(default_factory=dict)
    nbest: dict[str, list[dict]] = field(default_factory=dict)
    null_odds: dict[str, float] = field(default_factory=dict)


def is_unanswerable(text: str, unanswerable_text: str) -> bool:
    """The generated text says "no answer" (the fixed word, ignoring case and a final full stop)."""
    return text.strip().rstrip(".").strip().lower() == unanswerable_text.lower()


def postprocess_generations(examples: Sequence[dict], features: dict[str, list],
                            decoded: Sequence[tuple[str, float, float | None]], *, version_2_with_negative: bool,
                            unanswerable_text: str, null_score_diff_threshold: float = 0.0) -> GenerativePredictions:
    """One answer per example from the greedy output of each of its windows.

    Args:
        decoded: per feature (window): the generated text, its mean token log-probability, and
            the teacher-forced mean log-probability of the "unanswerable" answer (None when not
            computed: tasks without unanswerable questions).

    The answer is the non-null window answer with the highest score. In v2 mode the null score is
    the minimum over windows of their "unanswerable" scores (as the span objective takes its
    least confident null slot), null odds = null score − best answer score (±1e9 when a side is
    missing), and the example is unanswerable when the odds exceed `null_score_diff_threshold`.
    """
    by_example: dict[int, list[int]] = defaultdict(list)
    for feature_index, example_index in enumerate(features["example_index"]):
        by_example[example_index].append(feature_index)
    result = GenerativePredictions()
    for example_index, example in enumerate(examples):
        qid = example["id"]
        windows = by_example.get(example_index, [])
        candidates = sorted(({"text": decoded[f][0].strip(), "score": decoded[f][1], "null_score": decoded[f][2],
                              "window": k} for k, f in enumerate(windows)), key=lambda c: -c["score"])
        answers = [c for c in candidates if c["text"] and not is_unanswerable(c["text"], unanswerable_text)]
        result.nbest[qid] = candidates
        result.best_non_null[qid] = answers[0]["text"] if answers else ""
        if version_2_with_negative:
            null_scores = [decoded[f][2] for f in windows if decoded[f][2] is not None]
            best_answer = answers[0]["score"] if answers else -1e9
            null_score = min(null_scores) if null_scores else -1e9
            result.null_odds[qid] = float(np.clip(null_score - best_answer, -1e9, 1e9))
            odds = result.null_odds[qid]
            result.predictions[qid] = "" if odds > null_score_diff_threshold else result.best_non_null[qid]
        else:
            result.predictions[qid] = result.best_non_null[qid]
    return result

"""Generative QA with a causal LM: `context / question / answer`, loss on the answer only.

A training sequence puts the context first, so the answer tokens see everything:

    [context window] "\\nQuestion: " [question] "\\nAnswer:" " " [answer] [EOS]

Labels are -100 on every prompt token; the answer AND the closing EOS are supervised (masking pad
ids would also mask that EOS, as GPT-2's pad is EOS, and the model would never learn to stop).
Unanswerable questions target the word `unanswerable`, read back as "". Training uses the first
window holding the located answer (the first window for unanswerable questions); an answer that is
not a span (a DROP number, a DuoRC free-form answer) only when the context fits one window, so that
the model sees all the evidence.

Evaluation decodes every window greedily. A question's answer is its best non-null answer over the
windows (highest mean token log-probability); with unanswerable questions its null score is the
LEAST confident "unanswerable" over the windows (the teacher-forced mean log-probability of
` unanswerable<EOS>`): a window that does not hold the answer should not veto the one that does.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from utils.qa.features import (GenerativeConfig, PostprocessConfig, QAPredictions, encode_contexts, group_by_example,
                               token_span, window_starts)

QUESTION_PREFIX = "\nQuestion:"
ANSWER_PREFIX = "\nAnswer:"


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
    """Training rows {input_ids, labels} (one per question) or evaluation prompts {input_ids,
    example_index, example_id} (one per window) of a batch of canonical QA records."""
    eos = tokenizer.eos_token_id
    tails = _prompt_tail(tokenizer, batch["question"], config.max_question_tokens)
    contexts = encode_contexts(tokenizer, batch["context"])
    out: dict[str, list] = {"input_ids": [], "example_index": [], "example_id": [], **({"labels": []} if training else {})}
    for i, (tail, context) in enumerate(zip(tails, batch["context"])):
        context_ids, offsets = contexts[context]
        room = config.max_seq_length - len(tail) - config.max_answer_tokens - 1
        starts = window_starts(len(context_ids), room, config.doc_stride)
        answers = batch["answers"][i]
        if not training:
            out["input_ids"] += [context_ids[first:first + room] + tail for first in starts]
            out["example_index"] += [example_offset + i] * len(starts)
            out["example_id"] += [batch["id"][i]] * len(starts)
            continue
        gold = batch["gold"][i] if "gold" in batch else [[text] for text in answers["text"]]
        if answers["text"]:
            begin, end = answers["answer_start"][0], answers["answer_start"][0] + len(answers["text"][0])
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
    """Left-padded prompts and their attention mask (decoding derives GPT-2's positions from it)."""
    def pad(rows: list[torch.Tensor], value: int) -> torch.Tensor:                # (B, T)
        return pad_sequence(rows, batch_first=True, padding_value=value, padding_side="left")
    return {"input_ids": pad([torch.as_tensor(p, dtype=torch.long) for p in prompts], pad_id),
            "attention_mask": pad([torch.ones(len(p), dtype=torch.long) for p in prompts], 0)}


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
    """Greedy continuation of left-padded prompts, with a KV cache. Each row stops at the first token
    in `stop_ids` (not in its output). Per row: the generated ids and the mean log-probability of the
    tokens chosen (stop token included: choosing to stop is part of the answer).
    """
    # GPT-2's positions are absolute: with left padding they must count real tokens only.
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
        # After max_new_tokens answer tokens only a stop is scored: a cut-off answer scores what it has.
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
    """Mean log-probability of the same `continuation` tokens after each left-padded prompt: one
    teacher-forced forward over [prompt, continuation], logits only at the C + 1 last positions
    (position T − 1 + j predicts continuation token j)."""
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


def is_unanswerable(text: str, unanswerable_text: str) -> bool:
    """The generated text says "no answer" (the fixed word, ignoring case and a final full stop)."""
    return text.strip().rstrip(".").strip().lower() == unanswerable_text.lower()


def postprocess_generations(examples: Sequence[dict], features: dict[str, list],
                            decoded: Sequence[tuple[str, float, float | None]], config: PostprocessConfig,
                            unanswerable_text: str) -> QAPredictions:
    """One answer per example from its windows' `decoded` (text, mean token log-probability, mean
    log-probability of the "unanswerable" answer or None): the best-scoring non-null text; in v2
    mode "" when null odds = min null score − best answer score (±1e9 when a side is missing)
    exceed the threshold."""
    by_example = group_by_example(features["example_index"])
    result = QAPredictions()
    for example_index, example in enumerate(examples):
        qid = example["id"]
        windows = by_example.get(example_index, [])
        candidates = sorted(({"text": decoded[f][0].strip(), "score": decoded[f][1], "null_score": decoded[f][2],
                              "window": k} for k, f in enumerate(windows)), key=lambda c: -c["score"])
        answers = [c for c in candidates if c["text"] and not is_unanswerable(c["text"], unanswerable_text)]
        result.nbest[qid] = candidates
        result.best_non_null[qid] = answers[0]["text"] if answers else ""
        result.predictions[qid] = result.best_non_null[qid]
        if config.version_2_with_negative:
            null_scores = [decoded[f][2] for f in windows if decoded[f][2] is not None]
            best_answer = answers[0]["score"] if answers else -1e9
            null_score = min(null_scores) if null_scores else -1e9
            result.null_odds[qid] = float(np.clip(null_score - best_answer, -1e9, 1e9))
            if result.null_odds[qid] > config.null_score_diff_threshold:
                result.predictions[qid] = ""
    return result

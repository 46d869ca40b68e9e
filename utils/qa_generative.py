"""Generative QA with a causal LM: `context / question / answer`, loss on the answer only.

Layout of a training sequence (the context first, so the answer tokens see everything):

    [context window] "\\nQuestion: " [question] "\\nAnswer:" " " [answer] [EOS]

Labels are -100 on every prompt token; the answer tokens AND the closing EOS are supervised (a
collator that masks pad ids would also mask that EOS, since GPT-2's pad is EOS, and the model
would never learn to stop). Unanswerable questions target the fixed word `unanswerable`, read
back as "". Long contexts are cut into windows as for the span objective: training uses the
first window holding the answer (the first window for unanswerable questions); evaluation
decodes every window greedily and keeps the answer with the highest mean token log-probability.
"""
from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from utils.errors import ToolkitError
from utils.qa_features import encode_contexts, token_span, window_starts

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
        batch: columns of canonical QA records (id, context, question, answers).
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
        if answers["text"]:
            begin = answers["answer_start"][0]
            end = begin + len(answers["text"][0])
            holding = [f for f in starts if token_span(offsets, f, min(f + room, len(context_ids)), begin, end)]
            if not holding:
                continue  # the answer is longer than a window; nothing to learn from this question
            first, target = holding[0], " " + answers["text"][0].strip()
        else:
            first, target = starts[0], " " + config.unanswerable_text
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
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True)
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


def postprocess_generations(examples: Sequence[dict], features: dict[str, list], decoded: Sequence[tuple[str, float]],
                            *, version_2_with_negative: bool, unanswerable_text: str,
                            null_score_diff_threshold: float = 0.0) -> GenerativePredictions:
    """One answer per example: the window answer with the highest mean log-probability.

    In v2 mode null odds = best "unanswerable" score − best answer score (mean log-probabilities;
    ±1e9 when one side is missing), and the example is unanswerable when the odds exceed
    `null_score_diff_threshold`.
    """
    by_example: dict[int, list[int]] = defaultdict(list)
    for feature_index, example_index in enumerate(features["example_index"]):
        by_example[example_index].append(feature_index)
    result = GenerativePredictions()
    for example_index, example in enumerate(examples):
        qid = example["id"]
        candidates = sorted(({"text": decoded[f][0].strip(), "score": decoded[f][1], "window": k}
                             for k, f in enumerate(by_example.get(example_index, []))), key=lambda c: -c["score"])
        answers = [c for c in candidates if c["text"] and not is_unanswerable(c["text"], unanswerable_text)]
        nulls = [c for c in candidates if c not in answers]
        result.nbest[qid] = candidates
        result.best_non_null[qid] = answers[0]["text"] if answers else ""
        if version_2_with_negative:
            best_answer = answers[0]["score"] if answers else -1e9
            best_null = nulls[0]["score"] if nulls else -1e9
            result.null_odds[qid] = float(np.clip(best_null - best_answer, -1e9, 1e9))
            odds = result.null_odds[qid]
            result.predictions[qid] = "" if odds > null_score_diff_threshold else result.best_non_null[qid]
        else:
            result.predictions[qid] = result.best_non_null[qid]
    return result

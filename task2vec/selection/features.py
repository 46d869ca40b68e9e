"""What selectors read from a task's text: its TextEmb vector, its vocabulary, and the features a
checkpoint extracts from the target's text (for LogME).

- TextEmb (Vu et al. 2020): the mean of the final hidden states over every real token of the task's
  texts, (1 / Σ_i T_i) Σ_i Σ_t h_{i,t}, here with a GPT-2-family probe instead of BERT.
- features: one (d,) vector per text, the final hidden state of its last real token (how the
  project's classifiers pool, utils.classification.objective.pooled_logits).
- vocabulary: the set of lower-cased word types (runs of letters and digits).

A record's text: a classification record's `text` (and `text_pair`, joined by a space); a QA
record's question and context.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from utils.models.families import backbone

_WORD = re.compile(r"\w+")


def record_text(record: dict) -> str:
    """The text a selector reads of one canonical record (module docstring)."""
    if "context" in record:
        return f"{record['question']} {record['context']}"
    return f"{record['text']} {record['text_pair']}" if record.get("text_pair") else record["text"]


def vocabulary(texts: Sequence[str]) -> frozenset[str]:
    """The lower-cased word types of the texts."""
    return frozenset(word for text in texts for word in _WORD.findall(text.lower()))


@torch.no_grad()
def _hidden_states(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int,
                   device: torch.device):
    """Yield (hidden (B, T, d), mask (B, T)) of right-padded batches of the texts, in order."""
    body = backbone(model).to(device).eval()
    for start in range(0, len(texts), batch_size):
        ids = [tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
               or [tokenizer.eos_token_id] for text in texts[start:start + batch_size]]
        width = max(len(row) for row in ids)
        input_ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in ids], device=device)
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids], device=device)
        yield body(input_ids=input_ids, attention_mask=mask).last_hidden_state.float(), mask


def text_embedding(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, max_length: int = 128,
                   batch_size: int = 16, device: torch.device = torch.device("cpu")) -> np.ndarray:
    """(d,) TextEmb: the mean final hidden state over every real token of the texts."""
    total, count = None, 0
    for hidden, mask in _hidden_states(model, tokenizer, texts, max_length, batch_size, device):
        summed = (hidden * mask.unsqueeze(-1)).sum(dim=(0, 1))                     # (d,)
        total = summed if total is None else total + summed
        count += int(mask.sum())
    if total is None:
        raise ValueError("no texts to embed")
    return (total / count).cpu().numpy().astype(np.float64)


def last_token_features(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, max_length: int = 128,
                        batch_size: int = 16, device: torch.device = torch.device("cpu")) -> np.ndarray:
    """(N, d) the final hidden state of each text's last real token."""
    rows = []
    for hidden, mask in _hidden_states(model, tokenizer, texts, max_length, batch_size, device):
        last = mask.sum(dim=-1) - 1                                                 # (B,)
        rows.append(hidden[torch.arange(hidden.size(0), device=hidden.device), last].cpu().numpy())
    return np.concatenate(rows).astype(np.float64)

"""Sequence classification and regression with a causal LM: features, last-token pooling, the
objectives, evaluation.

Sentences are tokenised without an added EOS (with pad == EOS it would look like padding), cut to
`max_length` and right-padded. A sentence is the hidden state of its LAST REAL token, found from the
attention mask, so pooling never depends on `pad_token_id` (nor stops at an EOS inside the text).

A pair is `text <EOS> text_pair`. When it is longer than `max_length`, the longer text loses its
last token, one at a time, until it fits (Hugging Face's `longest_first`): both keep their
beginnings and the pooled last token, the second text's, has read both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from utils.models.families import backbone
from utils.training.loop import attention_mask_for, pad_sequences


def classification_features(batch: dict[str, list], tokenizer: Any, max_length: int) -> dict[str, list]:
    """input_ids (at most max_length tokens: one text, or a pair joined by EOS), labels, lengths, and
    whether each example was cut (`truncated`, for `truncation_note`), for canonical records (with
    `text_pair` for a pair task; integer labels for classes, floats for regression)."""
    # One token more than kept tells a cut sentence from one of exactly max_length tokens, without
    # tokenising whole (possibly huge) texts; cutting the extra token gives the same ids as
    # truncation at max_length (the tokenizer truncates its token sequence on the right).
    encoded = tokenizer([text for text in batch["text"]], add_special_tokens=False, truncation=True,
                        max_length=max_length + 1)["input_ids"]
    if "text_pair" in batch:
        second = tokenizer([text for text in batch["text_pair"]], add_special_tokens=False, truncation=True,
                           max_length=max_length + 1)["input_ids"]
        joined = [join_pair(a, b, tokenizer.eos_token_id, max_length) for a, b in zip(encoded, second)]
        encoded, truncated = [ids for ids, _ in joined], [cut for _, cut in joined]
    else:
        truncated = [len(ids) > max_length for ids in encoded]
        # An empty sentence still gets a token.
        encoded = [ids[:max_length] if ids else [tokenizer.eos_token_id] for ids in encoded]
    return {"input_ids": encoded, "labels": list(batch["label"]), "length": [len(ids) for ids in encoded],
            "truncated": truncated}


def join_pair(first: list[int], second: list[int], separator: int, max_length: int) -> tuple[list[int], bool]:
    """first + [separator] + second in at most max_length tokens, and whether anything was cut: while
    too long, the longer of the two (the first on a tie) loses its last token (module docstring).

    Raises:
        ValueError: max_length < 3 (no room for a token of each text and the separator).
    """
    if max_length < 3:
        raise ValueError(f"a sentence pair needs max_length >= 3, got {max_length}")
    first, second = first or [separator], second or [separator]   # an empty text still gets a token
    budget = max_length - 1
    cut_first = cut_second = 0
    overflow = len(first) + len(second) - budget
    if overflow > 0:
        # Closed form of "the longer loses one token at a time": the longer comes down to the
        # shorter's length, then the two alternate, the first losing the odd token (ties go to it).
        from_longer = min(abs(len(first) - len(second)), overflow)
        rest = overflow - from_longer
        cut_first, cut_second = (rest + 1) // 2, rest // 2
        if len(first) >= len(second):
            cut_first += from_longer
        else:
            cut_second += from_longer
    kept_first, kept_second = first[:len(first) - cut_first], second[:len(second) - cut_second]
    return kept_first + [separator] + kept_second, overflow > 0


def pooled_logits(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, num_labels) logits of a `*ForSequenceClassification` model at each row's last real token
    (the model's own forward, with the position taken from the mask of a right-padded batch)."""
    core = model.module if hasattr(model, "module") else model
    hidden = backbone(core)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, d)
    last = attention_mask.sum(dim=-1) - 1                                                            # (B,)
    pooled = hidden[torch.arange(hidden.size(0), device=hidden.device), last]                        # (B, d)
    return core.score(pooled)


@torch.compiler.disable   # NumPy leaves compiled graphs (--torch_compile) as eager code
def rows_as_arrays(values: torch.Tensor) -> list[np.ndarray]:
    """(B, C) tensor as B NumPy rows of shape (C,)."""
    return list(values.cpu().numpy())


@dataclass(frozen=True)
class ClassificationObjective:
    """Cross-entropy of the last-token logits of right-padded batches."""

    pad_token_id: int
    pad_to_multiple_of: int = 8
    name: str = "classification"

    def labels(self, rows: list[dict]) -> torch.Tensor:
        return torch.tensor([row["labels"] for row in rows])

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids = [row["input_ids"] for row in rows]   # (B, T), padded to the longest rounded up to the multiple
        return {"input_ids": pad_sequences(ids, self.pad_token_id, self.pad_to_multiple_of),
                "attention_mask": attention_mask_for(ids, self.pad_to_multiple_of), "labels": self.labels(rows)}

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = pooled_logits(model, batch["input_ids"], batch["attention_mask"]).float()
        return F.cross_entropy(logits, batch["labels"])

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
        """Per-row logits, or a regression's (1,) scores (for utils.training.loop.predict)."""
        return rows_as_arrays(pooled_logits(model, batch["input_ids"], batch["attention_mask"]).float())


@dataclass(frozen=True)
class RegressionObjective(ClassificationObjective):
    """Mean squared error of the last-token score (a one-output head) against float labels."""

    name: str = "regression"

    def labels(self, rows: list[dict]) -> torch.Tensor:
        return torch.tensor([float(row["labels"]) for row in rows], dtype=torch.float32)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        scores = pooled_logits(model, batch["input_ids"], batch["attention_mask"]).float()[:, 0]   # (B,)
        return F.mse_loss(scores, batch["labels"])

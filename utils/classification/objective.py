"""Sequence classification with a causal LM: features, last-token pooling, the objective, evaluation.

Sentences are tokenised without any added token (no EOS: with pad == EOS an appended EOS would be
indistinguishable from padding) and cut to `max_length`. Batches are right-padded. The sentence
is represented by the hidden state of its LAST REAL token, found from the attention mask, so
pooling never depends on `pad_token_id` (a batch without a pad id works, and a sentence that
contains the EOS token is not cut short).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from utils.models.families import backbone
from utils.training.batching import attention_mask_for, pad_sequences


def classification_features(batch: dict[str, list], tokenizer: Any, max_length: int) -> dict[str, list]:
    """input_ids (at most max_length tokens, none added), labels, lengths, and whether each
    sentence was cut (`truncated`, for `truncation_note`), for canonical records."""
    # One token more than kept tells a cut sentence from one of exactly max_length tokens, without
    # tokenising whole (possibly huge) texts; cutting the extra token gives the same ids as
    # truncation at max_length (the tokenizer truncates its token sequence on the right).
    encoded = tokenizer([text for text in batch["text"]], add_special_tokens=False, truncation=True,
                        max_length=max_length + 1)["input_ids"]
    truncated = [len(ids) > max_length for ids in encoded]
    # An empty sentence still gets a token.
    encoded = [ids[:max_length] if ids else [tokenizer.eos_token_id] for ids in encoded]
    return {"input_ids": encoded, "labels": list(batch["label"]), "length": [len(ids) for ids in encoded],
            "truncated": truncated}


def pooled_logits(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, num_labels) logits of a `*ForSequenceClassification` model at each row's last real token.

    The same computation as the model's own forward (score applied to the final hidden state),
    with the pooled position taken from the mask of a right-padded batch.
    """
    core = model.module if hasattr(model, "module") else model
    hidden = backbone(core)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, d)
    last = attention_mask.sum(dim=-1) - 1                                                            # (B,)
    pooled = hidden[torch.arange(hidden.size(0), device=hidden.device), last]                        # (B, d)
    return core.score(pooled)


@dataclass(frozen=True)
class ClassificationObjective:
    """Cross-entropy of the last-token logits."""

    pad_token_id: int
    pad_to_multiple_of: int = 8
    name: str = "classification"

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids = [row["input_ids"] for row in rows]
        return {"input_ids": pad_sequences(ids, self.pad_token_id, self.pad_to_multiple_of),
                "attention_mask": attention_mask_for(ids, self.pad_to_multiple_of),
                "labels": torch.tensor([row["labels"] for row in rows])}

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = pooled_logits(model, batch["input_ids"], batch["attention_mask"]).float()
        return F.cross_entropy(logits, batch["labels"])

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
        """Per-row logits (for utils.training.inference.predict)."""
        logits = pooled_logits(model, batch["input_ids"], batch["attention_mask"]).float()
        return list(logits.cpu().numpy())


def classification_report(labels: Sequence[int], predictions: Sequence[int], label_names: Sequence[str]
                          ) -> dict[str, float]:
    """Accuracy, per-class precision / recall / F1 / support, and their macro and weighted means.

    Precision (recall) of a class with no predicted (true) examples is 0, as in scikit-learn's
    `classification_report` with zero_division=0. Keys are flat: `precision_<name>`, ...
    """
    labels_array, predicted = np.asarray(labels), np.asarray(predictions)
    report: dict[str, float] = {"accuracy": float(np.mean(labels_array == predicted))}
    precisions, recalls, f1s, supports = [], [], [], []
    for index, name in enumerate(label_names):
        true_positive = float(np.sum((predicted == index) & (labels_array == index)))
        predicted_count = float(np.sum(predicted == index))
        support = float(np.sum(labels_array == index))
        precision = true_positive / predicted_count if predicted_count else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        report.update({f"precision_{name}": precision, f"recall_{name}": recall, f"f1_{name}": f1,
                       f"support_{name}": int(support)})
        precisions.append(precision), recalls.append(recall), f1s.append(f1), supports.append(support)
    weights = np.asarray(supports) / max(1.0, float(np.sum(supports)))
    report.update({"macro_precision": float(np.mean(precisions)), "macro_recall": float(np.mean(recalls)),
                   "macro_f1": float(np.mean(f1s)), "weighted_f1": float(np.dot(weights, f1s))})
    return report


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of (N, C) logits against integer labels, computed stably."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())

"""Sequence classification and regression with a causal LM: features, last-token pooling, the
objectives, evaluation.

Sentences are tokenised without any added token (no EOS: with pad == EOS an appended EOS would be
indistinguishable from padding) and cut to `max_length`. Batches are right-padded. The sentence
is represented by the hidden state of its LAST REAL token, found from the attention mask, so
pooling never depends on `pad_token_id` (a batch without a pad id works, and a sentence that
contains the EOS token is not cut short).

A sentence pair is `text <sep> text_pair`, the separator being the tokenizer's EOS token (every
causal LM's tokenizer has one; inside a sequence the mask, not the id, says it is real). When the
pair is longer than `max_length`, the longer text loses its last token, one token at a time, until
it fits (`longest_first`, as Hugging Face tokenizers truncate pairs): both texts keep their
beginnings and the second text still ends the sequence, so the pooled last token has read both.
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
    """(B, num_labels) logits of a `*ForSequenceClassification` model at each row's last real token.

    The same computation as the model's own forward (score applied to the final hidden state),
    with the pooled position taken from the mask of a right-padded batch.
    """
    core = model.module if hasattr(model, "module") else model
    hidden = backbone(core)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, d)
    last = attention_mask.sum(dim=-1) - 1                                                            # (B,)
    pooled = hidden[torch.arange(hidden.size(0), device=hidden.device), last]                        # (B, d)
    return core.score(pooled)


@torch.compiler.disable   # NumPy leaves compiled graphs (--torch_compile) as eager code
def rows_as_arrays(values: torch.Tensor) -> list[np.ndarray]:
    """(B, C) tensor as B NumPy rows of shape (C,)."""
    return list(values.cpu().numpy())


def padded_inputs(rows: list[dict], pad_token_id: int, multiple: int) -> dict[str, torch.Tensor]:
    """(B, T) input_ids right-padded to the longest row (rounded up to `multiple`) and their mask."""
    ids = [row["input_ids"] for row in rows]
    return {"input_ids": pad_sequences(ids, pad_token_id, multiple), "attention_mask": attention_mask_for(ids, multiple)}


@dataclass(frozen=True)
class ClassificationObjective:
    """Cross-entropy of the last-token logits."""

    pad_token_id: int
    pad_to_multiple_of: int = 8
    name: str = "classification"

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        return {**padded_inputs(rows, self.pad_token_id, self.pad_to_multiple_of),
                "labels": torch.tensor([row["labels"] for row in rows])}

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = pooled_logits(model, batch["input_ids"], batch["attention_mask"]).float()
        return F.cross_entropy(logits, batch["labels"])

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
        """Per-row logits (for utils.training.inference.predict)."""
        logits = pooled_logits(model, batch["input_ids"], batch["attention_mask"]).float()
        return rows_as_arrays(logits)


@dataclass(frozen=True)
class RegressionObjective:
    """Mean squared error of the last-token score (a one-output head) against float labels."""

    pad_token_id: int
    pad_to_multiple_of: int = 8
    name: str = "regression"

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        return {**padded_inputs(rows, self.pad_token_id, self.pad_to_multiple_of),
                "labels": torch.tensor([float(row["labels"]) for row in rows], dtype=torch.float32)}

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        scores = pooled_logits(model, batch["input_ids"], batch["attention_mask"]).float()[:, 0]   # (B,)
        return F.mse_loss(scores, batch["labels"])

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
        """Per-row scores, each a (1,) array (for utils.training.inference.predict)."""
        scores = pooled_logits(model, batch["input_ids"], batch["attention_mask"]).float()
        return rows_as_arrays(scores)


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

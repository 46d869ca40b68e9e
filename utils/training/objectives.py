"""Training objectives: how rows of features become a batch, and the loss on that batch.

- `SpanObjective`: start/end cross-entropy of a QA head, restricted to the window's context
  tokens and its null slot (the positions post-processing can choose), so that neither the
  question nor the padding competes for probability mass.
- `CausalLMObjective`: next-token loss on the positions whose label is not -100 (the answer and
  its closing end-of-text for generative QA).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from utils.training.batching import attention_mask_for, pad_sequences


@dataclass(frozen=True)
class SpanObjective:
    """Extractive QA on features from utils.qa.features."""

    pad_token_id: int
    pad_to_multiple_of: int = 8
    name: str = "span"

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids = [row["input_ids"] for row in rows]
        input_ids = pad_sequences(ids, self.pad_token_id, self.pad_to_multiple_of)   # (B, T)
        candidates = torch.zeros_like(input_ids, dtype=torch.bool)        # (B, T)
        for i, row in enumerate(rows):
            candidates[i, row["context_start"]:row["context_end"]] = True
            candidates[i, row["null_index"]] = True
        batch = {"input_ids": input_ids, "attention_mask": attention_mask_for(ids, self.pad_to_multiple_of),
                 "candidates": candidates}
        if "start_positions" in rows[0]:
            batch["start_positions"] = torch.tensor([row["start_positions"] for row in rows])
            batch["end_positions"] = torch.tensor([row["end_positions"] for row in rows])
        return batch

    def logits(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) start and end logits in fp32, -inf outside the candidate positions."""
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        blocked = ~batch["candidates"]
        start = out.start_logits.float().masked_fill(blocked, float("-inf"))
        end = out.end_logits.float().masked_fill(blocked, float("-inf"))
        return start, end

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        start, end = self.logits(model, batch)
        return (F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"])) / 2


@dataclass(frozen=True)
class CausalLMObjective:
    """Causal LM loss on rows {input_ids, labels} (labels -100 where nothing is learned)."""

    pad_token_id: int
    pad_to_multiple_of: int = 8
    name: str = "lm"

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids = [row["input_ids"] for row in rows]
        multiple = self.pad_to_multiple_of
        batch = {"input_ids": pad_sequences(ids, self.pad_token_id, multiple),
                 "attention_mask": attention_mask_for(ids, multiple)}
        if "labels" in rows[0]:
            batch["labels"] = pad_sequences([row["labels"] for row in rows], -100, multiple)
        return batch

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        # Position t predicts token t+1; the answer's closing EOS is a label even though pad == EOS,
        # because labels are built explicitly rather than from the pad id.
        shifted = logits[:, :-1].float()                                   # (B, T-1, V)
        targets = batch["labels"][:, 1:]                                   # (B, T-1)
        return F.cross_entropy(shifted.reshape(-1, shifted.size(-1)), targets.reshape(-1), ignore_index=-100)

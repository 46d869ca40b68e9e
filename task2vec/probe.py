"""The probe: a fixed pretrained body and a head of its own, fitted to the task on cached features.

The body (GPT-2's `transformer`) is shared with the loaded model, never copied and never trained.
The head is always a new tensor, so fitting it cannot touch the input embeddings (in GPT-2 the LM
head IS the token embedding matrix; fitting the tied head would rewrite the embedding):
- objective `lm`: a copy of the model's LM head (softmax over the vocabulary);
- objective `task`: a new classification head (last real token -> classes) or span head
  (every token -> start and end logits), initialised N(0, initializer_range) from the seed.
The head is fitted for a fixed number of steps (AdamW, minibatches of sequences drawn with an
explicit generator) on the body's final hidden states, computed once, so the step budget, not the
data size, sets how far it moves. The probe then exposes three prediction functions for
task2vec.fisher: next tokens, classes, span ends.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers.modeling_outputs import CausalLMOutput

from task2vec.predictions import OutputFn, Predictions, next_token_predictions
from utils.classification.objective import ClassificationObjective
from utils.training.objectives import CausalLMObjective, SpanObjective


@dataclass(frozen=True)
class HeadSettings:
    """How the head is fitted: `steps` AdamW steps on minibatches of `batch_size` sequences."""

    steps: int
    learning_rate: float
    weight_decay: float
    batch_size: int


class ProbeModel(nn.Module):
    """The fixed body under its own name (so parameter names match the checkpoint's) and a head."""

    def __init__(self, body: nn.Module, head: nn.Module, body_prefix: str, kind: str) -> None:
        super().__init__()
        self.body_prefix = body_prefix
        self.kind = kind  # "lm", "classification" or "span"
        self.add_module(body_prefix, body)
        self.head = head

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, d) final hidden states of the body."""
        body = getattr(self, self.body_prefix)
        return body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    @property
    def base_model(self) -> nn.Module:
        """The body (the name transformers uses, so next_token_predictions works on the probe)."""
        return getattr(self, self.body_prefix)

    def get_output_embeddings(self) -> nn.Module:
        """The head (the vocabulary projection for the lm kind)."""
        return self.head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> CausalLMOutput:
        """Head outputs at every position, as `.logits` (B, T, C)."""
        return CausalLMOutput(logits=self.head(self.hidden(input_ids, attention_mask)))


def last_real_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, d) hidden state of each right-padded row's last real token."""
    last = attention_mask.sum(dim=-1) - 1                                          # (B,)
    return hidden[torch.arange(hidden.size(0), device=hidden.device), last]


def classification_predictions(model: ProbeModel, batch: dict[str, torch.Tensor]) -> Predictions:
    """One prediction per sequence: its class, from the last real token."""
    pooled = last_real_token(model.hidden(batch["input_ids"], batch["attention_mask"]), batch["attention_mask"])
    logits = model.head(pooled).unsqueeze(1)                                       # (B, 1, C)
    mask = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
    return Predictions(mask, batch["labels"].unsqueeze(1), logits=logits)


def span_predictions(model: ProbeModel, batch: dict[str, torch.Tensor]) -> Predictions:
    """Two predictions per window: start and end position, over its context tokens and null slot."""
    scores = model(batch["input_ids"], batch["attention_mask"]).logits             # (B, T, 2)
    blocked = ~batch["candidates"].unsqueeze(1)                                    # (B, 1, T)
    logits = scores.transpose(1, 2).masked_fill(blocked, float("-inf"))            # (B, 2, T)
    mask = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
    targets = torch.stack([batch["start_positions"], batch["end_positions"]], dim=1)
    return Predictions(mask, targets, logits=logits)


PREDICTIONS: dict[str, OutputFn] = {"lm": next_token_predictions, "classification": classification_predictions,
                                    "span": span_predictions}


def head_kind(objective: str, task_kind: str) -> str:
    """"lm" for the LM objective; else the task's own head: "classification" or "span"."""
    if objective == "lm":
        return "lm"
    return "classification" if task_kind == "classification" else "span"


def collate_fn(kind: str, pad_token_id: int) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    """The batch builder of the rows of a head kind (right padding, attention mask)."""
    if kind == "lm":
        return CausalLMObjective(pad_token_id).collate
    if kind == "classification":
        return ClassificationObjective(pad_token_id).collate
    return SpanObjective(pad_token_id).collate


def new_head(lm: nn.Module, kind: str, num_labels: int, generator: torch.Generator) -> nn.Module:
    """An untied head for `kind`, on the model's device, in fp32."""
    width = lm.config.hidden_size
    device = lm.get_output_embeddings().weight.device
    if kind == "lm":
        source = lm.get_output_embeddings()
        head = nn.Linear(width, source.weight.size(0), bias=source.bias is not None, device=device)
        with torch.no_grad():
            head.weight.copy_(source.weight)
            if source.bias is not None:
                head.bias.copy_(source.bias)
        return head
    outputs, bias = (num_labels, False) if kind == "classification" else (2, True)
    head = nn.Linear(width, outputs, bias=bias, device=device)
    std = getattr(lm.config, "initializer_range", 0.02)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * std)
        if bias:
            head.bias.zero_()
    return head


@torch.no_grad()
def cache_hidden_states(model: ProbeModel, rows: Sequence[dict], collate: Callable, chunk_size: int,
                        device: torch.device, autocast: Callable) -> list[torch.Tensor]:
    """Each row's (T_i, d) final hidden states, fp32 on the CPU (the body runs once)."""
    cached: list[torch.Tensor] = []
    for start in range(0, len(rows), chunk_size):
        part = rows[start:start + chunk_size]
        batch = collate(list(part))
        with autocast():
            hidden = model.hidden(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        hidden = hidden.float().cpu()
        cached.extend(hidden[i, :len(row["input_ids"])] for i, row in enumerate(part))
    return cached


def _head_loss(head: nn.Module, kind: str, hidden: list[torch.Tensor], rows: list[dict],
               device: torch.device) -> torch.Tensor:
    """Mean loss of the head on some rows' cached hidden states."""
    if kind == "lm":
        inputs = torch.cat([h[:-1] for h in hidden]).to(device)                      # (N_tokens, d)
        targets = torch.cat([torch.as_tensor(r["input_ids"][1:]) for r in rows]).to(device)
        return F.cross_entropy(head(inputs).float(), targets)
    if kind == "classification":
        pooled = torch.stack([h[-1] for h in hidden]).to(device)                     # (b, d)
        targets = torch.tensor([r["labels"] for r in rows], device=device)
        return F.cross_entropy(head(pooled).float(), targets)
    losses = []
    for h, row in zip(hidden, rows):
        scores = head(h.to(device)).float()                                          # (T, 2)
        candidates = torch.zeros(h.size(0), dtype=torch.bool, device=device)
        candidates[row["context_start"]:row["context_end"]] = True
        candidates[row["null_index"]] = True
        scores = scores.masked_fill(~candidates.unsqueeze(-1), float("-inf"))
        targets = torch.tensor([row["start_positions"], row["end_positions"]], device=device)
        losses.append(F.cross_entropy(scores.T, targets))
    return torch.stack(losses).mean()


def head_schedule(num_rows: int, settings: HeadSettings, generator: torch.Generator) -> list[list[int]]:
    """The rows of each head-fitting step: consecutive slices of seeded permutations (epochs when the
    budget exceeds one pass). Known in advance, so only the rows it uses need cached features."""
    steps: list[list[int]] = []
    order: list[int] = []
    for _ in range(settings.steps):
        if len(order) < settings.batch_size:
            order += torch.randperm(num_rows, generator=generator).tolist()
        steps.append(order[:settings.batch_size])
        order = order[settings.batch_size:]
    return steps


def fit_head(head: nn.Module, kind: str, hidden: dict[int, torch.Tensor], rows: Sequence[dict],
             schedule: list[list[int]], settings: HeadSettings, device: torch.device,
             progress: bool = False) -> dict[str, float]:
    """Fit `head` in place, one AdamW step per entry of `schedule`; returns the mean loss of the
    first and last steps.

    Args:
        hidden: row index -> its (T_i, d) cached final hidden states (every row the schedule uses).
        rows: the probe rows, indexed as in `schedule`.
    """
    if not schedule:
        return {"steps": 0}
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.learning_rate, eps=1e-8,
                                  weight_decay=settings.weight_decay)
    losses: list[float] = []
    for chosen in tqdm(schedule, desc="fitting the head", unit="step", disable=not progress):
        loss = _head_loss(head, kind, [hidden[i] for i in chosen], [rows[i] for i in chosen], device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    window = max(1, min(10, len(losses) // 2))
    return {"steps": len(schedule), "first_loss": sum(losses[:window]) / window,
            "last_loss": sum(losses[-window:]) / window}

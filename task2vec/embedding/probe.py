"""The probe: a fixed pretrained body and a head of its own, fitted to the task on cached features.

The body is shared with the loaded model, never copied or trained. The head is always a new tensor:
in GPT-2 the LM head IS the token embedding matrix, so fitting a tied head would rewrite the body.
Objective `lm` copies the LM head; `task` makes a classification head (last real token) or a span
head (start and end logits per token), drawn N(0, initializer_range) from the seed. The head is
fitted for a fixed number of AdamW steps on the body's final hidden states, computed once
(`fit_head`). The probe exposes the three prediction functions task2vec.embedding.fisher reads.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import CausalLMOutput

from task2vec.embedding.predictions import (OutputFn, Predictions, accumulator_dtype, next_token_predictions,
                                  probability_chunks)
from utils.classification.objective import ClassificationObjective
from utils.run.progress import Progress
from utils.qa.pipeline import CausalLMObjective, SpanObjective


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


def classification_predictions(model: ProbeModel, batch: dict[str, torch.Tensor]) -> Predictions:
    """One prediction per sequence: its class, from the last real token."""
    hidden = model.hidden(batch["input_ids"], batch["attention_mask"])             # (B, T, d), right-padded
    last = batch["attention_mask"].sum(dim=-1) - 1                                 # (B,)
    pooled = hidden[torch.arange(hidden.size(0), device=hidden.device), last]
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


@dataclass(frozen=True)
class HeadLoss:
    """A head's mean loss on some predictions and, when asked for, its gradient."""

    loss: float
    count: int                                 # N, the predictions averaged over
    weight_grad: torch.Tensor | None = None    # (C, d), dL/dW
    bias_grad: torch.Tensor | None = None      # (C,), dL/db (None for a head without a bias)


def lm_head_loss(features: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None = None, *, gradient: bool = True) -> HeadLoss:
    """Mean cross-entropy of a vocabulary head (C, d) on fixed (N, d) features, and its exact gradient.

        L(W, b) = -(1/N) sum_n log p_n[y_n],        p_n = softmax(W f_n + b),
        dL/dW = (1/N) sum_n (p_n - e_{y_n}) f_n^T,   dL/db = (1/N) sum_n (p_n - e_{y_n}).

    The probabilities come from `probability_chunks`, so the (N, C) logits are never formed; with a
    bias the gradient of [W b] is [f 1]^T (P - Y). fp32 (fp64 for fp64 features); a target
    probability that underflows is recomputed from that row's log-softmax.
    """
    count = features.size(0)
    if count == 0:
        raise ValueError("no predictions to fit the head on (every sequence shorter than 2 tokens?)")
    dtype = accumulator_dtype(features)
    device = features.device
    predictions = Predictions(torch.ones(1, count, dtype=torch.bool, device=device), targets.unsqueeze(0),
                              features=features.unsqueeze(0), head_weight=weight, head_bias=bias)
    inputs = features.detach().to(dtype)                                                 # (N, d)
    if bias is not None:
        inputs = torch.cat([inputs, torch.ones(count, 1, dtype=dtype, device=device)], dim=1)   # (N, d + 1)
    grad_t = torch.zeros(inputs.size(1), weight.size(0), dtype=dtype, device=device) if gradient else None
    picked = torch.empty(count, dtype=dtype, device=device)                              # p_n[y_n]
    positions = torch.arange(count, device=device)
    for rows, probs in probability_chunks(predictions):
        index, chosen = positions[:rows.stop - rows.start], targets[rows]
        picked[rows] = probs[index, chosen]
        if grad_t is not None:
            probs[index, chosen] = picked[rows] - 1.0                                    # P - Y, in place
            grad_t.addmm_(inputs[rows].T, probs)                                         # (d[+1], C)
    log_picked = picked.log()
    lost = picked < torch.finfo(dtype).tiny
    if bool(lost.any()):
        logits = F.linear(features.detach()[lost].to(dtype), weight.detach().to(dtype),
                          None if bias is None else bias.detach().to(dtype))
        log_picked[lost] = torch.log_softmax(logits, dim=-1).gather(-1, targets[lost, None]).squeeze(-1)
    loss = -float(log_picked.double().sum()) / count
    if grad_t is None:
        return HeadLoss(loss, count)
    grad_t /= count
    width = features.size(1)
    weight_grad = grad_t[:width].T.contiguous().to(weight.dtype)
    bias_grad = None if bias is None else grad_t[width].to(bias.dtype)
    return HeadLoss(loss, count, weight_grad, bias_grad)


def _lm_tokens(hidden: list[torch.Tensor], rows: list[dict], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, d) features and (N,) targets of every next-token prediction of some rows: position t
    predicts token t + 1."""
    features = torch.cat([h[:-1] for h in hidden]).to(device)
    targets = torch.cat([torch.as_tensor(r["input_ids"][1:]) for r in rows]).to(device)
    return features, targets


def _task_head_loss(head: nn.Module, kind: str, hidden: list[torch.Tensor], rows: list[dict],
                    device: torch.device) -> torch.Tensor:
    """Mean loss of a task head (classification or span) on some rows' cached hidden states."""
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


@torch.no_grad()
def head_data_loss(head: nn.Module, kind: str, hidden: list[torch.Tensor], rows: list[dict],
                   device: torch.device) -> float:
    """The objective of `fit_head` on all the given rows at once (for lm: the mean cross-entropy
    over every next token of every row, not a mean of minibatch means)."""
    if kind == "lm":
        features, targets = _lm_tokens(hidden, rows, device)
        return lm_head_loss(features, targets, head.weight, head.bias, gradient=False).loss
    return float(_task_head_loss(head, kind, hidden, rows, device))


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
             progress: bool = False, *, interval_s: float | None = None,
             description: str = "fitting the head") -> dict:
    """Fit `head` in place, one AdamW step per entry of `schedule`, on cached hidden states.

    Step s minimises L_s(theta) = -(1/|P_s|) sum_{n in P_s} log softmax(head_theta(h_n))[y_n] over
    its rows' predictions, with AdamW's decoupled weight decay: theta <- theta (1 - eta lambda) -
    eta m_hat / (sqrt(v_hat) + eps). Adam moves a weight by about eta per step, so the step budget,
    not convergence, decides how far the head moves. `hidden`: row index -> (T_i, d) cached states.
    Returns {"steps", "first_loss", "last_loss" (means over <= 10 steps), "full_data_loss",
    "predictions", "seconds"}; RuntimeError on a non-finite loss.
    """
    if not schedule:
        return {"steps": 0}
    began = time.perf_counter()
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.learning_rate, eps=1e-8,
                                  weight_decay=settings.weight_decay)
    losses: list[float] = []
    with Progress(len(schedule), description, bar=progress, unit="step", interval_s=interval_s) as bar:
        for chosen in schedule:
            losses.append(_head_step(head, kind, [hidden[i] for i in chosen], [rows[i] for i in chosen], device,
                                     optimizer))
            if not math.isfinite(losses[-1]):
                raise RuntimeError(f"{description}: the loss of step {len(losses)} is {losses[-1]}")
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            bar.update()
    every = sorted(hidden)
    final = head_data_loss(head, kind, [hidden[i] for i in every], [rows[i] for i in every], device)
    window = max(1, min(10, len(losses) // 2))
    per_row = {"classification": 1, "span": 2}
    predictions = sum(len(rows[i]["input_ids"]) - 1 if kind == "lm" else per_row[kind] for i in every)
    return {"steps": len(schedule), "first_loss": sum(losses[:window]) / window,
            "last_loss": sum(losses[-window:]) / window, "full_data_loss": final,
            "predictions": predictions, "seconds": round(time.perf_counter() - began, 3)}


def _head_step(head: nn.Module, kind: str, hidden: list[torch.Tensor], rows: list[dict], device: torch.device,
               optimizer: torch.optim.Optimizer) -> float:
    """One AdamW step on some rows; their mean loss before the step."""
    optimizer.zero_grad(set_to_none=True)
    if kind == "lm":
        features, targets = _lm_tokens(hidden, rows, device)
        result = lm_head_loss(features, targets, head.weight, head.bias)
        head.weight.grad = result.weight_grad
        if head.bias is not None:
            head.bias.grad = result.bias_grad
        loss = result.loss
    else:
        value = _task_head_loss(head, kind, hidden, rows, device)
        value.backward()
        loss = value.item()
    optimizer.step()
    return loss

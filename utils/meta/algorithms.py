"""The outer steps of the three meta-training algorithms of maml_qa.py, on the same sampled tasks
and the same task streams (utils.meta.training runs the loop; this module does one step's work).

With a meta-batch of m sampled tasks, k inner steps, inner optimizer U (SGD, Adam, AdamW), θ the
model's weights and ε_t the annealed outer step size:

- reptile:   φ_i = U^k(θ; support batches of task i);   θ ← θ + ε_t (mean_i φ_i − θ).
- fomaml:    φ_i as above, then g_i = ∇_φ L_i(φ_i; query batch of task i), the gradient of the
             query loss AT THE ADAPTED WEIGHTS with no second derivatives (first-order MAML,
             Finn et al. 2017); one step of the outer (meta) optimizer on θ with the gradient
             mean_i g_i (not clipped): with SGD, θ ← θ − β mean_i g_i. The meta optimizer (by
             default the inner one's kind, at the inner learning rate) keeps its state across
             outer steps, as MAML's Adam does. Support and query batches come from disjoint
             questions (`split_support_query`).
- multitask: no adaptation: k optimizer steps of U on θ itself, step j on the mean loss of the
             j-th batch of every sampled task, (1/m) Σ_i L_i(θ; batch_ij). The same tasks, the same
             batches and the same m·k forward/backward passes as Reptile; with one task it is plain
             fine-tuning on that task's stream. Its optimizer runs on across outer steps.

Under torchrun each process takes its share of the m tasks: Reptile and FOMAML all-reduce their
sums once per outer step, multi-task all-reduces the gradient of each of its k steps, so N
processes compute what one does.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from utils.run.errors import ToolkitError
from utils.training.loop import autocast_context, move_batch


def split_support_query(rows: Any, query_fraction: float, seed: int) -> tuple[Any, Any]:
    """(support rows, query rows) of one task: a seeded random `query_fraction` of its QUESTIONS
    (`example_id`) and all their windows go to the query side, so that no question is on both.

    Raises:
        ToolkitError: fewer than two questions, so one side would be empty.
    """
    ids = list(rows["example_id"])
    questions = sorted(set(ids))
    if len(questions) < 2:
        raise ToolkitError(f"a task with {len(questions)} question(s) cannot be split into support and query sets")
    count = min(len(questions) - 1, max(1, int(round(query_fraction * len(questions)))))
    chosen = set(np.random.default_rng(seed).choice(len(questions), size=count, replace=False).tolist())
    query_ids = {questions[i] for i in chosen}
    query = [i for i, example in enumerate(ids) if example in query_ids]
    support = [i for i, example in enumerate(ids) if example not in query_ids]
    return rows.select(support), rows.select(query)


def batch_loss(model: torch.nn.Module, objective: Any, rows: list[dict], device: torch.device,
               precision: Any) -> torch.Tensor:
    """The objective's mean loss of one batch of rows (autocast as in training)."""
    batch = move_batch(objective.collate(rows), device)
    with autocast_context(precision, device):
        return objective.loss(model, batch)


def query_gradient(model: torch.nn.Module, objective: Any, params: Sequence[torch.nn.Parameter], rows: list[dict],
                   device: torch.device, precision: Any) -> tuple[list[torch.Tensor], float]:
    """(∇ of the query batch's loss w.r.t. `params` at the model's current weights, the loss), a
    zero tensor for a parameter the loss does not reach."""
    model.train()
    loss = batch_loss(model, objective, rows, device, precision)
    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    value = float(loss.detach())
    if not np.isfinite(value):
        raise ToolkitError(f"a query loss became {value}; lower --inner_lr")
    return [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)], value


def outer_step(buffers: Any, optimizer: torch.optim.Optimizer, count: int) -> float:
    """FOMAML's outer step: θ (the snapshot in `buffers`) back into the model, its gradient set to
    the summed query gradients in `buffers.total` / count, one `optimizer` step; the new θ becomes
    the snapshot. Returns ‖θ_new − θ_old‖."""
    buffers.restore()
    with torch.no_grad():
        for parameter, total in zip(buffers.parameters, buffers.total):
            parameter.grad = total / count
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    moved = buffers.distance_moved()
    buffers.begin()
    return moved


def multitask_step(model: torch.nn.Module, objective: Any, optimizer: torch.optim.Optimizer,
                   params: Sequence[torch.nn.Parameter], batches: Sequence[list[dict]], count: int, *,
                   device: torch.device, precision: Any, max_grad_norm: float, distributed: bool) -> list[float]:
    """One optimizer step on (1/count) Σ of the losses of `batches` (this process's share of the
    count task batches; the gradients of all processes are summed); returns the batches' losses."""
    model.train()
    losses = []
    for rows in batches:
        loss = batch_loss(model, objective, rows, device, precision)
        (loss / count).backward()
        losses.append(float(loss.detach()))
    if any(not np.isfinite(value) for value in losses):
        raise ToolkitError(f"a multi-task loss became {losses}; lower --inner_lr")
    for p in params:
        if p.grad is None:   # a process without tasks this step, or a parameter no loss reaches
            p.grad = torch.zeros_like(p)
    if distributed:
        for p in params:
            dist.all_reduce(p.grad)
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return losses

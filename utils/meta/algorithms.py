"""The three meta-training algorithms as outer-step functions, and their bookkeeping on the weights
(`MetaBuffers`). `utils.meta.training` runs the outer loop.

With a meta-batch of m sampled tasks, k inner steps, inner optimizer U (SGD, Adam, AdamW), θ the
model's weights and ε_t the annealed outer step size:

- reptile:   φ_i = U^k(θ; support batches of task i);   θ ← θ + ε_t (mean_i φ_i − θ)  (Nichol et al. 2018).
- fomaml:    φ_i as above, then g_i = ∇_φ L_i(φ_i; query batch of task i), the gradient of the
             query loss AT THE ADAPTED WEIGHTS with no second derivatives (first-order MAML,
             Finn et al. 2017); one step of the outer (meta) optimizer on θ with the gradient
             mean_i g_i (not clipped): with SGD, θ ← θ − β mean_i g_i. The meta optimizer keeps its
             state across outer steps, as MAML's Adam does. Support and query batches come from
             disjoint questions (`split_support_query`).
- multitask: no adaptation: k optimizer steps of U on θ itself, step j on the mean loss of the
             j-th batch of every sampled task, (1/m) Σ_i L_i(θ; batch_ij): the same tasks, batches
             and m·k forward/backward passes as Reptile.

The model's own parameters are adapted in place and restored from one θ snapshot (no copy of the
model); updates are `torch._foreach_*` calls. Under torchrun each process takes its share of the m
tasks: Reptile and FOMAML all-reduce their sums once per outer step, multi-task each step's gradient."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from utils.run.errors import ToolkitError
from utils.training.optim import autocast_context, build_optimizer, move_batch, optimizer_step
from utils.training.runtime import RunContext


def meta_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The floating-point parameters of `model` in a fixed order, tied weights (GPT-2's lm_head and wte) once."""
    return [p for _, p in model.named_parameters() if p.is_floating_point()]


def annealed_epsilon(step: int, total_steps: int, initial: float, final: float = 0.0) -> float:
    """ε_t = initial·(1 − t/T) + final·t/T: the original's `outer_lr * (1 - step/steps)` when final = 0."""
    fraction = step / total_steps
    return initial * (1.0 - fraction) + final * fraction


class MetaBuffers:
    """θ snapshot and a running sum (adapted weights for Reptile, query gradients for FOMAML)."""

    def __init__(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        self.parameters = list(parameters)
        self.theta = [p.detach().clone() for p in self.parameters]
        self.total = [torch.zeros_like(p, requires_grad=False) for p in self.parameters]
        self.count = 0

    @torch.no_grad()
    def begin(self) -> None:
        """Start an outer step: θ ← the model's current weights; empty the running sum."""
        torch._foreach_copy_(self.theta, [p.detach() for p in self.parameters])
        torch._foreach_zero_(self.total)
        self.count = 0

    @torch.no_grad()
    def restore(self) -> None:
        """Put θ back into the model (before each task, and after an evaluation)."""
        torch._foreach_copy_([p.data for p in self.parameters], self.theta)

    @torch.no_grad()
    def add(self, tensors: list[torch.Tensor] | None = None) -> None:
        """Add `tensors` (default: the model's current, adapted weights φ_i) to the running sum."""
        torch._foreach_add_(self.total, tensors if tensors is not None else [p.detach() for p in self.parameters])
        self.count += 1

    @torch.no_grad()
    def distance_moved(self) -> float:
        """‖current weights − θ snapshot‖ (how far a step that trained θ in place moved it)."""
        return math.sqrt(sum(float(torch.sum((p.detach() - t) ** 2)) for p, t in zip(self.parameters, self.theta)))

    @torch.no_grad()
    def update(self, epsilon: float, count: int | None = None) -> float:
        """θ ← θ + ε (Σφ_i / count − θ), written into the model; returns ‖θ_new − θ_old‖. `count`: the
        adapted weights in the sum (all processes' when it was all-reduced; default: those added here)."""
        count = self.count if count is None else count
        if count <= 0:
            raise ValueError("no adapted weights were added since begin()")
        torch._foreach_mul_(self.total, 1.0 / count)        # mean φ
        torch._foreach_sub_(self.total, self.theta)          # mean φ − θ
        step_norm = abs(epsilon) * math.sqrt(sum(float(n) ** 2 for n in torch._foreach_norm(self.total)))
        torch._foreach_add_(self.theta, self.total, alpha=epsilon)
        self.restore()
        return step_norm


def split_support_query(rows: Any, query_fraction: float, seed: int) -> tuple[Any, Any]:
    """(support rows, query rows) of one task: a seeded random `query_fraction` of its QUESTIONS
    (`example_id`) and all their windows go to the query side, so that no question is on both."""
    ids = list(rows["example_id"])
    questions = sorted(set(ids))
    if len(questions) < 2:
        raise ToolkitError(f"a task with {len(questions)} question(s) cannot be split into support and query sets")
    count = min(len(questions) - 1, max(1, int(round(query_fraction * len(questions)))))
    query_ids = {questions[i] for i in np.random.default_rng(seed).choice(len(questions), size=count, replace=False)}
    return (rows.select([i for i, example in enumerate(ids) if example not in query_ids]),
            rows.select([i for i, example in enumerate(ids) if example in query_ids]))


def adapt(model: torch.nn.Module, objective: Any, optimizer: torch.optim.Optimizer, batches: list[list[dict]],
          ctx: RunContext, max_grad_norm: float) -> list[float]:
    """Inner steps: one optimizer step (utils.training.optim) per batch of rows; returns the losses."""
    model.train()
    return [optimizer_step(model, optimizer, [move_batch(objective.collate(rows), ctx.device)], objective.loss, ctx,
                           max_grad_norm=max_grad_norm, where="; lower --inner_lr")[0] for rows in batches]


@dataclass
class MetaStep:
    """What an outer-step function works on: this process's slots of the sampled tasks with their
    batches, and the optimizers (`inner()`: the carried inner optimizer, or a fresh one per task;
    `outer`: FOMAML's, whose state runs on across outer steps)."""

    model: torch.nn.Module
    objective: Any
    buffers: MetaBuffers
    ctx: RunContext
    mine: list[int]
    inner_steps: list[int]              # support batches of each sampled task (all processes)
    support: dict[int, list[list[dict]]]
    query: dict[int, list[dict]]
    count: int                          # sampled tasks, all processes together
    inner: Callable[[], torch.optim.Optimizer]
    outer: torch.optim.Optimizer | None
    max_grad_norm: float


def _adapt_each(step: MetaStep, after: Callable[[int], None]) -> dict[int, list[float]]:
    """Adapt θ to each of this process's tasks (θ restored before each), then `after(slot)`; all-reduce the sums."""
    losses = {}
    for slot in step.mine:
        step.buffers.restore()
        losses[slot] = adapt(step.model, step.objective, step.inner(), step.support[slot], step.ctx,
                             step.max_grad_norm)
        after(slot)
    if step.ctx.enabled:
        for tensor in step.buffers.total:
            dist.all_reduce(tensor)
    return losses


def reptile_step(step: MetaStep, epsilon: float) -> tuple[dict[int, list[float]], dict[int, float], float]:
    """θ ← θ + ε (mean_i φ_i − θ). Returns (inner losses, {}, ‖θ step‖)."""
    return _adapt_each(step, lambda slot: step.buffers.add()), {}, step.buffers.update(epsilon, count=step.count)


def fomaml_step(step: MetaStep, epsilon: float) -> tuple[dict[int, list[float]], dict[int, float], float]:
    """A meta-optimizer step on θ with the mean query gradient at the adapted weights."""
    query_losses = {}
    params = step.buffers.parameters

    def query_gradient(slot: int) -> None:   # right after `adapt`, in training mode
        batch = move_batch(step.objective.collate(step.query[slot]), step.ctx.device)
        with autocast_context(step.ctx.precision, step.ctx.device):
            loss = step.objective.loss(step.model, batch)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        query_losses[slot] = float(loss.detach())
        if not np.isfinite(query_losses[slot]):
            raise ToolkitError(f"a query loss became {query_losses[slot]}; lower --inner_lr")
        step.buffers.add([torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)])

    losses = _adapt_each(step, query_gradient)
    step.buffers.restore()
    for parameter, total in zip(params, step.buffers.total):   # the sums hold no autograd history
        parameter.grad = total / step.count
    step.outer.step()
    step.outer.zero_grad(set_to_none=True)
    moved = step.buffers.distance_moved()
    step.buffers.begin()
    return losses, query_losses, moved


def multitask_step(step: MetaStep, epsilon: float) -> tuple[dict[int, list[float]], dict[int, float], float]:
    """k optimizer steps of the inner optimizer on θ itself, step j on (1/m) Σ_i L_i(θ; batch_ij);
    the gradients of all processes are summed. Returns (losses, {}, ‖θ step‖)."""
    params = step.buffers.parameters
    losses: dict[int, list[float]] = {slot: [] for slot in step.mine}

    def sum_gradients() -> None:
        for p in params:
            if p.grad is None:   # a process without tasks this step, or a parameter no loss reaches
                p.grad = torch.zeros_like(p)
            if step.ctx.enabled:
                dist.all_reduce(p.grad)

    step.model.train()
    for j in range(max(step.inner_steps)):
        taking = [slot for slot in step.mine if len(step.support[slot]) > j]
        batches = [move_batch(step.objective.collate(step.support[slot][j]), step.ctx.device) for slot in taking]
        _, values = optimizer_step(step.model, step.inner(), batches, step.objective.loss, step.ctx,
                                   max_grad_norm=step.max_grad_norm, sync=step.ctx, world_factor=False,
                                   after_backward=sum_gradients, where="; lower --inner_lr")
        for slot, value in zip(taking, values):
            losses[slot].append(value)
    moved = step.buffers.distance_moved()
    step.buffers.begin()   # θ after the step: what an evaluation restores
    return losses, {}, moved


STEPS: dict[str, Callable[[MetaStep, float], tuple[dict[int, list[float]], dict[int, float], float]]] = {
    "reptile": reptile_step, "fomaml": fomaml_step, "multitask": multitask_step}


def inner_optimizer(kind: str, model: torch.nn.Module, learning_rate: float) -> torch.optim.Optimizer:
    """The inner-loop optimizer over the meta-parameters (torch's default kernels)."""
    return build_optimizer(meta_parameters(model), learning_rate, kind=kind, implementation=None)

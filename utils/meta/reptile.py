"""Reptile (first-order MAML) bookkeeping, in place on the model, with multi-tensor operations.

Batched Reptile (Nichol et al. 2018): from θ, each task of a meta-batch is adapted by k inner
steps to φ_i; then θ ← θ + ε_t (mean_i φ_i − θ), with ε annealed linearly.

No copy of the model is ever made: `ReptileBuffers` keeps one snapshot of θ and one running sum of
the φ_i (two parameter-sized buffers), the model's own parameters are adapted in place and
restored from the snapshot before each task, and every update is a `torch._foreach_*` call over
all parameters at once. Only floating-point parameters take part, each once (tied weights, such
as GPT-2's lm_head and wte, are one parameter); buffers are never touched.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from utils.meta.args import INNER_OPTIMIZERS


def meta_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The floating-point parameters of `model`, each exactly once (named_parameters drops tied
    duplicates), in a fixed order."""
    return [p for _, p in model.named_parameters() if p.is_floating_point()]


def annealed_epsilon(step: int, total_steps: int, initial: float, final: float = 0.0) -> float:
    """ε_t = initial·(1 − t/T) + final·t/T: the original's `outer_lr * (1 - step/steps)` when final = 0."""
    fraction = step / total_steps
    return initial * (1.0 - fraction) + final * fraction


class ReptileBuffers:
    """θ snapshot and running sum of adapted weights for one model's meta-parameters."""

    def __init__(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        self.parameters = list(parameters)
        with torch.no_grad():
            self.theta = [p.detach().clone() for p in self.parameters]
            self.total = [torch.zeros_like(p) for p in self.parameters]
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
    def add_adapted(self) -> None:
        """Add the model's current (adapted) weights φ_i to the running sum."""
        torch._foreach_add_(self.total, [p.detach() for p in self.parameters])
        self.count += 1

    @torch.no_grad()
    def distance_moved(self) -> float:
        """‖current weights − θ snapshot‖ (how far a step that trained θ in place moved it)."""
        return math.sqrt(sum(float(torch.sum((p.detach() - t) ** 2)) for p, t in zip(self.parameters, self.theta)))

    @torch.no_grad()
    def update(self, epsilon: float, count: int | None = None) -> float:
        """θ ← θ + ε (Σφ_i / count − θ), written into the model; returns ‖θ_new − θ_old‖.

        `count` is the number of adapted weights in the sum (all processes together when the sum
        was all-reduced); by default the ones added here.
        """
        count = self.count if count is None else count
        if count <= 0:
            raise ValueError("no adapted weights were added since begin()")
        torch._foreach_mul_(self.total, 1.0 / count)        # mean φ
        torch._foreach_sub_(self.total, self.theta)          # mean φ − θ
        step_norm = abs(epsilon) * math.sqrt(sum(float(n) ** 2 for n in torch._foreach_norm(self.total)))
        torch._foreach_add_(self.theta, self.total, alpha=epsilon)
        self.restore()
        return step_norm


@torch.no_grad()
def add_tensors(total: list[torch.Tensor], tensors: list[torch.Tensor]) -> None:
    """total += tensors, elementwise over the parameter list (e.g. FOMAML's query gradients)."""
    torch._foreach_add_(total, tensors)


def make_inner_optimizer(kind: str, parameters: list[torch.nn.Parameter], learning_rate: float) -> torch.optim.Optimizer:
    """The inner-loop optimizer: Adam with β1 = 0 as in the Reptile paper, AdamW, or plain SGD."""
    if kind == "adam":
        return torch.optim.Adam(parameters, lr=learning_rate, betas=(0.0, 0.999))
    if kind == "adamw":
        return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    if kind == "sgd":
        return torch.optim.SGD(parameters, lr=learning_rate)
    raise ValueError(f"inner optimizer must be one of {INNER_OPTIMIZERS}, got {kind!r}")

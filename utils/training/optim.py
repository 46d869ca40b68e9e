"""The optimizer factory, the learning-rate schedule, and the one optimizer step every training path
takes (`optimizer_step`). Gradient clipping lives here and nowhere else."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext

import torch
from torch.nn.parallel import DistributedDataParallel

from utils.run.errors import ToolkitError
from utils.training.runtime import Precision, RunContext, all_reduce_sum

OPTIMIZERS = ("adamw", "adam", "sgd")
OPTIMIZER_IMPLEMENTATIONS = ("auto", "fused", "foreach", "for-loop")
FUSED_ADAMW_DEVICES = ("cpu", "cuda")   # the devices torch's fused AdamW kernel accepts (torch 2.4+)
NO_DECAY = ("bias", "ln_", "layernorm", "layer_norm", "LayerNorm")   # in the names of parameters never decayed


class TrainingDivergedError(ToolkitError):
    """The loss became NaN or infinite."""


def resolve_optimizer_implementation(choice: str, device: torch.device) -> str:
    """`auto` means the fused AdamW kernel where torch has one for the device, else the for-loop."""
    if choice not in OPTIMIZER_IMPLEMENTATIONS:
        raise ValueError(f"optimizer implementation must be one of {OPTIMIZER_IMPLEMENTATIONS}, got {choice!r}")
    if choice == "auto":
        return "fused" if device.type in FUSED_ADAMW_DEVICES else "for-loop"
    if choice == "fused" and device.type not in FUSED_ADAMW_DEVICES:
        raise ToolkitError(f"--optimizer_implementation fused: torch has no fused AdamW for {device.type} tensors; "
                           "use foreach or for-loop")
    return choice


def build_optimizer(model: torch.nn.Module | Iterable[torch.nn.Parameter], learning_rate: float, *,
                    kind: str = "adamw", weight_decay: float = 0.0, device: torch.device | None = None,
                    implementation: str | None = "auto") -> torch.optim.Optimizer:
    """`kind`: "adamw" (biases and LayerNorm weights of a module not decayed), "adam" with β1 = 0 as in
    the Reptile paper (steps normalised by the gradient's running second moment, without momentum), or
    "sgd". `implementation` picks torch's AdamW kernel (equal up to float rounding); None leaves
    torch's default (as meta-learning does)."""
    if isinstance(model, torch.nn.Module):
        decay, no_decay = [], []
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                (no_decay if any(marker in name for marker in NO_DECAY) else decay).append(parameter)
        params: list = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    else:
        params = list(model)
    if kind == "adam":
        return torch.optim.Adam(params, lr=learning_rate, betas=(0.0, 0.999))
    if kind == "sgd":
        return torch.optim.SGD(params, lr=learning_rate)
    if kind != "adamw":
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {kind!r}")
    chosen = None if implementation is None else resolve_optimizer_implementation(implementation, device or torch.device("cpu"))
    return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay, fused=chosen == "fused" or None,
                             foreach=chosen == "foreach" if chosen in ("foreach", "for-loop") else None)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """lr × (step+1)/(warmup+1) during warm-up, then linear decay to 0 at `total_steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast_context(precision: Precision, device: torch.device):
    """torch.autocast for bf16/fp16, nothing for fp32."""
    return nullcontext() if precision.autocast_dtype is None else torch.autocast(device.type, precision.autocast_dtype)


def move_batch(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch's tensors on `device`."""
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Sequence[dict],
                   loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor], ctx: RunContext, *,
                   max_grad_norm: float, weights: Sequence[float] | None = None, sync: RunContext | None = None,
                   world_factor: bool = True, scheduler=None, scaler: torch.amp.GradScaler | None = None,
                   after_backward: Callable[[], None] | None = None, where: str = "") -> tuple[float, list[float]]:
    """One optimizer step on the weighted mean loss of `batches` (collated, on the device).

    With weights w_i (e.g. each micro-batch's supervised tokens) and W = Σ w over all processes of
    `sync` (None: this process alone), the step's objective is Σ_i (w_i / W) L_i: k accumulated
    micro-batches equal one k times larger. Under DDP (`model` wrapped) gradients are averaged over
    ranks, so each term is scaled by the world size too (`world_factor`); only the last micro-batch
    synchronises. Then `after_backward` (e.g. multi-task's sum of gradients over processes), unscale
    (fp16), clip to `max_grad_norm` (0: no clipping; the norm is still checked), stop on a non-finite
    loss or gradient norm before anything changes (TrainingDivergedError, `where` appended to its
    message), step, advance the scheduler, zero the gradients. Returns (the weighted mean loss over
    all processes, this process's loss of each batch)."""
    weights = [1.0] * len(batches) if weights is None else weights
    group = sync or RunContext(ctx.device)
    total = all_reduce_sum(group, [float(sum(weights))])[0]
    scale = group.world_size if world_factor else 1
    losses = []
    for index, (batch, weight) in enumerate(zip(batches, weights)):
        last = index == len(batches) - 1
        no_sync = model.no_sync() if isinstance(model, DistributedDataParallel) and not last else nullcontext()
        with no_sync:
            with autocast_context(ctx.precision, ctx.device):
                loss = loss_fn(model, batch)
            scaled = loss * (weight * scale / total)
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        losses.append(float(loss.detach()))
    if after_backward is not None:
        after_backward()
    if scaler is not None:
        scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm if max_grad_norm > 0 else math.inf)
    mean = all_reduce_sum(group, [sum(v * w for v, w in zip(losses, weights))])[0] / total
    if not math.isfinite(mean) or (scaler is None and not math.isfinite(float(grad_norm))):
        raise TrainingDivergedError(f"the training loss became {mean} (gradient norm {float(grad_norm)}){where}")
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return mean, losses

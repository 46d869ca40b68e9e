"""How a run optimises: its size in steps (`plan_schedule`), AdamW with biases and LayerNorm weights
left undecayed (`build_optimizer`), and the linear warm-up then linear decay of the learning rate
(`linear_schedule`). The loop that uses them is `utils.training.loop`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from utils.run.errors import ToolkitError
from utils.training.args import LoopSettings

# Parameters whose names contain one of these are not weight-decayed (biases, LayerNorm weights).
NO_DECAY = ("bias", "ln_", "layernorm", "layer_norm", "LayerNorm")


@dataclass(frozen=True)
class Schedule:
    """Derived sizes of a run (recorded in run_args.json)."""

    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    effective_batch_size: int


def plan_schedule(num_rows: int, settings: LoopSettings, world_size: int) -> Schedule:
    """Steps per epoch and in total; --max_steps wins over --num_train_epochs.

    Raises:
        ToolkitError: there is not one full batch per process.
    """
    batches = math.ceil(num_rows / settings.per_device_train_batch_size) // world_size
    if batches == 0:
        raise ToolkitError(f"{num_rows} training rows do not make one batch of "
                           f"{settings.per_device_train_batch_size} per process ({world_size} processes)")
    steps_per_epoch = max(1, batches // settings.gradient_accumulation_steps)
    total = settings.max_steps if settings.max_steps else math.ceil(settings.num_train_epochs * steps_per_epoch)
    return Schedule(batches_per_epoch=batches, steps_per_epoch=steps_per_epoch, total_steps=total,
                    warmup_steps=int(round(settings.warmup_ratio * total)),
                    effective_batch_size=settings.per_device_train_batch_size
                    * settings.gradient_accumulation_steps * world_size)


def build_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float,
                    device: torch.device, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm weights are not decayed. Fused kernels on GPU."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if any(marker in name for marker in NO_DECAY) else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device.type == "cuda")


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """lr × step/warmup during warm-up, then linear decay to 0 at `total_steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every parameter the optimizer updates."""
    return [parameter for group in optimizer.param_groups for parameter in group["params"]]

"""How a run optimises: its size in steps (`plan_schedule`), AdamW with biases and LayerNorm weights
left undecayed (`build_optimizer`), and the linear warm-up then linear decay of the learning rate
(`linear_schedule`). The loop that uses them is `utils.training.loop`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from utils.run.errors import ToolkitError
from utils.training.args import OPTIMIZER_IMPLEMENTATIONS, LoopSettings, padding_multiple
from utils.training.batching import length_grouped_batches

# Parameters whose names contain one of these are not weight-decayed (biases, LayerNorm weights).
NO_DECAY = ("bias", "ln_", "layernorm", "layer_norm", "LayerNorm")


@dataclass(frozen=True)
class Schedule:
    """Derived sizes of a run (recorded in run_args.json)."""

    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    effective_batch_size: float   # sequences per optimizer step (a mean with token-budget batches)


def plan_schedule(num_rows: int, settings: LoopSettings, world_size: int,
                  lengths: Sequence[int] | None = None) -> Schedule:
    """Steps per epoch and in total; --max_steps wins over --num_train_epochs. With token-budget
    batches the batches per epoch are those of epoch 0 (`lengths` needed; later epochs differ by a
    few), and the effective batch size is the mean number of sequences per step.

    Raises:
        ToolkitError: there is not one full batch per process.
    """
    if settings.max_tokens_per_batch and settings.group_by_length:
        if lengths is None:
            raise ValueError("token-budget batches need the rows' lengths to plan the schedule")
        try:
            count = len(length_grouped_batches(lengths, settings.per_device_train_batch_size, seed=settings.seed,
                                               epoch=0, max_tokens=settings.max_tokens_per_batch,
                                               multiple=padding_multiple(settings)))
        except ValueError as err:
            raise ToolkitError(str(err)) from None
        batches = count // world_size
    else:
        batches = math.ceil(num_rows / settings.per_device_train_batch_size) // world_size
    if batches == 0:
        raise ToolkitError(f"{num_rows} training rows do not make one batch of "
                           f"{settings.per_device_train_batch_size} per process ({world_size} processes)")
    steps_per_epoch = max(1, batches // settings.gradient_accumulation_steps)
    total = settings.max_steps if settings.max_steps else math.ceil(settings.num_train_epochs * steps_per_epoch)
    per_batch = num_rows / max(1, batches * world_size) if settings.max_tokens_per_batch and settings.group_by_length \
        else settings.per_device_train_batch_size
    return Schedule(batches_per_epoch=batches, steps_per_epoch=steps_per_epoch, total_steps=total,
                    warmup_steps=int(round(settings.warmup_ratio * total)),
                    effective_batch_size=per_batch * settings.gradient_accumulation_steps * world_size)


# Devices whose tensors torch's fused AdamW kernel accepts (torch.optim.optimizer's list, as of torch 2.4+).
FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def resolve_optimizer_implementation(choice: str, device: torch.device) -> str:
    """`auto` means the fused AdamW kernel where torch has one for the device (CPU and CUDA), else
    the for-loop; chosen by measurement (benchmarks/training_throughput.py): on this project's CPU
    runs the fused kernel replaced 300 per-tensor sqrt/lerp/addcdiv calls per step of a tiny GPT-2
    and was the fastest of the three.

    Raises:
        ToolkitError: `fused` on a device torch has no fused kernel for.
    """
    if choice not in OPTIMIZER_IMPLEMENTATIONS:
        raise ValueError(f"optimizer implementation must be one of {OPTIMIZER_IMPLEMENTATIONS}, got {choice!r}")
    if choice == "auto":
        return "fused" if device.type in FUSED_ADAMW_DEVICES else "for-loop"
    if choice == "fused" and device.type not in FUSED_ADAMW_DEVICES:
        raise ToolkitError(f"--optimizer_implementation fused: torch has no fused AdamW for {device.type} tensors; "
                           "use foreach or for-loop")
    return choice


def build_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float,
                    device: torch.device, betas: tuple[float, float] = (0.9, 0.999),
                    implementation: str = "auto") -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm weights are not decayed.

    `implementation` (see `resolve_optimizer_implementation`) picks torch's kernel: one fused
    kernel over all tensors, multi-tensor `_foreach_*` ops, or a Python loop over tensors. All three
    compute the same update up to float rounding.
    """
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if any(marker in name for marker in NO_DECAY) else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kind = resolve_optimizer_implementation(implementation, device)
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=kind == "fused" or None,
                             foreach=kind == "foreach" if kind != "fused" else None)


def speed_choices(settings: LoopSettings, attention: str, device: torch.device) -> dict[str, object]:
    """What the run's speed options resolved to, for run_args.json's derived values (`attention`:
    the loaded model's `config._attn_implementation`)."""
    return {"optimizer_implementation": resolve_optimizer_implementation(settings.optimizer_implementation, device),
            "attn_implementation": attention, "torch_compile": settings.torch_compile,
            "padded_width_multiple": padding_multiple(settings)}


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

"""The one training loop of the project (QA, classification, and Reptile's inner steps).

Plain PyTorch: AdamW without weight decay on biases and LayerNorm weights, linear warm-up then
linear decay (both in `utils.training.schedule`), gradient accumulation and clipping, bf16/fp16
autocast on GPU, length-grouped dynamically padded batches, evaluation and checkpoints every N
steps with a rotation limit, exact resumption, and a stop with a message on a non-finite loss.
Under `torchrun` / `accelerate launch` it trains data-parallel with DDP; only rank 0 writes.
Inference over a set of rows (`predict`) is in `utils.training.inference`; the checkpoint folders and
resumption in `utils.training.checkpoints`; `--torch_compile` in `utils.training.compilation`.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch.nn.parallel import DistributedDataParallel

from utils.training.batching import length_grouped_batches, shard_for_training
from utils.training.checkpoints import (CHECKPOINT_PREFIX, TrainState, read_trainer_state, restore_training_checkpoint,
                                        rotate_checkpoints, save_training_checkpoint)
from utils.training.compilation import Compiler
from utils.training.distributed import DistContext, all_reduce_sum
from utils.run.errors import ToolkitError
from utils.run.outputs import JsonlLog
from utils.run.progress import PROGRESS_INTERVAL_S, Progress
from utils.training.runtime import Precision
from utils.training.args import LoopSettings, padding_multiple
from utils.training.schedule import build_optimizer, linear_schedule, plan_schedule

logger = logging.getLogger(__name__)


class Objective(Protocol):
    name: str
    pad_token_id: int

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]: ...

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...


class TrainingDivergedError(ToolkitError):
    """The loss became NaN or infinite."""


def autocast_context(precision: Precision, device: torch.device):
    """torch.autocast for bf16/fp16, nothing for fp32."""
    if precision.autocast_dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.autocast_dtype)


def move_batch(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch's tensors on `device`."""
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def supervised_items(batch: dict[str, torch.Tensor]) -> int:
    """What a batch's mean loss averages over: next-token labels that are not -100 (causal LM),
    else its rows (span and classification losses are means over sequences)."""
    if "labels" in batch and batch["labels"].dim() == 2:
        return int((batch["labels"][:, 1:] != -100).sum())
    return int(batch["input_ids"].size(0))


# ----------------------------------------------------------------------------- the loop

@dataclass
class LoopContext:
    """What the loop needs besides hyper-parameters."""

    device: torch.device
    precision: Precision
    dist: DistContext
    output_dir: Path
    log: JsonlLog | None
    progress: bool = False
    # Without a bar (no terminal), where the loop is goes to the log every this many seconds.
    progress_interval_s: float = PROGRESS_INTERVAL_S
    # --torch_compile: the process's one Compiler (utils.training.compilation), else None.
    compiler: Compiler | None = None


def loss_function(objective: Objective, ctx: LoopContext) -> Callable[[torch.nn.Module, dict], torch.Tensor]:
    """The objective's loss, compiled when the run compiles."""
    return ctx.compiler.function(objective.loss) if ctx.compiler is not None else objective.loss


def collate_for(objective: Objective, rows: list[dict], ctx: LoopContext) -> dict[str, torch.Tensor]:
    """The objective's batch of `rows`, padded to its bucket's width when the run compiles."""
    batch = objective.collate(rows)
    return ctx.compiler.pad(batch, objective.pad_token_id) if ctx.compiler is not None else batch


def train(model: torch.nn.Module, rows: Sequence[dict], lengths: Sequence[int], objective: Objective,
          settings: LoopSettings, ctx: LoopContext, *, save_model: Callable[[torch.nn.Module, Path], None],
          evaluate: Callable[[torch.nn.Module], dict] | None = None, resume_from: Path | None = None,
          parent: dict | None = None, shape_may_change: frozenset[str] = frozenset()) -> dict[str, float]:
    """Train `model` (already on ctx.device) on `rows` and return the training metrics.

    Args:
        rows: training features; `rows[i]` is one example for `objective.collate`.
        lengths: token length of each row (for length grouping).
        save_model: writes the (unwrapped) model and tokenizer into a folder.
        evaluate: called on rank 0's and every rank's model every `eval_steps`; returns metrics
            (already prefixed, e.g. eval_f1) that are logged.
        resume_from: a checkpoint-N folder whose weights the model already holds.
        parent: provenance of the starting weights, kept in the training state for lineage.
        shape_may_change: keys of the run's shape (e.g. total_steps) a resumed run may change;
            any other difference from the checkpoint's shape is an error.

    Returns:
        train_loss (mean over all optimizer steps), train_runtime, train_steps,
        train_tokens_per_second, train_samples_per_second, epoch.

    Raises:
        TrainingDivergedError: the loss (or, outside fp16, the gradient norm) is not finite.
    """
    dist_ctx = ctx.dist
    if settings.torch_compile != (ctx.compiler is not None):
        raise ValueError("settings.torch_compile and ctx.compiler disagree; build ctx.compiler with make_compiler")
    schedule = plan_schedule(len(rows), settings, dist_ctx.world_size, lengths)
    optimizer = build_optimizer(model, settings.learning_rate, settings.weight_decay, ctx.device,
                                implementation=settings.optimizer_implementation)
    scheduler = linear_schedule(optimizer, schedule.warmup_steps, schedule.total_steps)
    scaler = torch.amp.GradScaler(ctx.device.type) if ctx.precision.needs_grad_scaler else None
    shape = {"objective": objective.name, "per_device_train_batch_size": settings.per_device_train_batch_size,
             "gradient_accumulation_steps": settings.gradient_accumulation_steps, "world_size": dist_ctx.world_size,
             "total_steps": schedule.total_steps, "seed": settings.seed, "rows": len(rows)}
    state = TrainState(parent=parent, run_shape=shape)
    if resume_from is not None:
        saved = read_trainer_state(resume_from)
        changed = {k: (saved.run_shape.get(k), v) for k, v in shape.items()
                   if saved.run_shape is not None and saved.run_shape.get(k) != v and k not in shape_may_change}
        if changed:
            raise ToolkitError(f"--resume_from_checkpoint {resume_from} was saved by a run of another shape "
                               f"(saved vs now: {changed}); resume with the same settings and data")
        state = restore_training_checkpoint(resume_from, optimizer, scheduler, scaler, dist_ctx)
        logger.info("resumed from %s at step %d", resume_from, state.global_step)
    wrapped = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None) \
        if dist_ctx.enabled else model
    model.train()
    # Only rank 0 reports where the run is: the other ranks are at the same step.
    bar = Progress(schedule.total_steps, "training", bar=ctx.progress, initial=state.global_step,
                   log=ctx.log.log if ctx.log is not None and dist_ctx.is_main else None,
                   interval_s=ctx.progress_interval_s if dist_ctx.is_main else None)
    window = {"loss": 0.0, "steps": 0, "tokens": 0.0, "time": time.perf_counter()}
    loss_fn = loss_function(objective, ctx)
    timed = ctx.compiler.timed if ctx.compiler is not None else nullcontext
    compiled_before = ctx.compiler.report() if ctx.compiler is not None else {}
    started = time.perf_counter()
    tokens_at_start, steps_at_start = state.tokens_seen, state.global_step
    while state.global_step < schedule.total_steps:
        batches = shard_for_training(
            length_grouped_batches(lengths, settings.per_device_train_batch_size, seed=settings.seed,
                                   epoch=state.epoch, grouped=settings.group_by_length,
                                   max_tokens=settings.max_tokens_per_batch, multiple=padding_multiple(settings)),
            dist_ctx.rank, dist_ctx.world_size)
        accumulation = settings.gradient_accumulation_steps
        # Whole groups of micro-batches only; an epoch shorter than one group is one short group.
        usable = len(batches) - len(batches) % accumulation if len(batches) >= accumulation else len(batches)
        position = state.batches_done_in_epoch
        while position < usable and state.global_step < schedule.total_steps:
            group = batches[position:position + settings.gradient_accumulation_steps]
            with timed():
                loss_value, tokens = _optimizer_step(wrapped, model, [[rows[i] for i in b] for b in group], objective,
                                                     loss_fn, optimizer, scheduler, scaler, settings, ctx, state)
            position += len(group)
            state.batches_done_in_epoch = position
            state.global_step += 1
            state.loss_sum += loss_value
            state.loss_count += 1
            state.tokens_seen += tokens
            state.passes += len(group)
            window["loss"] += loss_value
            window["steps"] += 1
            window["tokens"] += tokens
            bar.update(1)
            if state.global_step % settings.logging_steps == 0 or state.global_step == schedule.total_steps:
                _log_window(window, state, scheduler, ctx, bar)
            if evaluate is not None and settings.eval_steps and state.global_step % settings.eval_steps == 0 \
                    and state.global_step < schedule.total_steps:
                metrics = evaluate(model)
                model.train()
                if dist_ctx.is_main and ctx.log is not None:
                    ctx.log.log({"step": state.global_step, **metrics})
            if settings.save_steps and state.global_step % settings.save_steps == 0 \
                    and state.global_step < schedule.total_steps:
                folder = ctx.output_dir / f"{CHECKPOINT_PREFIX}{state.global_step}"
                save_training_checkpoint(folder, state, optimizer, scheduler, scaler,
                                          lambda f: save_model(model, f), dist_ctx)
                if dist_ctx.is_main:
                    rotate_checkpoints(ctx.output_dir, settings.save_total_limit)
        if position >= usable:
            state.epoch += 1
            state.batches_done_in_epoch = 0
    bar.close()
    runtime = time.perf_counter() - started
    compiled = ctx.compiler.report() if ctx.compiler is not None else {}
    if compiled and dist_ctx.is_main and ctx.log is not None:
        ctx.log.log({"step": state.global_step, "event": "compilation", **compiled})
    # This call's share (a process compiles once for all the runs it trains, e.g. a target's seeds).
    compiled = {key: compiled[key] - compiled_before[key] for key in ("compiled_graphs", "compile_seconds")} \
        if compiled else {}
    total_tokens, all_tokens, all_passes = all_reduce_sum(
        dist_ctx, [state.tokens_seen - tokens_at_start, state.tokens_seen, float(state.passes)])
    return {
        "train_loss": state.loss_sum / max(1, state.loss_count),
        "train_runtime": runtime,
        "train_steps": state.global_step,
        "train_tokens_per_second": total_tokens / runtime if runtime > 0 else 0.0,
        "train_samples_per_second": (state.global_step - steps_at_start) * schedule.effective_batch_size / runtime
        if runtime > 0 else 0.0,
        "epoch": state.epoch + state.batches_done_in_epoch / max(1, schedule.batches_per_epoch),
        # The whole run's, resumed parts included, all processes together (utils.training.compute).
        "train_passes": int(round(all_passes)),
        "train_tokens": int(round(all_tokens)),
        # With --torch_compile: graphs compiled during this call and the time of the steps that compiled.
        **{f"train_{key}": value for key, value in compiled.items()},
    }


def _optimizer_step(wrapped: torch.nn.Module, model: torch.nn.Module, micro_batches: list[list[dict]],
                    objective: Objective, loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor], optimizer,
                    scheduler, scaler, settings: LoopSettings, ctx: LoopContext, state: TrainState
                    ) -> tuple[float, float]:
    """One optimizer step over `micro_batches` (gradient accumulation). Returns the mean loss
    over ranks and micro-batches, and this rank's number of real (non-pad) tokens."""
    total_loss = 0.0
    tokens = 0.0
    batches = [move_batch(collate_for(objective, rows, ctx), ctx.device) for rows in micro_batches]
    # Each micro-batch's loss is a mean over its own supervised items (answer tokens, sentences);
    # weighting by those counts over the whole step (all ranks) makes k accumulated micro-batches
    # equal to one k times larger. DDP then averages gradients over ranks, hence the world size.
    weights = [supervised_items(batch) for batch in batches]
    step_items = all_reduce_sum(ctx.dist, [float(sum(weights))])[0]
    for index, (batch, weight) in enumerate(zip(batches, weights)):
        tokens += float(batch["attention_mask"].sum())
        last = index == len(batches) - 1
        # DDP averages gradients only on the last micro-batch of the step.
        sync = nullcontext() if last or not ctx.dist.enabled else wrapped.no_sync()
        with sync:
            with autocast_context(ctx.precision, ctx.device):
                loss = loss_fn(wrapped, batch)
            scaled = loss * (weight * ctx.dist.world_size / step_items)
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total_loss += float(loss.detach()) * weight
    if scaler is not None:
        scaler.unscale_(optimizer)
    if settings.max_grad_norm > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
    else:  # 0 turns clipping off; the norm is still needed for the divergence check
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
    reduced_loss = all_reduce_sum(ctx.dist, [total_loss])[0] / step_items
    bad = not math.isfinite(reduced_loss) or (scaler is None and not math.isfinite(float(grad_norm)))
    if bad:
        raise TrainingDivergedError(
            f"the training loss became {reduced_loss} (gradient norm {float(grad_norm)}) at step "
            f"{state.global_step + 1}, epoch {state.epoch}; no checkpoint was written for it, earlier "
            "ones are intact. Lower --learning_rate, add warm-up, or use --precision fp32.")
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return reduced_loss, tokens


def _log_window(window: dict, state: TrainState, scheduler, ctx: LoopContext, bar: Progress) -> None:
    elapsed = time.perf_counter() - window["time"]
    tokens = all_reduce_sum(ctx.dist, [window["tokens"]])[0]
    event = {"step": state.global_step, "epoch": state.epoch, "loss": window["loss"] / max(1, window["steps"]),
             "learning_rate": scheduler.get_last_lr()[0], "tokens_per_second": tokens / elapsed if elapsed else 0.0}
    if ctx.dist.is_main:
        if ctx.log is not None:
            ctx.log.log(event)
        bar.set_postfix(loss=f"{event['loss']:.4f}", tok_s=f"{event['tokens_per_second']:.0f}")
    window.update(loss=0.0, steps=0, tokens=0.0, time=time.perf_counter())

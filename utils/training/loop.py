"""The one training loop of the project (QA, classification, and Reptile's inner steps).

Plain PyTorch: AdamW without weight decay on biases and LayerNorm weights, linear warm-up then
linear decay (both in `utils.training.schedule`), gradient accumulation and clipping, bf16/fp16
autocast on GPU, length-grouped dynamically padded batches, evaluation and checkpoints every N
steps with a rotation limit, exact resumption, and a stop with a message on a non-finite loss.
Under `torchrun` / `accelerate launch` it trains data-parallel with DDP; only rank 0 writes.
Inference over a set of rows (`predict`) is in `utils.training.inference`.
"""
from __future__ import annotations

import logging
import math
import re
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch.nn.parallel import DistributedDataParallel

from utils.training.batching import length_grouped_batches, shard_for_training
from utils.training.distributed import DistContext, all_reduce_sum, barrier
from utils.run.errors import ToolkitError
from utils.run.fs import disk_full_error, is_disk_full, require_free_space
from utils.run.outputs import JsonlLog, read_json_object, write_json
from utils.run.progress import PROGRESS_INTERVAL_S, Progress
from utils.training.runtime import Precision, restore_rng_state, save_rng_state
from utils.training.args import LoopSettings
from utils.training.schedule import build_optimizer, linear_schedule, optimizer_parameters, plan_schedule

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE_FILE = "trainer_state.json"


class Objective(Protocol):
    name: str

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]: ...

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...


class TrainingDivergedError(ToolkitError):
    """The loss became NaN or infinite."""


@dataclass
class TrainState:
    """Where the loop is; saved in each checkpoint so that a resumed run continues exactly."""

    global_step: int = 0
    epoch: int = 0
    batches_done_in_epoch: int = 0
    tokens_seen: float = 0.0   # this process's real tokens so far
    passes: int = 0            # this process's forward/backward passes (micro-batches) so far
    loss_sum: float = 0.0
    loss_count: int = 0
    parent: dict | None = None
    run_shape: dict | None = None
    history: list[dict] = field(default_factory=list)



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


# ----------------------------------------------------------------------------- checkpoints

def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """checkpoint-N folders with a complete training state, oldest first."""
    found = []
    for path in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*"):
        match = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", path.name)
        if match and (path / TRAINER_STATE_FILE).exists():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def resolve_resume_dir(value: str, output_dir: Path) -> Path:
    """`latest` means the newest complete checkpoint-N in --output_dir.

    Raises:
        ToolkitError: nothing to resume from.
    """
    if value == "latest":
        found = checkpoint_dirs(output_dir)
        if not found:
            raise ToolkitError(f"--resume_from_checkpoint latest: no checkpoint-N with {TRAINER_STATE_FILE} "
                               f"in {output_dir}")
        return found[-1]
    path = Path(value)
    if not (path / TRAINER_STATE_FILE).exists():
        raise ToolkitError(f"--resume_from_checkpoint {path}: no {TRAINER_STATE_FILE} there (not a training "
                           "checkpoint, or its save was interrupted)")
    return path


def read_trainer_state(folder: Path) -> TrainState:
    """The TrainState saved in a checkpoint folder.

    Raises:
        ToolkitError: the state file is missing or damaged.
    """
    saved = read_json_object(folder / TRAINER_STATE_FILE, "resume from another checkpoint-N")
    if saved is None:
        raise ToolkitError(f"{folder}: no {TRAINER_STATE_FILE} (not a training checkpoint, or its save was interrupted)")
    return TrainState(**{k: v for k, v in saved.items() if k in TrainState.__dataclass_fields__})


def _save_training_checkpoint(folder: Path, state: TrainState, optimizer, scheduler, scaler,
                              save_model: Callable[[Path], None], context: DistContext) -> None:
    """Model (atomic, by the caller's function), optimizer, scheduler, RNG, then the state file
    last: a folder without trainer_state.json is never resumed from. A full disk removes the
    incomplete folder and stops the run with one line (earlier checkpoints stay)."""
    if context.is_main:
        # The weights, and the optimizer's two moments of the same size.
        needed = 3 * sum(p.numel() * p.element_size() for p in optimizer_parameters(optimizer))
        require_free_space(folder.parent, needed, f"saving the training checkpoint {folder}")
        try:
            save_model(folder)
            torch.save(optimizer.state_dict(), folder / "optimizer.pt")
            torch.save(scheduler.state_dict(), folder / "scheduler.pt")
            if scaler is not None:
                torch.save(scaler.state_dict(), folder / "scaler.pt")
        except BaseException as err:
            if not is_disk_full(err):
                raise
            shutil.rmtree(folder, ignore_errors=True)
            raise disk_full_error(f"saving the training checkpoint {folder}", folder.parent, needed) from None
    barrier(context)
    save_rng_state(folder, context.rank)
    barrier(context)
    if context.is_main:
        write_json(folder / TRAINER_STATE_FILE, asdict(state))



def _rotate_checkpoints(output_dir: Path, limit: int | None) -> None:
    if limit is None:
        return
    for old in checkpoint_dirs(output_dir)[:-limit] if limit > 0 else checkpoint_dirs(output_dir):
        shutil.rmtree(old)


def restore_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Load an optimizer's saved moments and step counts but keep this run's hyper-parameters
    (learning rate, weight decay, betas): `load_state_dict` alone brings back the saved ones and
    would silently ignore a change a resumed run was allowed to make (--allow_changed_args)."""
    current = [{key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, hyper in zip(optimizer.param_groups, current):
        group.update(hyper)


def _restore_training_checkpoint(folder: Path, optimizer, scheduler, scaler, context: DistContext) -> TrainState:
    """Optimizer moments, schedule position, loss scale and RNG of `folder`, with this run's
    hyper-parameters (see `restore_optimizer_state`): the learning rate is this run's peak at the
    restored position of the schedule."""
    restore_optimizer_state(optimizer, torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu"))
    peaks = [group["initial_lr"] for group in optimizer.param_groups]
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    scheduler.base_lrs = peaks
    for group, peak, factor in zip(optimizer.param_groups, peaks, scheduler.lr_lambdas):
        group["lr"] = peak * factor(scheduler.last_epoch)
    if scaler is not None and (folder / "scaler.pt").exists():
        scaler.load_state_dict(torch.load(folder / "scaler.pt", weights_only=True))
    restore_rng_state(folder, context.rank)
    return read_trainer_state(folder)


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
    schedule = plan_schedule(len(rows), settings, dist_ctx.world_size, lengths)
    optimizer = build_optimizer(model, settings.learning_rate, settings.weight_decay, ctx.device)
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
        state = _restore_training_checkpoint(resume_from, optimizer, scheduler, scaler, dist_ctx)
        logger.info("resumed from %s at step %d", resume_from, state.global_step)
    wrapped = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None) \
        if dist_ctx.enabled else model
    model.train()
    # Only rank 0 reports where the run is: the other ranks are at the same step.
    bar = Progress(schedule.total_steps, "training", bar=ctx.progress, initial=state.global_step,
                   log=ctx.log.log if ctx.log is not None and dist_ctx.is_main else None,
                   interval_s=ctx.progress_interval_s if dist_ctx.is_main else None)
    window = {"loss": 0.0, "steps": 0, "tokens": 0.0, "time": time.perf_counter()}
    started = time.perf_counter()
    tokens_at_start, steps_at_start = state.tokens_seen, state.global_step
    while state.global_step < schedule.total_steps:
        batches = shard_for_training(
            length_grouped_batches(lengths, settings.per_device_train_batch_size, seed=settings.seed,
                                   epoch=state.epoch, grouped=settings.group_by_length,
                                   max_tokens=settings.max_tokens_per_batch),
            dist_ctx.rank, dist_ctx.world_size)
        accumulation = settings.gradient_accumulation_steps
        # Whole groups of micro-batches only; an epoch shorter than one group is one short group.
        usable = len(batches) - len(batches) % accumulation if len(batches) >= accumulation else len(batches)
        position = state.batches_done_in_epoch
        while position < usable and state.global_step < schedule.total_steps:
            group = batches[position:position + settings.gradient_accumulation_steps]
            loss_value, tokens = _optimizer_step(wrapped, model, [[rows[i] for i in b] for b in group], objective,
                                                 optimizer, scheduler, scaler, settings, ctx, state)
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
                _save_training_checkpoint(folder, state, optimizer, scheduler, scaler,
                                          lambda f: save_model(model, f), dist_ctx)
                if dist_ctx.is_main:
                    _rotate_checkpoints(ctx.output_dir, settings.save_total_limit)
        if position >= usable:
            state.epoch += 1
            state.batches_done_in_epoch = 0
    bar.close()
    runtime = time.perf_counter() - started
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
    }


def _optimizer_step(wrapped: torch.nn.Module, model: torch.nn.Module, micro_batches: list[list[dict]],
                    objective: Objective, optimizer, scheduler, scaler, settings: LoopSettings,
                    ctx: LoopContext, state: TrainState) -> tuple[float, float]:
    """One optimizer step over `micro_batches` (gradient accumulation). Returns the mean loss
    over ranks and micro-batches, and this rank's number of real (non-pad) tokens."""
    total_loss = 0.0
    tokens = 0.0
    batches = [move_batch(objective.collate(rows), ctx.device) for rows in micro_batches]
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
                loss = objective.loss(wrapped, batch)
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

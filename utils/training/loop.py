"""The one training loop (QA, classification) in plain PyTorch, with its settings and flags, the step
plan, length-grouped batches, and inference over a set of rows (`predict`). Under `torchrun` /
`accelerate launch` it trains data-parallel with DDP; only rank 0 writes."""
from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from utils.run.errors import ToolkitError
from utils.run.flags import LEARNING_RATE, number
from utils.run.progress import Progress
from utils.training.checkpoints import (TrainState, check_run_shape, checkpoint_folder, restore_training_checkpoint,
                                        save_training_checkpoint)
from utils.training.optim import (OPTIMIZER_IMPLEMENTATIONS, autocast_context, build_optimizer, linear_schedule,
                                  move_batch, optimizer_step, resolve_optimizer_implementation)
from utils.training.runtime import (Compiler, RunContext, all_reduce_sum, bucket_width, compilation_totals,
                                    gather_to_main)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- settings and flags
@dataclass(frozen=True)
class LoopSettings:
    """Hyper-parameters of the loop (per-device batch size; steps are optimizer steps)."""

    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    num_train_epochs: float = 3.0
    max_steps: int | None = None
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    logging_steps: int = 50
    eval_steps: int | None = None
    save_steps: int | None = None
    save_total_limit: int | None = None
    seed: int = 42
    group_by_length: bool = True
    max_tokens_per_batch: int | None = None   # token-budget batches (`length_grouped_batches`)
    optimizer_implementation: str = "auto"    # AdamW kernel (utils.training.optim)
    torch_compile: bool = False               # compiled forward passes (utils.training.runtime.Compiler)
    compile_width_multiple: int = 64          # padded widths are multiples of this when compiled


def padding_multiple(settings: LoopSettings) -> int:
    """What token-budget batches round widths up to: the compile bucket when compiling, else 8."""
    return settings.compile_width_multiple if settings.torch_compile else 8


def add_eval_batch_size_arg(group: argparse._ActionsContainer) -> None:
    """--per_device_eval_batch_size, for every script that evaluates."""
    group.add_argument("--per_device_eval_batch_size", type=number(int, minimum=1), default=32,
                       help="Sequences per device at evaluation (prediction only: results do not depend on it).")


def add_training_args(parser: argparse.ArgumentParser, *, learning_rate: float, batch_size: int, epochs: float,
                      weight_decay: float = 0.0, warmup_ratio: float = 0.0,
                      batch_flag: str = "--per_device_train_batch_size", epochs_flag: str = "--num_train_epochs",
                      periodic: bool = True) -> None:
    """The loop's flags (`batch_flag` / `epochs_flag`: the original scripts' names); `periodic=False`
    leaves out periodic evaluation, checkpoints and resumption."""
    group = parser.add_argument_group("training")
    group.add_argument("--learning_rate", type=LEARNING_RATE, default=learning_rate, help="Peak AdamW learning rate.")
    group.add_argument("--weight_decay", type=number(float, minimum=0), default=weight_decay,
                       help="AdamW weight decay (never on biases and LayerNorm weights).")
    group.add_argument("--warmup_ratio", type=number(float, minimum=0, maximum=1), default=warmup_ratio,
                       help="Share of the steps (0 to 1) with a linear warm-up, before the linear decay to 0.")
    group.add_argument(epochs_flag, dest="num_train_epochs", type=number(float, above=0), default=epochs,
                       help="Passes over the training data (ignored when --max_steps is given).")
    group.add_argument("--max_steps", type=number(int, minimum=1), default=None,
                       help="Train for exactly this many optimizer steps (overrides the epochs).")
    group.add_argument(batch_flag, dest="per_device_train_batch_size", type=number(int, minimum=1), default=batch_size,
                       help="Sequences per device per micro-batch.")
    add_eval_batch_size_arg(group)
    group.add_argument("--gradient_accumulation_steps", type=number(int, minimum=1), default=1,
                       help="Micro-batches per optimizer step (effective batch = batch × steps × processes).")
    group.add_argument("--max_grad_norm", type=number(float, minimum=0), default=1.0, help="Gradient clipping norm (0: off).")
    group.add_argument("--logging_steps", type=number(int, minimum=1), default=50, help="Log loss, learning rate and tokens/s every N steps.")
    group.add_argument("--max_tokens_per_batch", type=number(int, minimum=1), default=None,
                       help="Token-budget batches: each micro-batch holds as many length-grouped sequences as fit "
                            "in this many padded tokens (width rounded up to 8), instead of a fixed number.")
    group.add_argument("--no_group_by_length", action="store_true", help="Random batches, not length-grouped (more padding).")
    speed = parser.add_argument_group("speed (results agree within float rounding; see docs/outputs_and_reliability.md)")
    speed.add_argument("--optimizer_implementation", choices=OPTIMIZER_IMPLEMENTATIONS, default="auto",
                       help="AdamW kernel: one fused kernel, multi-tensor foreach ops, or a Python for-loop. "
                            "auto: fused on CPU and CUDA, else for-loop.")
    speed.add_argument("--attn_implementation", choices=("auto", "sdpa", "eager"), default="auto",
                       help="transformers' attention: sdpa (torch's scaled_dot_product_attention) or eager. "
                            "auto: transformers' choice, sdpa where the architecture has it.")
    speed.add_argument("--torch_compile", action="store_true",
                       help="torch.compile the training and evaluation forward passes (static shapes: batches "
                            "padded to multiples of --compile_width_multiple).")
    speed.add_argument("--compile_width_multiple", type=number(int, minimum=1), default=64,
                       help="With --torch_compile, padded widths are multiples of this (fewer graphs, more padding).")
    if not periodic:
        return
    group.add_argument("--eval_steps", type=number(int, minimum=1), default=None, help="Also evaluate every N steps (default: only at the end).")
    group.add_argument("--save_steps", type=number(int, minimum=1), default=None,
                       help="Write output_dir/checkpoint-N every N steps (model, optimizer, scheduler, RNG).")
    group.add_argument("--save_total_limit", type=number(int, minimum=1), default=None, help="Keep the newest N checkpoint-N.")
    group.add_argument("--resume_from_checkpoint", type=str, default=None,
                       help="Continue a run from a checkpoint-N folder, or 'latest' for the newest in --output_dir.")


def loop_settings(args: argparse.Namespace, **overrides) -> LoopSettings:
    """LoopSettings from parsed flags (the Namespace is not changed); `overrides` win."""
    values = {f.name: getattr(args, f.name) for f in fields(LoopSettings) if hasattr(args, f.name)}
    return LoopSettings(**{**values, "group_by_length": not args.no_group_by_length, **overrides})


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
    """Steps per epoch and in total (--max_steps wins). Token-budget batches (`lengths` needed) count
    epoch 0's batches, and the effective batch size is the mean number of sequences per step."""
    token_budget = settings.max_tokens_per_batch and settings.group_by_length
    if token_budget:
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
    per_batch = num_rows / max(1, batches * world_size) if token_budget else settings.per_device_train_batch_size
    return Schedule(batches_per_epoch=batches, steps_per_epoch=steps_per_epoch, total_steps=total,
                    warmup_steps=int(round(settings.warmup_ratio * total)),
                    effective_batch_size=per_batch * settings.gradient_accumulation_steps * world_size)


def speed_choices(settings: LoopSettings, attention: str, device: torch.device) -> dict[str, object]:
    """What the run's speed options resolved to, for run_args.json."""
    return {"optimizer_implementation": resolve_optimizer_implementation(settings.optimizer_implementation, device),
            "attn_implementation": attention, "torch_compile": settings.torch_compile,
            "padded_width_multiple": padding_multiple(settings)}


def make_compiler(settings: LoopSettings) -> Compiler | None:
    """The Compiler a run with these settings needs (None without --torch_compile)."""
    return Compiler(settings.compile_width_multiple) if settings.torch_compile else None


# ---------------------------------------------------------------------------- batches
def length_grouped_batches(lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int,
                           group_factor: int = 50, grouped: bool = True,
                           max_tokens: int | None = None, multiple: int = 8) -> list[list[int]]:
    """One epoch of training batches (lists of indices), the same for a given (seed, epoch): the indices
    shuffled, cut into mega-batches of `group_factor * batch_size`, each sorted by length and cut into
    batches (by `token_budget_cut` with `max_tokens`), the batches shuffled again, the one holding the
    longest sequence first (a too-large batch fails at once). `grouped=False`: plain random slices."""
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    rng = np.random.default_rng([seed, epoch])
    lengths_array = np.asarray(lengths)
    order = rng.permutation(len(lengths_array))
    if not grouped:
        return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    chunk = batch_size * group_factor
    batches: list[np.ndarray] = []
    for begin in range(0, len(order), chunk):
        mega = order[begin:begin + chunk]
        mega = mega[np.argsort(-lengths_array[mega], kind="stable")]
        if max_tokens is None:
            batches.extend(mega[i:i + batch_size] for i in range(0, len(mega), batch_size))
        else:
            batches.extend(token_budget_cut(mega, lengths_array, max_tokens, multiple))
    batches = [batches[i] for i in rng.permutation(len(batches))]
    longest = max(range(len(batches)), key=lambda i: lengths_array[batches[i]].max())
    batches.insert(0, batches.pop(longest))
    return [batch.tolist() for batch in batches]


def token_budget_cut(order: np.ndarray, lengths: np.ndarray, max_tokens: int, multiple: int) -> list[np.ndarray]:
    """Consecutive runs of `order` (sorted longest first) whose padded size, count × the first
    (longest) length rounded up to `multiple`, is at most max_tokens."""
    batches, start = [], 0
    while start < len(order):
        width = bucket_width(int(lengths[order[start]]), multiple)
        if width > max_tokens:
            raise ValueError(f"a sequence of {int(lengths[order[start]])} tokens (padded to {width}) does not fit "
                             f"--max_tokens_per_batch {max_tokens}; raise it to at least {width}")
        count = max(1, max_tokens // width)
        batches.append(order[start:start + count])
        start += count
    return batches


def shard_for_training(batches: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """This rank's batches: every world_size-th one, the remainder dropped so all ranks step alike."""
    per_rank = len(batches) // world_size
    return batches[rank::world_size][:per_rank]


def evaluation_batches(lengths: Sequence[int], batch_size: int, rank: int = 0, world_size: int = 1
                       ) -> list[list[int]]:
    """This rank's evaluation batches: sorted by length, every example exactly once over all ranks."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    mine = order[rank::world_size]
    return [mine[i:i + batch_size].tolist() for i in range(0, len(mine), batch_size)]


def pad_sequences(sequences: Sequence[Sequence[int]], pad_value: int, multiple: int = 1) -> torch.Tensor:
    """(B, T) tensor of the sequences right-padded with `pad_value` to the longest one, rounded up to
    `multiple` (few distinct shapes keep GPU kernels and the allocator warm)."""
    padded = torch.nn.utils.rnn.pad_sequence([torch.as_tensor(s, dtype=torch.long) for s in sequences],
                                             batch_first=True, padding_value=pad_value)
    return torch.nn.functional.pad(padded, (0, bucket_width(padded.size(1), multiple) - padded.size(1)), value=pad_value)


def attention_mask_for(sequences: Sequence[Sequence[int]], multiple: int = 1) -> torch.Tensor:
    """(B, T) mask: 1 on real tokens, 0 on right padding."""
    return pad_sequences([[1] * len(sequence) for sequence in sequences], 0, multiple)


# ---------------------------------------------------------------------------- the loop
class Objective(Protocol):
    """What the loop trains on: rows become a batch (`collate`), a batch a mean loss (`loss`)."""

    name: str
    pad_token_id: int

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]: ...
    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...


def supervised_items(batch: dict[str, torch.Tensor]) -> int:
    """What a batch's mean loss averages over: next-token labels not -100 (causal LM), else its rows."""
    if "labels" in batch and batch["labels"].dim() == 2:
        return int((batch["labels"][:, 1:] != -100).sum())
    return int(batch["input_ids"].size(0))


def train(model: torch.nn.Module, rows: Sequence[dict], lengths: Sequence[int], objective: Objective,
          settings: LoopSettings, ctx: RunContext, *, save_model: Callable[[torch.nn.Module, Path], None],
          evaluate: Callable[[torch.nn.Module], dict] | None = None, resume_from: Path | None = None,
          parent: dict | None = None, shape_may_change: frozenset[str] = frozenset()) -> dict[str, float]:
    """Train `model` (already on ctx.device) on `rows` (`lengths`: their token lengths) and return the
    training metrics (train_loss is the mean over optimizer steps).

    Args:
        save_model: writes the (unwrapped) model and tokenizer into a checkpoint folder.
        evaluate: called on every rank's model every `eval_steps`; its metrics are logged.
        resume_from: a checkpoint-N folder whose weights the model already holds.
        parent: provenance of the starting weights, kept in the trainer state for lineage.
        shape_may_change: keys of the run's shape (e.g. total_steps) a resumed run may change.
    """
    if settings.torch_compile != (ctx.compiler is not None):
        raise ValueError("settings.torch_compile and ctx.compiler disagree; build ctx.compiler with make_compiler")
    schedule = plan_schedule(len(rows), settings, ctx.world_size, lengths)
    optimizer = build_optimizer(model, settings.learning_rate, weight_decay=settings.weight_decay, device=ctx.device,
                                implementation=settings.optimizer_implementation)
    scheduler = linear_schedule(optimizer, schedule.warmup_steps, schedule.total_steps)
    scaler = torch.amp.GradScaler(ctx.device.type) if ctx.precision.needs_grad_scaler else None
    shape = {"objective": objective.name, "per_device_train_batch_size": settings.per_device_train_batch_size,
             "gradient_accumulation_steps": settings.gradient_accumulation_steps, "world_size": ctx.world_size,
             "total_steps": schedule.total_steps, "seed": settings.seed, "rows": len(rows)}
    state = TrainState(parent=parent, run_shape=shape)
    if resume_from is not None:
        check_run_shape(resume_from, shape, shape_may_change)
        state = restore_training_checkpoint(resume_from, {"optimizer": optimizer}, ctx, scheduler, scaler)
        logger.info("resumed from %s at step %d", resume_from, state.global_step)
    wrapped = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None) \
        if ctx.enabled else model
    model.train()
    # Only rank 0 reports where the run is: the other ranks are at the same step.
    bar = Progress(schedule.total_steps, "training", bar=ctx.progress, initial=state.global_step,
                   log=ctx.log.log if ctx.log is not None and ctx.is_main else None,
                   interval_s=ctx.progress_interval_s if ctx.is_main else None)
    window = {"loss": 0.0, "steps": 0, "tokens": 0.0, "time": time.perf_counter()}
    compiler = ctx.compiler   # --torch_compile: the loss compiled, each batch padded to its bucket's width
    loss_fn = compiler.function(objective.loss) if compiler is not None else objective.loss
    timed = compiler.timed if compiler is not None else nullcontext
    compiled_before = compilation_totals(compiler)
    started = time.perf_counter()
    tokens_at_start, steps_at_start = state.tokens_seen, state.global_step
    while state.global_step < schedule.total_steps:
        batches = shard_for_training(
            length_grouped_batches(lengths, settings.per_device_train_batch_size, seed=settings.seed,
                                   epoch=state.epoch, grouped=settings.group_by_length,
                                   max_tokens=settings.max_tokens_per_batch, multiple=padding_multiple(settings)),
            ctx.rank, ctx.world_size)
        accumulation = settings.gradient_accumulation_steps
        # Whole groups of micro-batches only; an epoch shorter than one group is one short group.
        usable = len(batches) - len(batches) % accumulation if len(batches) >= accumulation else len(batches)
        while state.batches_done_in_epoch < usable and state.global_step < schedule.total_steps:
            group = batches[state.batches_done_in_epoch:state.batches_done_in_epoch + accumulation]
            micro = [objective.collate([rows[i] for i in b]) for b in group]
            micro = [move_batch(compiler.pad(b, objective.pad_token_id) if compiler else b, ctx.device) for b in micro]
            tokens = sum(float(batch["attention_mask"].sum()) for batch in micro)
            with timed():
                loss_value, _ = optimizer_step(
                    wrapped, optimizer, micro, loss_fn, ctx, max_grad_norm=settings.max_grad_norm,
                    weights=[supervised_items(batch) for batch in micro], sync=ctx, scheduler=scheduler, scaler=scaler,
                    where=f" at step {state.global_step + 1}, epoch {state.epoch}; no checkpoint was written for it, "
                          "earlier ones are intact. Lower --learning_rate, add warm-up, or use --precision fp32.")
            state.batches_done_in_epoch += len(group)
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
                if ctx.is_main and ctx.log is not None:
                    ctx.log.log({"step": state.global_step, **metrics})
            if settings.save_steps and state.global_step % settings.save_steps == 0 \
                    and state.global_step < schedule.total_steps:
                save_training_checkpoint(checkpoint_folder(ctx.output_dir, state.global_step), state,
                                         {"optimizer": optimizer}, lambda f: save_model(model, f), ctx, scheduler, scaler,
                                         keep=settings.save_total_limit)
        if state.batches_done_in_epoch >= usable:
            state.epoch += 1
            state.batches_done_in_epoch = 0
    bar.close()
    runtime = time.perf_counter() - started
    if compiler is not None and ctx.is_main and ctx.log is not None:
        ctx.log.log({"step": state.global_step, "event": "compilation", **compiler.report()})
    # This call's share (a process compiles once for all the runs it trains, e.g. a target's seeds).
    compiled = {key: value - compiled_before[key] for key, value in compilation_totals(compiler).items()}
    total_tokens, all_tokens, all_passes = all_reduce_sum(
        ctx, [state.tokens_seen - tokens_at_start, state.tokens_seen, float(state.passes)])
    return {"train_loss": state.loss_sum / max(1, state.loss_count), "train_runtime": runtime,
            "train_steps": state.global_step, "train_tokens_per_second": total_tokens / runtime if runtime > 0 else 0.0,
            "train_samples_per_second": (state.global_step - steps_at_start) * schedule.effective_batch_size / runtime
            if runtime > 0 else 0.0,
            "epoch": state.epoch + state.batches_done_in_epoch / max(1, schedule.batches_per_epoch),
            # The whole run's, resumed parts included, all processes together.
            "train_passes": int(round(all_passes)), "train_tokens": int(round(all_tokens)),
            # With --torch_compile: graphs compiled during this call and the time of the steps that compiled.
            **{f"train_{key}": value for key, value in compiled.items()}}


def _log_window(window: dict, state: TrainState, scheduler, ctx: RunContext, bar: Progress) -> None:
    elapsed = time.perf_counter() - window["time"]
    tokens = all_reduce_sum(ctx, [window["tokens"]])[0]
    event = {"step": state.global_step, "epoch": state.epoch, "loss": window["loss"] / max(1, window["steps"]),
             "learning_rate": scheduler.get_last_lr()[0], "tokens_per_second": tokens / elapsed if elapsed else 0.0}
    if ctx.is_main:
        if ctx.log is not None:
            ctx.log.log(event)
        bar.set_postfix(loss=f"{event['loss']:.4f}", tok_s=f"{event['tokens_per_second']:.0f}")
    window.update(loss=0.0, steps=0, tokens=0.0, time=time.perf_counter())


# ---------------------------------------------------------------------------- inference
@torch.no_grad()
def predict(model: torch.nn.Module, rows: Sequence[dict], lengths: Sequence[int],
            forward: Callable[[torch.nn.Module, dict[str, torch.Tensor]], list[Any]],
            collate: Callable[[list[dict]], dict[str, torch.Tensor]], batch_size: int, ctx: RunContext,
            desc: str = "evaluating", compilable: bool = False, pad_token_id: int | None = None
            ) -> list[Any] | None:
    """`forward(model, batch)` (one output per row) over every row once, sharded over ranks in
    length-sorted batches; the outputs in row order on rank 0, None elsewhere. A `compilable` forward
    (one fixed-shape pass, not generation) is compiled when the run compiles, batches padded with `pad_token_id`."""
    compiler = ctx.compiler if compilable else None
    if compiler is not None:
        if pad_token_id is None:
            raise ValueError("predict under --torch_compile needs the pad_token_id to pad batches to their bucket")
        forward = compiler.function(forward)
    was_training = model.training
    model.eval()
    batches = evaluation_batches(lengths, batch_size, ctx.rank, ctx.world_size)
    mine: list[tuple[int, Any]] = []
    main = ctx.is_main
    with Progress(len(batches), desc, bar=ctx.progress and main, unit="batch", leave=False,
                  log=ctx.log.log if ctx.log is not None and main else None,
                  interval_s=ctx.progress_interval_s if main else None) as progress:
        for indices in batches:
            batch = collate([rows[i] for i in indices])
            batch = move_batch(compiler.pad(batch, pad_token_id) if compiler else batch, ctx.device)
            with autocast_context(ctx.precision, ctx.device), compiler.timed() if compiler else nullcontext():
                outputs = forward(model, batch)
            mine.extend(zip(indices, outputs))
            progress.update()
    model.train(was_training)
    gathered = gather_to_main(ctx, mine)
    if gathered is None:
        return None
    outputs = dict(pair for part in gathered for pair in part)
    if len(outputs) != len(rows):
        raise RuntimeError(f"evaluation covered {len(outputs)} rows, expected {len(rows)}")
    return [outputs[index] for index in range(len(rows))]

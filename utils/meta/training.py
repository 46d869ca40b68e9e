"""The meta-training outer loop (the step functions of `utils.meta.algorithms`) and its task streams.

Each outer step samples a meta-batch of tasks (the same draw on every process) and runs the step on
this process's share. No DDP inside the inner loop: averaging gradients across tasks would turn
Reptile into joint training. Every process advances the seeded streams of all sampled tasks, so one
process and N processes meet the same data."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from utils.meta.algorithms import STEPS, MetaBuffers, MetaStep, annealed_epsilon, inner_optimizer, meta_parameters
from utils.run.progress import Progress
from utils.training.checkpoints import (TrainState, checkpoint_folder, restore_training_checkpoint,
                                        save_training_checkpoint)
from utils.training.loop import length_grouped_batches
from utils.training.runtime import RunContext

logger = logging.getLogger(__name__)

ALGORITHM_LABELS = {"reptile": "Reptile", "fomaml": "FOMAML", "multitask": "multi-task"}


@dataclass(frozen=True)
class MetaSettings:
    """Hyper-parameters of meta-training."""

    num_train_iterations: int
    meta_batch_size: int
    num_inner_steps: int
    inner_batch_size: int
    inner_lr: float
    outer_lr: float
    outer_lr_final: float
    inner_optimizer: str
    inner_opt_state: str
    task_sampling: str
    max_grad_norm: float
    seed: int
    eval_every: int | None
    save_every: int | None
    algorithm: str = "reptile"
    meta_lr: float | None = None          # FOMAML's outer learning rate (None: inner_lr)
    meta_optimizer: str | None = None     # FOMAML's outer optimizer (None: inner_optimizer's kind)
    sampling_temperature: float = 1.0     # τ of task_sampling "temperature"
    final_inner_steps: tuple[int, ...] | None = None   # a last step cut to a budget: its first tasks' inner steps


class TaskStream:
    """Endless, deterministic batches of one task: epoch e is length_grouped_batches(seed, e)."""

    def __init__(self, rows: Any, batch_size: int, seed: int) -> None:
        self.rows = rows
        self.lengths = list(rows["length"])
        self.batch_size = batch_size
        self.seed = seed
        self._epoch_cache: dict[int, list[list[int]]] = {}

    def indices(self, position: int) -> list[int]:
        """Row indices of the `position`-th batch of the stream."""
        epoch, index = divmod(position, max(1, len(self.lengths) // self.batch_size))
        if epoch not in self._epoch_cache:
            self._epoch_cache = {epoch: length_grouped_batches(self.lengths, self.batch_size, seed=self.seed, epoch=epoch)}
        return self._epoch_cache[epoch][index]

    def batch(self, position: int) -> list[dict]:
        """Rows of the `position`-th batch of the stream."""
        return [self.rows[i] for i in self.indices(position)]

    def tokens(self, position: int) -> int:
        """Real (unpadded) tokens of the `position`-th batch."""
        return int(sum(self.lengths[i] for i in self.indices(position)))


def sampling_probabilities(sizes: Sequence[int], sampling: str, temperature: float = 1.0) -> np.ndarray | None:
    """p_i of drawing task i with n_i training rows: None for uniform; n_i / Σ n for proportional;
    n_i^(1/τ) / Σ_j n_j^(1/τ) for temperature τ (Arivazhagan et al. 2019: large τ tends to uniform)."""
    if sampling == "uniform":
        return None
    if sampling not in ("proportional", "temperature"):
        raise ValueError(f"unknown task sampling {sampling!r}")
    exponent = 1.0 / temperature if sampling == "temperature" else 1.0
    weights = np.asarray(sizes, dtype=np.float64) ** exponent
    return weights / float(np.sum(weights))


@dataclass(frozen=True)
class OuterStepDraw:
    """The tasks of one outer step, where their batches start in their streams, and what they cost."""

    tasks: list[str]
    inner_steps: list[int]     # support batches of each task
    starts: list[int]          # stream position of each task's first support batch
    query_starts: list[int]    # FOMAML: position of each task's query batch
    passes: int
    tokens: int


def draw_outer_step(rng: np.random.Generator, names: Sequence[str], sizes: Sequence[int], settings: MetaSettings,
                    streams: dict[str, TaskStream], query_streams: dict[str, TaskStream] | None,
                    positions: dict[str, int], inner_steps: Sequence[int] | None = None) -> OuterStepDraw:
    """Sample a meta-batch of tasks (with replacement) and advance their streams in `positions` (in
    place). `inner_steps` cuts the step short: only the first len(inner_steps) sampled tasks are
    adapted, task i with inner_steps[i] support batches (a full meta-batch is still drawn, so the
    sampler is where an uncut step leaves it). FOMAML also takes one query batch per task."""
    probabilities = sampling_probabilities(sizes, settings.task_sampling, settings.sampling_temperature)
    sampled = [names[i] for i in rng.choice(len(names), size=settings.meta_batch_size, replace=True, p=probabilities)]
    steps = list(inner_steps) if inner_steps is not None else [settings.num_inner_steps] * len(sampled)
    sampled = sampled[:len(steps)]
    starts, query_starts, passes, tokens = [], [], 0, 0
    for name, count in zip(sampled, steps):
        starts.append(positions[name])
        tokens += sum(streams[name].tokens(positions[name] + j) for j in range(count))
        positions[name] += count
        passes += count
        if settings.algorithm == "fomaml":
            query_starts.append(positions[query_key(name)])
            tokens += query_streams[name].tokens(positions[query_key(name)])
            positions[query_key(name)] += 1
            passes += 1
    return OuterStepDraw(sampled, steps, starts, query_starts, passes, tokens)


def plan_to_budget(streams: dict[str, TaskStream], settings: MetaSettings, budget: float, unit: str,
                   query_streams: dict[str, TaskStream] | None = None) -> tuple[int, tuple[int, ...] | None, float]:
    """(outer steps T, the last step's inner steps per task or None for a full step, the planned
    total) of the run whose passes or real tokens (`unit`) come nearest `budget`: the draws are
    replayed without training, and the run may stop after any task's r-th inner step of its last
    outer step (r = 1..k; a FOMAML task also takes its query batch). At least one batch is trained."""
    if unit not in ("passes", "tokens"):
        raise ValueError(f"unknown compute unit {unit!r}")
    names = sorted(streams)
    sizes = [len(streams[name].lengths) for name in names]
    rng = np.random.default_rng(settings.seed)
    positions = {key: 0 for key in stream_keys(names, settings)}
    total, step, best = 0.0, 0, None      # best: (distance, steps, inner steps of the last step, total)
    k = settings.num_inner_steps
    while True:
        draw = draw_outer_step(rng, names, sizes, settings, streams, query_streams, positions)
        step += 1
        for slot, name in enumerate(draw.tasks):
            query = 0.0
            if settings.algorithm == "fomaml":
                query = 1.0 if unit == "passes" else float(query_streams[name].tokens(draw.query_starts[slot]))
            for r in range(1, k + 1):
                batch = 1.0 if unit == "passes" else float(streams[name].tokens(draw.starts[slot] + r - 1))
                candidate = total + batch + query
                cut = tuple([k] * slot + [r])
                if best is None or abs(candidate - budget) < best[0]:
                    best = (abs(candidate - budget), step, None if cut == (k,) * len(draw.tasks) else cut, candidate)
                if candidate >= budget:
                    return best[1], best[2], best[3]
                total += batch
            total += query


def stream_keys(names: list[str], settings: MetaSettings) -> list[str]:
    """The keys of every stream's position: the tasks, and FOMAML's query streams."""
    return names + ([query_key(name) for name in names] if settings.algorithm == "fomaml" else [])


def query_key(name: str) -> str:
    """TrainState.positions key of a task's query stream (FOMAML)."""
    return f"{name}/query"


def meta_train(model: torch.nn.Module, objective: Any, streams: dict[str, TaskStream], settings: MetaSettings,
               ctx: RunContext, *, query_streams: dict[str, TaskStream] | None = None, state: TrainState | None = None,
               resume_from: Path | None = None, evaluate: Callable[[int, Callable[[], None]], dict] | None = None,
               save_model: Callable[[Path, TrainState], None] | None = None) -> TrainState:
    """Run the algorithm of `settings` to `settings.num_train_iterations` outer steps (θ is the
    model) from `state`, or from the checkpoint-N folder `resume_from`; returns the final state.
    FOMAML needs `query_streams`, disjoint from `streams`. Every `save_every` steps a checkpoint-N
    goes to ctx.output_dir (`save_model(folder, state)` writes the weights; the optimizers are saved
    per process beside them). Every `eval_every` steps `evaluate(step, restore θ)` is logged."""
    if settings.algorithm == "fomaml" and not query_streams:
        raise ValueError("FOMAML needs a query stream per task")
    buffers = MetaBuffers(meta_parameters(model))
    names = sorted(streams)
    sizes = [len(streams[name].lengths) for name in names]
    carried = inner_optimizer(settings.inner_optimizer, model, settings.inner_lr) \
        if settings.inner_opt_state == "carry" or settings.algorithm == "multitask" else None
    outer = inner_optimizer(settings.meta_optimizer or settings.inner_optimizer, model,
                            settings.meta_lr if settings.meta_lr is not None else settings.inner_lr) \
        if settings.algorithm == "fomaml" else None
    optimizers = {name: optimizer for name, optimizer in (("inner_optimizer", carried), ("meta_optimizer", outer))
                  if optimizer is not None}
    if resume_from is not None:   # dropout continues exactly where the interrupted run was
        state = restore_training_checkpoint(resume_from, optimizers, ctx, per_rank=True)
    state = state or TrainState()
    rng = np.random.default_rng(settings.seed)
    if state.sampler is not None:
        rng.bit_generator.state = state.sampler
    positions = {key: state.positions.get(key, 0) for key in stream_keys(names, settings)}
    log = ctx.log if ctx.is_main else None
    bar = Progress(settings.num_train_iterations, ALGORITHM_LABELS[settings.algorithm], bar=ctx.progress and ctx.is_main,
                   initial=state.global_step, log=log.log if log is not None else None,
                   interval_s=ctx.progress_interval_s if ctx.is_main else None)
    passes, tokens = state.passes, int(state.tokens_seen)
    for step in range(state.global_step, settings.num_train_iterations):
        epsilon = annealed_epsilon(step, settings.num_train_iterations, settings.outer_lr, settings.outer_lr_final)
        # every process draws every task and advances every sampled stream, and counts every pass
        draw = draw_outer_step(rng, names, sizes, settings, streams, query_streams, positions,
                               settings.final_inner_steps if step + 1 == settings.num_train_iterations else None)
        passes, tokens = passes + draw.passes, tokens + draw.tokens
        mine = list(range(ctx.rank, len(draw.tasks), ctx.world_size))
        buffers.begin()
        work = MetaStep(model, objective, buffers, ctx, mine, draw.inner_steps,
                        {slot: [streams[draw.tasks[slot]].batch(draw.starts[slot] + j)
                                for j in range(draw.inner_steps[slot])] for slot in mine},
                        {slot: query_streams[draw.tasks[slot]].batch(draw.query_starts[slot]) for slot in mine}
                        if settings.algorithm == "fomaml" else {},
                        len(draw.tasks), lambda: carried or inner_optimizer(settings.inner_optimizer, model, settings.inner_lr),
                        outer, settings.max_grad_norm)
        losses, query_losses, step_norm = STEPS[settings.algorithm](work, epsilon)
        if ctx.enabled:
            gathered: list = [None] * ctx.world_size
            dist.all_gather_object(gathered, (losses, query_losses))
            losses = {k: v for part, _ in gathered for k, v in part.items()}
            query_losses = {k: v for _, part in gathered for k, v in part.items()}
        if log is not None:
            query = {"query_losses": [query_losses[i] for i in range(len(draw.tasks))]} if query_losses else {}
            log.log({"step": step + 1, "algorithm": settings.algorithm, "epsilon": epsilon, "tasks": draw.tasks,
                     "inner_losses": [losses[i] for i in range(len(draw.tasks))], "theta_step_norm": step_norm,
                     "passes": passes, "tokens": tokens, **query})
        bar.set_postfix(inner_loss=f"{np.mean([v for part in losses.values() for v in part]):.4f}")
        bar.update()
        state = TrainState(global_step=step + 1, tokens_seen=tokens, passes=passes, parent=state.parent,
                           sampler=rng.bit_generator.state, positions=dict(positions))
        if step + 1 == settings.num_train_iterations:
            break   # the caller evaluates and saves the final θ
        if evaluate is not None and settings.eval_every and (step + 1) % settings.eval_every == 0:
            metrics = evaluate(step + 1, buffers.restore)  # adapts θ in place, restoring it after each task
            if log is not None:
                log.log({"step": step + 1, "eval": metrics})
        if save_model is not None and settings.save_every and (step + 1) % settings.save_every == 0:
            save_training_checkpoint(checkpoint_folder(ctx.output_dir, step + 1), state, optimizers,
                                     lambda folder: save_model(folder, state), ctx, per_rank=True)
    bar.close()
    return state

"""The meta-training loop across QA tasks (the library under maml_qa.py): Reptile, first-order
MAML or multi-task training (utils.meta.algorithms), on the same sampled tasks and task streams.

Each outer step samples a meta-batch of tasks (the same draw on every process); for Reptile each
process adapts its share of them from θ with k inner steps of the project's objectives, adding the
adapted weights to a running sum; the sums are all-reduced once, and θ ← θ + ε_t (mean φ − θ). No
DDP inside the inner loop: averaging gradients across tasks would turn Reptile into joint training.
FOMAML sums query gradients at the adapted weights instead; multi-task steps θ itself.

Every task has its own deterministic stream of batches (seeded by the run seed and the task), and
every process advances the positions of all sampled tasks, so the batches a task sees do not
depend on which process adapts it: one process and N processes meet the same data.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from utils.training.batching import length_grouped_batches
from utils.training.distributed import DistContext
from utils.run.errors import ToolkitError
from utils.run.outputs import JsonlLog, read_json_object, write_json
from utils.run.progress import PROGRESS_INTERVAL_S, Progress
from utils.meta.algorithms import multitask_step, outer_step, query_gradient
from utils.meta.args import ALGORITHM_LABELS
from utils.meta.reptile import ReptileBuffers, add_tensors, annealed_epsilon, make_inner_optimizer, meta_parameters
from utils.training.checkpoints import restore_optimizer_state
from utils.training.loop import autocast_context, move_batch

logger = logging.getLogger(__name__)

META_STATE_FILE = "meta_state.json"


@dataclass(frozen=True)
class MetaSettings:
    """Hyper-parameters of Reptile (names follow the original script where it had them)."""

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
    # The last outer step cut short to meet a compute budget (plan_to_budget): the inner steps of
    # each task it adapts, the first len(...) of its sampled tasks. None: a full step.
    final_inner_steps: tuple[int, ...] | None = None

    def passes_per_task(self) -> int:
        """Forward/backward passes one sampled task costs an outer step: k (Reptile, multi-task), or
        k + 1 (FOMAML's query batch)."""
        return self.num_inner_steps + (1 if self.algorithm == "fomaml" else 0)


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
        per_epoch = max(1, len(self.lengths) // self.batch_size) if len(self.lengths) >= self.batch_size else 1
        epoch, index = divmod(position, per_epoch)
        if epoch not in self._epoch_cache:
            self._epoch_cache = {epoch: length_grouped_batches(self.lengths, self.batch_size, seed=self.seed, epoch=epoch)}
        return self._epoch_cache[epoch][index]

    def batch(self, position: int) -> list[dict]:
        """Rows of the `position`-th batch of the stream."""
        return [self.rows[i] for i in self.indices(position)]

    def tokens(self, position: int) -> int:
        """Real (unpadded) tokens of the `position`-th batch."""
        return int(sum(self.lengths[i] for i in self.indices(position)))


@dataclass
class MetaState:
    """What a resumed meta-training needs: the step, the sampler's state, the stream positions."""

    step: int = 0
    sampler: dict | None = None
    positions: dict[str, int] = field(default_factory=dict)
    parent: dict | None = None
    passes: int = 0    # forward/backward passes so far, all processes together
    tokens: int = 0    # real tokens of those passes


def sampling_probabilities(sizes: Sequence[int], sampling: str, temperature: float = 1.0) -> np.ndarray | None:
    """p_i of drawing task i with n_i training rows: None for uniform; n_i / Σ n for proportional;
    n_i^(1/τ) / Σ_j n_j^(1/τ) for temperature τ (Arivazhagan et al. 2019: τ = 1 is proportional,
    large τ tends to uniform, so small tasks are drawn more often than their size says)."""
    if sampling == "uniform":
        return None
    if sampling not in ("proportional", "temperature"):
        raise ValueError(f"unknown task sampling {sampling!r}")
    exponent = 1.0 / temperature if sampling == "temperature" else 1.0
    weights = np.asarray(sizes, dtype=np.float64) ** exponent
    return weights / float(np.sum(weights))


def sample_tasks(rng: np.random.Generator, names: Sequence[str], sizes: Sequence[int], count: int,
                 sampling: str, temperature: float = 1.0) -> list[str]:
    """`count` task names with replacement, drawn with `sampling_probabilities`."""
    probabilities = sampling_probabilities(sizes, sampling, temperature)
    return [names[i] for i in rng.choice(len(names), size=count, replace=True, p=probabilities)]


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
    """Sample a meta-batch of tasks and advance their streams in `positions` (in place).

    `inner_steps` cuts the step short: only the first len(inner_steps) sampled tasks are adapted,
    task i with inner_steps[i] support batches (a full meta-batch is still drawn, so the sampler
    is where an uncut step leaves it). Every task also costs FOMAML one query batch.
    """
    sampled = sample_tasks(rng, names, sizes, settings.meta_batch_size, settings.task_sampling,
                           settings.sampling_temperature)
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
    """The outer steps whose forward/backward passes or real tokens come nearest `budget`.

    The run's draws are replayed without training (the same sampler and streams as meta_train),
    and the run may stop after any task's r-th inner step of its last outer step (r = 1..k; a
    FOMAML task also takes its query batch), so the total lands within one batch of the budget:
    the candidate totals rise by one batch at a time, and the nearest is taken. At least one
    batch is trained.

    Args:
        budget: passes or tokens to match (`unit` "passes" or "tokens").

    Returns:
        (outer steps T, the last step's inner steps per task or None when it is a full step,
         the planned total in `unit`).
    """
    if unit not in ("passes", "tokens"):
        raise ValueError(f"unknown compute unit {unit!r}")
    names = sorted(streams)
    sizes = [len(streams[name].lengths) for name in names]
    rng = np.random.default_rng(settings.seed)
    positions = {name: 0 for name in names}
    if settings.algorithm == "fomaml":
        positions.update({query_key(name): 0 for name in names})
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


def adapt(model: torch.nn.Module, objective: Any, optimizer: torch.optim.Optimizer, batches: list[list[dict]],
          device: torch.device, precision: Any, max_grad_norm: float) -> list[float]:
    """Inner steps: one optimizer step per batch with the project's objective; returns the losses."""
    losses = []
    model.train()
    for rows in batches:
        batch = move_batch(objective.collate(rows), device)
        with autocast_context(precision, device):
            loss = objective.loss(model, batch)
        loss.backward()
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not np.isfinite(value):
            raise ToolkitError(f"an inner loss became {value}; lower --inner_lr")
        losses.append(value)
    return losses


def query_key(name: str) -> str:
    """MetaState.positions key of a task's query stream (FOMAML)."""
    return f"{name}/query"


def meta_train(model: torch.nn.Module, objective: Any, streams: dict[str, TaskStream], settings: MetaSettings, *,
               dist_ctx: DistContext, precision: Any, output_dir: Path, log: JsonlLog | None,
               evaluate: Callable[[int, Callable[[], None]], dict] | None, save: Callable[[Path, MetaState, Any], None],
               state: MetaState, resume_from: Path | None = None, progress: bool = False,
               progress_interval_s: float = PROGRESS_INTERVAL_S,
               query_streams: dict[str, TaskStream] | None = None) -> MetaState:
    """Run the algorithm of `settings` from `state` to `settings.num_train_iterations` outer steps
    (θ is the model; FOMAML needs `query_streams`, disjoint from `streams`).

    `save(folder, state, optimizers)` writes a resumable checkpoint with the optimizers whose state
    runs on across outer steps ({"inner_optimizer": the carried one (Reptile and FOMAML with
    `--inner_opt_state carry`, multi-task always), "meta_optimizer": FOMAML's outer one}); they are
    restored from `resume_from`. An outer step of GPT-2 takes seconds and a run hours, so the loop says where it
    is: a bar with `progress` (a terminal), else a line every `progress_interval_s` seconds; on the
    main process only, and into `log` as a progress record either way.
    """
    if settings.algorithm == "fomaml" and not query_streams:
        raise ValueError("FOMAML needs a query stream per task")
    device = dist_ctx.device
    params = meta_parameters(model)
    buffers = ReptileBuffers(params)
    names = sorted(streams)
    sizes = [len(streams[name].lengths) for name in names]
    rng = np.random.default_rng(settings.seed)
    if state.sampler is not None:
        rng.bit_generator.state = state.sampler
    positions = {name: state.positions.get(name, 0) for name in names}
    if settings.algorithm == "fomaml":
        positions.update({query_key(name): state.positions.get(query_key(name), 0) for name in names})
    carried = make_inner_optimizer(settings.inner_optimizer, params, settings.inner_lr) \
        if settings.inner_opt_state == "carry" or settings.algorithm == "multitask" else None
    outer = make_inner_optimizer(settings.meta_optimizer or settings.inner_optimizer, params,
                                 settings.meta_lr if settings.meta_lr is not None else settings.inner_lr) \
        if settings.algorithm == "fomaml" else None
    optimizers = {name: optimizer for name, optimizer in (("inner_optimizer", carried), ("meta_optimizer", outer))
                  if optimizer is not None}
    if resume_from is not None:
        for name, optimizer in optimizers.items():
            saved = resume_from / f"{name}_{dist_ctx.rank}.pt"
            restore_optimizer_state(optimizer, torch.load(saved, weights_only=True, map_location=device))
    passes, tokens = state.passes, state.tokens
    bar = Progress(settings.num_train_iterations, ALGORITHM_LABELS[settings.algorithm],
                   bar=progress and dist_ctx.is_main, initial=state.step,
                   log=log.log if log is not None and dist_ctx.is_main else None,
                   interval_s=progress_interval_s if dist_ctx.is_main else None)
    for step in range(state.step, settings.num_train_iterations):
        epsilon = annealed_epsilon(step, settings.num_train_iterations, settings.outer_lr, settings.outer_lr_final)
        # every process draws every task and advances every sampled stream, and counts every pass
        draw = draw_outer_step(rng, names, sizes, settings, streams, query_streams, positions,
                               settings.final_inner_steps if step + 1 == settings.num_train_iterations else None)
        sampled, starts, query_starts = draw.tasks, draw.starts, draw.query_starts
        passes, tokens = passes + draw.passes, tokens + draw.tokens
        mine = list(range(dist_ctx.rank, len(sampled), dist_ctx.world_size))
        buffers.begin()
        losses: dict[int, list[float]] = {}
        query_losses: dict[int, float] = {}
        if settings.algorithm == "multitask":
            losses = {slot: [] for slot in mine}
            for j in range(max(draw.inner_steps)):
                taking = [slot for slot in mine if draw.inner_steps[slot] > j]
                values = multitask_step(model, objective, carried, params,
                                        [streams[sampled[slot]].batch(starts[slot] + j) for slot in taking],
                                        sum(count > j for count in draw.inner_steps),
                                        device=device, precision=precision, max_grad_norm=settings.max_grad_norm,
                                        distributed=dist_ctx.enabled)
                for slot, value in zip(taking, values):
                    losses[slot].append(value)
        else:
            for slot in mine:
                name = sampled[slot]
                buffers.restore()
                optimizer = carried or make_inner_optimizer(settings.inner_optimizer, params, settings.inner_lr)
                batches = [streams[name].batch(starts[slot] + j) for j in range(draw.inner_steps[slot])]
                losses[slot] = adapt(model, objective, optimizer, batches, device, precision, settings.max_grad_norm)
                if settings.algorithm == "fomaml":
                    grads, query_losses[slot] = query_gradient(model, objective, params,
                                                               query_streams[name].batch(query_starts[slot]),
                                                               device, precision)
                    add_tensors(buffers.total, grads)
                else:
                    buffers.add_adapted()
            if dist_ctx.enabled:
                for tensor in buffers.total:
                    dist.all_reduce(tensor)
        if dist_ctx.enabled:
            gathered: list = [None] * dist_ctx.world_size
            dist.all_gather_object(gathered, (losses, query_losses))
            losses = {k: v for part, _ in gathered for k, v in part.items()}
            query_losses = {k: v for _, part in gathered for k, v in part.items()}
        if settings.algorithm == "reptile":
            step_norm = buffers.update(epsilon, count=len(sampled))
        elif settings.algorithm == "fomaml":
            step_norm = outer_step(buffers, outer, count=len(sampled))
        else:
            step_norm = buffers.distance_moved()
            buffers.begin()   # θ after the step: what an evaluation restores
        if log is not None:
            record = {"step": step + 1, "algorithm": settings.algorithm, "epsilon": epsilon, "tasks": sampled,
                      "inner_losses": [losses[i] for i in range(len(sampled))], "theta_step_norm": step_norm,
                      "passes": passes, "tokens": tokens}
            if settings.algorithm == "fomaml":
                record["query_losses"] = [query_losses[i] for i in range(len(sampled))]
            log.log(record)
        bar.set_postfix(inner_loss=f"{np.mean([v for part in losses.values() for v in part]):.4f}")
        bar.update()
        state = MetaState(step=step + 1, sampler=rng.bit_generator.state, positions=dict(positions), parent=state.parent,
                          passes=passes, tokens=tokens)
        if evaluate is not None and settings.eval_every and (step + 1) % settings.eval_every == 0 \
                and step + 1 < settings.num_train_iterations:  # the caller evaluates the final θ
            metrics = evaluate(step + 1, buffers.restore)  # adapts θ in place, restoring it after each task
            if log is not None:
                log.log({"step": step + 1, "eval": metrics})
        if settings.save_every and (step + 1) % settings.save_every == 0 and step + 1 < settings.num_train_iterations:
            save(output_dir / f"checkpoint-{step + 1}", state, optimizers)
    bar.close()
    return state


def write_meta_state(folder: Path, state: MetaState) -> None:
    """meta_state.json beside a checkpoint's weights (written last: it marks the folder resumable)."""
    write_json(folder / META_STATE_FILE, {"step": state.step, "sampler": _jsonable(state.sampler),
                                         "positions": state.positions, "parent": state.parent,
                                         "passes": state.passes, "tokens": state.tokens})


def read_meta_state(folder: Path) -> MetaState:
    """The MetaState saved in a checkpoint folder.

    Raises:
        ToolkitError: the folder has no meta_state.json.
    """
    saved = read_json_object(folder / META_STATE_FILE, "resume from another checkpoint-N")
    if saved is None:
        raise ToolkitError(f"--resume_from_checkpoint {folder}: no {META_STATE_FILE} (not a maml_qa.py checkpoint, "
                           "or its save was interrupted)")
    return MetaState(step=saved["step"], sampler=saved["sampler"], positions=saved["positions"], parent=saved["parent"],
                     passes=saved.get("passes", 0), tokens=saved.get("tokens", 0))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.integer,)):
        return int(value)
    return value

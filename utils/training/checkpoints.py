"""Checkpoints: the checkpoint-N folders, the trainer state they hold (`TrainState`), rotation, exact
resumption, and checking a resumed run's arguments against the interrupted one's."""
from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from utils.run.errors import ToolkitError
from utils.run.outputs import disk_full_error, is_disk_full, read_json_object, require_free_space, write_json
from utils.training.runtime import RunContext, barrier, restore_rng_state, save_rng_state

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE_FILE = "trainer_state.json"


@dataclass
class TrainState:
    """Where training is (trainer_state.json of each checkpoint-N). The training loop counts this
    process's tokens and passes; meta-training all processes', plus its sampler and stream positions."""

    global_step: int = 0
    epoch: int = 0
    batches_done_in_epoch: int = 0
    tokens_seen: float = 0.0
    passes: int = 0            # forward/backward passes (micro-batches) so far
    loss_sum: float = 0.0
    loss_count: int = 0
    parent: dict | None = None
    run_shape: dict | None = None
    sampler: dict | None = None                                # meta-training: the task sampler's RNG state
    positions: dict[str, int] = field(default_factory=dict)   # meta-training: each task stream's next batch


def checkpoint_folder(output_dir: Path, step: int) -> Path:
    """Where the checkpoint of `step` goes."""
    return Path(output_dir) / f"{CHECKPOINT_PREFIX}{step}"


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """checkpoint-N folders with a complete training state, oldest first."""
    found = [(int(path.name[len(CHECKPOINT_PREFIX):]), path) for path in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*")
             if path.name[len(CHECKPOINT_PREFIX):].isdecimal() and (path / TRAINER_STATE_FILE).exists()]
    return [path for _, path in sorted(found)]


def resolve_resume_dir(value: str, output_dir: Path) -> Path:
    """The checkpoint folder --resume_from_checkpoint names (`latest`: the newest complete one in `output_dir`)."""
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
    """The TrainState saved in a checkpoint folder (ToolkitError when missing or damaged)."""
    saved = read_json_object(folder / TRAINER_STATE_FILE, "resume from another checkpoint-N")
    if saved is None:
        raise ToolkitError(f"{folder}: no {TRAINER_STATE_FILE} (not a training checkpoint, or its save was interrupted)")
    return TrainState(**{k: v for k, v in saved.items() if k in TrainState.__dataclass_fields__})


def check_run_shape(folder: Path, shape: dict, may_change: frozenset[str] = frozenset()) -> None:
    """ToolkitError when a key of `shape` other than `may_change` differs from the checkpoint's."""
    saved = read_trainer_state(folder).run_shape
    changed = {k: (saved.get(k), v) for k, v in shape.items()
               if saved is not None and saved.get(k) != v and k not in may_change}
    if changed:
        raise ToolkitError(f"--resume_from_checkpoint {folder} was saved by a run of another shape "
                           f"(saved vs now: {changed}); resume with the same settings and data")


def save_training_checkpoint(folder: Path, state: TrainState, optimizers: dict[str, torch.optim.Optimizer],
                             save_model: Callable[[Path], None], ctx: RunContext, scheduler=None, scaler=None,
                             per_rank: bool = False, keep: int | None = None) -> None:
    """Model (atomic, by the caller's function), optimizers (`NAME.pt`, or `NAME_RANK.pt` from every
    process with `per_rank`, where each process's optimizer state differs), scheduler, loss scale,
    RNG, then trainer_state.json last: a folder without it is never resumed from; then only the
    newest `keep` checkpoint-N folders stay. A full disk removes the incomplete folder and stops the
    run with one line (earlier checkpoints stay)."""
    def save_optimizers(suffix: str) -> None:
        for name, optimizer in optimizers.items():
            torch.save(optimizer.state_dict(), folder / f"{name}{suffix}.pt")

    if ctx.is_main:
        # The weights, and the optimizers' two moments of the same size.
        groups = next(iter(optimizers.values())).param_groups if optimizers else []
        needed = 3 * sum(p.numel() * p.element_size() for group in groups for p in group["params"])
        require_free_space(folder.parent, needed, f"saving the training checkpoint {folder}")
        try:
            save_model(folder)
            if not per_rank:
                save_optimizers("")
            if scheduler is not None:
                torch.save(scheduler.state_dict(), folder / "scheduler.pt")
            if scaler is not None:
                torch.save(scaler.state_dict(), folder / "scaler.pt")
        except BaseException as err:
            if not is_disk_full(err):
                raise
            shutil.rmtree(folder, ignore_errors=True)
            raise disk_full_error(f"saving the training checkpoint {folder}", folder.parent, needed) from None
    barrier(ctx)
    if per_rank:
        save_optimizers(f"_{ctx.rank}")
    save_rng_state(folder, ctx.rank)
    barrier(ctx)
    if ctx.is_main:
        write_json(folder / TRAINER_STATE_FILE, asdict(state))
        for old in checkpoint_dirs(folder.parent)[:-keep or None] if keep is not None else []:
            shutil.rmtree(old)


def restore_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Load an optimizer's saved moments and step counts but keep this run's hyper-parameters
    (learning rate, weight decay, betas): `load_state_dict` alone brings back the saved ones and
    would silently ignore a change a resumed run was allowed to make (--allow_changed_args)."""
    current = [{key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, hyper in zip(optimizer.param_groups, current):
        group.update(hyper)


def restore_training_checkpoint(folder: Path, optimizers: dict[str, torch.optim.Optimizer], ctx: RunContext,
                                scheduler=None, scaler=None, per_rank: bool = False) -> TrainState:
    """Optimizer moments, schedule position, loss scale and RNG of `folder` (as
    `save_training_checkpoint` wrote them), with this run's hyper-parameters (see
    `restore_optimizer_state`): the learning rate is this run's peak at the restored position of
    the schedule. Returns the saved TrainState."""
    for name, optimizer in optimizers.items():
        path = folder / f"{name}{f'_{ctx.rank}' if per_rank else ''}.pt"
        restore_optimizer_state(optimizer, torch.load(path, weights_only=True, map_location="cpu"))
    if scheduler is not None:
        optimizer = next(iter(optimizers.values()))
        peaks = [group["initial_lr"] for group in optimizer.param_groups]
        scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
        scheduler.base_lrs = peaks
        for group, peak, factor in zip(optimizer.param_groups, peaks, scheduler.lr_lambdas):
            group["lr"] = peak * factor(scheduler.last_epoch)
    if scaler is not None and (folder / "scaler.pt").exists():
        scaler.load_state_dict(torch.load(folder / "scaler.pt", weights_only=True))
    restore_rng_state(folder, ctx.rank)
    return read_trainer_state(folder)


# ---------------------------------------------------------------------------- a resumed run's arguments
# Arguments that never change a run's numbers: where files go, how often it logs or saves, how
# big evaluation batches are, where caches live, the device.
RESULT_NEUTRAL_ARGS = frozenset({"output_dir", "overwrite_output_dir", "resume_from_checkpoint", "resume",
                                 "allow_changed_args", "no_progress", "logging_steps", "save_steps", "save_total_limit",
                                 "save_every", "features_cache_dir", "per_device_eval_batch_size", "device", "log_dir",
                                 "out", "results_table", "save_model"})
# Arguments a resumed run cannot act on: its weights come from the checkpoint.
FIXED_ON_RESUME = frozenset({"model_name", "pretrained_model", "qa_head"})


def add_allow_changed_args(parser: argparse.ArgumentParser) -> None:
    """--allow_changed_args."""
    parser.add_argument("--allow_changed_args", type=str, nargs="+", default=[], metavar="ARG",
                        help="When resuming: arguments (e.g. learning_rate max_steps) that may differ from the "
                             "interrupted run's run_args.json. Any other change of an argument that affects the "
                             "result is an error. The change is recorded in run_args.json.")


def resolve_resume_args(args: argparse.Namespace, saved_folder: Path, *, what: str,
                        neutral: frozenset[str] = RESULT_NEUTRAL_ARGS) -> tuple[argparse.Namespace, dict[str, Any]]:
    """Check a resumed run's arguments against those in `saved_folder`/run_args.json (ToolkitError
    for an unknown --allow_changed_args name, or a changed argument that affects the result and is
    not allowed). Returns the arguments to run with (a new namespace: `args` with FIXED_ON_RESUME set
    back to their saved values) and the resume record for run_args.json."""
    current = vars(args)
    allowed = {name.lstrip("-").replace("-", "_") for name in getattr(args, "allow_changed_args", [])}
    unknown = sorted(allowed - set(current))
    if unknown:
        raise ToolkitError(f"--allow_changed_args names arguments this command does not have: {unknown}")
    path = saved_folder / "run_args.json"
    saved = read_json_object(path, "the resumed run's arguments cannot be checked against it")
    if saved is not None and not isinstance(saved.get("args"), dict):
        raise ToolkitError(f"{path} has no 'args' object: not a run_args.json of this toolkit")
    if saved is None:
        logger.warning("resuming %s: %s has no run_args.json, so the arguments cannot be checked against the "
                       "interrupted run's", what, saved_folder)
        return args, {"from": what, "changed": {}, "allowed": sorted(allowed), "checked": False}
    # {name: (saved, current)} for every non-neutral argument both runs know and that differs; JSON
    # has no tuples, so values are compared as JSON stores them.
    stored = {name: json.loads(json.dumps(value, default=str)) for name, value in current.items()}
    changes = {name: (saved["args"][name], value) for name, value in stored.items()
               if name in saved["args"] and name not in neutral and value != saved["args"][name]}
    refused = {name: change for name, change in changes.items() if name not in allowed}
    if refused:
        listed = "; ".join(f"--{name} {old!r} -> {new!r}" for name, (old, new) in sorted(refused.items()))
        raise ToolkitError(f"resuming {what} with arguments that differ from its run_args.json: {listed}. Resume "
                           "with the saved values, or name them in --allow_changed_args to continue with the new "
                           "ones")
    fixed = {name: old for name, (old, new) in changes.items() if name in FIXED_ON_RESUME}
    for name, (old, new) in sorted(changes.items()):
        if name in fixed:
            logger.warning("--%s %r is ignored on resumption: the weights come from %s (started from %r)", name, new,
                           what, old)
        else:
            logger.info("resuming %s with --%s changed from %r to %r (allowed)", what, name, old, new)
    record = {"from": what, "changed": {name: list(change) for name, change in changes.items()},
              "allowed": sorted(allowed), "checked": True}
    return argparse.Namespace(**{**current, **fixed}), record


def total_steps_may_change(resume: dict | None) -> frozenset[str]:
    """{'total_steps'} when --allow_changed_args names max_steps or the epochs (to train for longer)."""
    changed = set((resume or {}).get("changed", {}))
    return frozenset({"total_steps"}) if changed & {"max_steps", "num_train_epochs"} else frozenset()

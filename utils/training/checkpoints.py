"""Checkpoints of a training run: where the loop is (`TrainState`), the checkpoint-N folders that
hold it with the model, optimizer, scheduler and RNG, how they rotate, and exact resumption from
one (the loop that writes and reads them is `utils.training.loop`).
"""
from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from utils.run.errors import ToolkitError
from utils.run.fs import disk_full_error, is_disk_full, require_free_space
from utils.run.outputs import read_json_object, write_json
from utils.training.distributed import DistContext, barrier
from utils.training.runtime import restore_rng_state, save_rng_state
from utils.training.schedule import optimizer_parameters

CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE_FILE = "trainer_state.json"



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


def save_training_checkpoint(folder: Path, state: TrainState, optimizer, scheduler, scaler,
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



def rotate_checkpoints(output_dir: Path, limit: int | None) -> None:
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


def restore_training_checkpoint(folder: Path, optimizer, scheduler, scaler, context: DistContext) -> TrainState:
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

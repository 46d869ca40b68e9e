"""The start every training script shares, once its output folder is held (utils.run.folder):
progress bars, device, precision, the process group, and the run id every log line carries."""
from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from utils.run.cli import progress_enabled, silence_library_progress_bars
from utils.training.distributed import DistContext, barrier, broadcast_from_main, init_distributed, shutdown_distributed
from utils.run.folder import RunFolder, new_run_id
from utils.training.runtime import Precision, resolve_device, resolve_precision


@dataclass(frozen=True)
class RunStart:
    """What a script knows once its run has started. `run_id` marks each of its log lines."""

    dist: DistContext
    device: torch.device
    precision: Precision
    progress: bool
    run_id: str
    folder: RunFolder | None = None


@contextmanager
def start_run(args: argparse.Namespace, folder: RunFolder | None) -> Iterator[RunStart]:
    """Resolve --device/--precision/--no_progress and join the process group; leave it at the end.

    Args:
        folder: the output folder rank 0 holds (None on the other ranks, and for a command
            without one); its run id becomes every rank's.

    Raises:
        ToolkitError: an unusable device or precision.
    """
    progress = progress_enabled(args.no_progress)
    if not progress:
        silence_library_progress_bars()
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    dist_ctx = init_distributed(device)
    try:
        run_id = broadcast_from_main(dist_ctx, folder.run_id if folder is not None else new_run_id())
        barrier(dist_ctx)
        yield RunStart(dist_ctx, dist_ctx.device, precision, progress, run_id, folder)
    except BaseException:
        shutdown_distributed(dist_ctx, wait=False)
        raise
    shutdown_distributed(dist_ctx)

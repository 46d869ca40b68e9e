"""The start every training script shares: progress bars, device, precision, process group, and
an output folder held by rank 0 for the run's lifetime (utils.run_folder)."""
from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from utils.cli import progress_enabled, silence_library_progress_bars
from utils.distributed import DistContext, barrier, broadcast_from_main, init_distributed, shutdown_distributed
from utils.run_folder import RunFolder, hold_run_folder, new_run_id
from utils.runtime import Precision, resolve_device, resolve_precision


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
def start_run(args: argparse.Namespace, output_dir: Path | None, *, resuming: bool = False,
              check_empty: bool = True, resume_flag: str = "--resume_from_checkpoint") -> Iterator[RunStart]:
    """Resolve --device/--precision/--no_progress, join the process group, and hold --output_dir
    (rank 0; `output_dir` None: no folder) until the run ends; leave the process group at the end.

    Raises:
        ToolkitError: an unusable device or precision, a folder held by another run, or a non-empty
            folder without --overwrite_output_dir (or resumption).
    """
    progress = progress_enabled(args.no_progress)
    if not progress:
        silence_library_progress_bars()
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    dist_ctx = init_distributed(device)
    holding = dist_ctx.is_main and output_dir is not None
    try:
        with (hold_run_folder(output_dir, overwrite=args.overwrite_output_dir, resuming=resuming,
                              check_empty=check_empty, resume_flag=resume_flag)
              if holding else nullcontext()) as folder:
            run_id = broadcast_from_main(dist_ctx, folder.run_id if folder is not None else new_run_id())
            barrier(dist_ctx)
            yield RunStart(dist_ctx, dist_ctx.device, precision, progress, run_id, folder)
            if folder is not None:
                folder.finish()
    except BaseException:
        shutdown_distributed(dist_ctx, wait=False)
        raise
    shutdown_distributed(dist_ctx)

"""The start every training script shares: progress bars, device, precision, process group, and
an output folder made ready by rank 0 alone."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

from utils.cli import progress_enabled, silence_library_progress_bars
from utils.distributed import DistContext, barrier, init_distributed
from utils.outputs import prepare_output_dir
from utils.runtime import Precision, resolve_device, resolve_precision


@dataclass(frozen=True)
class RunStart:
    """What a script knows once its run has started."""

    dist: DistContext
    device: torch.device
    precision: Precision
    progress: bool


def start_run(args: argparse.Namespace, output_dir: Path | None, *, resuming: bool = False) -> RunStart:
    """Resolve --device/--precision/--no_progress, join the process group, prepare --output_dir
    (unless `output_dir` is None: a script with its own folder rules).

    Raises:
        ToolkitError: an unusable device or precision, or a non-empty output folder without
            --overwrite_output_dir (or resumption).
    """
    progress = progress_enabled(args.no_progress)
    if not progress:
        silence_library_progress_bars()
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    dist_ctx = init_distributed(device)
    if dist_ctx.is_main and output_dir is not None:
        prepare_output_dir(output_dir, overwrite=args.overwrite_output_dir, resuming=resuming)
    barrier(dist_ctx)
    return RunStart(dist_ctx, dist_ctx.device, precision, progress)

"""Inference over a set of rows with the loop's machinery: every row exactly once, sharded over
ranks in length-sorted batches, under the run's precision, with progress, and gathered in row order
on rank 0 (what evaluation and prediction use).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from utils.run.progress import Progress
from utils.training.batching import evaluation_batches
from utils.training.distributed import gather_to_main
from contextlib import nullcontext

from utils.training.loop import LoopContext, autocast_context, move_batch


@torch.no_grad()
def predict(model: torch.nn.Module, rows: Sequence[dict], lengths: Sequence[int],
            forward: Callable[[torch.nn.Module, dict[str, torch.Tensor]], list[Any]],
            collate: Callable[[list[dict]], dict[str, torch.Tensor]], batch_size: int, ctx: LoopContext,
            desc: str = "evaluating", compilable: bool = False, pad_token_id: int | None = None
            ) -> list[Any] | None:
    """Run `forward` over every row exactly once (sharded over ranks, length-sorted batches).

    `forward(model, batch)` returns one output per row of the batch. Returns the outputs in row
    order on rank 0, None on the other ranks. When the run compiles (ctx.compiler) and the forward
    is `compilable` (one fixed-shape pass over a right-padded batch; not generation, whose shapes
    change every token), `forward` is compiled and each batch padded to its bucket with
    `pad_token_id`.
    """
    compiler = ctx.compiler if compilable else None
    if compiler is not None:
        if pad_token_id is None:
            raise ValueError("predict under --torch_compile needs the pad_token_id to pad batches to their bucket")
        forward = compiler.function(forward)
    was_training = model.training
    model.eval()
    batches = evaluation_batches(lengths, batch_size, ctx.dist.rank, ctx.dist.world_size)
    mine: list[tuple[int, Any]] = []
    main = ctx.dist.is_main
    with Progress(len(batches), desc, bar=ctx.progress and main, unit="batch", leave=False,
                  log=ctx.log.log if ctx.log is not None and main else None,
                  interval_s=ctx.progress_interval_s if main else None) as progress:
        for indices in batches:
            batch = collate([rows[i] for i in indices])
            if compiler is not None:
                batch = compiler.pad(batch, pad_token_id)
            batch = move_batch(batch, ctx.device)
            with autocast_context(ctx.precision, ctx.device), compiler.timed() if compiler else nullcontext():
                outputs = forward(model, batch)
            mine.extend(zip(indices, outputs))
            progress.update()
    model.train(was_training)
    gathered = gather_to_main(ctx.dist, mine)
    if gathered is None:
        return None
    ordered: list[Any] = [None] * len(rows)
    seen = 0
    for part in gathered:
        for index, output in part:
            ordered[index] = output
            seen += 1
    if seen != len(rows):
        raise RuntimeError(f"evaluation covered {seen} rows, expected {len(rows)}")
    return ordered

"""Data parallelism without a framework: the process group `torchrun` / `accelerate launch` set up.

One process per device. Each process trains on its own share of the batches, DDP averages the
gradients, evaluation shards the examples so that each is seen exactly once, and only rank 0
writes files.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group if a launcher started several processes (WORLD_SIZE > 1).

    NCCL on GPUs (each process takes cuda:LOCAL_RANK), gloo on CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(0, 1, 0, device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), world_size, local_rank, device)


def shutdown_distributed(context: DistContext, *, wait: bool = True) -> None:
    """Leave the process group (a no-op for a single process). `wait=False` after a failure: the
    other ranks may never reach a barrier, and the launcher stops them once this one exits."""
    if context.enabled and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def gather_to_main(context: DistContext, obj: Any) -> list[Any] | None:
    """Every rank's `obj`, in rank order, on rank 0 (None elsewhere)."""
    if not context.enabled:
        return [obj]
    gathered: list[Any] = [None] * context.world_size if context.is_main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def broadcast_from_main(context: DistContext, obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not context.enabled:
        return obj
    holder = [obj if context.is_main else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_reduce_sum(context: DistContext, values: list[float]) -> list[float]:
    """Element-wise sum of `values` over all ranks."""
    if not context.enabled:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64,
                          device=context.device if context.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor)
    return tensor.tolist()


@contextmanager
def main_process_first(context: DistContext) -> Iterator[None]:
    """Run the block on rank 0 first, then on the other ranks: rank 0 tokenizes and caches, the
    others then read its cache instead of all writing it at once."""
    if not context.is_main:
        barrier(context)
    yield
    if context.is_main:
        barrier(context)


def barrier(context: DistContext) -> None:
    """Wait for every rank (a no-op for a single process)."""
    if context.enabled:
        dist.barrier()

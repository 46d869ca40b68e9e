"""Seeds, device and numeric precision: the run-time choices every script makes the same way."""
from __future__ import annotations

import logging
import random
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from utils.run.cli import DEVICE_CHOICES, PRECISION_CHOICES
from utils.run.errors import ToolkitError

logger = logging.getLogger(__name__)


def set_seed(seed: int) -> None:
    """Seed Python's `random`, NumPy and torch (CPU and every CUDA device) with one integer.

    Call it before any model is built: a new head's initialisation draws from torch's generator.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def stream_seed(seed: int, role: str, name: str) -> int:
    """A 63-bit seed for one named stream of a run (e.g. role "meta-train", name "squad"), independent
    of every other stream of that run and of other runs' seeds: SeedSequence([seed, crc32(role),
    crc32(name)]) rather than arithmetic such as seed + 7, which collides across seeds."""
    sequence = np.random.SeedSequence([seed, zlib.crc32(role.encode()), zlib.crc32(name.encode())])
    return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def rng_state_file(folder: Path, rank: int) -> Path:
    """Where process `rank` keeps its torch RNG state in a training checkpoint folder."""
    return Path(folder) / f"rng_state_{rank}.pt"


def save_rng_state(folder: Path, rank: int) -> None:
    """Write torch's CPU (and CUDA) RNG state of this process into `folder`, so that a resumed run's
    dropout continues exactly where the interrupted run was."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    torch.save(state, rng_state_file(folder, rank))


def restore_rng_state(folder: Path, rank: int) -> None:
    """Set torch's RNG state from `save_rng_state`'s file for this process.

    Raises:
        ToolkitError: no file for this rank (the checkpoint was written by fewer processes).
    """
    path = rng_state_file(folder, rank)
    if not path.exists():
        raise ToolkitError(f"{folder} was saved by a run with fewer processes (no {path.name}); resume "
                           "with the same number of processes")
    state = torch.load(path, weights_only=True)
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh torch.Generator seeded with `seed`, for samplers and Monte-Carlo draws."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def resolve_device(choice: str) -> torch.device:
    """`auto` means CUDA when a GPU is visible, else CPU.

    Raises:
        ToolkitError: `cuda` was asked for and no GPU is visible.
    """
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ToolkitError("--device cuda was given but no CUDA GPU is visible; use --device cpu or auto")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def resolve_attention(choice: str) -> str | None:
    """transformers' attention implementation to ask for: None for `auto`, which leaves the choice
    to transformers (sdpa, torch's scaled_dot_product_attention with flash / memory-efficient
    kernels on GPU, where the architecture supports it, else eager; GPT-Neo's QA head has no sdpa).
    Explicit `eager` measured no faster on CPU (benchmarks/training_throughput.py, 0.97-1.05x).
    Both take the same right-padding mask and agree within float rounding."""
    if choice not in ("auto", "sdpa", "eager"):
        raise ValueError(f"attention implementation must be auto, sdpa or eager, got {choice!r}")
    return None if choice == "auto" else choice


@dataclass(frozen=True)
class Precision:
    """How the forward pass computes: parameters stay fp32; `autocast_dtype` is the compute dtype.

    Attributes:
        name: "fp32", "bf16" or "fp16".
        autocast_dtype: the dtype for torch.autocast, or None for plain fp32.
        needs_grad_scaler: fp16 gradients underflow without loss scaling; bf16 and fp32 do not.
    """

    name: str
    autocast_dtype: torch.dtype | None
    needs_grad_scaler: bool


def resolve_precision(choice: str, device: torch.device) -> Precision:
    """`auto` means bf16 on a GPU that supports it, fp32 otherwise (CPU included).

    Raises:
        ToolkitError: fp16 on CPU, or bf16 on a GPU without bf16 support.
    """
    if choice not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {PRECISION_CHOICES}, got {choice!r}")
    on_gpu = device.type == "cuda"
    if choice == "auto":
        choice = "bf16" if on_gpu and torch.cuda.is_bf16_supported() else "fp32"
    if choice == "fp16" and not on_gpu:
        raise ToolkitError("--precision fp16 needs a CUDA GPU; on CPU use fp32 (or bf16)")
    if choice == "bf16" and on_gpu and not torch.cuda.is_bf16_supported():
        raise ToolkitError("this GPU does not support bf16; use --precision fp16 or fp32")
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    return Precision(choice, dtypes[choice], needs_grad_scaler=choice == "fp16")

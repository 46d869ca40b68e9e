"""What a run runs on: seeds, device, precision, attention, the process group (`torchrun` /
`accelerate launch`: one process per device, only rank 0 writes), `--torch_compile` with a bounded
number of graphs, FLOP accounting, and the one run context scripts open with `start_run`."""
from __future__ import annotations

import argparse
import os
import random
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch._dynamo
import torch.distributed as dist

from utils.run.errors import ToolkitError
from utils.run.flags import DEVICE_CHOICES, PRECISION_CHOICES
from utils.run.outputs import JsonlLog, RunFolder, new_run_id
from utils.run.progress import PROGRESS_INTERVAL_S, progress_enabled, silence_library_progress_bars


# ---------------------------------------------------------------------------- seeds
def set_seed(seed: int) -> None:
    """Seed Python's `random`, NumPy and torch; call it before any model is built (a new head draws from torch)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)   # every device's generator, CUDA included


def stream_seed(seed: int, role: str, name: str) -> int:
    """A 63-bit seed for one named stream of a run (e.g. role "meta-train", name "squad"): SeedSequence(
    [seed, crc32(role), crc32(name)]) rather than arithmetic such as seed + 7, which collides across seeds."""
    sequence = np.random.SeedSequence([seed, zlib.crc32(role.encode()), zlib.crc32(name.encode())])
    return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh torch.Generator seeded with `seed`, for samplers and Monte-Carlo draws."""
    return torch.Generator(device=device).manual_seed(seed)


def save_rng_state(folder: Path, rank: int) -> None:
    """This process's torch RNG state into a checkpoint folder (a resumed run's dropout continues exactly)."""
    state = {"cpu": torch.get_rng_state(), **({"cuda": torch.cuda.get_rng_state()} if torch.cuda.is_available() else {})}
    torch.save(state, Path(folder) / f"rng_state_{rank}.pt")


def restore_rng_state(folder: Path, rank: int) -> None:
    """Set torch's RNG state from `save_rng_state`'s file for this process."""
    path = Path(folder) / f"rng_state_{rank}.pt"
    if not path.exists():
        raise ToolkitError(f"{folder} was saved by a run with fewer processes (no {path.name}); resume "
                           "with the same number of processes")
    state = torch.load(path, weights_only=True)
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ---------------------------------------------------------------------------- device, precision, attention
def resolve_device(choice: str) -> torch.device:
    """`auto` means CUDA when a GPU is visible, else CPU."""
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ToolkitError("--device cuda was given but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu") if choice == "auto" else torch.device(choice)


def resolve_attention(choice: str) -> str | None:
    """transformers' attention implementation to ask for: None for `auto` (transformers' choice)."""
    if choice not in ("auto", "sdpa", "eager"):
        raise ValueError(f"attention implementation must be auto, sdpa or eager, got {choice!r}")
    return None if choice == "auto" else choice


@dataclass(frozen=True)
class Precision:
    """How the forward pass computes: parameters stay fp32, `autocast_dtype` (None: fp32) is the compute
    dtype, and fp16 gradients underflow without loss scaling."""

    name: str
    autocast_dtype: torch.dtype | None
    needs_grad_scaler: bool


def resolve_precision(choice: str, device: torch.device) -> Precision:
    """`auto` means bf16 on a GPU that supports it, fp32 otherwise (CPU included)."""
    if choice not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {PRECISION_CHOICES}, got {choice!r}")
    on_gpu = device.type == "cuda"
    if choice == "auto":
        choice = "bf16" if on_gpu and torch.cuda.is_bf16_supported() else "fp32"
    if choice == "fp16" and not on_gpu:
        raise ToolkitError("--precision fp16 needs a CUDA GPU; on CPU use fp32 (or bf16)")
    if choice == "bf16" and on_gpu and not torch.cuda.is_bf16_supported():
        raise ToolkitError("this GPU does not support bf16; use --precision fp16 or fp32")
    return Precision(choice, {"bf16": torch.bfloat16, "fp16": torch.float16}.get(choice), needs_grad_scaler=choice == "fp16")


# ---------------------------------------------------------------------------- the run context
@dataclass(frozen=True)
class RunContext:
    """Where and how a run computes, made once by `start_run` and passed down."""

    device: torch.device
    precision: Precision = Precision("fp32", None, needs_grad_scaler=False)
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    progress: bool = False
    run_id: str = ""
    folder: RunFolder | None = None          # the output folder rank 0 holds
    output_dir: Path | None = None
    log: JsonlLog | None = None
    compiler: Compiler | None = None         # --torch_compile: the process's one Compiler
    progress_interval_s: float = PROGRESS_INTERVAL_S   # without a bar: a progress record every this many seconds

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Several processes (torchrun / accelerate launch)."""
        return self.world_size > 1


@contextmanager
def start_run(args: argparse.Namespace, folder: RunFolder | None) -> Iterator[RunContext]:
    """The run's context from --device/--precision/--no_progress, in the process group when a launcher
    started several processes (NCCL on GPUs, gloo on CPU); `folder`: the output folder rank 0 holds
    (None elsewhere), whose run id becomes every rank's."""
    progress = progress_enabled(args.no_progress)
    if not progress:
        silence_library_progress_bars()
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    world_size, local_rank, rank = int(os.environ.get("WORLD_SIZE", "1")), 0, 0
    if world_size > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        rank = dist.get_rank()
    run = RunContext(device, precision, rank, world_size, local_rank, progress, folder=folder)
    try:
        run = replace(run, run_id=broadcast_from_main(run, folder.run_id if folder is not None else new_run_id()))
        barrier(run)
        yield run
        if run.enabled and dist.is_initialized():   # after a failure, leave without waiting for the others
            dist.barrier()
    finally:
        if run.enabled and dist.is_initialized():
            dist.destroy_process_group()


def gather_to_main(context: RunContext, obj: Any) -> list[Any] | None:
    """Every rank's `obj`, in rank order, on rank 0 (None elsewhere)."""
    if not context.enabled:
        return [obj]
    gathered: list[Any] = [None] * context.world_size if context.is_main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def broadcast_from_main(context: RunContext, obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not context.enabled:
        return obj
    holder = [obj if context.is_main else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_reduce_sum(context: RunContext, values: list[float]) -> list[float]:
    """Element-wise sum of `values` over all ranks."""
    if not context.enabled:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=context.device if context.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor)
    return tensor.tolist()


@contextmanager
def main_process_first(context: RunContext) -> Iterator[None]:
    """Run the block on rank 0 first (it tokenizes and caches), then on the others (they read its cache)."""
    if not context.is_main:
        barrier(context)
    yield
    if context.is_main:
        barrier(context)


def barrier(context: RunContext) -> None:
    """Wait for every rank (a no-op for a single process)."""
    if context.enabled:
        dist.barrier()


# ---------------------------------------------------------------------------- --torch_compile
# Inductor's fastest graphs have static shapes, and each new (batch, width) shape compiles another
# one, so batches are padded to a multiple of `width_multiple` (a bucket). What is compiled is the
# objective's function of (model, batch), not the module: the objectives reach into the backbone,
# which compiling the top-level module would bypass.
class GraphCounter:
    """A torch.compile backend: counts the graphs, notes each one's (B, T) input shape, compiles with inductor."""

    def __init__(self) -> None:
        self.graphs = 0
        self.shapes: list[tuple[int, ...] | None] = []

    def __call__(self, graph_module: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        self.graphs += 1
        token_inputs = [tuple(x.shape) for x in example_inputs
                        if isinstance(x, torch.Tensor) and x.dim() == 2 and not x.is_floating_point()]
        self.shapes.append(token_inputs[0] if token_inputs else None)
        return torch._dynamo.lookup_backend("inductor")(graph_module, example_inputs)


def bucket_width(width: int, multiple: int) -> int:
    """`width` rounded up to a multiple of `multiple` (the bucket it falls in)."""
    return -(-width // multiple) * multiple


def pad_batch_to_width(batch: dict[str, torch.Tensor], width: int, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Every (B, T) tensor of a collated batch right-padded to (B, width): input_ids with the pad id,
    labels with -100, masks and candidate flags with 0; 1-D tensors (span positions, labels) unchanged."""
    padded = {}
    for key, value in batch.items():
        extra = width - value.size(1) if value.dim() == 2 else 0
        if extra < 0:
            raise ValueError(f"batch tensor {key} is {value.size(1)} wide, more than the bucket width {width}")
        fill = pad_token_id if key == "input_ids" else (-100 if key == "labels" else 0)
        padded[key] = torch.nn.functional.pad(value, (0, extra), value=fill) if extra else value
    return padded


@dataclass
class Compiler:
    """One process's compilation: graphs are reused across the models (seeds) of one shape."""

    width_multiple: int = 64
    max_graphs_per_function: int = 64
    counter: GraphCounter = field(default_factory=GraphCounter)
    compile_seconds: float = 0.0

    def function(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn(model, batch)` compiled with static shapes; more graphs than the limit is a ToolkitError."""
        compiled = torch.compile(fn, backend=self.counter, dynamic=False)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                with torch._dynamo.config.patch(recompile_limit=self.max_graphs_per_function,
                                                fail_on_recompile_limit_hit=True):
                    return compiled(*args, **kwargs)
            except torch._dynamo.exc.FailOnRecompileLimitHit as err:
                raise ToolkitError(f"--torch_compile: more than {self.max_graphs_per_function} graphs for one "
                                   f"function (shapes so far: {sorted(set(s for s in self.counter.shapes if s))[:8]} "
                                   "...); raise --compile_width_multiple for fewer widths, or run without "
                                   "--torch_compile") from err
        return call

    def pad(self, batch: dict[str, torch.Tensor], pad_token_id: int) -> dict[str, torch.Tensor]:
        """The batch padded to its bucket's width."""
        return pad_batch_to_width(batch, bucket_width(int(batch["input_ids"].size(1)), self.width_multiple),
                                  pad_token_id)

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Adds the block's wall time to `compile_seconds` when a graph was compiled inside it."""
        before, started = self.counter.graphs, time.perf_counter()
        yield
        if self.counter.graphs > before:
            self.compile_seconds += time.perf_counter() - started

    def report(self) -> dict[str, Any]:
        """`compiled_graphs`, `compile_seconds` and the distinct (B, T) shapes compiled."""
        shapes = sorted({s for s in self.counter.shapes if s is not None})
        return {"compiled_graphs": self.counter.graphs, "compile_seconds": self.compile_seconds,
                "compiled_shapes": [list(s) for s in shapes]}


def compilation_totals(compiler: Compiler | None) -> dict[str, float]:
    """The process's `compiled_graphs` and `compile_seconds` so far, for all_results.json."""
    return {key: compiler.report()[key] for key in ("compiled_graphs", "compile_seconds")} if compiler else {}


# ---------------------------------------------------------------------------- compute accounting
# FLOPs ≈ 6·N·tokens for training (Kaplan et al. 2020, section 2.1), N the NON-EMBEDDING parameters
# (an output matrix tied to the token embedding is that same parameter). Attention's context-dependent
# term is left out, as there: an estimate for comparing runs.
def non_embedding_parameters(model: torch.nn.Module) -> int:
    """N: the number of parameters outside nn.Embedding modules, each shared parameter once."""
    embedding = {id(p) for module in model.modules() if isinstance(module, torch.nn.Embedding)
                 for p in module.parameters(recurse=False)}
    return sum(p.numel() for p in model.parameters() if id(p) not in embedding)


def training_flops(parameters: int, tokens: int) -> float:
    """6·N·tokens."""
    return 6.0 * parameters * tokens


def training_compute(model: torch.nn.Module, passes: int, tokens: int) -> dict[str, float | int]:
    """The compute record of a training run (all processes together), for all_results.json and the lineage."""
    parameters = non_embedding_parameters(model)
    return {"train_passes": int(passes), "train_tokens": int(tokens), "non_embedding_parameters": parameters,
            "train_flops": training_flops(parameters, int(tokens))}

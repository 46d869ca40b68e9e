"""torch.compile for the loop's forward passes (`--torch_compile`), with a bounded number of graphs.

Inductor's fastest graphs have static shapes, and each new (batch, width) shape compiles another
one (tens of seconds each on a CPU). Dynamic padding alone gives up to max_length / 8 widths, so
with compilation every batch is padded further, to a width that is a multiple of
`width_multiple` (a bucket): at most ceil(max_length / width_multiple) widths. The batch dimension
takes the batch size and the few remainders (an epoch's last batch; with token-budget batches the
count per bucket is fixed, except each mega-batch's last). Training (grad mode, dropout on) and
evaluation graphs are separate.

What is compiled is the objective's function of (model, batch) (the loss, or the per-row
outputs), not the module: the objectives reach into the backbone (classification pools the last
real token), which compiling the top-level module would bypass, and the loss itself fuses into the
graph. Every graph the compiler hands to inductor is counted; the count, the shapes and the wall
time of the steps that compiled are logged and returned by the loop.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch._dynamo

from utils.run.errors import ToolkitError
from utils.training.args import LoopSettings
from utils.training.batching import round_up

# Graphs one compiled function may hold before compiling another is an error rather than a
# silent fall-back to eager: 12 buckets (384 tokens / 32) × 2 batch sizes × 2 modes, with room.
MAX_GRAPHS_PER_FUNCTION = 64


class GraphCounter:
    """A torch.compile backend: counts the graphs dynamo hands over, notes the integer (B, T)
    input shape of each, and compiles each with inductor."""

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
    return round_up(width, multiple)


def pad_batch_to_width(batch: dict[str, torch.Tensor], width: int, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Every (B, T) tensor of a collated batch right-padded to (B, width): input_ids with the pad
    id, labels with -100 (ignored by the loss), masks and candidate flags with 0 / False, so that
    the added columns are padding to every objective. 1-D tensors (span positions, class labels)
    are unchanged.

    Raises:
        ValueError: the batch is already wider than `width`.
    """
    padded = {}
    for key, value in batch.items():
        if value.dim() != 2:
            padded[key] = value
            continue
        extra = width - value.size(1)
        if extra < 0:
            raise ValueError(f"batch tensor {key} is {value.size(1)} wide, more than the bucket width {width}")
        fill = pad_token_id if key == "input_ids" else (-100 if key == "labels" else 0)
        padded[key] = torch.nn.functional.pad(value, (0, extra), value=fill) if extra else value
    return padded


@dataclass
class Compiler:
    """One run's compilation: the counting backend, the bucket width and the compile time.

    One Compiler serves a whole process (all seeds of a target run, training and evaluation), so
    its graphs are reused across models of the same shape and its counts are the run's.
    """

    width_multiple: int = 64
    max_graphs_per_function: int = MAX_GRAPHS_PER_FUNCTION
    counter: GraphCounter = field(default_factory=GraphCounter)
    compile_seconds: float = 0.0

    def function(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn(model, batch)` compiled with static shapes; every call runs under `graph_limit`."""
        compiled = torch.compile(fn, backend=self.counter, dynamic=False)

        def call(*args: Any, **kwargs: Any) -> Any:
            with self.graph_limit():
                return compiled(*args, **kwargs)
        return call

    def pad(self, batch: dict[str, torch.Tensor], pad_token_id: int) -> dict[str, torch.Tensor]:
        """The batch padded to its bucket's width."""
        width = bucket_width(int(batch["input_ids"].size(1)), self.width_multiple)
        return pad_batch_to_width(batch, width, pad_token_id)

    @contextmanager
    def graph_limit(self) -> Iterator[None]:
        """Compiling graph max_graphs_per_function + 1 of one function is an error, not a silent
        fall-back to eager."""
        try:
            with torch._dynamo.config.patch(recompile_limit=self.max_graphs_per_function,
                                            fail_on_recompile_limit_hit=True):
                yield
        except torch._dynamo.exc.FailOnRecompileLimitHit as err:
            raise ToolkitError(f"--torch_compile: more than {self.max_graphs_per_function} graphs for one function "
                               f"(shapes so far: {sorted(set(s for s in self.counter.shapes if s))[:8]} ...); "
                               "raise --compile_width_multiple for fewer widths, or run without "
                               "--torch_compile") from err

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Adds the block's wall time to `compile_seconds` when a graph was compiled inside it (the
        compiling step's own run included: inductor compiles the backward lazily within it)."""
        before, started = self.counter.graphs, time.perf_counter()
        yield
        if self.counter.graphs > before:
            self.compile_seconds += time.perf_counter() - started

    def report(self) -> dict[str, Any]:
        """`compiled_graphs`, `compile_seconds` and the distinct (B, T) shapes compiled, for logs."""
        shapes = sorted({s for s in self.counter.shapes if s is not None})
        return {"compiled_graphs": self.counter.graphs, "compile_seconds": self.compile_seconds,
                "compiled_shapes": [list(s) for s in shapes]}


def make_compiler(settings: LoopSettings) -> Compiler | None:
    """The Compiler a run with these settings needs (None without --torch_compile)."""
    return Compiler(settings.compile_width_multiple) if settings.torch_compile else None


def compilation_totals(compiler: Compiler | None) -> dict[str, float]:
    """The process's `compiled_graphs` and `compile_seconds` so far (training and evaluation), for
    all_results.json; nothing without --torch_compile."""
    if compiler is None:
        return {}
    report = compiler.report()
    return {"compiled_graphs": report["compiled_graphs"], "compile_seconds": report["compile_seconds"]}

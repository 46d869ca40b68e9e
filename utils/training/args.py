"""The training-loop flags, added to a parser once and turned into `LoopSettings` (no torch here:
the scripts build their parsers before the heavy libraries load)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from utils.run.cli import (learning_rate as learning_rate_type, non_negative_float, positive_float, positive_int,
                       unit_interval_float)

# Kept here, not imported from schedule / loading: this module must not import torch.
OPTIMIZER_IMPLEMENTATIONS = ("auto", "fused", "foreach", "for-loop")
ATTENTION_IMPLEMENTATIONS = ("auto", "sdpa", "eager")

# The float types live in utils.run.cli with the other argparse types; they are re-exported here, where
# the scripts have always imported them from.
__all__ = ["LoopSettings", "add_training_args", "loop_settings", "non_negative_float", "positive_float"]


@dataclass(frozen=True)
class LoopSettings:
    """Hyper-parameters of the loop (per-device batch size; steps are optimizer steps)."""

    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    num_train_epochs: float = 3.0
    max_steps: int | None = None
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    logging_steps: int = 50
    eval_steps: int | None = None
    save_steps: int | None = None
    save_total_limit: int | None = None
    seed: int = 42
    group_by_length: bool = True
    max_tokens_per_batch: int | None = None   # token-budget batches (utils.training.batching)
    optimizer_implementation: str = "auto"    # AdamW kernel (utils.training.schedule)
    torch_compile: bool = False               # compiled forward passes (utils.training.compilation)
    compile_width_multiple: int = 64          # padded widths are multiples of this when compiled


def padding_multiple(settings: LoopSettings) -> int:
    """What token-budget batches round widths up to: the compile bucket when compiling (so a
    bucket's batches all hold the same count), else 8 as the objectives' dynamic padding does."""
    return settings.compile_width_multiple if settings.torch_compile else 8


def add_eval_batch_size_arg(group: argparse._ActionsContainer) -> None:
    """--per_device_eval_batch_size, for every script that evaluates (prediction only: no effect on results)."""
    group.add_argument("--per_device_eval_batch_size", type=positive_int, default=32,
                       help="Sequences per device at evaluation (prediction only: results do not depend on it).")


def add_training_args(parser: argparse.ArgumentParser, *, learning_rate: float, batch_size: int, epochs: float,
                      weight_decay: float = 0.0, warmup_ratio: float = 0.0,
                      batch_flag: str = "--per_device_train_batch_size", epochs_flag: str = "--num_train_epochs",
                      periodic: bool = True) -> None:
    """Optimiser, schedule, batching, evaluation and checkpoint flags of the shared loop.

    `batch_flag` / `epochs_flag` keep the original scripts' names (e.g. --batch_size, --epochs);
    `periodic=False` leaves out periodic evaluation, checkpoints and resumption (for scripts that
    decide those themselves).
    """
    group = parser.add_argument_group("training")
    group.add_argument("--learning_rate", type=learning_rate_type, default=learning_rate,
                       help="Peak AdamW learning rate, at most 1 (typical: 1e-5 to 5e-5).")
    group.add_argument("--weight_decay", type=non_negative_float, default=weight_decay,
                       help="AdamW weight decay (never on biases and LayerNorm weights).")
    group.add_argument("--warmup_ratio", type=unit_interval_float, default=warmup_ratio,
                       help="Share of the steps (0 to 1) with a linear warm-up, before the linear decay to 0.")
    group.add_argument(epochs_flag, dest="num_train_epochs", type=positive_float, default=epochs,
                       help="Passes over the training data (ignored when --max_steps is given).")
    group.add_argument("--max_steps", type=positive_int, default=None,
                       help="Train for exactly this many optimizer steps (overrides the epochs).")
    group.add_argument(batch_flag, dest="per_device_train_batch_size", type=positive_int, default=batch_size,
                       help="Sequences per device per micro-batch.")
    add_eval_batch_size_arg(group)
    group.add_argument("--gradient_accumulation_steps", type=positive_int, default=1,
                       help="Micro-batches per optimizer step (effective batch = batch × steps × processes).")
    group.add_argument("--max_grad_norm", type=non_negative_float, default=1.0,
                       help="Gradient clipping norm (0 turns clipping off).")
    group.add_argument("--logging_steps", type=positive_int, default=50, help="Log loss, learning rate and tokens/s every N steps.")
    group.add_argument("--max_tokens_per_batch", type=positive_int, default=None,
                       help="Token-budget batches: each micro-batch holds as many length-grouped sequences as fit "
                            "in this many padded tokens (width rounded up to 8), instead of a fixed number; the "
                            "loss is normalised per sequence or answer token as with fixed batches. Default: off.")
    group.add_argument("--no_group_by_length", action="store_true",
                       help="Random batches instead of length-grouped ones (more padding; for comparisons).")
    speed = parser.add_argument_group("speed (results agree within float rounding; see docs/throughput.md)")
    speed.add_argument("--optimizer_implementation", choices=OPTIMIZER_IMPLEMENTATIONS, default="auto",
                       help="AdamW kernel: one fused kernel, multi-tensor foreach ops, or a Python for-loop over "
                            "tensors. auto: fused on CPU and CUDA (measured fastest), else for-loop.")
    speed.add_argument("--attn_implementation", choices=ATTENTION_IMPLEMENTATIONS, default="auto",
                       help="transformers' attention: sdpa (torch's scaled_dot_product_attention: flash or "
                            "memory-efficient kernels on GPU) or eager (explicit softmax). auto: transformers' choice, "
                            "sdpa where the architecture has it (eager measured no faster on CPU).")
    speed.add_argument("--torch_compile", action="store_true",
                       help="torch.compile the training and evaluation forward passes (inductor, static shapes). "
                            "Batches are padded to widths that are multiples of --compile_width_multiple, so a run "
                            "compiles a bounded number of graphs; how many, and the time the compiling steps took, "
                            "go to log.jsonl and all_results.json. Default off: on CPU it measured slower.")
    speed.add_argument("--compile_width_multiple", type=positive_int, default=64,
                       help="With --torch_compile, padded widths are multiples of this (fewer widths: fewer "
                            "graphs to compile, more padding). Default 64.")
    if not periodic:
        return
    group.add_argument("--eval_steps", type=positive_int, default=None, help="Also evaluate every N steps (default: only at the end).")
    group.add_argument("--save_steps", type=positive_int, default=None,
                       help="Write output_dir/checkpoint-N every N steps (model, optimizer, scheduler, RNG).")
    group.add_argument("--save_total_limit", type=positive_int, default=None,
                       help="Keep only the newest N checkpoint-N folders.")
    group.add_argument("--resume_from_checkpoint", type=str, default=None,
                       help="Continue a run from a checkpoint-N folder, or 'latest' for the newest in --output_dir.")


def loop_settings(args: argparse.Namespace, **overrides) -> LoopSettings:
    """LoopSettings from parsed flags (the Namespace is not changed); `overrides` win."""
    values = dict(
        learning_rate=args.learning_rate, weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio,
        num_train_epochs=args.num_train_epochs, max_steps=args.max_steps,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps, max_grad_norm=args.max_grad_norm,
        logging_steps=args.logging_steps, eval_steps=getattr(args, "eval_steps", None),
        save_steps=getattr(args, "save_steps", None), save_total_limit=getattr(args, "save_total_limit", None),
        seed=args.seed, group_by_length=not args.no_group_by_length,
        max_tokens_per_batch=getattr(args, "max_tokens_per_batch", None),
        optimizer_implementation=getattr(args, "optimizer_implementation", "auto"),
        torch_compile=getattr(args, "torch_compile", False),
        compile_width_multiple=getattr(args, "compile_width_multiple", 64))
    values.update(overrides)
    return LoopSettings(**values)

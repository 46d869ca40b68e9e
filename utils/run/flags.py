"""Flags that several commands take, added here once so that their names, defaults and help never
drift apart, and `number`, the one argparse type for a bounded number."""
from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

DEFAULT_SEED = 42
DEVICE_CHOICES = ("auto", "cpu", "cuda")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")


def number(kind: type = float, *, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None, below: float | None = None, hint: str = "") -> Callable[[str], float]:
    """An argparse type for a finite `kind` (int or float) with closed bounds (minimum <= value <=
    maximum) and open ones (above < value < below). NaN and infinities are always refused: no
    setting means them. An out-of-range value's one-line error ends with `hint` (what to use)."""
    noun = "an integer" if kind is int else "a number"
    if minimum is not None and maximum is not None:
        bounds = f"between {minimum} and {maximum}"
    elif above is not None and below is not None:
        bounds = f"strictly between {above} and {below}"
    else:
        bounds = " and ".join(f"{sign} {bound}" for sign, bound in
                              ((">=", minimum), (">", above), ("<=", maximum), ("<", below)) if bound is not None)

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if ((minimum is not None and value < minimum) or (maximum is not None and value > maximum)
                or (above is not None and value <= above) or (below is not None and value >= below)):
            raise argparse.ArgumentTypeError(f"expected {noun} {bounds}, got {value}" + (f"; {hint}" if hint else ""))
        return value

    parse.__name__ = f"{kind.__name__} {bounds}".strip()  # argparse names the type in some messages
    return parse


# NumPy's legacy seeding (np.random.seed, hence set_seed) takes 0 <= seed < 2**32.
SEED = number(int, minimum=0, maximum=2**32 - 1, hint="NumPy seeds are 0 to 2**32 - 1")
# Above 1 a learning rate is not a fine-tuning learning rate for (Adam)W or SGD on a transformer.
LEARNING_RATE = number(float, above=0, maximum=1, hint="typical fine-tuning values are 1e-5 to 5e-5 for the "
                                                         "whole model, up to 1e-3 for a new head")


def name_path(text: str) -> tuple[str, str]:
    """argparse type for NAME=PATH."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    name, path = text.split("=", 1)
    return name.strip(), path.strip()


def add_seed_arg(group: argparse._ActionsContainer) -> None:
    """--seed."""
    group.add_argument("--seed", type=SEED, default=DEFAULT_SEED, help="Seeds random, NumPy and torch before any "
                       "model is built; it also fixes data order and new-head initialisation.")


def add_progress_arg(group: argparse._ActionsContainer) -> None:
    """--no_progress."""
    group.add_argument("--no_progress", action="store_true",
                       help="Turn progress bars off (they are off anyway when stderr is not a terminal).")


def add_runtime_args(parser: argparse.ArgumentParser) -> None:
    """--seed, --device, --precision, --no_progress."""
    group = parser.add_argument_group("run time")
    add_seed_arg(group)
    group.add_argument("--device", type=str, default="auto", choices=DEVICE_CHOICES,
                       help="auto: a CUDA GPU when one is visible, else the CPU.")
    group.add_argument("--precision", type=str, default="auto", choices=PRECISION_CHOICES,
                       help="Compute precision (weights stay fp32). auto: bf16 on a GPU that supports it, fp32 on "
                            "CPU. fp16 uses loss scaling and needs a GPU.")
    add_progress_arg(group)


def add_output_args(parser: argparse.ArgumentParser, *, required: bool = True, default: str | None = None,
                    contents: str = "the checkpoint, run_args.json, log.jsonl, all_results.json and predictions",
                    output_help: str | None = None, overwrite_help: str | None = None) -> None:
    """--output_dir and --overwrite_output_dir; `contents` (what the folder receives) completes the
    default help, `output_help` / `overwrite_help` replace it for a folder with other rules."""
    group = parser.add_argument_group("output")
    group.add_argument("--output_dir", type=str, required=required, default=default,
                       help=output_help or f"Folder for {contents}. An existing non-empty folder is refused "
                                           "unless --overwrite_output_dir is given.")
    group.add_argument("--overwrite_output_dir", action="store_true",
                       help=overwrite_help or "Delete the contents of a non-empty --output_dir, then run there.")


def add_features_cache_arg(group: argparse._ActionsContainer) -> None:
    """--features_cache_dir, by default $GPT2_TRANSFER_CACHE, else ~/.cache/gpt2-transfer/features."""
    default = os.environ.get("GPT2_TRANSFER_CACHE") or str(Path.home() / ".cache" / "gpt2-transfer" / "features")
    group.add_argument("--features_cache_dir", type=str, default=default,
                       help="Where tokenized features are cached ('none' to turn caching off).")


def add_task_file_arg(group: argparse._ActionsContainer, tasks: str) -> None:
    """--task_file NAME=PATH (repeatable); `tasks` names the flags whose tasks it may give files for."""
    group.add_argument("--task_file", type=name_path, action="append", default=[],
                       help=f"NAME=PATH: a local file of a task of {tasks} (repeatable; any format the adapters "
                            "read; a file for another task is an error).")


def add_column_args(group: argparse._ActionsContainer) -> None:
    """--text_column, --text_pair_column, --label_column."""
    group.add_argument("--text_column", type=str, default=None,
                       help="Text column of a TSV/CSV/JSONL classification table (default: the task's original TSV "
                            "column or Hub field, then sentence or text; text for a sentence-pair task).")
    group.add_argument("--text_pair_column", type=str, default=None,
                       help="Second-text column of a sentence-pair task's table (default: the task's original TSV "
                            "column or Hub field, then text_pair).")
    group.add_argument("--label_column", type=str, default=None,
                       help="Label column of a TSV/CSV/JSONL classification table (default: the task's original TSV "
                            "column, then label, if present; a regression task needs one).")


def add_data_file_args(parser: argparse.ArgumentParser) -> None:
    """--train_file, --validation_file, --max_train_samples, --max_eval_samples, --data_seed."""
    group = parser.add_argument_group("data")
    group.add_argument("--train_file", type=str, default=None,
                       help="Local training data: the dataset's original file, canonical JSON lines, Hub-schema "
                            "rows or a save_to_disk folder. Without it the task's Hub dataset is used.")
    group.add_argument("--validation_file", type=str, default=None,
                       help="Local evaluation data, in any format --train_file accepts.")
    group.add_argument("--max_train_samples", type=number(int, minimum=1), default=None,
                       help="Train on a random subset of N examples (after the adapter), drawn with --data_seed and "
                            "stratified: QA by document, classification by class, regression by 5 quantile bins of "
                            "the labels, each stratum its proportional share. The ids go to data_subsets.json.")
    group.add_argument("--max_eval_samples", type=number(int, minimum=1), default=None,
                       help="Evaluate on a random subset of N examples, drawn and stratified as --max_train_samples. "
                            "Scores on a subset are not the official whole-set numbers.")
    add_data_seed_arg(group)


def add_data_seed_arg(group: argparse._ActionsContainer) -> None:
    """--data_seed."""
    group.add_argument("--data_seed", type=SEED, default=0,
                       help="Seed of the random data subsets (--max_train_samples, --max_eval_samples, "
                            "--num_examples, a hold-out), apart from --seed so that runs with different seeds see "
                            "the same data.")

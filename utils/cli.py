"""Command-line plumbing shared by every script: common flags, logging set-up, the entry point.

Flags that several scripts take are added here, once, so their names, defaults and help never
drift apart (DESIGN.md section 3).
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from utils.errors import ToolkitError, UnknownTaskError
from utils.tasks import get_task

logger = logging.getLogger(__name__)
DEFAULT_SEED = 42
DEVICE_CHOICES = ("auto", "cpu", "cuda")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")


def add_seed_arg(group: argparse._ActionsContainer) -> None:
    """--seed."""
    group.add_argument("--seed", type=int, default=DEFAULT_SEED,
                       help="Seeds random, NumPy and torch before any model is built; it also "
                            "fixes data order and new-head initialisation.")


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
                       help="Compute precision (weights stay fp32). auto: bf16 on a GPU that "
                            "supports it, fp32 on CPU. fp16 uses loss scaling and needs a GPU.")
    add_progress_arg(group)


def add_output_args(parser: argparse.ArgumentParser, *, required: bool = True, default: str | None = None,
                    contents: str = "the checkpoint, run_args.json, log.jsonl, all_results.json and predictions",
                    output_help: str | None = None,
                    overwrite_help: str = "Allow writing into an existing non-empty --output_dir.") -> None:
    """--output_dir and --overwrite_output_dir.

    Args:
        contents: what the folder receives (for the default help text).
        output_help, overwrite_help: full help texts, for a folder with other rules.
    """
    group = parser.add_argument_group("output")
    group.add_argument("--output_dir", type=str, required=required, default=default,
                       help=output_help or f"Folder for {contents}. An existing non-empty folder is refused "
                                           "unless --overwrite_output_dir is given.")
    group.add_argument("--overwrite_output_dir", action="store_true", help=overwrite_help)


def add_data_file_args(parser: argparse.ArgumentParser) -> None:
    """--train_file, --validation_file, --max_train_samples, --max_eval_samples, --data_seed."""
    group = parser.add_argument_group("data")
    group.add_argument("--train_file", type=str, default=None,
                       help="Local training data: the dataset's original file, canonical JSON lines, "
                            "Hub-schema rows or a save_to_disk folder. Without it the task's Hub "
                            "dataset is used.")
    group.add_argument("--validation_file", type=str, default=None,
                       help="Local evaluation data, in any format --train_file accepts.")
    group.add_argument("--max_train_samples", type=positive_int, default=None,
                       help="Train on a random subset of N examples (after the adapter), drawn with --data_seed "
                            "and stratified by document (article, passage, movie); the ids go to data_subsets.json.")
    group.add_argument("--max_eval_samples", type=positive_int, default=None,
                       help="Evaluate on a random subset of N examples, drawn as --max_train_samples. Scores on a "
                            "subset are not the official whole-set numbers.")
    add_data_seed_arg(group)


def add_data_seed_arg(group: argparse._ActionsContainer) -> None:
    """--data_seed."""
    group.add_argument("--data_seed", type=int, default=0,
                       help="Seed of the random data subsets (--max_train_samples, --max_eval_samples, maml_qa.py's "
                            "--num_examples, the target script's hold-out); apart from --seed, so that runs with "
                            "different seeds see the same data.")


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def name_path(text: str) -> tuple[str, str]:
    """argparse type for NAME=PATH."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    name, path = text.split("=", 1)
    return name.strip(), path.strip()


def files_by_task(pairs: list[tuple[str, str]], known: list, flag: str) -> dict[str, str]:
    """NAME=PATH pairs keyed by canonical task name (any alias, any case); a file for a task this
    run does not use is reported and ignored (one list of files can serve several runs).

    Raises:
        UnknownTaskError: a NAME that is no task at all.
        ToolkitError: a task given twice.
    """
    names = {spec.name for spec in known}
    files: dict[str, str] = {}
    for name, path in pairs:
        canonical = get_task(name).name
        if canonical not in names:
            logger.warning("%s %s=%s is not used: %s is not among this run's tasks", flag, name, path, canonical)
        if canonical in files:
            raise ToolkitError(f"{flag} gives task {canonical} twice")
        files[canonical] = path
    return files


def task_name(text: str) -> str:
    """argparse type: a registered task name or alias, returned in canonical form."""
    try:
        return get_task(text).name
    except UnknownTaskError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def progress_enabled(no_progress: bool) -> bool:
    """Progress bars only for a person watching a terminal."""
    return not no_progress and sys.stderr.isatty()


def silence_library_progress_bars() -> None:
    """Turn off the progress bars transformers and datasets draw on their own (loading, saving),
    and transformers' load reports (utils.checkpoint checks and logs the loaded keys itself)."""
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def configure_logging(level: int = logging.INFO) -> None:
    """One timestamped format for every script; quiet the libraries' own chatter."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_entry_point(main: Callable[[], Any]) -> NoReturn:
    """Run a script's main(); a user error becomes one line on stderr and exit status 2.

    Bugs keep their stack trace: only `ToolkitError` (bad input, missing files, unknown names,
    unusable checkpoints) and `OSError` (a path that cannot be read or written) become a message.
    """
    configure_logging()
    try:
        main()
    except ToolkitError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        # A path that cannot be read or written (a folder given for a file, no permission, a full
        # disk): the message names the path.
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(0)

"""Command-line plumbing shared by every script: common flags, logging set-up, the entry point.

Flags that several scripts take are added here, once, so their names, defaults and help never
drift apart (DESIGN.md section 3).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from utils.run.errors import ToolkitError, UnknownTaskError
from utils.data.registry import get_task
from utils.data.task_files import is_task_file

DEFAULT_SEED = 42
DEVICE_CHOICES = ("auto", "cpu", "cuda")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")


def add_seed_arg(group: argparse._ActionsContainer) -> None:
    """--seed."""
    group.add_argument("--seed", type=seed_int, default=DEFAULT_SEED,
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
                    output_help: str | None = None, overwrite_help: str | None = None) -> None:
    """--output_dir and --overwrite_output_dir.

    Args:
        contents: what the folder receives (for the default help text).
        output_help, overwrite_help: full help texts, for a folder with other rules.
    """
    group = parser.add_argument_group("output")
    group.add_argument("--output_dir", type=str, required=required, default=default,
                       help=output_help or f"Folder for {contents}. An existing non-empty folder is refused "
                                           "unless --overwrite_output_dir is given.")
    group.add_argument("--overwrite_output_dir", action="store_true", help=overwrite_help or OVERWRITE_HELP)


OVERWRITE_HELP = ("Replace the run in a non-empty output folder: its files are moved to .previous_run/ and deleted "
                  "once this run finishes.")


def add_features_cache_arg(group: argparse._ActionsContainer) -> None:
    """--features_cache_dir."""
    group.add_argument("--features_cache_dir", type=str, default=str(default_cache_dir()),
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
                       help="Local training data: the dataset's original file, canonical JSON lines, "
                            "Hub-schema rows or a save_to_disk folder. Without it the task's Hub "
                            "dataset is used.")
    group.add_argument("--validation_file", type=str, default=None,
                       help="Local evaluation data, in any format --train_file accepts.")
    group.add_argument("--max_train_samples", type=positive_int, default=None,
                       help="Train on a random subset of N examples (after the adapter), drawn with --data_seed "
                            "and stratified: QA by document (article, passage, movie), classification by class, "
                            "regression by 5 quantile bins of the labels; each stratum gets its proportional "
                            "share. The ids and the rule go to data_subsets.json.")
    group.add_argument("--max_eval_samples", type=positive_int, default=None,
                       help="Evaluate on a random subset of N examples, drawn and stratified as --max_train_samples "
                            "(by document, class or label bin). Scores on a subset are not the official whole-set "
                            "numbers.")
    add_data_seed_arg(group)


def add_data_seed_arg(group: argparse._ActionsContainer) -> None:
    """--data_seed."""
    group.add_argument("--data_seed", type=seed_int, default=0,
                       help="Seed of the random data subsets (--max_train_samples, --max_eval_samples, maml_qa.py's "
                            "--num_examples, the target script's hold-out); apart from --seed, so that runs with "
                            "different seeds see the same data.")


# NumPy's legacy seeding (np.random.seed, hence set_seed) takes 0 <= seed < 2**32.
MAX_SEED = 2**32 - 1
# Above this a learning rate is not a fine-tuning learning rate for (Adam)W or SGD on a transformer:
# the first steps would destroy the weights. Typical values are 1e-5 to 1e-3.
MAX_LEARNING_RATE = 1.0
TYPICAL_LEARNING_RATES = "typical fine-tuning values are 1e-5 to 5e-5 for the whole model, up to 1e-3 for a new head"


def seed_int(text: str) -> int:
    """argparse type: a seed, an integer 0 <= seed < 2**32 (what NumPy accepts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must be between 0 and {MAX_SEED} (2**32 - 1), got {value}")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number (NaN and infinities refused: no setting means them)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite float >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def unit_interval_float(text: str) -> float:
    """argparse type: a finite float in [0, 1] (a share or a probability)."""
    value = finite_float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {value}")
    return value


def open_unit_interval_float(text: str) -> float:
    """argparse type: a finite float strictly between 0 and 1 (a confidence level)."""
    value = finite_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {value}")
    return value


def learning_rate(text: str) -> float:
    """argparse type: a learning rate, 0 < lr <= MAX_LEARNING_RATE (finite)."""
    value = finite_float(text)
    if not 0 < value <= MAX_LEARNING_RATE:
        raise argparse.ArgumentTypeError(f"a learning rate must be > 0 and at most {MAX_LEARNING_RATE:g}, "
                                         f"got {value:g}; {TYPICAL_LEARNING_RATES}")
    return value


def default_cache_dir() -> Path:
    """$GPT2_TRANSFER_CACHE, else ~/.cache/gpt2-transfer/features."""
    root = os.environ.get("GPT2_TRANSFER_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "gpt2-transfer" / "features"


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
    """NAME=PATH pairs keyed by canonical task name (any alias, any case).

    A file for a task this run does not use is an error: it is almost always a typo in the task
    list or a file given for the wrong run, and ignoring it would train or embed something else
    than the user meant.

    Raises:
        UnknownTaskError: a NAME that is no task at all.
        ToolkitError: a task given twice, or a task that is not among `known`.
    """
    names = [spec.name for spec in known]
    files: dict[str, str] = {}
    for name, path in pairs:
        canonical = get_task(name).name
        if canonical not in names:
            raise ToolkitError(f"{flag} {name}={path}: task {canonical} is not among this run's tasks "
                               f"({', '.join(names) or 'none'}); add it to the task list or drop the file")
        if canonical in files:
            raise ToolkitError(f"{flag} gives task {canonical} twice")
        files[canonical] = path
    return files


def task_name(text: str) -> str:
    """argparse type: a registered task name or alias, returned in canonical form, or the path of a
    task file (utils.data.task_files), checked and returned as given."""
    try:
        spec = get_task(text)
    except UnknownTaskError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text if is_task_file(text) else spec.name


def progress_enabled(no_progress: bool) -> bool:
    """Progress bars only for a person watching a terminal."""
    return not no_progress and sys.stderr.isatty()


def silence_library_progress_bars() -> None:
    """Turn off the progress bars transformers and datasets draw on their own (loading, mapping),
    for a run without a terminal. Their reports and warnings are quieted by `configure_logging`,
    terminal or not."""
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def configure_logging(level: int = logging.INFO) -> None:
    """One timestamped format for every script; quiet the libraries' own chatter.

    transformers logs errors only, terminal or not: its load report (a table per model loaded,
    once per seed) repeats what utils.models.checkpoint checks and logs in one line, and its tokenizer's
    "Token indices sequence length is longer than ..." is a false alarm here, where long contexts
    are windowed and sentences cut on purpose (the cuts that matter get a line of our own).
    """
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_transformers()


def quiet_transformers() -> None:
    """transformers logs errors only, unless the user's TRANSFORMERS_VERBOSITY says otherwise.

    transformers reads TRANSFORMERS_VERBOSITY when it loads; where it is loaded already its own
    setter is used. Neither imports it, so a command answers --help or a bad flag at once.
    """
    if os.environ.get("TRANSFORMERS_VERBOSITY"):
        return
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.set_verbosity_error()
    else:
        os.environ["TRANSFORMERS_VERBOSITY"] = "error"


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

"""The choices of maml_qa.py's meta-learning flags (standard library only: the script builds its
parser, checks the flags and holds its run folder before torch and transformers load)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from utils.run.errors import ToolkitError

INNER_OPTIMIZERS = ("adam", "adamw", "sgd")
# utils.meta.algorithms: Reptile, first-order MAML, and multi-task training on the same task batches.
ALGORITHMS = ("reptile", "fomaml", "multitask")
ALGORITHM_LABELS = {"reptile": "Reptile", "fomaml": "FOMAML", "multitask": "multi-task"}
INNER_STATE_CHOICES = ("reset", "carry")
SAMPLING_CHOICES = ("uniform", "proportional", "temperature")


COMPUTE_UNITS = ("tokens", "flops", "passes")


def read_budget(folder: str) -> dict[str, float | None]:
    """The training compute another run recorded (train_passes, train_tokens and train_flops of its
    all_results.json; the folder of a maml_qa.py or run_intermediate_source_GPT2.py run);
    train_flops is None for a run that did not record it.

    Raises:
        ToolkitError: no such file, or one without train_passes / train_tokens.
    """
    path = Path(folder) / "all_results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ToolkitError(f"--match_compute {folder}: no all_results.json there (give the folder of a finished "
                           "maml_qa.py or run_intermediate_source_GPT2.py run)") from None
    except json.JSONDecodeError as err:
        raise ToolkitError(f"--match_compute {path}: not valid JSON ({err})") from None
    if not isinstance(results, dict) or not all(isinstance(results.get(k), int) for k in ("train_passes", "train_tokens")):
        raise ToolkitError(f"--match_compute {path}: no train_passes / train_tokens (a run from before compute was "
                           "recorded); run it again, or set --num_train_iterations yourself")
    flops = results.get("train_flops")
    return {"passes": results["train_passes"], "tokens": results["train_tokens"],
            "flops": float(flops) if isinstance(flops, (int, float)) else None}


def step_list(text: str) -> list[int]:
    """argparse type: comma-separated positive integers, sorted."""
    try:
        steps = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not steps or steps[0] <= 0:
        raise argparse.ArgumentTypeError(f"expected positive step counts, got {text!r}")
    return steps

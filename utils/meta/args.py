"""The choices of maml_qa.py's meta-learning flags (standard library only: the script builds its
parser, checks the flags and holds its run folder before torch and transformers load)."""
from __future__ import annotations

import argparse

INNER_OPTIMIZERS = ("adam", "adamw", "sgd")
# utils.meta.algorithms: Reptile, first-order MAML, and multi-task training on the same task batches.
ALGORITHMS = ("reptile", "fomaml", "multitask")
ALGORITHM_LABELS = {"reptile": "Reptile", "fomaml": "FOMAML", "multitask": "multi-task"}
INNER_STATE_CHOICES = ("reset", "carry")
SAMPLING_CHOICES = ("uniform", "proportional")


def step_list(text: str) -> list[int]:
    """argparse type: comma-separated positive integers, sorted."""
    try:
        steps = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not steps or steps[0] <= 0:
        raise argparse.ArgumentTypeError(f"expected positive step counts, got {text!r}")
    return steps

"""The target script's choices and its seeds (standard library only: the script builds its parser,
checks the flags and holds its output folder before torch and transformers load)."""
from __future__ import annotations

from utils.run.errors import ToolkitError

DEFAULT_SEEDS = (13, 21, 42, 87, 100)
SELECTIONS = ("holdout", "last")
SAVE_MODEL_CHOICES = ("none", "best", "last")


def resolve_seeds(num_runs: int | None, seeds: list[int] | None) -> list[int]:
    """--seeds as given, else the first --num_runs of 13, 21, 42, 87, 100, 101, 102, ...

    Raises:
        ToolkitError: both given and disagreeing, or a seed repeated.
    """
    if seeds:
        if num_runs is not None and num_runs != len(seeds):
            raise ToolkitError(f"--num_runs {num_runs} disagrees with the {len(seeds)} --seeds given; give one of them")
        if len(set(seeds)) != len(seeds):
            raise ToolkitError(f"--seeds repeats a seed: {seeds}")
        return list(seeds)
    count = 5 if num_runs is None else num_runs
    extra = [DEFAULT_SEEDS[-1] + i for i in range(1, max(0, count - len(DEFAULT_SEEDS)) + 1)]
    return list(DEFAULT_SEEDS + tuple(extra))[:count]

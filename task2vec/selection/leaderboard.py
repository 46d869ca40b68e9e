"""Each selector's ranking of a condition's source sets, scored against the measured transfer with a
seed-resampling interval per score (task2vec.selection.resampling)."""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from task2vec.selection.measured import MeasuredCondition
from task2vec.selection.resampling import seed_interval
from task2vec.selection.scores import ndcg_at_k, rank_of_best, regret_at_k, spearman


def score_functions(k: int) -> dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]]:
    """name -> statistic(predicted, measured means, gains) of every ranking score."""
    return {"spearman": lambda p, m, g: spearman(p, m).value,
            f"ndcg@{k}": lambda p, m, g: ndcg_at_k(p, g, k).value,
            f"regret@{k}": lambda p, m, g: regret_at_k(p, m, k).value,
            "rank_of_best": lambda p, m, g: rank_of_best(p, m).value}


def score_ranking(predicted: np.ndarray, condition: MeasuredCondition, *, k: int, samples: int, seed: int,
                  confidence: float) -> dict[str, dict]:
    """{score: {value, ci_low, ci_high, undefined_draws} or {value: None, reason}} for one ranking."""
    per_source = [source.values for source in condition.sources]
    results: dict[str, dict] = {}
    for name, statistic in score_functions(k).items():
        needs_gain = name.startswith("ndcg")
        if needs_gain and condition.plain is None:
            results[name] = {"value": None, "reason": "no plain-model row in this condition: no gain to weigh"}
            continue
        if len(per_source) < 2:
            results[name] = {"value": None, "reason": "fewer than 2 source sets: no ranking to score"}
            continue
        if name.startswith("regret") and len(per_source) <= k:
            results[name] = {"value": None, "reason": f"{len(per_source)} source sets, k = {k}: every one is picked, "
                                                      "so the regret is 0 whatever the ranking"}
            continue
        plain = condition.plain if condition.plain is not None else [math.nan]
        interval = seed_interval(statistic, predicted, per_source, plain, samples=samples, seed=seed,
                                 confidence=confidence)
        entry = {"value": _finite(interval.value), "ci_low": _finite(interval.low), "ci_high": _finite(interval.high),
                 "undefined_draws": interval.undefined_draws}
        if entry["value"] is None:
            entry["reason"] = "undefined on the measured means (constant values, or no source with a positive gain)"
        results[name] = entry
    return results


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None

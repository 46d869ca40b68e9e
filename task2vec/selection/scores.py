"""How good a selector's ranking is: the measured transfer per condition, the scores of a predicted
ranking against it (Vu et al. 2020, Poth et al. 2021), and their intervals over training seeds.

Measured transfer: rows grouped as TaskDiversity.py groups them, each source set pooled over its
seeds (from each row's summary.json); `gain` is measured minus the plain model's score.

    spearman       Spearman's ρ of predicted and measured (average ranks for ties)
    ndcg@k         DCG_k / IDCG_k with DCG_k = Σ_{i ≤ k} rel_(i) / log2(i + 1), sources ordered by
                   predicted score and rel = max(gain, 0); tied predicted scores share the mean of
                   their positions' discounts (as sklearn.metrics.ndcg_score); NaN when IDCG = 0
    regret@k       best measured − the best measured among the top k predicted; ties at the cut
                   are broken against the selector
    rank_of_best   1-based position of the best-measured source in the predicted order, a tie
                   counting half a place for every other source tied with it

Intervals: each draw resamples the seeds of every source and of the plain model separately, takes
each mean as x̄ + sqrt(n/(n−1))·(x̄* − x̄) (undoing the plug-in variance's (n−1)/n), and scores the
fixed ranking; percentile interval, undefined draws left out and counted.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from task2vec.analysis.transfer import BASELINE_KEYS, distinct_runs, parse_source_tasks, row_condition
from utils.results.metrics import MetricValue, spearman as spearman_metric
from utils.data.registry import get_task
from utils.results.table import row_score
from utils.run.errors import UnknownTaskError

@dataclass
class MeasuredSource:
    """One source set of a condition: its per-seed values pooled over its runs."""

    sources: tuple[str, ...]
    values: list[float] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "+".join(self.sources)


@dataclass
class MeasuredCondition:
    """The source sets of one condition and the plain model's per-seed values (None: no plain row)."""

    condition: dict
    sources: list[MeasuredSource]
    plain: list[float] | None
    plain_lines: list[int]


def seed_values(row: dict, metric: str, table: Path) -> tuple[list[float] | None, str | None]:
    """(the per-seed values of `metric` in the row's summary.json, None) or (None, why not)."""
    folder = Path(row.get("output_dir") or "")
    if not folder.is_absolute() and not folder.exists():
        folder = table.parent / folder
    path = folder / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        return None, f"no readable summary.json at {path} ({err.__class__.__name__}): its seeds cannot be resampled"
    values = [run.get(f"eval_{metric}") for run in summary.get("runs", [])]
    if not values or any(value is None or not math.isfinite(float(value)) for value in values):
        return None, f"{path}: eval_{metric} is missing or undefined for a seed"
    return [float(value) for value in values], None


def measured_conditions(rows: list[dict], target: str, table: Path) -> tuple[list[MeasuredCondition], list[dict]]:
    """The conditions of `target` with their source sets and plain model, and the rows skipped
    (line, reason)."""
    skipped: list[dict] = []
    groups: dict[tuple, dict[tuple[str, ...], list]] = {}
    plain: dict[tuple, list] = {}
    conditions: dict[tuple, dict] = {}
    for row in rows:
        try:
            if get_task(row["target_task"] or "").name != target:
                continue
            sources = tuple(sorted(parse_source_tasks(row["source_tasks"] or "")))
        except UnknownTaskError as err:
            skipped.append({"line": row["line"], "reason": str(err)})
            continue
        condition = row_condition(row, target)
        values, reason = seed_values(row, row_score(row)[0], table)
        if reason:
            skipped.append({"line": row["line"], "reason": reason})
            continue
        entry = {**row, "values": values}
        if condition["algorithm"] == "none":
            plain.setdefault(tuple(condition[k] for k in BASELINE_KEYS), []).append(entry)
            continue
        key = tuple(condition.values())
        conditions[key] = condition
        groups.setdefault(key, {}).setdefault(sources, []).append(entry)
    result = []
    for key, by_set in groups.items():
        measured = []
        for sources, entries in sorted(by_set.items()):
            runs, _ = distinct_runs(entries)
            measured.append(MeasuredSource(sources, [v for run in runs for v in run["values"]],
                                           [run["line"] for run in runs], [run["pretrained_model"] for run in runs]))
        reference = plain.get(tuple(conditions[key][k] for k in BASELINE_KEYS))
        plain_runs = distinct_runs(reference)[0] if reference else []
        result.append(MeasuredCondition(conditions[key], measured,
                                        [v for run in plain_runs for v in run["values"]] if plain_runs else None,
                                        [run["line"] for run in plain_runs]))
    return result, skipped


def _vectors(predicted: Sequence[float], measured: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    p, m = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    if p.shape != m.shape or p.ndim != 1 or p.size == 0:
        raise ValueError(f"predicted {p.shape} and measured {m.shape} must be two non-empty vectors of one length")
    return p, m


def spearman(predicted: Sequence[float], measured: Sequence[float]) -> MetricValue:
    """Spearman's ρ (utils.results.metrics.spearman: Pearson of average ranks)."""
    p, m = _vectors(predicted, measured)
    return spearman_metric(m, p)


def dcg_at_k(predicted: np.ndarray, relevance: np.ndarray, k: int) -> float:
    """Σ over the first k places of the predicted order of relevance / log2(place + 1), tied
    predictions sharing the mean discount of the places they span."""
    discount = 1.0 / np.log2(np.arange(predicted.size) + 2.0)
    discount[k:] = 0.0
    cumulative = np.cumsum(discount)
    total = 0.0
    start = 0
    for value in np.unique(predicted)[::-1]:            # groups of equal predictions, best first
        members = predicted == value
        count = int(members.sum())
        span = cumulative[start + count - 1] - (cumulative[start - 1] if start else 0.0)
        total += float(relevance[members].mean()) * span
        start += count
    return total


def ndcg_at_k(predicted: Sequence[float], gain: Sequence[float], k: int) -> MetricValue:
    """NDCG@k with relevance max(gain, 0) (module docstring)."""
    p, g = _vectors(predicted, gain)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    relevance = np.clip(g, 0.0, None)
    ideal = dcg_at_k(relevance, relevance, k)
    if ideal <= 0:
        return MetricValue(math.nan, "no source has a positive gain: NDCG is undefined")
    return MetricValue(dcg_at_k(p, relevance, k) / ideal)


def regret_at_k(predicted: Sequence[float], measured: Sequence[float], k: int) -> MetricValue:
    """max(measured) − max(measured of the top k predicted) (module docstring)."""
    p, m = _vectors(predicted, measured)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    picked = np.lexsort((m, -p))[:k]     # predicted descending, ties broken against the selector
    return MetricValue(float(m.max() - m[picked].max()))


def rank_of_best(predicted: Sequence[float], measured: Sequence[float]) -> MetricValue:
    """1 + #(sources predicted higher than the best-measured one) + #(tied with it) / 2; with
    several best-measured sources, the best placed of them."""
    p, m = _vectors(predicted, measured)
    ranks = [1 + float(np.sum(p > p[i])) + (float(np.sum(p == p[i])) - 1) / 2
             for i in np.flatnonzero(m == m.max())]
    return MetricValue(min(ranks))


Statistic = Callable[[np.ndarray, np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Interval:
    """A score, its percentile interval over seed resamples, and the draws left out."""

    value: float
    low: float
    high: float
    undefined_draws: int
    samples: int
    confidence: float


def _inflation(n: int) -> float:
    """sqrt(n / (n − 1)) (module docstring); 1 for one seed."""
    return float(np.sqrt(n / (n - 1))) if n > 1 else 1.0


def seed_interval(statistic: Statistic, predicted: Sequence[float], per_source: Sequence[Sequence[float]],
                  plain: Sequence[float], *, samples: int = 2000, seed: int = 0,
                  confidence: float = 0.95) -> Interval:
    """The score of `predicted` on the means of `per_source` (per-seed values of each source) against
    `plain` (the plain model's per-seed values), with its seed-resampling interval."""
    values = [np.asarray(v, dtype=np.float64) for v in per_source]
    base = np.asarray(plain, dtype=np.float64)
    if any(v.size == 0 for v in values) or base.size == 0:
        raise ValueError("every source and the plain model need at least one seed")
    p = np.asarray(predicted, dtype=np.float64)
    means = np.array([v.mean() for v in values])
    observed = statistic(p, means, means - base.mean())
    rng = np.random.default_rng(seed)
    draws = np.empty(samples)
    inflation = np.array([_inflation(v.size) for v in values])                     # (S,)
    for b in range(samples):
        resampled = np.array([v[rng.integers(v.size, size=v.size)].mean() for v in values])
        drawn = means + inflation * (resampled - means)
        plain_mean = base.mean() + _inflation(base.size) * (base[rng.integers(base.size, size=base.size)].mean()
                                                            - base.mean())
        draws[b] = statistic(p, drawn, drawn - plain_mean)
    defined = draws[np.isfinite(draws)]
    tail = (1 - confidence) / 2
    low, high = (float(np.quantile(defined, tail)), float(np.quantile(defined, 1 - tail))) if defined.size \
        else (float("nan"), float("nan"))
    return Interval(float(observed), low, high, samples - int(defined.size), samples, confidence)


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

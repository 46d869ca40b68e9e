"""Correlation coefficients with permutation p-values that are exact at small n.

scipy's t approximation is anti-conservative with a handful of points (n = 5, ρ = 0.9: p = 0.037
against an exact 0.083). Here p is the share of orderings of y whose coefficient is at least as
extreme, two-sided:

    p = #{π : |c(x, y_π)| ≥ |c(x, y)|} / n!          over all n! orderings, n ≤ EXACT_MAX_N;
    p = (1 + #{π_b : |c(x, y_πb)| ≥ |c(x, y)|}) / (1 + B)   B seeded random orderings, above it.

Under the null every ordering is equally likely: the first is exact, the second a valid
(slightly conservative) Monte-Carlo p-value. Spearman's ρ is Pearson's r of the average ranks.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

EXACT_MAX_N = 8            # 8! = 40,320 orderings
PERMUTATIONS = 20_000      # random orderings above EXACT_MAX_N
PERMUTATION_CHUNK = 4_096
MIN_POINTS = 3
FEW_POINTS = 5             # below this a plain-language warning goes with every coefficient
# |c_π| ≥ |c| − TIE_TOLERANCE counts as "at least as extreme": orderings with the same coefficient
# as the observed one must count however the floating-point sums round.
TIE_TOLERANCE = 1e-9


def permutation_pvalue(x: Sequence[float], y: Sequence[float], *, rank: bool, seed: int = 0,
                       permutations: int = PERMUTATIONS) -> dict[str, Any]:
    """Pearson's r (rank=False) or Spearman's ρ (rank=True) of n ≥ 3 pairs with its permutation
    p-value: {"statistic", "p_value", "method", "orderings", "min_p_value"} (the smallest p any
    ordering could give; exact only). `seed` and B = `permutations` serve n > EXACT_MAX_N."""
    x_values, y_values = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x_values.shape != y_values.shape or x_values.ndim != 1:
        raise ValueError(f"x and y must be 1-D of the same length, got {x_values.shape} and {y_values.shape}")
    if len(x_values) < MIN_POINTS or not np.all(np.isfinite(x_values) & np.isfinite(y_values)):
        raise ValueError(f"need at least {MIN_POINTS} finite pairs")
    if np.ptp(x_values) == 0 or np.ptp(y_values) == 0:
        raise ValueError("a variable is constant; its correlation is undefined")
    if rank:
        x_values, y_values = stats.rankdata(x_values), stats.rankdata(y_values)
    # centred and scaled to unit norm, so that a dot product of the two is Pearson's r
    xu, yu = ((v - v.mean()) / np.linalg.norm(v - v.mean()) for v in (x_values, y_values))
    observed = float(np.clip(xu @ yu, -1.0, 1.0))
    threshold = abs(observed) - TIE_TOLERANCE
    n = len(xu)
    if n <= EXACT_MAX_N:
        orderings = np.array(list(itertools.permutations(range(n))), dtype=np.intp)   # (n!, n)
        coefficients = np.abs(yu[orderings] @ xu)                        # (n!,)
        extreme = int(np.count_nonzero(coefficients >= threshold))
        best = int(np.count_nonzero(coefficients >= coefficients.max() - TIE_TOLERANCE))
        return {"statistic": observed, "p_value": extreme / math.factorial(n),
                "method": f"exact: all {math.factorial(n)} orderings", "orderings": math.factorial(n),
                "min_p_value": best / math.factorial(n)}
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, permutations, PERMUTATION_CHUNK):
        count = min(PERMUTATION_CHUNK, permutations - start)
        orders = rng.permuted(np.tile(np.arange(n), (count, 1)), axis=1)  # (count, n)
        extreme += int(np.count_nonzero(np.abs(yu[orders] @ xu) >= threshold))
    return {"statistic": observed, "p_value": (1 + extreme) / (1 + permutations),
            "method": f"Monte-Carlo: {permutations} random orderings (seed {seed})", "orderings": permutations,
            "min_p_value": None}


def few_points_warning(n: int, min_p_value: float | None) -> str | None:
    """A plain-language warning for n < FEW_POINTS, else None."""
    if n >= FEW_POINTS:
        return None
    floor = "" if min_p_value is None else (f" even the strongest possible ordering of these points gives "
                                            f"p = {min_p_value:.3g};")
    return (f"only {n} distinct source sets:{floor} a correlation over so few points is a description of them, "
            "not evidence of a relationship")


def correlate(x: Sequence[float], y: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """Spearman's ρ and Pearson's r of y against x, each with its permutation p-value, over the
    n pairs without NaN; NaN coefficients with a reason when n < 3 or a variable is constant."""
    x_values, y_values = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x_values) & np.isfinite(y_values)
    x_values, y_values = x_values[keep], y_values[keep]
    n = int(keep.sum())
    result: dict[str, Any] = {"n": n, "spearman_rho": math.nan, "spearman_p": math.nan, "pearson_r": math.nan,
                              "pearson_p": math.nan, "p_method": None, "min_p_value": None, "warning": None,
                              "reason": None}
    if n < MIN_POINTS:
        result["reason"] = f"only {n} distinct source set(s) with a value; at least {MIN_POINTS} are needed"
        return result
    if np.ptp(x_values) == 0 or np.ptp(y_values) == 0:
        result["reason"] = "a variable is constant over the source sets"
        return result
    spearman = permutation_pvalue(x_values, y_values, rank=True, seed=seed)
    pearson = permutation_pvalue(x_values, y_values, rank=False, seed=seed)
    result.update(spearman_rho=spearman["statistic"], spearman_p=spearman["p_value"],
                  pearson_r=pearson["statistic"], pearson_p=pearson["p_value"], p_method=spearman["method"],
                  min_p_value=spearman["min_p_value"], warning=few_points_warning(n, spearman["min_p_value"]))
    return result

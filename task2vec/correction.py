"""Distances corrected for the Monte-Carlo noise of the embeddings (their noise floor).

An embedding estimated with sampled labels is the true one times per-coordinate noise. The
Task2Vec distance is non-linear, so that noise does not average out: a noisy embedding lies
further from everything, and a set holding a noisily embedded task (few rows, small K) looks more
diverse. The noise floor of a task, f = d(e, e'), the distance between its embedding and the
same data re-embedded with a new Monte-Carlo seed, measures that noise; this module removes it.

Derivation (the model: ê_i = e_i·exp(ε_i), independent zero-mean log-noise of variance σ_i² per
coordinate; each embedding first scaled to unit mean, as `task2vec.distances` does):

1. With r_i = (a_i − b_i)/(a_i + b_i) = tanh(δ_i/2), δ_i = log a_i − log b_i, the distance is
   exactly d = 1 − (1 − M)/√((1 + M)² − 4R²), with M = mean_i r_i² and R = mean_i r_i. The
   unit-mean scaling keeps R small, and with R = 0 this is d = 2M/(1 + M): M = V(d) := d/(2 − d).
   Noise adds to M, not to d, so the correction works on V.
2. With noise, δ̂_i = δ_i + ξ_i, ξ_i = ε_ai − ε_bi of variance s_i² = σ_ai² + σ_bi². For
   h(x) = tanh²(x/2), h'' = (1 − 3t²)(1 − t²)/2 (t = tanh(x/2)) and E[ξ⁴] = 3s⁴ give
   E[h(δ + ξ)] = h(δ)(1 − s²) + s²/4 − s⁴/8 + smaller terms. Averaged over coordinates:
       E[V(d̂_ab)] = V_ab·(1 − s²) + s²/4 − s⁴/8,     s² = σ_a² + σ_b² (coordinate means).
3. The floor has δ = 0 and ξ = ε − ε' of variance 2σ²: E[V(f_a)] = σ_a²/2 − σ_a⁴/2. So the
   floor d(e, e') measures TWICE the noise that one noisy embedding adds to a distance
   (f ≈ σ², one embedding adds σ²/2), and the first-order bias of d̂(a, b) is (f_a + f_b)/2,
   not f_a + f_b. First order in the floors and in d: for small d only (below).
4. Solving 2 and 3 for V_ab to second order, with V_a = V(f_a):
       V* = [V(d̂) − (V_a + V_b)/2 − (V_a − V_b)²/2] / (1 − 2(V_a + V_b)),    d* = 2V*/(1 + V*).
   To first order d* = d̂ − (f_a + f_b)/2, the correction the README states. The second-order
   terms are not cosmetic: the noise also shrinks the true signal by the factor (1 − s²), an
   underestimate of about (f_a + f_b)·d that the first-order subtraction leaves (1% of d at floors
   of 0.005, 6% at 0.03), and at floors like those of the real-data run that is several standard
   errors of a 400-repetition check (tests/test_task2vec_correction.py).

Where the first-order formula holds, and what the full correction leaves (measured by a seeded
simulation with known true distances, benchmarks/task2vec_bias_formula.py; the numbers are in
benchmarks/results/task2vec_bias_formula.json and docs/task2vec.md):
- E[d̂] ≈ d + (f_a + f_b)/2 holds for small d only. The noise also shrinks the signal (the
  factor 1 − s² of step 2) and d = 2V/(1 + V) bends, so the bias falls well below (f_a + f_b)/2
  as d grows, and subtracting (f_a + f_b)/2 from a large distance over-corrects.
- The full correction is second-order in the floors, not in d: step 2 keeps h''(δ)/2 ≈
  1/4 − h(δ) and drops a term (3/4)·s²·tanh⁴(δ/2) that grows with the per-coordinate
  differences between the tasks, so it under-corrects by a few percent of d at large d, more
  with larger floors; at small d it leaves under 1% of the bias.
Floors above MAX_FLOOR_SUM make the expansion meaningless and give NaN.

A corrected distance can be negative: the raw distance was smaller than the noise alone makes it
on average. It is reported as it is (clipping the point estimate at 0 would bias every mean of
corrected distances upwards); intervals for the true distance, which lies in [0, 1], are
intersected with [0, 1] (`task2vec.diversity`).
"""
from __future__ import annotations

import math

import numpy as np

# The expansion is in powers of the floors; beyond this sum of the two floors it says nothing.
MAX_FLOOR_SUM = 0.5


def noise_scale(distance: np.ndarray | float) -> np.ndarray:
    """V(d) = d/(2 − d): the mean squared coordinate ratio M for which d = 2M/(1 + M)."""
    value = np.asarray(distance, dtype=np.float64)
    return value / (2.0 - value)


def noise_bias(floor_a: np.ndarray | float, floor_b: np.ndarray | float) -> np.ndarray:
    """(f_a + f_b)/2: to first order, what the two embeddings' noise adds to their distance."""
    return (np.asarray(floor_a, dtype=np.float64) + np.asarray(floor_b, dtype=np.float64)) / 2


def corrected_distance(raw: np.ndarray | float, floor_a: np.ndarray | float,
                       floor_b: np.ndarray | float, distance: str = "task2vec") -> np.ndarray:
    """The noise-free distance estimated from a raw distance and the two noise floors (broadcasts).

    task2vec: d* = 2V*/(1 + V*), V* = [V(d̂) − (V_a + V_b)/2 − (V_a − V_b)²/2] / (1 − 2(V_a + V_b)),
    with V(x) = x/(2 − x) and V_a = V(f_a); to first order d̂ − (f_a + f_b)/2 (module docstring).
    cosine (the robustness check): the first-order d̂ − (f_a + f_b)/2 only. For unit vectors
    1 − cos = ‖x − y‖²/2, and zero-mean noise adds its variance to a squared distance, so step 3
    of the derivation holds for it too; the second-order terms above are the Task2Vec distance's.

    Args:
        raw: d̂(a, b), the distance between the two estimated embeddings.
        floor_a, floor_b: d(e, e') of each embedding with its re-embedding (NaN: not measured).
        distance: the distance the three numbers are ("task2vec" or "cosine").

    Returns:
        float64 array of the broadcast shape; may be negative; NaN where a floor is NaN or the
        two floors sum to more than MAX_FLOOR_SUM.

    Raises:
        ValueError: a raw distance or floor outside [0, 1].
    """
    raw, floor_a, floor_b = (np.asarray(x, dtype=np.float64) for x in (raw, floor_a, floor_b))
    for name, value in (("raw distance", raw), ("floor", floor_a), ("floor", floor_b)):
        if np.any((value < 0) | (value > 1)):
            raise ValueError(f"a {name} lies outside [0, 1]; pass Task2Vec distances")
    usable = (floor_a + floor_b) <= MAX_FLOOR_SUM        # False for NaN floors as well
    if distance == "cosine":
        return np.where(usable, raw - noise_bias(floor_a, floor_b), np.nan)
    if distance != "task2vec":
        raise ValueError(f"no noise correction for the distance {distance!r}; use task2vec or cosine")
    v_raw, v_a, v_b = noise_scale(raw), noise_scale(floor_a), noise_scale(floor_b)
    denominator = np.where(usable, 1.0 - 2.0 * (v_a + v_b), 1.0)
    v_star = (v_raw - (v_a + v_b) / 2 - (v_a - v_b) ** 2 / 2) / denominator
    with np.errstate(invalid="ignore", divide="ignore"):
        corrected = 2.0 * v_star / (1.0 + v_star)
    return np.where(usable, corrected, np.nan)


def corrected_matrix(distances: np.ndarray, floors: np.ndarray, distance: str = "task2vec") -> np.ndarray:
    """Pairwise distances corrected with each item's floor; the diagonal is exactly 0.

    Args:
        distances: (n, n) symmetric raw distances.
        floors: (n,) noise floor of each item.
        distance: as in `corrected_distance`.

    Returns:
        (n, n) float64, symmetric, zero diagonal (an item with itself is not a measurement).
    """
    matrix = np.asarray(distances, dtype=np.float64)
    floors = np.asarray(floors, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or floors.shape != (matrix.shape[0],):
        raise ValueError(f"need an (n, n) matrix and n floors, got {matrix.shape} and {floors.shape}")
    corrected = corrected_distance(matrix, floors[:, None], floors[None, :], distance)
    np.fill_diagonal(corrected, 0.0)
    return corrected


def is_resolved(*, raw: float, corrected: float) -> bool | None:
    """Whether a pair of tasks is resolved by its embeddings: at least half of the raw distance is
    signal, i.e. the corrected distance is at least the bias the full correction removed,
    corrected ≥ raw − corrected (equivalently 2·corrected ≥ raw).

    The bias removed is raw − corrected, not the first-order (f_a + f_b)/2: the two agree for
    small distances only ("Where the first-order formula holds" in the module docstring). For the
    cosine distance the correction is first-order, so there the rule is corrected ≥ (f_a + f_b)/2.

    Args:
        raw: d̂(a, b), the distance between the two estimated embeddings.
        corrected: `corrected_distance(raw, f_a, f_b)` (keyword-only, so the two cannot be swapped).

    Returns:
        True or False; None when it cannot be decided (the correction is NaN or None: a floor was not
        measured, or the floors are too large to correct).
    """
    if raw is None or corrected is None or math.isnan(raw) or math.isnan(corrected):
        return None
    return bool(corrected >= raw - corrected)

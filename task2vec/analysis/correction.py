"""Distances corrected for the Monte-Carlo noise of the embeddings (their noise floor).

Noise in an embedding does not average out of the non-linear Task2Vec distance: a noisy embedding
lies further from everything. A task's noise floor f = d(e, e'), the distance to the same data
re-embedded with a new Monte-Carlo seed, measures that noise; this module removes it.

Model: ê_i = e_i·exp(ε_i), independent zero-mean log-noise of variance σ_i², embeddings at unit mean.
1. With r_i = (a_i − b_i)/(a_i + b_i) = tanh(δ_i/2), M = mean r_i², R = mean r_i, the distance is
   d = 1 − (1 − M)/√((1 + M)² − 4R²); unit-mean scaling keeps R small, and with R = 0,
   M = V(d) := d/(2 − d). Noise adds to M, not to d, so the correction works on V.
2. With δ̂_i = δ_i + ξ_i, s_i² = σ_ai² + σ_bi², h(x) = tanh²(x/2) and E[ξ⁴] = 3s⁴:
       E[V(d̂_ab)] = V_ab·(1 − s²) + s²/4 − s⁴/8     (s² averaged over coordinates).
3. The floor has δ = 0 and noise variance 2σ²: E[V(f_a)] = σ_a²/2 − σ_a⁴/2. The floor measures
   TWICE the noise one embedding adds, so the first-order bias of d̂(a, b) is (f_a + f_b)/2.
4. Solving 2 and 3 for V_ab to second order, with V_a = V(f_a):
       V* = [V(d̂) − (V_a + V_b)/2 − (V_a − V_b)²/2] / (1 − 2(V_a + V_b)),    d* = 2V*/(1 + V*).
   To first order d* = d̂ − (f_a + f_b)/2, which over-corrects large distances (the noise also
   shrinks the signal by 1 − s², and d(V) bends); step 2 drops (3/4)·s²·tanh⁴(δ/2), so the full
   form under-corrects slightly at large d. Floors summing above MAX_FLOOR_SUM give NaN.

A corrected distance can be negative and is reported as it is (clipping at 0 would bias means of
corrected distances upwards); intervals for the true distance are cut to [0, 1] instead.
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
    """The noise-free distance from a raw distance d̂ and the two floors f_a, f_b (broadcasts).

    task2vec: step 4 of the module docstring. cosine: the first-order d̂ − (f_a + f_b)/2 only (for
    unit vectors 1 − cos = ‖x − y‖²/2 and zero-mean noise adds its variance, so step 3 holds too).
    May be negative; NaN where a floor is NaN (not measured) or the floors sum above MAX_FLOOR_SUM.
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
    """(n, n) raw distances corrected with the (n,) floors; the diagonal is exactly 0."""
    matrix = np.asarray(distances, dtype=np.float64)
    floors = np.asarray(floors, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or floors.shape != (matrix.shape[0],):
        raise ValueError(f"need an (n, n) matrix and n floors, got {matrix.shape} and {floors.shape}")
    corrected = corrected_distance(matrix, floors[:, None], floors[None, :], distance)
    np.fill_diagonal(corrected, 0.0)
    return corrected


def is_resolved(*, raw: float, corrected: float) -> bool | None:
    """Whether at least half of the raw distance is signal: corrected ≥ raw − corrected.

    raw − corrected is the bias the full correction removed (the first-order (f_a + f_b)/2 agrees
    for small distances only). None when undecidable (correction NaN or None).
    """
    if raw is None or corrected is None or math.isnan(raw) or math.isnan(corrected):
        return None
    return bool(corrected >= raw - corrected)

"""Distances between task embeddings (non-negative Fisher diagonals).

The primary distance is Task2Vec's normalised ("symmetric") cosine (Achille et al. 2019): each
coordinate is divided by the pair's sum before the cosine, so every coordinate counts on the same
scale however large its Fisher value. That cosine is invariant only to rescaling both embeddings
by one factor, while a Fisher diagonal's overall scale comes from the loss scale, the estimator's
normalisation and the text lengths. So every embedding is first divided by its mean coordinate:
d(c1·a, c2·b) = d(a, b) for all c1, c2 > 0 (an all-zero embedding stays zero). The plain cosine on
the raw vectors is kept as a robustness check. Everything is float64; the all-pairs functions work
in blocks so that no temporary holds more than `MAX_BLOCK_ELEMENTS` numbers.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import numpy as np

DISTANCES = ("task2vec", "cosine")
# Coordinates whose pair sum is at most this fraction of the pair's mean scale are 0/0 in the
# normalisation and are left out (a relative threshold: Fisher values have arbitrary scale).
RELATIVE_TAU = 1e-12
# 2**23 float64 numbers = 64 MiB per temporary; the kernels hold about five at once.
MAX_BLOCK_ELEMENTS = 2 ** 23

PairDistance = Callable[[np.ndarray, np.ndarray], float]


def _as_embeddings(array: np.ndarray, name: str, ndim: int) -> np.ndarray:
    """`array` as float64 with `ndim` dimensions, finite and non-negative."""
    values = np.asarray(array, dtype=np.float64)
    if values.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {values.shape}")
    if values.size == 0 or values.shape[-1] == 0:
        raise ValueError(f"{name} is empty (shape {values.shape})")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} holds NaN or infinite values; an embedding must be finite")
    if np.any(values < 0):
        raise ValueError(f"{name} holds negative values; a Fisher-diagonal embedding is non-negative")
    return values


def _same_dimension(first: np.ndarray, second: np.ndarray) -> None:
    if first.shape[-1] != second.shape[-1]:
        raise ValueError(f"the embeddings have different dimensions: {first.shape[-1]} and {second.shape[-1]}")


def _task2vec_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Task2Vec distance between broadcastable stacks of embeddings, over the last axis.

    After unit-mean scaling, with s = a + b kept where s_i > τ = 1e-12·(mean(a) + mean(b)):
    u = a/s, v = b/s (0 elsewhere), d = 1 − ⟨u,v⟩/(‖u‖‖v‖); both zero gives 0, one zero gives 1.
    """
    mean_a, mean_b = a.mean(axis=-1, keepdims=True), b.mean(axis=-1, keepdims=True)   # an all-zero one stays 0
    a = np.divide(a, mean_a, out=np.zeros_like(a), where=mean_a > 0)
    b = np.divide(b, mean_b, out=np.zeros_like(b), where=mean_b > 0)
    total = a + b                                                          # (..., D)
    tau = RELATIVE_TAU * (a.mean(axis=-1, keepdims=True) + b.mean(axis=-1, keepdims=True))
    kept = total > tau
    # np.divide with `where` leaves the 0/0 coordinates at the zeros of `out` without warnings.
    u = np.divide(np.broadcast_to(a, total.shape), total, out=np.zeros_like(total), where=kept)
    v = np.divide(np.broadcast_to(b, total.shape), total, out=np.zeros_like(total), where=kept)
    return _cosine_from_parts((u * v).sum(-1), (u * u).sum(-1), (v * v).sum(-1))


def _cosine_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Plain cosine distance 1 − ⟨a,b⟩/(‖a‖‖b‖) between broadcastable stacks, over the last axis."""
    return _cosine_from_parts((a * b).sum(-1), (a * a).sum(-1), (b * b).sum(-1))


def _cosine_from_parts(dot: np.ndarray, norm2_u: np.ndarray, norm2_v: np.ndarray) -> np.ndarray:
    """1 − dot/√(‖u‖²‖v‖²), with 0 when both norms vanish and 1 when one does; clipped to [0, 1]."""
    dot, norm2_u, norm2_v = np.broadcast_arrays(dot, norm2_u, norm2_v)
    product = norm2_u * norm2_v
    cosine = np.divide(dot, np.sqrt(product), out=np.zeros_like(dot), where=product > 0)
    distance = 1.0 - cosine
    distance = np.where((norm2_u == 0) & (norm2_v == 0), 0.0, distance)
    # With non-negative inputs the cosine is in [0, 1]; rounding can step just outside it.
    return np.clip(distance, 0.0, 1.0)


_KERNELS: Mapping[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = MappingProxyType({
    "task2vec": _task2vec_kernel, "cosine": _cosine_kernel})


def _kernel(name: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    if name not in _KERNELS:
        raise ValueError(f"unknown distance {name!r}; choose one of {DISTANCES}")
    return _KERNELS[name]


def task2vec_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Task2Vec distance in [0, 1] of two (D,) non-negative embeddings (`_task2vec_kernel`):
    symmetric, d(c1·a, c2·b) = d(a, b); disjoint supports give 1, two zero vectors 0 (never NaN)."""
    a, b = _as_embeddings(a, "first embedding", 1), _as_embeddings(b, "second embedding", 1)
    _same_dimension(a, b)
    return float(_task2vec_kernel(a, b))


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Plain cosine distance 1 − ⟨a,b⟩/(‖a‖‖b‖) on the raw vectors (both zero: 0, one zero: 1)."""
    a, b = _as_embeddings(a, "first embedding", 1), _as_embeddings(b, "second embedding", 1)
    _same_dimension(a, b)
    return float(_cosine_kernel(a, b))


def distance_function(name: str) -> PairDistance:
    """The pair distance called `name` (one of DISTANCES)."""
    _kernel(name)
    return {"task2vec": task2vec_distance, "cosine": cosine_distance}[name]


def _blocked(kernel: Callable, first: np.ndarray, second: np.ndarray, rows: int | None,
             upper: bool = False) -> np.ndarray:
    """kernel(first_i, second_j) for all i, j, in blocks of rows·columns·D ≤ MAX_BLOCK_ELEMENTS (at
    least 1×1; `rows` None: sized from it); `upper`: only the blocks on or right of the diagonal."""
    columns = max(1, min(len(second), MAX_BLOCK_ELEMENTS // first.shape[1]))
    if rows is None:
        rows = max(1, MAX_BLOCK_ELEMENTS // (columns * first.shape[1]))
    elif rows < 1:
        raise ValueError(f"block_rows must be at least 1, got {rows}")
    result = np.zeros((len(first), len(second)))
    for r0 in range(0, len(first), rows):
        for c0 in range(r0 if upper else 0, len(second), columns):
            result[r0:r0 + rows, c0:c0 + columns] = kernel(first[r0:r0 + rows, None, :],     # (r, 1, D)
                                                           second[None, c0:c0 + columns, :])  # (1, c, D)
    return result


def cross_distances(first: np.ndarray, second: np.ndarray, distance: str = "task2vec",
                    block_rows: int | None = None) -> np.ndarray:
    """(n1, n2) float64 matrix of d(first_i, second_j) for (n1, D) and (n2, D) embeddings."""
    kernel = _kernel(distance)
    first, second = _as_embeddings(first, "first", 2), _as_embeddings(second, "second", 2)
    _same_dimension(first, second)
    return _blocked(kernel, first, second, block_rows)


def pairwise_distances(embeddings: np.ndarray, distance: str = "task2vec",
                       block_rows: int | None = None) -> np.ndarray:
    """(n, n) float64 d(e_i, e_j) of (n, D) `embeddings`: the upper triangle mirrored (exactly
    symmetric, zero diagonal)."""
    kernel = _kernel(distance)
    embeddings = _as_embeddings(embeddings, "embeddings", 2)
    upper = np.triu(_blocked(kernel, embeddings, embeddings, block_rows, upper=True), 1)
    return upper + upper.T


def paired_distances(first: np.ndarray, second: np.ndarray, distance: str = "task2vec") -> np.ndarray:
    """(n,) float64 d(first_i, second_i) for two (n, D) stacks (e.g. embeddings and re-embeddings)."""
    kernel = _kernel(distance)
    first, second = _as_embeddings(first, "first", 2), _as_embeddings(second, "second", 2)
    if first.shape != second.shape:
        raise ValueError(f"paired embeddings must have the same shape, got {first.shape} and {second.shape}")
    rows = max(1, MAX_BLOCK_ELEMENTS // first.shape[1])
    return np.concatenate([kernel(first[r0:r0 + rows], second[r0:r0 + rows]) for r0 in range(0, len(first), rows)])

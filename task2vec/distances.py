"""Distances between task embeddings (non-negative Fisher diagonals).

The primary distance is Task2Vec's normalised ("symmetric") cosine (Achille et al. 2019): each
coordinate is divided by the pair's sum before the cosine, so that every coordinate counts on the
same scale however large its Fisher value.

Scale convention: every embedding is first divided by its mean coordinate (unit mean). The
normalised cosine on its own is NOT invariant to rescaling one embedding: u = a/(a+b) changes
non-uniformly when a becomes 3a (by hand, for a = (1, 3) and b = (3, 1): u = (1/4, 3/4),
v = (3/4, 1/4), d = 0.4; with 3a instead, u = (1/2, 9/10), v = (1/2, 1/10), d = 0.352); it is
invariant only to rescaling both by the same factor. A Fisher
diagonal's overall scale is set by things other than which parameters matter for the task: the
loss scale (how many classes the head has, how well it was fitted, the entropy of the predictive
distribution), the normalisation of the estimator (per prediction; `minibatch_sq` divides by
K·N_mb), the length of the texts. Dividing by the mean removes that one number and keeps the
profile, so that d(c1·a, c2·b) = d(a, b) for all c1, c2 > 0 (tested), and d is unchanged for
embeddings that already had the same mean. The mean (an L1 scale) is the scale set statistics
use too (`task2vec.diversity.mean_embedding` averages members scaled to unit sum). An all-zero
embedding has no scale and stays zero. The plain cosine on the raw vectors is scale-invariant by
construction and is kept as a robustness check.

Everything is computed in float64. The all-pairs functions broadcast over blocks of rows and
columns so that no temporary holds more than `MAX_BLOCK_ELEMENTS` numbers.
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
    """`array` as float64 with `ndim` dimensions, finite and non-negative.

    Raises:
        ValueError: wrong number of dimensions, an empty axis, or negative / non-finite entries.
    """
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


def unit_mean(embeddings: np.ndarray) -> np.ndarray:
    """Each embedding (last axis) divided by its mean coordinate; an all-zero one stays zero."""
    mean = embeddings.mean(axis=-1, keepdims=True)
    return np.divide(embeddings, mean, out=np.zeros_like(embeddings), where=mean > 0)


def _task2vec_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Task2Vec distance between broadcastable stacks of embeddings, reduced over the last axis.

    Each embedding is first scaled to unit mean (module docstring). With s = a + b, the kept
    coordinates are those with s_i > τ, τ = 1e-12·(mean(a) + mean(b)) (= 2e-12 after scaling);
    there u = a/s and v = b/s, elsewhere u = v = 0, and d = 1 − ⟨u,v⟩/(‖u‖‖v‖). Both vectors
    (numerically) zero gives 0; exactly one zero gives 1 (no shared support).
    """
    a, b = unit_mean(a), unit_mean(b)
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
    """Task2Vec normalised cosine distance between two non-negative embeddings.

    With a and b first divided by their means (the scale convention of the module docstring),
    over the coordinates with a_i + b_i > τ, τ = 1e-12·(mean(a) + mean(b)), let u = a/(a+b) and
    v = b/(a+b); then d = 1 − ⟨u,v⟩/(‖u‖‖v‖). Properties: d(c1·a, c2·b) = d(a, b) for c1, c2 > 0
    (so d(e, c·e) = 0), d(a,b) = d(b,a), 0 ≤ d ≤ 1, disjoint supports give 1, two zero vectors
    give 0 (never NaN).

    Args:
        a, b: (D,) non-negative finite vectors.

    Returns:
        The distance in [0, 1].

    Raises:
        ValueError: negative or non-finite entries, or different shapes.
    """
    a, b = _as_embeddings(a, "first embedding", 1), _as_embeddings(b, "second embedding", 1)
    _same_dimension(a, b)
    return float(_task2vec_kernel(a, b))


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Plain cosine distance 1 − ⟨a,b⟩/(‖a‖‖b‖) on the raw vectors.

    Both zero gives 0, exactly one zero gives 1; clipped to [0, 1] (the inputs are non-negative).

    Raises:
        ValueError: negative or non-finite entries, or different shapes.
    """
    a, b = _as_embeddings(a, "first embedding", 1), _as_embeddings(b, "second embedding", 1)
    _same_dimension(a, b)
    return float(_cosine_kernel(a, b))


def distance_function(name: str) -> PairDistance:
    """The pair distance called `name` (one of DISTANCES).

    Raises:
        ValueError: an unknown name; the message lists DISTANCES.
    """
    _kernel(name)
    return {"task2vec": task2vec_distance, "cosine": cosine_distance}[name]


def _block_sizes(columns: int, dimension: int, block_rows: int | None) -> tuple[int, int]:
    """(rows, columns) per block so that rows·columns·D ≤ MAX_BLOCK_ELEMENTS (at least 1×1)."""
    block_columns = max(1, min(columns, MAX_BLOCK_ELEMENTS // dimension))
    if block_rows is None:
        block_rows = max(1, MAX_BLOCK_ELEMENTS // (block_columns * dimension))
    elif block_rows < 1:
        raise ValueError(f"block_rows must be at least 1, got {block_rows}")
    return block_rows, block_columns


def cross_distances(first: np.ndarray, second: np.ndarray, distance: str = "task2vec",
                    block_rows: int | None = None) -> np.ndarray:
    """All distances d(first_i, second_j).

    Args:
        first: (n1, D) non-negative embeddings.
        second: (n2, D) non-negative embeddings.
        distance: one of DISTANCES.
        block_rows: rows of `first` per block; None sizes blocks from MAX_BLOCK_ELEMENTS.

    Returns:
        (n1, n2) float64 matrix.

    Raises:
        ValueError: an unknown distance, a bad shape, or negative / non-finite entries.
    """
    kernel = _kernel(distance)
    first = _as_embeddings(first, "first", 2)
    second = _as_embeddings(second, "second", 2)
    _same_dimension(first, second)
    rows, columns = _block_sizes(len(second), first.shape[1], block_rows)
    result = np.empty((len(first), len(second)))
    for r0 in range(0, len(first), rows):
        for c0 in range(0, len(second), columns):
            block_a = first[r0:r0 + rows, None, :]       # (r, 1, D)
            block_b = second[None, c0:c0 + columns, :]   # (1, c, D)
            result[r0:r0 + rows, c0:c0 + columns] = kernel(block_a, block_b)
    return result


def pairwise_distances(embeddings: np.ndarray, distance: str = "task2vec",
                       block_rows: int | None = None) -> np.ndarray:
    """All distances d(e_i, e_j) between the rows of `embeddings`.

    Only the blocks on or above the diagonal are computed; the lower triangle is their mirror, so
    the result is exactly symmetric, and the diagonal is set to exactly 0.

    Args:
        embeddings: (n, D) non-negative embeddings.
        distance: one of DISTANCES.
        block_rows: rows per block; None sizes blocks from MAX_BLOCK_ELEMENTS.

    Returns:
        (n, n) float64 matrix, symmetric, zero diagonal.

    Raises:
        ValueError: an unknown distance, a bad shape, or negative / non-finite entries.
    """
    kernel = _kernel(distance)
    embeddings = _as_embeddings(embeddings, "embeddings", 2)
    n, dimension = embeddings.shape
    rows, columns = _block_sizes(n, dimension, block_rows)
    result = np.zeros((n, n))
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        for c0 in range(r0, n, columns):  # blocks starting left of the diagonal are mirrored
            c1 = min(n, c0 + columns)
            result[r0:r1, c0:c1] = kernel(embeddings[r0:r1, None, :], embeddings[None, c0:c1, :])
    upper = np.triu(result, 1)
    return upper + upper.T


def paired_distances(first: np.ndarray, second: np.ndarray, distance: str = "task2vec") -> np.ndarray:
    """d(first_i, second_i) for each row i (e.g. an embedding and its re-embedding).

    Args:
        first, second: (n, D) non-negative embeddings of the same shape.

    Returns:
        (n,) float64 distances.

    Raises:
        ValueError: an unknown distance, different shapes, or negative / non-finite entries.
    """
    kernel = _kernel(distance)
    first = _as_embeddings(first, "first", 2)
    second = _as_embeddings(second, "second", 2)
    if first.shape != second.shape:
        raise ValueError(f"paired embeddings must have the same shape, got {first.shape} and {second.shape}")
    rows = max(1, MAX_BLOCK_ELEMENTS // first.shape[1])
    return np.concatenate([kernel(first[r0:r0 + rows], second[r0:r0 + rows]) for r0 in range(0, len(first), rows)])

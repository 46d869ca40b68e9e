"""Embedding files: plain `.npy` arrays and a JSON sidecar per task, never pickles.

One task's folder, `<emb_dir>/<canonical task name>/`:

    embedding.npy            (D,) float32   the task's embedding (all its examples pooled)
    embedding.json                          metadata: layout, probe, objective, estimator, K, examples,
                                            seeds, versions, noise floor
    batches.npy              (n, D) float32 one embedding per disjoint batch of examples
    embedding_reseeded.npy   (D,)           the same examples re-embedded with a new Monte-Carlo seed
    batches_reseeded.npy     (n, D)         the same batches re-embedded with that seed

The re-embeddings give the noise floor. A folder is written under a temporary name and renamed
into place, so a reader never sees half of it.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from utils.data.registry import get_task
from utils.run.errors import JSON_TOO_DEEP, DataError
from utils.run.outputs import atomic_folder, write_json

EMBEDDING_FILE = "embedding.npy"
METADATA_FILE = "embedding.json"
BATCHES_FILE = "batches.npy"
RESEEDED_FILE = "embedding_reseeded.npy"
BATCHES_RESEEDED_FILE = "batches_reseeded.npy"
NOT_FINITE = "not a finite number for these inputs"
WRITE_COMMAND = "python -m task2vec --tasks TASK --output_dir EMB_DIR (or ComputeTaskEmbedding.ipynb)"


@dataclass(frozen=True)
class TaskEmbedding:
    """One task's embedding, its optional companions and its metadata."""

    task: str
    vector: np.ndarray                          # (D,)
    metadata: dict
    batches: np.ndarray | None = None           # (n, D)
    reseeded: np.ndarray | None = None          # (D,)
    batches_reseeded: np.ndarray | None = None  # (n, D)

    @property
    def dimension(self) -> int:
        """Number of coordinates D."""
        return int(self.vector.shape[0])


def task_folder(emb_dir: str | os.PathLike, task: str) -> Path:
    """`<emb_dir>/<canonical name>`: aliases (`duorc;SelfRC`) resolve to the registry name."""
    return Path(emb_dir) / get_task(task).name


def _check_shapes(embedding: TaskEmbedding) -> None:
    dimension = embedding.dimension
    if embedding.vector.ndim != 1:
        raise ValueError(f"{embedding.task}: the embedding must be one vector, got shape {embedding.vector.shape}")
    for name, array, ndim in (("batches", embedding.batches, 2), ("reseeded", embedding.reseeded, 1),
                              ("batches_reseeded", embedding.batches_reseeded, 2)):
        if array is not None and (array.ndim != ndim or array.shape[-1] != dimension):
            raise ValueError(f"{embedding.task}: {name} has shape {array.shape}; expected {ndim} dimension(s) "
                             f"ending in {dimension}")
    if (embedding.batches is not None and embedding.batches_reseeded is not None
            and embedding.batches.shape != embedding.batches_reseeded.shape):
        raise ValueError(f"{embedding.task}: batches and batches_reseeded differ in shape")


def save_task_embedding(emb_dir: str | os.PathLike, embedding: TaskEmbedding) -> Path:
    """Write one task's folder (replacing a previous one) and return its path."""
    _check_shapes(embedding)
    destination = task_folder(emb_dir, embedding.task)
    arrays = {EMBEDDING_FILE: embedding.vector, BATCHES_FILE: embedding.batches,
              RESEEDED_FILE: embedding.reseeded, BATCHES_RESEEDED_FILE: embedding.batches_reseeded}
    with atomic_folder(destination) as staging:
        for name, array in arrays.items():
            if array is not None:
                np.save(staging / name, np.asarray(array, dtype=np.float32), allow_pickle=False)
        write_json(staging / METADATA_FILE, json_safe(embedding.metadata))  # strict JSON: NaN -> null with a reason
    return destination


def _load_array(path: Path, required: bool = False) -> np.ndarray | None:
    """The array in `path` as float64; None when absent and not required."""
    if not path.is_file():
        if required:
            raise DataError(f"no embedding here; write it with `{WRITE_COMMAND}`", file=str(path))
        return None
    try:
        return np.load(path, allow_pickle=False).astype(np.float64)
    except ValueError as err:
        raise DataError(f"not a plain numpy array file ({err})", file=str(path)) from err


def load_task_embedding(emb_dir: str | os.PathLike, task: str) -> TaskEmbedding:
    """Read one task's folder written by `save_task_embedding` (DataError if missing or unreadable)."""
    folder = task_folder(emb_dir, task)
    if not folder.is_dir():
        raise DataError(f"no embedding folder for task {get_task(task).name!r}; write it with `{WRITE_COMMAND}`",
                        file=str(folder))
    vector = _load_array(folder / EMBEDDING_FILE, required=True)
    metadata_path = folder / METADATA_FILE
    if not metadata_path.is_file():
        raise DataError(f"missing metadata; re-run `{WRITE_COMMAND}`", file=str(metadata_path))
    try:
        metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"malformed JSON (line {err.lineno}, column {err.colno})", file=str(metadata_path)) from err
    except RecursionError:
        raise DataError(JSON_TOO_DEEP, file=str(metadata_path)) from None
    embedding = TaskEmbedding(task=get_task(task).name, vector=vector, metadata=metadata,
                              batches=_load_array(folder / BATCHES_FILE),
                              reseeded=_load_array(folder / RESEEDED_FILE),
                              batches_reseeded=_load_array(folder / BATCHES_RESEEDED_FILE))
    try:
        _check_shapes(embedding)
    except ValueError as err:
        raise DataError(str(err), file=str(folder)) from err
    if not np.all(np.isfinite(embedding.vector)) or np.any(embedding.vector < 0):
        raise DataError("the embedding holds negative or non-finite values; a Fisher diagonal cannot",
                        file=str(folder / EMBEDDING_FILE))
    return embedding


def json_safe(value: Any, reason: Callable[[str], str] = lambda key: NOT_FINITE) -> Any:
    """`value` for strict JSON: NaN/inf as None, numpy scalars and arrays as Python numbers and lists.

    A bare null does not say why a number is missing, so beside every key with a non-finite value
    goes `<key>_reason` = reason(key), unless the object already has that key or a `reason`.
    """
    if isinstance(value, dict):
        safe: dict[str, Any] = {}
        for key, item in value.items():
            safe[str(key)] = json_safe(item, reason)
            reason_key = f"{key}_reason"
            if _holds_non_finite(item) and reason_key not in value and not value.get("reason"):
                safe[reason_key] = reason(str(key))
        return safe
    if isinstance(value, (list, tuple)):
        return [json_safe(item, reason) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist(), reason)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return str(value)
    return value


def _holds_non_finite(value: Any) -> bool:
    """A non-finite float, or a list/array with one (the values json_safe turns into null)."""
    if isinstance(value, (float, np.floating)):
        return not math.isfinite(value)
    if isinstance(value, np.ndarray):
        return value.dtype.kind == "f" and not bool(np.all(np.isfinite(value)))
    if isinstance(value, (list, tuple)):
        return any(_holds_non_finite(item) for item in value)
    return False

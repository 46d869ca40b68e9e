"""Which task embeddings one analysis may compare: loading them by task name, refusing those that
were computed differently (`check_comparable`: other coordinates, probe, objective or estimator
always; other settings unless allowed), and summarising how each was computed. The analysis
itself is in `task2vec.analysis.diversity`.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from task2vec.embedding.io import TaskEmbedding, load_task_embedding
from utils.data.registry import get_task
from utils.run.errors import DataError

logger = logging.getLogger(__name__)

METADATA_SUMMARY_KEYS = ("layout_digest", "probe", "objective", "estimator", "num_samples")


def load_embeddings(emb_dir: str | os.PathLike, tasks: Iterable[str]) -> dict[str, TaskEmbedding]:
    """Canonical task name -> its embedding, for tasks that must all exist (else DataError)."""
    emb_dir = Path(emb_dir)
    if not emb_dir.is_dir():
        raise DataError("no such embedding folder; compute the embeddings with `python -m task2vec` first "
                        "or pass --emb_dir", file=str(emb_dir))
    return {get_task(task).name: load_task_embedding(emb_dir, task) for task in tasks}


def load_available_embeddings(emb_dir: str | os.PathLike,
                              tasks: Iterable[str]) -> tuple[dict[str, TaskEmbedding], dict[str, str]]:
    """(name -> embedding, name -> reason it is absent) for `tasks`: a missing folder is a reason to
    skip the results that need it; an unreadable one is an error."""
    found: dict[str, TaskEmbedding] = {}
    missing: dict[str, str] = {}
    for task in tasks:
        name = get_task(task).name
        if (Path(emb_dir) / name).is_dir():
            found[name] = load_task_embedding(emb_dir, name)
        else:
            missing[name] = f"no embedding for {name!r} in {emb_dir}"
    return found, missing


def _nested(metadata: Mapping[str, Any], section: str, key: str) -> Any:
    """metadata[section][key], or None when the embedding's metadata does not record it."""
    part = metadata.get(section)
    return part.get(key) if isinstance(part, dict) else None


def _examples_used(metadata: Mapping[str, Any]) -> Any:
    """Examples the embedding was computed from (metadata["examples"]["examples_used"])."""
    return _nested(metadata, "examples", "examples_used") or metadata.get("examples_used")


def _minibatch_size(metadata: Mapping[str, Any]) -> Any:
    """M of the minibatch_sq estimator (it sets that estimator's noise); None for the others."""
    return _nested(metadata, "settings", "minibatch_size") if metadata.get("estimator") == "minibatch_sq" else None


def _probe_digest(metadata: Mapping[str, Any]) -> str | None:
    """The probe's weight digest (a probe given only by name counts as that name)."""
    probe = metadata.get("probe")
    return probe.get("sha256") if isinstance(probe, dict) else probe


# What makes the coordinates or the estimated quantity differ: never compared.
DEFINING_METADATA = (
    ("probe weights", _probe_digest),
    ("objective", lambda m: m.get("objective")),
    ("estimator", lambda m: m.get("estimator")),
)
# Settings that change an embedding's noise or its fitted head: refused unless the caller allows
# them, then reported.
SETTING_METADATA = (
    ("K (num_samples)", lambda m: m.get("num_samples")),
    ("examples used", _examples_used),
    ("max length", lambda m: _nested(m, "settings", "max_length")),
    ("head steps", lambda m: _nested(m, "head", "steps")),
    ("head learning rate", lambda m: _nested(m, "head", "learning_rate")),
    ("head weight decay", lambda m: _nested(m, "head", "weight_decay")),
    ("head batch size", lambda m: _nested(m, "head", "batch_size")),
    ("minibatch size (minibatch_sq)", _minibatch_size),
)
ALLOW_FLAG = "--allow_setting_mismatch"


def _differing(embeddings: Mapping[str, TaskEmbedding],
               checks: Sequence[tuple[str, Callable[[Mapping[str, Any]], Any]]]) -> list[str]:
    """'their <what> differ (task: value, ...)' for each check whose recorded values differ
    (embeddings that do not record the value are not counted)."""
    found = []
    for what, read in checks:
        values = {name: read(emb.metadata) for name, emb in embeddings.items()}
        # json.dumps(sort_keys=True): a hashable, order-independent form of numbers, lists and dicts
        if len({json.dumps(v, sort_keys=True) for v in values.values() if v is not None}) > 1:
            found.append(f"their {what} differ ({', '.join(f'{name}: {value}' for name, value in values.items())})")
    return found


def check_comparable(embeddings: Mapping[str, TaskEmbedding], *, allow_setting_mismatch: bool = False) -> list[str]:
    """Raise DataError for embeddings that should not be compared in one analysis; return warnings.

    Always refused: other dimensions or layout_digest (other coordinates), probe weights, objective
    or estimator (another quantity). SETTING_METADATA differences change an embedding's noise or
    head, so a distance would mix them in: refused unless `allow_setting_mismatch`, then warned.
    """
    layouts = {name: (emb.vector.shape[0], emb.metadata.get("layout_digest")) for name, emb in embeddings.items()}
    if len(set(layouts.values())) > 1:
        described = ", ".join(f"{name}: D={dim}, layout {digest}" for name, (dim, digest) in layouts.items())
        raise DataError(f"the embeddings cannot be compared: their coordinate layouts differ ({described}); "
                        "recompute them with the same probe and settings")
    warnings = []
    if any(digest is None for _, digest in layouts.values()):
        warnings.append("the embeddings carry no layout_digest; only their dimensions could be checked")
    defining = _differing(embeddings, DEFINING_METADATA)
    if defining:
        raise DataError(f"the embeddings cannot be compared: {defining[0]}; recompute them with the same probe "
                        "and settings")
    settings = _differing(embeddings, SETTING_METADATA)
    if settings and not allow_setting_mismatch:
        raise DataError(f"the embeddings cannot be compared: {'; '.join(settings)}; recompute them with the same "
                        f"settings, or pass {ALLOW_FLAG} to compare them anyway (the differences are then reported)")
    warnings += [f"compared although {difference}" for difference in settings]
    unrecorded = [what for what, read in SETTING_METADATA[:-1]
                  if any(read(emb.metadata) is None for emb in embeddings.values())]
    if unrecorded:
        warnings.append(f"not recorded by every embedding, so not checked: {', '.join(unrecorded)}")
    for warning in warnings:
        logger.warning(warning)
    return warnings


def embedding_summary(emb_dir: str | os.PathLike, embeddings: Mapping[str, TaskEmbedding]) -> dict[str, dict]:
    """Per task: folder, dimension, the metadata that says how it was computed, companions present."""
    summary = {}
    for name, emb in embeddings.items():
        summary[name] = {"path": str(Path(emb_dir) / name), "dimension": int(emb.vector.shape[0]),
                         **{key: emb.metadata.get(key) for key in METADATA_SUMMARY_KEYS},
                         "examples_used": _examples_used(emb.metadata),
                         "n_batches": None if emb.batches is None else int(emb.batches.shape[0]),
                         "reseeded": emb.reseeded is not None,
                         "batches_reseeded": emb.batches_reseeded is not None}
    return summary

"""Tokenized features built once and reused: a second run with the same data, tokenizer and
settings reads them from disk instead of tokenizing again (DESIGN.md section 5)."""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets

from utils.run.fs import atomic_folder

logger = logging.getLogger(__name__)


def tokenizer_digest(tokenizer: Any) -> str:
    """sha256 of the tokenizer's full definition (vocabulary, merges, special tokens)."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()


def source_digest(*functions: Callable) -> str:
    """sha256 of the source files defining `functions`: a change to the feature code is a new key."""
    digest = hashlib.sha256()
    for path in sorted({inspect.getsourcefile(function) for function in functions}):
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def records_digest(records: list[dict]) -> str:
    """sha256 of the records' canonical JSON."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


@contextmanager
def _no_datasets_bars() -> Iterator[None]:
    """datasets' progress bars off for the duration (its own switch), as they were afterwards.

    Writing and reading the cache takes well under a second a shard; its "Saving the dataset"
    bars would be noise between the lines that matter. The "features" bar of the tokenisation,
    which can take minutes, stays.
    """
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def build_features(records: list[dict], fn: Callable[[dict[str, list], list[int]], dict[str, list]], *,
                   name: str, settings: dict[str, Any], cache_dir: Path | None,
                   batch_size: int = 1000) -> datasets.Dataset:
    """Map canonical records to features in batches, through an on-disk cache.

    Args:
        fn: (columns of a batch of records, their indices in `records`) -> feature columns; may
            return more or fewer rows than it was given (windows).
        name: a readable prefix for the cache folder.
        settings: everything besides the records that changes the features (tokenizer digest,
            lengths, objective); it is part of the cache key.
        cache_dir: where to keep features; None turns caching off.
    """
    key = hashlib.sha256(json.dumps({"settings": settings, "records": records_digest(records)},
                                    sort_keys=True).encode()).hexdigest()[:20]
    folder = cache_dir / f"{name}-{key}" if cache_dir is not None else None
    if folder is not None and folder.exists():
        logger.info("features read from cache %s", folder)
        with _no_datasets_bars():
            return datasets.load_from_disk(str(folder))
    if records and "context" in records[0]:
        columns: tuple[str, ...] = ("id", "context", "question", "answers")
        if all("gold" in record for record in records):
            columns += ("gold",)
    else:
        columns = ("id", "text", "text_pair", "label") if records and "text_pair" in records[0] else ("id", "text", "label")
    source = datasets.Dataset.from_dict({column: [record[column] for record in records] for column in columns})
    features = source.map(fn, batched=True, batch_size=batch_size, with_indices=True,
                          remove_columns=list(columns), keep_in_memory=True, desc=f"features {name}")
    if folder is None:
        return features
    # keep_existing: another process that finished the same features first wrote identical ones.
    with atomic_folder(folder, keep_existing=True) as staging, _no_datasets_bars():
        features.save_to_disk(str(staging))
    with _no_datasets_bars():
        return datasets.load_from_disk(str(folder))

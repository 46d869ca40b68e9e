"""Building what the selectors read (task2vec.selection.selectors.SelectionInputs) from the
embeddings folder, the tasks' data and the source checkpoints, each only when a requested selector
needs it and its source is given; otherwise the reason it is missing."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from task2vec.comparability import load_available_embeddings
from task2vec.selection.features import last_token_features, record_text, text_embedding, vocabulary
from task2vec.selection.logme import logme
from utils.data.loading import load_task_data
from utils.data.registry import get_task
from utils.data.samples import sample_file
from utils.models.loading import load_model

TEXT_SELECTORS = ("textemb", "vocabulary_overlap", "data_size", "logme")
EMBEDDING_SELECTORS = ("task2vec", "diversity", "diversity_with_target")


@dataclass(frozen=True)
class DataPlan:
    """Where tasks' training data come from: --task_file files, then the bundled samples."""

    files: dict[str, str]
    use_samples: bool
    max_texts: int
    seed: int

    def available(self, task: str) -> bool:
        return task in self.files or self.use_samples

    def records(self, task: str) -> list[dict]:
        """The task's training records: all of them (for its size), in file order."""
        spec = get_task(task)
        source = self.files.get(spec.name) or str(sample_file(spec.name, "train"))
        return load_task_data(spec, "train", source).records

    def texts(self, records: list[dict]) -> tuple[list[str], list[int]]:
        """At most max_texts of the records' texts, a seeded draw, and their indices."""
        chosen = sorted(np.random.default_rng(self.seed).permutation(len(records))[:self.max_texts].tolist())
        return [record_text(records[i]) for i in chosen], chosen


def embeddings_for(emb_dir: str | None, tasks: Sequence[str]) -> tuple[dict, dict, dict[str, str]]:
    """(vectors, re-embeddings, task -> why missing) of the tasks found in the embeddings folder."""
    if not emb_dir:
        return {}, {}, {task: "no --emb_dir" for task in tasks}
    found, missing = load_available_embeddings(emb_dir, tasks)
    return ({name: e.vector for name, e in found.items()}, {name: e.reseeded for name, e in found.items()},
            dict(missing))


def text_inputs(plan: DataPlan, tasks: Sequence[str], probe: str | None, max_length: int
                ) -> tuple[dict, dict, dict, dict[str, str]]:
    """(TextEmb vectors, vocabularies, data sizes, task -> why missing) of the tasks with data."""
    vectors, vocabularies, sizes, missing = {}, {}, {}, {}
    model = load_model(probe, "lm", allow_new_lm_head=True) if probe else None
    for task in tasks:
        if not plan.available(task):
            missing[task] = "no data (give --task_file NAME=PATH or --use_samples)"
            continue
        records = plan.records(task)
        texts, _ = plan.texts(records)
        sizes[task] = len(records)
        vocabularies[task] = vocabulary(texts)
        if model is not None:
            vectors[task] = text_embedding(model.model, model.tokenizer, texts, max_length=max_length)
    return vectors, vocabularies, sizes, missing


def logme_inputs(plan: DataPlan, target: str, checkpoints: dict[tuple[str, ...], list[str]], max_length: int
                 ) -> tuple[dict[tuple[str, ...], float], str | None]:
    """(source set -> mean LogME of its checkpoints' last-token features of the target's texts, why
    missing). One forward pass per checkpoint over at most max_texts target texts."""
    if not plan.available(target):
        return {}, f"no data for the target {target} (give --task_file or --use_samples)"
    absent = sorted({path for paths in checkpoints.values() for path in paths if not Path(path).is_dir()})
    if absent:
        return {}, f"source checkpoint(s) not found: {', '.join(absent[:3])}{' ...' if len(absent) > 3 else ''}"
    spec = get_task(target)
    records = plan.records(target)
    texts, chosen = plan.texts(records)
    labels = np.array([records[i]["label"] for i in chosen])
    cache: dict[str, float] = {}
    values = {}
    for sources, paths in checkpoints.items():
        for path in paths:
            if path not in cache:
                loaded = load_model(path, "lm", allow_new_lm_head=True)
                with torch.no_grad():
                    features = last_token_features(loaded.model, loaded.tokenizer, texts, max_length=max_length)
                cache[path] = logme(features, labels, regression=spec.is_regression)
        values[sources] = float(np.mean([cache[p] for p in paths]))
    return values, None

"""Selectors: (a source set, a target) -> a score, higher meaning "predicted to help the target
more", and the inputs they read. A new selector is one function and one line in PER_SET_SELECTORS
(the Task2Vec ones score all the sets of a ranking together: TASK2VEC_SELECTORS).

    task2vec             −d(mean Task2Vec embedding of the set, target), noise-corrected when every
                         task of the ranking has its re-embedding, otherwise raw for every set
    diversity            the set's diversity coefficient (corrected as above)
    diversity_with_target  −(diversity of the set with the target added)
    textemb              cosine(mean TextEmb of the set's tasks, the target's TextEmb); TextEmb (Vu et
                         al. 2020) is the mean final hidden state over every real token of a task's
                         texts, (1 / Σ_i T_i) Σ_i Σ_t h_{i,t}, here with a GPT-2-family probe
    vocabulary_overlap   |V_S ∩ V_T| / |V_S ∪ V_T| of the lower-cased word types of the texts
    data_size            Σ training examples of the set's tasks
    logme                LogME (task2vec.selection.logme) of the target's labels on the final hidden
                         state of each target text's last real token, extracted by the source checkpoint
    random               a seeded uniform draw per source set (what no information gives)

A record's text: a classification record's `text` (and `text_pair`, joined by a space); a QA
record's question and context. Each input is built only when a requested selector needs it and
its source is given; otherwise the reason it is missing is returned.
"""
from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from task2vec.analysis.correction import MAX_FLOOR_SUM
from task2vec.analysis.diversity import CORRECTED, set_statistics
from task2vec.embedding.comparability import load_available_embeddings
from task2vec.selection.logme import logme
from utils.data.loading import load_task_data, sample_file
from utils.data.registry import get_task
from utils.models.families import backbone
from utils.models.loading import load_model
from utils.run.errors import ToolkitError

@dataclass(frozen=True)
class SelectionInputs:
    """What the selectors read, by task name (source sets are tuples of task names)."""

    embeddings: Mapping[str, np.ndarray] = field(default_factory=dict)
    reseeded: Mapping[str, np.ndarray | None] = field(default_factory=dict)
    distance: str = "task2vec"
    text_embeddings: Mapping[str, np.ndarray] = field(default_factory=dict)
    vocabularies: Mapping[str, frozenset[str]] = field(default_factory=dict)
    data_sizes: Mapping[str, int] = field(default_factory=dict)
    logme: Mapping[tuple[str, ...], float] = field(default_factory=dict)   # source set -> LogME on the target
    seed: int = 0


Selector = Callable[[SelectionInputs, tuple[str, ...], str], float]


def _need(table: Mapping, keys: Sequence, what: str) -> None:
    missing = [key for key in keys if key not in table]
    if missing:
        raise ToolkitError(f"no {what} for {', '.join(map(str, missing))}")


# Selectors that read one Task2Vec statistic of each source set (task2vec.analysis.diversity.set_statistics):
# name -> (statistic, sign that makes a larger score mean "predicted to help more").
TASK2VEC_SELECTORS: dict[str, tuple[str, float]] = {
    "task2vec": ("distance_to_target", -1.0),
    "diversity": ("diversity", 1.0),
    "diversity_with_target": ("diversity_with_target", -1.0),
}


@dataclass(frozen=True)
class Prediction:
    """A selector's scores of the source sets and, for a Task2Vec selector, which values they are:
    all corrected or all raw (ranking raw values, which carry the noise bias, beside corrected ones
    would rank by that bias)."""

    scores: np.ndarray            # (S,)
    values: str | None = None     # "corrected" or "raw" (Task2Vec selectors); None for the others
    reason: str | None = None     # why raw values were used


def task2vec_prediction(inputs: SelectionInputs, sources: Sequence[tuple[str, ...]], target: str,
                        selector: str) -> Prediction:
    """The Task2Vec statistic of `selector` for every source set, all corrected or all raw."""
    statistic, sign = TASK2VEC_SELECTORS[selector]
    tasks = sorted({task for subset in sources for task in subset} | {target})
    _need(inputs.embeddings, tasks, "Task2Vec embedding (python -m task2vec)")
    per_set = [set_statistics([inputs.embeddings[s] for s in subset], inputs.embeddings[target], inputs.distance,
                              [inputs.reseeded.get(s) for s in subset], inputs.reseeded.get(target))
               for subset in sources]
    raw = np.array([values[statistic] for values in per_set], dtype=np.float64)
    corrected = np.array([values[statistic + CORRECTED] for values in per_set], dtype=np.float64)
    unembedded = [task for task in tasks if inputs.reseeded.get(task) is None]
    uncorrectable = ["+".join(subset) for subset, r, c in zip(sources, raw, corrected)
                     if np.isfinite(r) and not np.isfinite(c)]
    if not unembedded and not uncorrectable:
        return Prediction(sign * corrected, "corrected")
    if unembedded:
        reason = (f"no re-embedding (embedding_reseeded.npy) of {', '.join(unembedded)}, so no noise floor: every "
                  "source set is ranked on raw values, noise bias included")
    else:
        reason = (f"noise floors too large to correct for {', '.join(uncorrectable)} (the floors of a pair sum "
                  f"above {MAX_FLOOR_SUM}): every source set is ranked on raw values, noise bias included")
    return Prediction(sign * raw, "raw", reason)


def textemb_selector(inputs: SelectionInputs, sources: tuple[str, ...], target: str) -> float:
    _need(inputs.text_embeddings, [*sources, target], "TextEmb vector")
    mean = np.mean([inputs.text_embeddings[s] for s in sources], axis=0)
    other = inputs.text_embeddings[target]
    return float(mean @ other / (np.linalg.norm(mean) * np.linalg.norm(other)))


def vocabulary_overlap_selector(inputs: SelectionInputs, sources: tuple[str, ...], target: str) -> float:
    _need(inputs.vocabularies, [*sources, target], "vocabulary")
    union = frozenset().union(*(inputs.vocabularies[s] for s in sources))
    other = inputs.vocabularies[target]
    return len(union & other) / max(1, len(union | other))


def data_size_selector(inputs: SelectionInputs, sources: tuple[str, ...], target: str) -> float:
    _need(inputs.data_sizes, sources, "training data size")
    return float(sum(inputs.data_sizes[s] for s in sources))


def logme_selector(inputs: SelectionInputs, sources: tuple[str, ...], target: str) -> float:
    _need(inputs.logme, [sources], "LogME value (the source checkpoint's features of the target)")
    return float(inputs.logme[sources])


def random_selector(inputs: SelectionInputs, sources: tuple[str, ...], target: str) -> float:
    key = zlib.crc32("+".join(sorted(sources)).encode()) ^ zlib.crc32(target.encode())
    return float(np.random.default_rng([inputs.seed, key]).random())


# The other selectors score one source set at a time.
PER_SET_SELECTORS: dict[str, Selector] = {
    "textemb": textemb_selector,
    "vocabulary_overlap": vocabulary_overlap_selector,
    "data_size": data_size_selector,
    "logme": logme_selector,
    "random": random_selector,
}


SELECTORS: tuple[str, ...] = (*TASK2VEC_SELECTORS, *PER_SET_SELECTORS)


def predict(selector: str, inputs: SelectionInputs, sources: Sequence[tuple[str, ...]], target: str) -> Prediction:
    """The selector's (S,) scores of the source sets for the target (ToolkitError if unknown)."""
    if selector not in SELECTORS:
        raise ToolkitError(f"unknown selector {selector!r}; known: {', '.join(SELECTORS)}")
    if selector in TASK2VEC_SELECTORS:
        return task2vec_prediction(inputs, [tuple(s) for s in sources], target, selector)
    return Prediction(np.array([PER_SET_SELECTORS[selector](inputs, tuple(s), target) for s in sources],
                               dtype=np.float64))


_WORD = re.compile(r"\w+")


def record_text(record: dict) -> str:
    """The text a selector reads of one canonical record (module docstring)."""
    if "context" in record:
        return f"{record['question']} {record['context']}"
    return f"{record['text']} {record['text_pair']}" if record.get("text_pair") else record["text"]


def vocabulary(texts: Sequence[str]) -> frozenset[str]:
    """The lower-cased word types of the texts."""
    return frozenset(word for text in texts for word in _WORD.findall(text.lower()))


@torch.no_grad()
def _hidden_states(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int,
                   device: torch.device):
    """Yield (hidden (B, T, d), mask (B, T)) of right-padded batches of the texts, in order."""
    body = backbone(model).to(device).eval()
    for start in range(0, len(texts), batch_size):
        ids = [tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
               or [tokenizer.eos_token_id] for text in texts[start:start + batch_size]]
        width = max(len(row) for row in ids)
        input_ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in ids], device=device)
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids], device=device)
        yield body(input_ids=input_ids, attention_mask=mask).last_hidden_state.float(), mask


def text_embedding(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, max_length: int = 128,
                   batch_size: int = 16, device: torch.device = torch.device("cpu")) -> np.ndarray:
    """(d,) TextEmb: the mean final hidden state over every real token of the texts."""
    total, count = None, 0
    for hidden, mask in _hidden_states(model, tokenizer, texts, max_length, batch_size, device):
        summed = (hidden * mask.unsqueeze(-1)).sum(dim=(0, 1))                     # (d,)
        total = summed if total is None else total + summed
        count += int(mask.sum())
    if total is None:
        raise ValueError("no texts to embed")
    return (total / count).cpu().numpy().astype(np.float64)


def last_token_features(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, max_length: int = 128,
                        batch_size: int = 16, device: torch.device = torch.device("cpu")) -> np.ndarray:
    """(N, d) the final hidden state of each text's last real token."""
    rows = []
    for hidden, mask in _hidden_states(model, tokenizer, texts, max_length, batch_size, device):
        last = mask.sum(dim=-1) - 1                                                 # (B,)
        rows.append(hidden[torch.arange(hidden.size(0), device=hidden.device), last].cpu().numpy())
    return np.concatenate(rows).astype(np.float64)


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

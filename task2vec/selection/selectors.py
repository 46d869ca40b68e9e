"""Selectors: functions from (a source set, a target) to a score, higher meaning "predicted to help
the target more", with a registry. A new selector is one function and one line in SELECTORS.

What each reads is precomputed in a `SelectionInputs` (embeddings, text vectors, vocabularies, data
sizes, LogME values); a selector whose input is missing says which flag or file provides it.

    task2vec             −d(mean Task2Vec embedding of the set, target), noise-corrected when
                         re-embeddings are given (task2vec.diversity.set_statistics)
    diversity            the set's diversity coefficient (corrected as above): the hypothesis that
                         more diverse source sets transfer better
    diversity_with_target  −(diversity of the set with the target added)
    textemb              cosine(mean TextEmb of the set's tasks, the target's TextEmb) (Vu et al.
                         2020's TextEmb: the mean final hidden state over a task's text, here with
                         the GPT-2 probe; task2vec.selection.features.text_embedding)
    vocabulary_overlap   |V_S ∩ V_T| / |V_S ∪ V_T| of the word types of the set's texts and the
                         target's (a cheap baseline)
    data_size            Σ training examples of the set's tasks (the baseline Vu et al. report)
    logme                LogME of the target's labels on features of the target's text extracted by
                         the source checkpoint (You et al. 2021; task2vec.selection.logme), per source
                         set as measured
    random               a seeded uniform draw per source set (what no information gives)
"""
from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from task2vec.diversity import CORRECTED, set_statistics
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


def _set_statistic(inputs: SelectionInputs, sources: tuple[str, ...], target: str, name: str) -> float:
    """A Task2Vec set statistic, the corrected one when every re-embedding is there."""
    _need(inputs.embeddings, [*sources, target], "Task2Vec embedding (python -m task2vec)")
    statistics = set_statistics([inputs.embeddings[s] for s in sources], inputs.embeddings[target], inputs.distance,
                                [inputs.reseeded.get(s) for s in sources], inputs.reseeded.get(target))
    corrected = statistics[name + CORRECTED]
    return float(corrected if np.isfinite(corrected) else statistics[name])


def task2vec_selector(inputs: SelectionInputs, sources: tuple[str, ...], target: str) -> float:
    return -_set_statistic(inputs, sources, target, "distance_to_target")


def diversity_selector(inputs: SelectionInputs, sources: tuple[str, ...], target: str) -> float:
    return _set_statistic(inputs, sources, target, "diversity")


def diversity_with_target_selector(inputs: SelectionInputs, sources: tuple[str, ...], target: str) -> float:
    return -_set_statistic(inputs, sources, target, "diversity_with_target")


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


SELECTORS: dict[str, Selector] = {
    "task2vec": task2vec_selector,
    "diversity": diversity_selector,
    "diversity_with_target": diversity_with_target_selector,
    "textemb": textemb_selector,
    "vocabulary_overlap": vocabulary_overlap_selector,
    "data_size": data_size_selector,
    "logme": logme_selector,
    "random": random_selector,
}


def predict(selector: str, inputs: SelectionInputs, sources: Sequence[tuple[str, ...]], target: str) -> np.ndarray:
    """(S,) the selector's scores of the source sets for the target.

    Raises:
        ToolkitError: an unknown selector (the known ones are listed), or an input it needs is missing.
    """
    if selector not in SELECTORS:
        raise ToolkitError(f"unknown selector {selector!r}; known: {', '.join(SELECTORS)}")
    return np.array([SELECTORS[selector](inputs, tuple(s), target) for s in sources], dtype=np.float64)

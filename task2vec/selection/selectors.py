"""Selectors: functions from (a source set, a target) to a score, higher meaning "predicted to help
the target more", with a registry. A new selector is one function of one source set and one line in
PER_SET_SELECTORS (the Task2Vec ones score all the sets of a ranking together: TASK2VEC_SELECTORS).

What each reads is precomputed in a `SelectionInputs` (embeddings, text vectors, vocabularies, data
sizes, LogME values); a selector whose input is missing says which flag or file provides it.

    task2vec             −d(mean Task2Vec embedding of the set, target), noise-corrected when every
                         task of the ranking has its re-embedding, otherwise raw for every set
                         (task2vec.diversity.set_statistics; `Prediction` says which and why)
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

from task2vec.correction import MAX_FLOOR_SUM
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


# Selectors that read one Task2Vec statistic of each source set (task2vec.diversity.set_statistics):
# name -> (statistic, sign that makes a larger score mean "predicted to help more").
TASK2VEC_SELECTORS: dict[str, tuple[str, float]] = {
    "task2vec": ("distance_to_target", -1.0),
    "diversity": ("diversity", 1.0),
    "diversity_with_target": ("diversity_with_target", -1.0),
}


@dataclass(frozen=True)
class Prediction:
    """A selector's scores of the source sets, and for a Task2Vec selector which values they are.

    One ranking uses one kind of value for every source set: noise-corrected when every set has its
    corrected statistic, otherwise the raw statistic for all (a raw value carries the noise bias,
    (f_a + f_b)/2 to first order, so ranking raw values beside corrected ones ranks by that bias).
    """

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
    """The selector's scores of the source sets for the target ((S,) in `.scores`).

    Raises:
        ToolkitError: an unknown selector (the known ones are listed), or an input it needs is missing.
    """
    if selector not in SELECTORS:
        raise ToolkitError(f"unknown selector {selector!r}; known: {', '.join(SELECTORS)}")
    if selector in TASK2VEC_SELECTORS:
        return task2vec_prediction(inputs, [tuple(s) for s in sources], target, selector)
    return Prediction(np.array([PER_SET_SELECTORS[selector](inputs, tuple(s), target) for s in sources],
                               dtype=np.float64))

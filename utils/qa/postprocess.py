"""From per-token start/end logits to one answer per question (span objective).

For each question, over all of its windows: take the `n_best_size` best start and end positions
among the window's context tokens, keep pairs with end >= start and at most `max_answer_length`
tokens, score = start logit + end logit, text = the context characters the pair covers. The null
score of a window is the logits of its own null slot; a question's null score is the smallest over
its windows (the window most sure that an answer exists). With unanswerable questions (v2 mode),
the prediction is "" when null score − best span score > `null_score_diff_threshold`.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class PostprocessConfig:
    """run_qa's defaults: 20 candidates, answers of at most 30 tokens, threshold 0."""

    n_best_size: int = 20
    max_answer_length: int = 30
    null_score_diff_threshold: float = 0.0
    version_2_with_negative: bool = False


@dataclass
class SpanPredictions:
    """predictions: id -> text ("" = no answer); best_non_null: id -> best span text even where
    the null won (what the v2 best-threshold sweep needs); nbest: id -> candidate list;
    null_odds: id -> null score − best span score (v2 only)."""

    predictions: dict[str, str] = field(default_factory=dict)
    best_non_null: dict[str, str] = field(default_factory=dict)
    nbest: dict[str, list[dict]] = field(default_factory=dict)
    null_odds: dict[str, float] = field(default_factory=dict)


def _window_candidates(start: np.ndarray, end: np.ndarray, lo: int, hi: int, n_best: int,
                       max_length: int) -> list[tuple[float, int, int]]:
    """(score, start, end) of the best valid pairs inside positions [lo, hi), best first."""
    if hi <= lo:
        return []
    k = min(n_best, hi - lo)
    starts = lo + np.argsort(-start[lo:hi], kind="stable")[:k]   # (k,)
    ends = lo + np.argsort(-end[lo:hi], kind="stable")[:k]       # (k,)
    scores = start[starts][:, None] + end[ends][None, :]          # (k, k)
    length = ends[None, :] - starts[:, None]                      # (k, k) tokens − 1
    scores = np.where((length >= 0) & (length < max_length), scores, -np.inf)
    order = np.argsort(-scores, axis=None, kind="stable")[:n_best]
    rows, cols = np.unravel_index(order, scores.shape)
    return [(float(scores[r, c]), int(starts[r]), int(ends[c])) for r, c in zip(rows, cols)
            if np.isfinite(scores[r, c])]


def _softmax(scores: list[float]) -> list[float]:
    values = np.array(scores, dtype=np.float64)
    values = np.exp(values - values.max())
    return (values / values.sum()).tolist()


def postprocess_span_predictions(examples: Sequence[dict], features: dict[str, list],
                                 start_logits: Sequence[np.ndarray], end_logits: Sequence[np.ndarray],
                                 config: PostprocessConfig) -> SpanPredictions:
    """Answer every example from the logits of its features.

    Args:
        examples: canonical QA records, indexed by the features' `example_index`.
        features: columns example_index, context_start, context_end, null_index, token_start,
            token_end (see utils.qa.features).
        start_logits, end_logits: one 1-D array per feature, at least as long as the feature.
    """
    by_example: dict[int, list[int]] = defaultdict(list)
    for feature_index, example_index in enumerate(features["example_index"]):
        by_example[example_index].append(feature_index)
    result = SpanPredictions()
    for example_index, example in enumerate(examples):
        qid = example["id"]
        context = example["context"]
        candidates: list[dict] = []
        null_score = None
        for f in by_example.get(example_index, []):
            start, end = np.asarray(start_logits[f], dtype=np.float64), np.asarray(end_logits[f], dtype=np.float64)
            null = features["null_index"][f]
            window_null = float(start[null] + end[null])
            null_score = window_null if null_score is None else min(null_score, window_null)
            token_start, token_end = features["token_start"][f], features["token_end"][f]
            for score, s, e in _window_candidates(start, end, features["context_start"][f],
                                                  features["context_end"][f], config.n_best_size,
                                                  config.max_answer_length):
                candidates.append({"text": context[token_start[s]:token_end[e]].strip(), "score": score,
                                   "start_logit": float(start[s]), "end_logit": float(end[e]),
                                   "char_start": token_start[s], "char_end": token_end[e]})
        candidates.sort(key=lambda c: -c["score"])
        candidates = candidates[:config.n_best_size]
        best = candidates[0] if candidates else None
        result.best_non_null[qid] = best["text"] if best else ""
        nbest = list(candidates)
        if config.version_2_with_negative and null_score is not None:
            best_score = best["score"] if best else -np.inf
            odds = null_score - best_score
            result.null_odds[qid] = float(odds) if np.isfinite(odds) else 1e9
            result.predictions[qid] = "" if odds > config.null_score_diff_threshold else best["text"]
            nbest.append({"text": "", "score": null_score, "start_logit": None, "end_logit": None})
            nbest.sort(key=lambda c: -c["score"])
            nbest = nbest[:config.n_best_size]
        else:
            result.predictions[qid] = best["text"] if best else ""
        for candidate, probability in zip(nbest, _softmax([c["score"] for c in nbest]) if nbest else []):
            candidate["probability"] = probability
        result.nbest[qid] = nbest
    return result

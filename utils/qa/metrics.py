"""Each QA dataset scored with its own official metric, over every question of its evaluation set.

- `squad_v1` (evaluate-v1.1.py): EM and token F1 of normalised answers (lower case, no punctuation
  or a/an/the, white space collapsed), maxed over the gold strings.
- `squad_v2` (evaluate-v2.0.py): as v1.1; "" answers an unanswerable question; gold strings
  normalising to "" are dropped; F1 is `int(gold_tokens == pred_tokens)` when either side is empty.
- `mlqa` (mlqa_evaluation_v1.py): as v1.1, every Unicode punctuation mark removed, the answer
  language's articles. `duorc` (evaluate.py): v1.1 rules, max over ALL original answer strings; an
  unanswerable question's gold, and an abstention, are "NA".
- `drop` and `quoref` (DROP's metric; Quoref's gold is all answer texts as one conjunctive answer):
  an answer is a tuple of strings, each normalised token by token (split on spaces and hyphens;
  numbers printed as floats, so "3" and "3.0" agree) into a bag. EM: equal normalised strings, as
  sets and equally many. F1: bags paired one to one (Hungarian algorithm on the bag F1; 0 when the
  gold bag's numbers are all missing), averaged over max(#gold, #predicted) slots, rounded to 2
  decimals; DROP maxes over the validated answers too.

A missing prediction scores 0; `without_located_answer` counts questions whose answer is not in the
context (they score what their prediction earns). Tasks with unanswerable questions also get
`best_exact` / `best_f1`: the best abstention threshold over each question's best non-null answer
on this evaluation set (an oracle upper bound); SQuAD v2 keeps the official script's sweep, over
the already thresholded texts, as `official_best_*`.
"""
from __future__ import annotations

import collections
import math
import re
import string
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from utils.data.registry import TaskSpec

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)
DUORC_NO_ANSWER = "NA"
# Texts that mean "no answer" in each metric's prediction files.
ABSTENTION_TEXT = {"squad_v2": "", "duorc": DUORC_NO_ANSWER}
NOT_FINITE_SCORE_REASON = "not finite: some question's null odds (no-answer score) are NaN or infinite"


# ----------------------------------------------------------------------------- SQuAD v1.1 / v2.0

def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop the articles a/an/the, collapse white space."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    """Harmonic mean of token precision and recall over bags with repeats (0 when nothing is shared)."""
    same = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _mean_percent(values: Iterable[float]) -> float:
    values = list(values)
    return 100.0 * sum(values) / len(values)


def _add_group_means(result: dict[str, float], exact: Mapping[str, float], f1: Mapping[str, float],
                     has_answer: Sequence[tuple[str, bool]], exact_key: str) -> None:
    """HasAns_* and NoAns_* (EM, F1, total) of the questions with and without answers, where any."""
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [qid for qid, has in has_answer if has is wanted]
        if qids:
            result[f"{prefix}_{exact_key}"] = _mean_percent(exact[q] for q in qids)
            result[f"{prefix}_f1"] = _mean_percent(f1[q] for q in qids)
            result[f"{prefix}_total"] = len(qids)


def f1_v1(prediction: str, gold: str) -> float:
    """v1.1 token F1 of the normalised answers (0 when nothing is shared)."""
    return token_f1(normalize_answer(prediction).split(), normalize_answer(gold).split())


def f1_v2(prediction: str, gold: str) -> float:
    """v2.0 token F1: as v1.1, but 1.0 for an empty prediction of an empty gold (abstention)."""
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    return token_f1(pred_tokens, gold_tokens) if pred_tokens and gold_tokens else float(pred_tokens == gold_tokens)


def v1_question_scores(golds: Mapping[str, list[str]], predictions: Mapping[str, str],
                       normalize: Callable[[str], str] = normalize_answer) -> tuple[dict[str, float], dict[str, float]]:
    """Per-question v1.1 EM and F1 (0..1, max over the gold texts; a missing prediction scores 0),
    the answers normalised by `normalize` (SQuAD's, or MLQA's for the answer language)."""
    exact: dict[str, float] = {}
    f1: dict[str, float] = {}
    for qid, answers in golds.items():
        predicted = normalize(predictions[qid]).split() if qid in predictions else None
        gold_tokens = [normalize(gold).split() for gold in answers]
        exact[qid] = max(float(predicted == gold) for gold in gold_tokens) if predicted is not None else 0.0
        f1[qid] = max(token_f1(predicted, gold) for gold in gold_tokens) if predicted is not None else 0.0
    return exact, f1


def squad_v1_scores(golds: Mapping[str, list[str]], predictions: Mapping[str, str],
                    normalize: Callable[[str], str] = normalize_answer) -> dict[str, float]:
    """{"exact_match", "f1"} in percent over every question of `golds` (see `v1_question_scores`)."""
    if not golds:
        raise ValueError("no questions to score")
    exact, f1 = v1_question_scores(golds, predictions, normalize)
    return {"exact_match": _mean_percent(exact.values()), "f1": _mean_percent(f1.values())}


def squad_v2_raw_scores(golds: Mapping[str, list[str]], predictions: Mapping[str, str]
                        ) -> tuple[dict[str, float], dict[str, float]]:
    """Per-question exact and F1 (0/1 and [0, 1]) for the questions that have a prediction."""
    exact: dict[str, float] = {}
    f1: dict[str, float] = {}
    for qid, answers in golds.items():
        if qid in predictions:
            gold_texts = [text for text in answers if normalize_answer(text)] or [""]
            exact[qid] = float(max(normalize_answer(predictions[qid]) == normalize_answer(g) for g in gold_texts))
            f1[qid] = max(f1_v2(predictions[qid], gold) for gold in gold_texts)
    return exact, f1


def _official_best_threshold(predictions: Mapping[str, str], scores: Mapping[str, float],
                             na_probs: Mapping[str, float], has_answer: Mapping[str, bool]) -> tuple[float, float]:
    """The official find_best_thresh: from "abstain on everything" (score = the unanswerable
    questions), in increasing no-answer probability each question stops abstaining: an answerable
    one gains its score, an unanswerable one loses 1 if a non-empty answer is predicted."""
    current = best = float(sum(1 for qid in has_answer if not has_answer[qid]))
    best_threshold = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            current += scores[qid]
        elif predictions[qid]:
            current -= 1
        if current > best:
            best, best_threshold = current, na_probs[qid]
    return 100.0 * best / len(scores), best_threshold


def squad_v2_scores(golds: Mapping[str, list[str]], predictions: Mapping[str, str],
                    na_probs: Mapping[str, float] | None = None,
                    na_prob_thresh: float | None = 1.0) -> dict[str, float]:
    """The official v2.0 evaluation: exact, f1, total, HasAns_* and NoAns_* (when such questions
    exist), and with `na_probs` (id -> no-answer score) best_exact(_thresh) and best_f1(_thresh).
    `golds` maps an unanswerable question to []; a "" prediction abstains, as does any question whose
    na_prob exceeds `na_prob_thresh` (official default 1.0; None: the texts alone decide)."""
    if not golds:
        raise ValueError("no questions to score")
    # As the official script: a question "has an answer" when its answer list is not empty.
    has_answer = {qid: bool(answers) for qid, answers in golds.items()}
    exact_raw, f1_raw = squad_v2_raw_scores(golds, predictions)
    probs = na_probs if na_probs is not None else {qid: 0.0 for qid in predictions}
    exact, f1 = dict(exact_raw), dict(f1_raw)
    if na_prob_thresh is not None:
        exact, f1 = ({qid: float(not has_answer[qid]) if probs[qid] > na_prob_thresh else score
                      for qid, score in scores.items()} for scores in (exact_raw, f1_raw))
    result: dict[str, float] = {"exact": _mean_percent(exact.values()), "f1": _mean_percent(f1.values()),
                                "total": len(exact)}
    _add_group_means(result, exact, f1, list(has_answer.items()), "exact")
    if na_probs is not None:
        result["best_exact"], result["best_exact_thresh"] = _official_best_threshold(predictions, exact_raw, na_probs,
                                                                                     has_answer)
        result["best_f1"], result["best_f1_thresh"] = _official_best_threshold(predictions, f1_raw, na_probs, has_answer)
    return result


# ----------------------------------------------------------------------------- DROP / Quoref

Answer = str | Sequence[str]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _normalize_drop_token(token: str) -> str:
    token = token.lower()
    if not _is_number(token):
        token = "".join(ch for ch in token if ch not in _PUNCTUATION)
    if _is_number(token):
        token = str(float(token))
    return " ".join(_ARTICLES.sub(" ", token).split())


def answer_bags(answer: Answer) -> tuple[list[str], list[set[str]]]:
    """(normalised strings, token bags) of an answer given as one string or a list of strings."""
    spans = [answer] if isinstance(answer, str) else list(answer)
    normalized = [" ".join(part for part in map(_normalize_drop_token, re.split(" |-", span)) if part.strip()).strip()
                  for span in spans]
    return normalized, [set(text.split()) for text in normalized]


def aligned_f1(predicted: list[set[str]], gold: list[set[str]]) -> np.ndarray:
    """Per-slot F1 after the one-to-one alignment of bags; shape (max(#gold, #predicted),). As in the
    official code, an empty bag has precision (or recall) 1."""
    scores = np.zeros((len(gold), len(predicted)))                              # (G, P)
    for g, gold_bag in enumerate(gold):
        gold_numbers = {token for token in gold_bag if _is_number(token)}
        for p, predicted_bag in enumerate(predicted):
            if not gold_numbers or gold_numbers & {token for token in predicted_bag if _is_number(token)}:
                shared = len(gold_bag & predicted_bag)
                precision = shared / len(predicted_bag) if predicted_bag else 1.0
                recall = shared / len(gold_bag) if gold_bag else 1.0
                if precision or recall:
                    scores[g, p] = 2 * precision * recall / (precision + recall)
    rows, columns = linear_sum_assignment(-scores)
    slots = np.zeros(max(len(gold), len(predicted)))
    for row, column in zip(rows, columns):
        slots[row] = max(slots[row], scores[row, column])
    return slots


def em_f1(predicted: Answer, gold: Answer) -> tuple[float, float]:
    """(EM, F1) of one prediction against one gold answer, F1 rounded to 2 decimals."""
    predicted_strings, predicted_bags = answer_bags(predicted)
    gold_strings, gold_bags = answer_bags(gold)
    exact = float(set(predicted_strings) == set(gold_strings) and len(predicted_strings) == len(gold_strings))
    return exact, round(float(np.mean(aligned_f1(predicted_bags, gold_bags))), 2)


@dataclass(frozen=True)
class GoldAnswer:
    """One acceptable answer of a question: its strings (all required) and its DROP type."""

    strings: tuple[str, ...]
    type: str


def _typed_means(pairs: list[tuple[float, float]], by_type: Mapping[str, list[tuple[float, float]]], missing: int
                 ) -> dict[str, Any]:
    """exact_match, f1, total, missing and per_type {type: {total, share, exact_match, f1}}, in percent
    (summed in the official scripts' order: `pairs`)."""
    per_type = {kind: {"total": len(scores), "share": 100.0 * len(scores) / len(pairs),
                       "exact_match": 100.0 * float(np.mean([s[0] for s in scores])),
                       "f1": 100.0 * float(np.mean([s[1] for s in scores]))}
                for kind, scores in sorted(by_type.items())}
    return {"exact_match": 100.0 * float(np.mean([p[0] for p in pairs])),
            "f1": 100.0 * float(np.mean([p[1] for p in pairs])), "total": len(pairs), "missing": missing,
            "per_type": per_type}


def drop_scores(golds: Mapping[str, Sequence[GoldAnswer]], predictions: Mapping[str, Answer]) -> dict[str, Any]:
    """The official DROP evaluation, in percent (keys of `_typed_means`). Each question scores the
    max over its non-empty gold answers (main answer first, then the validated ones); its type is that
    of the last gold answer reaching both maxima ("empty" when all are empty), as officially."""
    if not golds:
        raise ValueError("no questions to score")
    by_type: dict[str, list[tuple[float, float]]] = defaultdict(list)
    pairs, missing = [], 0
    for qid, answers in golds.items():
        best_em, best_f1, kind = 0.0, 0.0, "empty"
        if qid not in predictions:
            missing += 1
            kind = answers[0].type if answers else "number"
        for gold in answers if qid in predictions else ():
            em, f1 = em_f1(predictions[qid], gold.strings)
            if gold.strings and gold.strings[0].strip():
                best_em, best_f1 = max(best_em, em), max(best_f1, f1)
                if best_em == em and best_f1 == f1:
                    kind = gold.type
        by_type[kind].append((best_em, best_f1))
        pairs.append((best_em, best_f1))
    return _typed_means(pairs, by_type, missing)


def quoref_scores(golds: Mapping[str, Sequence[str]], predictions: Mapping[str, Answer]) -> dict[str, Any]:
    """The official Quoref evaluation, in percent: each question's gold is all its answer texts;
    per_type (ours, not the official script's) splits questions with one gold span ("span") and
    with several ("spans")."""
    if not golds:
        raise ValueError("no questions to score")
    by_type: dict[str, list[tuple[float, float]]] = defaultdict(list)
    missing = 0
    for qid, texts in golds.items():
        if not texts:
            raise ValueError(f"Quoref question {qid} has no gold answer")
        missing += qid not in predictions
        em, f1 = em_f1(predictions[qid], tuple(texts)) if qid in predictions and texts[0].strip() else (0.0, 0.0)
        by_type["span" if len(texts) == 1 else "spans"].append((em, f1))
    return _typed_means([pair for pairs in by_type.values() for pair in pairs], by_type, missing)


# ----------------------------------------------------------------------------- DuoRC, MLQA, sweeps

def single_strings(record: dict) -> list[str]:
    """The gold strings of a question scored with SQuAD rules; ValueError for a multi-span answer."""
    for answer in record["gold"]:
        if len(answer) != 1:
            raise ValueError(f"question {record['id']}: a gold answer of {len(answer)} spans cannot be scored "
                             "with SQuAD rules")
    return [answer[0] for answer in record["gold"]]


def official_predictions(metric: str, predictions: Mapping[str, str]) -> dict[str, str]:
    """Predictions as the dataset's official script reads them: DuoRC writes an abstention as "NA"."""
    if metric == "duorc":
        return {qid: text if text.strip() else DUORC_NO_ANSWER for qid, text in predictions.items()}
    return dict(predictions)


def duorc_question_scores(records: Sequence[dict], predictions: Mapping[str, str]
                          ) -> tuple[dict[str, float], dict[str, float]]:
    """Per-question EM and F1 (0..1) by DuoRC's evaluate.py: SQuAD v1.1 rules, max over all the
    answer strings, gold ["NA"] for a question without answers."""
    return v1_question_scores({r["id"]: single_strings(r) or [DUORC_NO_ANSWER] for r in records}, predictions)


def duorc_scores(records: Sequence[dict], predictions: Mapping[str, str]) -> dict[str, float]:
    """exact_match, f1 and total as DuoRC's evaluate.py prints them, and the same split into
    questions with answers (HasAns_*) and without (NoAns_*)."""
    exact, f1 = duorc_question_scores(records, predictions)
    result: dict[str, float] = {"exact_match": _mean_percent(exact.values()), "f1": _mean_percent(f1.values()),
                                "total": len(records)}
    _add_group_means(result, exact, f1, [(r["id"], not r["is_impossible"]) for r in records], "exact_match")
    return result


# Articles removed by MLQA's evaluation, per answer language.
MLQA_ARTICLES = {
    "en": re.compile(r"\b(a|an|the)\b"),
    "es": re.compile(r"\b(un|una|unos|unas|el|la|los|las)\b"),
    "de": re.compile(r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b"),
}


def mlqa_normalize(text: str, language: str) -> str:
    """MLQA's normalisation: lower case, drop every punctuation mark (Unicode category P*, and
    ASCII string.punctuation), drop the language's articles, collapse white space."""
    if language not in MLQA_ARTICLES:
        raise ValueError(f"no MLQA normalisation for language {language!r} (known: {sorted(MLQA_ARTICLES)})")
    text = "".join(ch for ch in text.lower()
                   if not (ch in string.punctuation or unicodedata.category(ch).startswith("P")))
    return " ".join(MLQA_ARTICLES[language].sub(" ", text).split())


def best_threshold(answer_scores: Mapping[str, float], abstain_scores: Mapping[str, float],
                   null_odds: Mapping[str, float]) -> tuple[float, float | None]:
    """The best mean score (×100) over abstention thresholds t, and that t: question q answers (score
    answer_scores[q]) when null_odds[q] <= t and abstains (score abstain_scores[q]) otherwise. Questions
    with equal odds switch together; t = None means "abstain on every question"."""
    ids = list(answer_scores)
    if not ids:
        raise ValueError("no questions to sweep")
    current = sum(abstain_scores[qid] for qid in ids)
    best, best_t = current, None
    ordered = sorted(ids, key=lambda qid: null_odds[qid])
    for position, qid in enumerate(ordered):
        current += answer_scores[qid] - abstain_scores[qid]
        last_of_tie = position + 1 == len(ordered) or null_odds[ordered[position + 1]] != null_odds[qid]
        if last_of_tie and current > best:
            best, best_t = current, float(null_odds[qid])
    return 100.0 * best / len(ids), best_t


def oracle_sweep(metric: str, records: Sequence[dict], best_non_null: Mapping[str, str],
                 null_odds: Mapping[str, float]) -> dict[str, float | None]:
    """best_exact(_thresh) and best_f1(_thresh): the threshold sweep over each question's best
    non-null answer (see `best_threshold`)."""
    def per_question(predictions: Mapping[str, str]) -> tuple[dict[str, float], dict[str, float]]:
        if metric == "duorc":
            return duorc_question_scores(records, predictions)
        return squad_v2_raw_scores({record["id"]: single_strings(record) for record in records}, predictions)

    exact_answer, f1_answer = per_question(official_predictions(metric, best_non_null))
    exact_abstain, f1_abstain = per_question({record["id"]: ABSTENTION_TEXT[metric] for record in records})
    best_exact, exact_t = best_threshold(exact_answer, exact_abstain, null_odds)
    best_f1, f1_t = best_threshold(f1_answer, f1_abstain, null_odds)
    return {"best_exact": best_exact, "best_exact_thresh": exact_t, "best_f1": best_f1, "best_f1_thresh": f1_t}


def _flatten_per_type(result: dict[str, Any]) -> dict[str, Any]:
    flat = {key: value for key, value in result.items() if key != "per_type"}
    flat.update({f"{kind}_{key}": values[key] for kind, values in result["per_type"].items()
                 for key in ("exact_match", "f1", "total")})
    return flat


def score_qa(spec: TaskSpec, records: Sequence[dict], predictions: Mapping[str, str], *,
             null_odds: Mapping[str, float] | None = None,
             best_non_null: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The task's official metric over every record's `gold` (un-prefixed keys; see the module
    docstring), plus `metric`, `samples` and `without_located_answer`. `predictions` maps question id
    -> text ("" = abstain); `null_odds` (null score - best answer score) and `best_non_null` feed the
    sweeps of tasks with unanswerable questions. A non-finite value becomes None (`with_null_reasons`)."""
    if not records:
        raise ValueError("no questions to score")
    official = official_predictions(spec.metric, predictions)
    if spec.metric in ("squad_v1", "mlqa"):
        normalize = (lambda text: mlqa_normalize(text, spec.language)) if spec.metric == "mlqa" else normalize_answer
        result: dict[str, Any] = squad_v1_scores({r["id"]: single_strings(r) for r in records}, official, normalize)
    elif spec.metric == "squad_v2":
        # The official script on the files written here (eval_predictions.json, eval_null_odds.json):
        # the texts decide abstention; its best_* sweep runs over those thresholded texts.
        result = squad_v2_scores({r["id"]: single_strings(r) for r in records}, official, null_odds,
                                 na_prob_thresh=None)
        for key in ("best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"):
            if key in result:
                result[f"official_{key}"] = result.pop(key)
    elif spec.metric == "duorc":
        result = duorc_scores(records, official)
    elif spec.metric == "drop":
        types = lambda r: r.get("gold_types") or ["span" if len(a) == 1 else "spans" for a in r["gold"]]  # noqa: E731
        result = _flatten_per_type(drop_scores({r["id"]: [GoldAnswer(tuple(a), t) for a, t in zip(r["gold"], types(r))]
                                                for r in records}, official))
    elif spec.metric == "quoref":
        result = _flatten_per_type(quoref_scores({r["id"]: r["gold"][0] for r in records}, official))
    else:
        raise ValueError(f"task {spec.name} has no QA metric ({spec.metric})")
    if spec.metric in ABSTENTION_TEXT and null_odds is not None and best_non_null is not None:
        result.update(oracle_sweep(spec.metric, records, best_non_null, null_odds))
    result.update(metric=spec.metric, samples=len(records),
                  without_located_answer=sum(1 for r in records if not r["is_impossible"] and not r["answers"]["text"]))
    return with_null_reasons(result)


def with_null_reasons(result: dict[str, Any]) -> dict[str, Any]:
    """`result` with every non-finite number as None and `<key>_reason` beside it (strict JSON has no
    NaN): only a threshold can be undefined, when the null odds it is chosen among are not finite."""
    safe: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, float) and not math.isfinite(value):
            safe[key] = None
            safe[f"{key}_reason"] = NOT_FINITE_SCORE_REASON
        else:
            safe[key] = value
    return safe

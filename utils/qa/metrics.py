"""Each QA dataset scored with its own official metric, over every question of its evaluation set.

| metric     | datasets            | rule (per question, then the mean ×100)                              |
|------------|---------------------|----------------------------------------------------------------------|
| `squad_v1` | SQuAD v1.1          | EM / token F1, max over the gold strings (evaluate-v1.1.py)           |
| `mlqa`     | MLQA en / de / es   | as v1.1, but every Unicode punctuation mark is removed and the      |
|            |                     | articles are the answer language's (mlqa_evaluation_v1.py)          |
| `squad_v2` | SQuAD v2.0          | as v1.1; "" answers an unanswerable question (evaluate-v2.0.py)       |
| `duorc`    | DuoRC Paraphrase/Self | v1.1 rules, max over ALL original answer strings; an unanswerable  |
|            |                     | question's gold is "NA", and an abstention is written as "NA"        |
|            |                     | (DuoRC's evaluate.py)                                                |
| `drop`     | DROP                | DROP's bag-of-tokens EM / F1, numbers and dates included, max over   |
|            |                     | the main and validated answers, per answer type (utils.drop_metric) |
| `quoref`   | Quoref              | DROP's metric, all answer texts of a question as one answer           |

Every question of the evaluation records is scored: a question whose answer could not be located
in the context (a DuoRC free-form answer, a DROP number the span objective cannot produce) scores
what its prediction earns, usually 0, and `without_located_answer` says how many there are.

Tasks with unanswerable questions also get an abstention-threshold sweep (`best_exact`,
`best_f1` and their thresholds): each question answers with its best non-null candidate when its
null odds are at most the threshold and abstains otherwise; the threshold is the best one found
on this evaluation set (an oracle, an upper bound to report as such). SQuAD v2 also keeps the
official script's own sweep, over the already thresholded predictions, as `official_best_*`.
"""
from __future__ import annotations

import math
import re
import string
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from utils.qa.drop_metric import GoldAnswer, drop_scores, quoref_scores
from utils.qa.squad_metric import squad_v1_scores, squad_v2_raw_scores, squad_v2_scores
from utils.qa.squad_metric import exact_match as squad_exact_match
from utils.qa.squad_metric import f1_v1, token_f1
from utils.data.registry import TaskSpec

DUORC_NO_ANSWER = "NA"
# Texts that mean "no answer" in each metric's prediction files.
ABSTENTION_TEXT = {"squad_v2": "", "duorc": DUORC_NO_ANSWER}


def single_strings(record: dict) -> list[str]:
    """The gold strings of a question scored with SQuAD rules (one string per gold answer).

    Raises:
        ValueError: a gold answer made of several strings (a conjunctive multi-span answer).
    """
    strings = []
    for answer in record["gold"]:
        if len(answer) != 1:
            raise ValueError(f"question {record['id']}: a gold answer of {len(answer)} spans cannot be scored "
                             "with SQuAD rules")
        strings.append(answer[0])
    return strings


def official_predictions(metric: str, predictions: Mapping[str, str]) -> dict[str, str]:
    """Predictions as the dataset's official script reads them: DuoRC writes an abstention as "NA"."""
    if metric == "duorc":
        return {qid: text if text.strip() else DUORC_NO_ANSWER for qid, text in predictions.items()}
    return dict(predictions)


def duorc_question_scores(records: Sequence[dict], predictions: Mapping[str, str]
                          ) -> tuple[dict[str, float], dict[str, float]]:
    """Per-question EM and F1 (0..1) by DuoRC's evaluate.py: SQuAD v1.1 rules, max over all the
    answer strings, gold ["NA"] for a question without answers; a missing prediction scores 0."""
    exact: dict[str, float] = {}
    f1: dict[str, float] = {}
    for record in records:
        qid = record["id"]
        if qid not in predictions:
            exact[qid] = f1[qid] = 0.0
            continue
        golds = single_strings(record) or [DUORC_NO_ANSWER]
        exact[qid] = float(max(squad_exact_match(predictions[qid], gold) for gold in golds))
        f1[qid] = max(f1_v1(predictions[qid], gold) for gold in golds)
    return exact, f1


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


def mlqa_scores(records: Sequence[dict], predictions: Mapping[str, str], language: str) -> dict[str, float]:
    """exact_match and f1 as mlqa_evaluation_v1.py computes them (max over the gold strings; a
    missing prediction scores 0)."""
    exact = f1 = 0.0
    for record in records:
        if record["id"] not in predictions:
            continue
        predicted = mlqa_normalize(predictions[record["id"]], language).split()
        best_exact = best_f1 = 0.0
        for gold in single_strings(record):
            gold_tokens = mlqa_normalize(gold, language).split()
            best_exact = max(best_exact, float(predicted == gold_tokens))
            best_f1 = max(best_f1, token_f1(predicted, gold_tokens))
        exact += best_exact
        f1 += best_f1
    return {"exact_match": 100.0 * exact / len(records), "f1": 100.0 * f1 / len(records)}


def _mean_percent(values: Sequence[float]) -> float:
    return 100.0 * sum(values) / len(values)


def duorc_scores(records: Sequence[dict], predictions: Mapping[str, str]) -> dict[str, float]:
    """exact_match, f1 and total as DuoRC's evaluate.py prints them, and the same split into
    questions with answers (HasAns_*) and without (NoAns_*)."""
    exact, f1 = duorc_question_scores(records, predictions)
    result: dict[str, float] = {"exact_match": _mean_percent(list(exact.values())),
                                "f1": _mean_percent(list(f1.values())), "total": len(records)}
    for prefix, wanted in (("HasAns", False), ("NoAns", True)):
        ids = [record["id"] for record in records if record["is_impossible"] is wanted]
        if ids:
            result[f"{prefix}_exact_match"] = _mean_percent([exact[qid] for qid in ids])
            result[f"{prefix}_f1"] = _mean_percent([f1[qid] for qid in ids])
            result[f"{prefix}_total"] = len(ids)
    return result


def best_threshold(answer_scores: Mapping[str, float], abstain_scores: Mapping[str, float],
                   null_odds: Mapping[str, float]) -> tuple[float, float | None]:
    """The best mean score (×100) over abstention thresholds t, and that t.

    With threshold t, question q answers (score answer_scores[q]) when null_odds[q] <= t and
    abstains (score abstain_scores[q]) otherwise. Only thresholds a rule can realise are tried:
    questions with equal odds switch together. t = None means "abstain on every question".
    """
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


def _per_question(metric: str, records: Sequence[dict], predictions: Mapping[str, str]
                  ) -> tuple[dict[str, float], dict[str, float]]:
    """Per-question (EM, F1) in 0..1 for the metrics with an abstention: squad_v2 and duorc."""
    if metric == "duorc":
        return duorc_question_scores(records, predictions)
    golds = {record["id"]: single_strings(record) for record in records}
    exact, f1 = squad_v2_raw_scores(golds, predictions)
    return {qid: float(value) for qid, value in exact.items()}, f1


def oracle_sweep(metric: str, records: Sequence[dict], best_non_null: Mapping[str, str],
                 null_odds: Mapping[str, float]) -> dict[str, float | None]:
    """best_exact(_thresh) and best_f1(_thresh): the threshold sweep over each question's best
    non-null answer (see `best_threshold`)."""
    answered = official_predictions(metric, best_non_null)
    abstained = {record["id"]: ABSTENTION_TEXT[metric] for record in records}
    exact_answer, f1_answer = _per_question(metric, records, answered)
    exact_abstain, f1_abstain = _per_question(metric, records, abstained)
    best_exact, exact_t = best_threshold(exact_answer, exact_abstain, null_odds)
    best_f1, f1_t = best_threshold(f1_answer, f1_abstain, null_odds)
    return {"best_exact": best_exact, "best_exact_thresh": exact_t, "best_f1": best_f1, "best_f1_thresh": f1_t}


def _drop_golds(record: dict) -> list[GoldAnswer]:
    types = record.get("gold_types") or ["span" if len(answer) == 1 else "spans" for answer in record["gold"]]
    return [GoldAnswer(tuple(answer), kind) for answer, kind in zip(record["gold"], types)]


def _flatten_per_type(result: dict[str, Any]) -> dict[str, Any]:
    flat = {key: value for key, value in result.items() if key != "per_type"}
    for kind, values in result["per_type"].items():
        for key in ("exact_match", "f1", "total"):
            flat[f"{kind}_{key}"] = values[key]
    return flat


def score_qa(spec: TaskSpec, records: Sequence[dict], predictions: Mapping[str, str], *,
             null_odds: Mapping[str, float] | None = None,
             best_non_null: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The task's official metric over every record (un-prefixed keys; see the module docstring).

    Args:
        records: canonical QA records (their `gold` answers are what is scored).
        predictions: question id -> predicted text ("" = abstain; written as the metric wants).
        null_odds, best_non_null: for tasks with unanswerable questions, the null score minus the
            best answer score, and the best non-null answer, per question (for the sweeps).

    Returns:
        the metric's keys, `metric`, `samples` and `without_located_answer`; a value that is not
        finite is None with `<key>_reason` beside it (`with_null_reasons`).
    """
    if not records:
        raise ValueError("no questions to score")
    official = official_predictions(spec.metric, predictions)
    if spec.metric == "squad_v1":
        result: dict[str, Any] = squad_v1_scores({r["id"]: single_strings(r) for r in records}, official)
    elif spec.metric == "mlqa":
        result = mlqa_scores(records, official, spec.language)
    elif spec.metric == "squad_v2":
        golds = {r["id"]: single_strings(r) for r in records}
        # The official script on the files written here (eval_predictions.json, eval_null_odds.json):
        # the texts decide abstention; its best_* sweep runs over those thresholded texts.
        result = squad_v2_scores(golds, official, null_odds, na_prob_thresh=None)
        for key in ("best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"):
            if key in result:
                result[f"official_{key}"] = result.pop(key)
    elif spec.metric == "duorc":
        result = duorc_scores(records, official)
    elif spec.metric == "drop":
        result = _flatten_per_type(drop_scores({r["id"]: _drop_golds(r) for r in records}, official))
    elif spec.metric == "quoref":
        result = _flatten_per_type(quoref_scores({r["id"]: r["gold"][0] for r in records}, official))
    else:
        raise ValueError(f"task {spec.name} has no QA metric ({spec.metric})")
    if spec.metric in ABSTENTION_TEXT and null_odds is not None and best_non_null is not None:
        result.update(oracle_sweep(spec.metric, records, best_non_null, null_odds))
    result["metric"] = spec.metric
    result["samples"] = len(records)
    result["without_located_answer"] = sum(1 for r in records if not r["is_impossible"] and not r["answers"]["text"])
    return with_null_reasons(result)


NOT_FINITE_SCORE_REASON = "not finite: some question's null odds (no-answer score) are NaN or infinite"


def with_null_reasons(result: dict[str, Any]) -> dict[str, Any]:
    """`result` with every non-finite number as None and `<key>_reason` beside it: the metrics go
    to strict JSON files (all_results.json, eval_*.json), which have no NaN or Infinity.

    Only a threshold can be undefined here, when the null odds it is chosen among are not finite
    (a model whose scores are NaN); every mean is over at least one question.
    """
    safe: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, float) and not math.isfinite(value):
            safe[key] = None
            safe[f"{key}_reason"] = NOT_FINITE_SCORE_REASON
        else:
            safe[key] = value
    return safe

"""The official DROP metric (Dua et al. 2019), which is also Quoref's official metric.

An answer is a tuple of strings: one number, one date, one span or several spans. Scoring one
prediction against one gold answer (`em_f1`):

1. every string is normalised token by token (tokens split on spaces and hyphens; lower case;
   punctuation removed unless the token is a number; numbers printed as floats, so "3", "3.0"
   and "3.00" agree, but the word "three" stays a word; articles a/an/the removed) and becomes
   a bag (set) of tokens;
2. EM = 1 when the predicted and gold strings, normalised, are equal as sets and equally many;
3. F1: each gold bag is paired with at most one predicted bag (Hungarian algorithm on the
   per-pair token F1; a pair scores 0 when the gold bag holds numbers and the predicted bag
   none of them); the question's F1 is the mean over max(#gold, #predicted) slots, so a missing
   or an extra span costs its share, rounded to 2 decimals as the official script does.

DROP (`drop_scores`): the max over the main answer and every validated answer; a question
without a prediction scores 0; scores per answer type (number, date, span, spans) as the
official script partitions them. Quoref (`quoref_scores`): the gold answer is ALL of a question's
answer texts as one tuple, so a multi-span answer is conjunctive.

Command line (percentages, i.e. the official script's numbers × 100):

    python -m utils.drop_metric GOLD PRED [--out-file FILE]

GOLD is an original DROP file (passage id -> passage, qa_pairs) or an original Quoref file
(SQuAD layout); PRED a JSON object mapping each query id to a string or a list of strings.
"""
from __future__ import annotations

import argparse
import json
import re
import string
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from utils.run.errors import DataError
from utils.qa.squad_metric import read_json_file

Answer = str | Sequence[str]
ANSWER_TYPES = ("number", "date", "span", "spans")

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)
_TOKEN_SPLIT = re.compile(" |-")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _normalize_token(token: str) -> str:
    token = token.lower()
    if not _is_number(token):
        token = "".join(ch for ch in token if ch not in _PUNCTUATION)
    if _is_number(token):
        token = str(float(token))
    return " ".join(_ARTICLES.sub(" ", token).split())


def normalize_answer(text: str) -> str:
    """One answer string normalised as DROP does (see the module docstring, step 1)."""
    parts = [_normalize_token(token) for token in _TOKEN_SPLIT.split(text)]
    return " ".join(part for part in parts if part.strip()).strip()


def answer_bags(answer: Answer) -> tuple[list[str], list[set[str]]]:
    """(normalised strings, token bags) of an answer given as one string or a list of strings."""
    spans = [answer] if isinstance(answer, str) else list(answer)
    normalized = [normalize_answer(span) for span in spans]
    return normalized, [set(text.split()) for text in normalized]


def bag_f1(predicted: set[str], gold: set[str]) -> float:
    """Token F1 of two bags; an empty bag has precision (or recall) 1, as in the official code."""
    shared = len(gold & predicted)
    precision = shared / len(predicted) if predicted else 1.0
    recall = shared / len(gold) if gold else 1.0
    if precision == 0.0 and recall == 0.0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def numbers_agree(gold: set[str], predicted: set[str]) -> bool:
    """True when the gold bag has no number or shares at least one number with the prediction."""
    gold_numbers = {token for token in gold if _is_number(token)}
    predicted_numbers = {token for token in predicted if _is_number(token)}
    return not gold_numbers or bool(gold_numbers & predicted_numbers)


def aligned_f1(predicted: list[set[str]], gold: list[set[str]]) -> np.ndarray:
    """Per-slot F1 after the one-to-one alignment of bags; shape (max(#gold, #predicted),)."""
    scores = np.zeros((len(gold), len(predicted)))                              # (G, P)
    for g, gold_bag in enumerate(gold):
        for p, predicted_bag in enumerate(predicted):
            if numbers_agree(gold_bag, predicted_bag):
                scores[g, p] = bag_f1(predicted_bag, gold_bag)
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


def drop_answer_strings(answer: Mapping[str, Any]) -> tuple[tuple[str, ...], str]:
    """The strings and type of one DROP answer object: a number, else its spans, else its date
    ("day month year", the fields as given, empty ones included).

    Raises:
        ValueError: the object has none of the three.
    """
    if answer.get("number"):
        return (str(answer["number"]),), "number"
    spans = answer.get("spans") or []
    if spans:
        return tuple(spans), "span" if len(spans) == 1 else "spans"
    if "date" in answer:
        date = answer["date"] or {}
        return (f"{date.get('day', '')} {date.get('month', '')} {date.get('year', '')}",), "date"
    raise ValueError(f"a DROP answer needs a number, spans or a date: {json.dumps(answer)}")


@dataclass(frozen=True)
class GoldAnswer:
    """One acceptable answer of a question: its strings (all required) and its DROP type."""

    strings: tuple[str, ...]
    type: str


def question_score(predicted: Answer, golds: Sequence[GoldAnswer]) -> tuple[float, float, str]:
    """(EM, F1, type) of one question: the max over its gold answers (empty ones skipped).

    The type is that of the last gold answer that reached both maxima, as in the official script
    ("empty" when every gold answer is empty).
    """
    best_em = best_f1 = 0.0
    best_type = "empty"
    for gold in golds:
        em, f1 = em_f1(predicted, gold.strings)
        if gold.strings and gold.strings[0].strip():
            best_em, best_f1 = max(best_em, em), max(best_f1, f1)
            if best_em == em and best_f1 == f1:
                best_type = gold.type
    return best_em, best_f1, best_type


def drop_scores(golds: Mapping[str, Sequence[GoldAnswer]], predictions: Mapping[str, Answer]) -> dict[str, Any]:
    """The official DROP evaluation, in percent.

    Args:
        golds: query id -> its gold answers (main answer first, then the validated ones).
        predictions: query id -> predicted string or list of strings.

    Returns:
        exact_match, f1, total, missing and per_type {type: {total, share, exact_match, f1}}.
    """
    if not golds:
        raise ValueError("no questions to score")
    by_type: dict[str, list[tuple[float, float]]] = defaultdict(list)
    ems, f1s = [], []
    missing = 0
    for qid, answers in golds.items():
        if qid in predictions:
            em, f1, kind = question_score(predictions[qid], answers)
        else:
            missing += 1
            em, f1, kind = 0.0, 0.0, answers[0].type if answers else "number"
        ems.append(em)
        f1s.append(f1)
        by_type[kind].append((em, f1))
    total = len(ems)
    per_type = {kind: {"total": len(scores), "share": 100.0 * len(scores) / total,
                       "exact_match": 100.0 * float(np.mean([s[0] for s in scores])),
                       "f1": 100.0 * float(np.mean([s[1] for s in scores]))}
                for kind, scores in sorted(by_type.items())}
    return {"exact_match": 100.0 * float(np.mean(ems)), "f1": 100.0 * float(np.mean(f1s)), "total": total,
            "missing": missing, "per_type": per_type}


def quoref_scores(golds: Mapping[str, Sequence[str]], predictions: Mapping[str, Answer]) -> dict[str, Any]:
    """The official Quoref evaluation, in percent: each question's gold is all its answer texts.

    Returns:
        exact_match, f1, total, missing, and per_type (ours, not the official script's): questions
        with one gold span ("span") and with several ("spans").
    """
    if not golds:
        raise ValueError("no questions to score")
    by_type: dict[str, list[tuple[float, float]]] = defaultdict(list)
    missing = 0
    for qid, texts in golds.items():
        if not texts:
            raise ValueError(f"Quoref question {qid} has no gold answer")
        em = f1 = 0.0
        if qid in predictions:
            em, f1 = em_f1(predictions[qid], tuple(texts))
            if not texts[0].strip():
                em = f1 = 0.0
        else:
            missing += 1
        by_type["span" if len(texts) == 1 else "spans"].append((em, f1))
    scores = [pair for pairs in by_type.values() for pair in pairs]
    per_type = {kind: {"total": len(pairs), "share": 100.0 * len(pairs) / len(scores),
                       "exact_match": 100.0 * float(np.mean([p[0] for p in pairs])),
                       "f1": 100.0 * float(np.mean([p[1] for p in pairs]))}
                for kind, pairs in sorted(by_type.items())}
    return {"exact_match": 100.0 * float(np.mean([p[0] for p in scores])),
            "f1": 100.0 * float(np.mean([p[1] for p in scores])), "total": len(scores), "missing": missing,
            "per_type": per_type}


# ----------------------------------------------------------------------------- files and CLI

def drop_golds_from_file(payload: Any, file: str) -> dict[str, list[GoldAnswer]]:
    """Query id -> gold answers from an original DROP file (main answer, then validated ones)."""
    if not isinstance(payload, dict) or not all(isinstance(v, dict) and "qa_pairs" in v for v in payload.values()):
        raise DataError("not a DROP file ({passage_id: {passage, qa_pairs}})", file=file)
    golds: dict[str, list[GoldAnswer]] = {}
    for passage_id, entry in payload.items():
        for index, qa in enumerate(entry["qa_pairs"]):
            qid = str(qa.get("query_id", f"{passage_id}.qa_pairs[{index}]"))
            candidates = [qa.get("answer")] + list(qa.get("validated_answers") or [])
            try:
                golds[qid] = [GoldAnswer(*drop_answer_strings(answer)) for answer in candidates
                              if isinstance(answer, dict)]
            except ValueError as err:
                raise DataError(str(err), file=file, record=qid, field="answer") from None
            if not golds[qid]:
                raise DataError("no answer object", file=file, record=qid, field="answer")
    return golds


def quoref_golds_from_file(payload: Any, file: str) -> dict[str, list[str]]:
    """Query id -> answer texts from an original Quoref file (SQuAD layout)."""
    golds: dict[str, list[str]] = {}
    try:
        for article in payload["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    golds[str(qa["id"])] = [answer["text"] for answer in qa["answers"]]
    except (KeyError, TypeError) as err:
        raise DataError(f"not a Quoref file (data -> paragraphs -> qas -> answers): missing {err}", file=file) from None
    return golds


def check_predictions(predictions: Any, file: str) -> dict[str, Answer]:
    """The predictions file's object, each value a string or a list of strings.

    Raises:
        DataError: anything else.
    """
    if not isinstance(predictions, dict):
        raise DataError("expected an object {query id: answer string or list of strings}", file=file)
    for qid, value in predictions.items():
        ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        if not ok:
            raise DataError(f"prediction is {type(value).__name__}, expected a string or a list of strings",
                            file=file, record=qid)
    return predictions


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m utils.drop_metric`."""
    parser = argparse.ArgumentParser(prog="python -m utils.drop_metric",
                                     description="Official DROP / Quoref evaluation (EM and F1 in percent).")
    parser.add_argument("gold_file", metavar="GOLD",
                        help="An original DROP file (drop_dataset_dev.json) or an original Quoref file (SQuAD layout).")
    parser.add_argument("pred_file", metavar="PRED",
                        help="Predictions: a JSON object {query id: answer string or list of strings}.")
    parser.add_argument("--out-file", "-o", metavar="eval.json", default=None,
                        help="Also write the metrics to this file.")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Print the metrics of a predictions file as one JSON object and return them."""
    args = build_parser().parse_args(argv)
    payload = read_json_file(args.gold_file)
    predictions = check_predictions(read_json_file(args.pred_file), args.pred_file)
    quoref = isinstance(payload, dict) and "data" in payload
    golds: Mapping[str, Any] = (quoref_golds_from_file if quoref else drop_golds_from_file)(payload, args.gold_file)
    if not golds:
        raise DataError("holds no questions to score", file=args.gold_file)
    result = ({"dataset": "quoref", **quoref_scores(golds, predictions)} if quoref
              else {"dataset": "drop", **drop_scores(golds, predictions)})
    if result["missing"]:
        example = next(qid for qid in golds if qid not in predictions)
        print(f"warning: {result['missing']} questions have no prediction (e.g. {example}); they score 0",
              file=sys.stderr)
    text = json.dumps(result)
    if args.out_file:
        Path(args.out_file).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(text)
    return result

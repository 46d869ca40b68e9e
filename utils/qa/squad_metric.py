"""The official SQuAD metrics, v1.1 and v2.0, re-implemented to the letter.

v1.1 (`evaluate-v1.1.py`): answers are normalised (lower case, punctuation removed, articles
"a/an/the" removed, white space collapsed); exact match and token F1 are maxed over the gold
answers and averaged ×100. A question without a prediction scores 0.

v2.0 (`evaluate-v2.0.py`): as v1.1, except that gold answers normalising to "" are dropped (a
question with none left has gold [""]), and F1 is `int(gold_tokens == pred_tokens)` when either
side is empty. With no-answer probabilities, a prediction whose probability exceeds
`na_prob_thresh` (default 1.0) counts as an abstention; `best_exact` / `best_f1` are the scores at
the best abstention threshold, found by sweeping the questions in order of probability over the
predictions as given: a question already answered "" cannot be won back by the sweep. The run
scripts report this as `official_best_*` and sweep each question's best non-null answer instead
(`utils.qa.metrics.oracle_sweep`).

Command line, as the official scripts:

    python -m utils.squad_metric DATA_FILE PRED_FILE [--na-prob-file FILE] [--na-prob-thresh 1.0]
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import re
import string
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from utils.run.cli import finite_float
from utils.run.errors import JSON_TOO_DEEP, DataError

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop the articles a/an/the, collapse white space."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> int:
    """1 when the normalised strings are equal."""
    return int(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    """Harmonic mean of token precision and recall over bags with repeats (0 when nothing is shared)."""
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_v1(prediction: str, gold: str) -> float:
    """v1.1 token F1 of the normalised answers (0 when nothing is shared)."""
    return token_f1(normalize_answer(prediction).split(), normalize_answer(gold).split())


def f1_v2(prediction: str, gold: str) -> float:
    """v2.0 token F1: as v1.1, but 1.0 for an empty prediction of an empty gold (abstention)."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    return f1_v1(prediction, gold)


# ----------------------------------------------------------------------------- v1.1

def squad_v1_scores(golds: Mapping[str, list[str]], predictions: Mapping[str, str]) -> dict[str, float]:
    """{"exact_match", "f1"} over every question of `golds` (a missing prediction scores 0).

    Args:
        golds: question id -> gold answer texts.
        predictions: question id -> predicted text.
    """
    if not golds:
        raise ValueError("no questions to score")
    em_total = f1_total = 0.0
    for qid, answers in golds.items():
        if qid not in predictions:
            continue
        prediction = predictions[qid]
        em_total += max(exact_match(prediction, gold) for gold in answers)
        f1_total += max(f1_v1(prediction, gold) for gold in answers)
    return {"exact_match": 100.0 * em_total / len(golds), "f1": 100.0 * f1_total / len(golds)}


# ----------------------------------------------------------------------------- v2.0

def _v2_golds(answers: Iterable[str]) -> list[str]:
    kept = [text for text in answers if normalize_answer(text)]
    return kept or [""]


def squad_v2_raw_scores(golds: Mapping[str, list[str]], predictions: Mapping[str, str]
                        ) -> tuple[dict[str, int], dict[str, float]]:
    """Per-question exact and F1 (0/1 and [0, 1]) for the questions that have a prediction."""
    exact: dict[str, int] = {}
    f1: dict[str, float] = {}
    for qid, answers in golds.items():
        if qid not in predictions:
            continue
        gold_texts = _v2_golds(answers)
        prediction = predictions[qid]
        exact[qid] = max(exact_match(prediction, gold) for gold in gold_texts)
        f1[qid] = max(f1_v2(prediction, gold) for gold in gold_texts)
    return exact, f1


def _apply_no_answer_threshold(scores: dict[str, float], na_probs: Mapping[str, float],
                               has_answer: Mapping[str, bool], threshold: float) -> dict[str, float]:
    """A question whose no-answer probability exceeds the threshold scores as an abstention."""
    return {qid: float(not has_answer[qid]) if na_probs[qid] > threshold else score
            for qid, score in scores.items()}


def _mean(scores: Mapping[str, float], qids: Iterable[str] | None = None) -> dict[str, float]:
    keys = list(scores) if qids is None else list(qids)
    return {"mean": 100.0 * sum(scores[k] for k in keys) / len(keys), "total": len(keys)}


def _best_threshold(predictions: Mapping[str, str], scores: Mapping[str, float],
                    na_probs: Mapping[str, float], has_answer: Mapping[str, bool]) -> tuple[float, float]:
    """Sweep abstention thresholds in increasing no-answer probability (official find_best_thresh).

    Starting from "abstain on everything" (score = number of unanswerable questions), each step
    stops abstaining on one more question: an answerable one gains its score, an unanswerable one
    loses 1 if a non-empty answer is predicted.
    """
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
            best = current
            best_threshold = na_probs[qid]
    return 100.0 * best / len(scores), best_threshold


def squad_v2_scores(golds: Mapping[str, list[str]], predictions: Mapping[str, str],
                    na_probs: Mapping[str, float] | None = None,
                    na_prob_thresh: float | None = 1.0) -> dict[str, float]:
    """The official v2.0 evaluation dictionary.

    Args:
        golds: question id -> gold texts (empty list = unanswerable).
        predictions: question id -> predicted text ("" = abstain).
        na_probs: question id -> no-answer score (higher = more likely unanswerable). With it, the
            result also holds best_exact(_thresh) and best_f1(_thresh).
        na_prob_thresh: abstain wherever na_prob exceeds it (official default 1.0); None leaves the
            decision to the prediction text alone.

    Returns:
        exact, f1, total, HasAns_exact/f1/total and NoAns_exact/f1/total (when such questions
        exist), and with `na_probs` best_exact, best_exact_thresh, best_f1, best_f1_thresh.
    """
    if not golds:
        raise ValueError("no questions to score")
    # As the official script: a question "has an answer" when its answer list is not empty.
    has_answer = {qid: bool(answers) for qid, answers in golds.items()}
    exact_raw, f1_raw = squad_v2_raw_scores(golds, predictions)
    probs = na_probs if na_probs is not None else {qid: 0.0 for qid in predictions}
    if na_prob_thresh is not None:
        exact = _apply_no_answer_threshold(exact_raw, probs, has_answer, na_prob_thresh)
        f1 = _apply_no_answer_threshold(f1_raw, probs, has_answer, na_prob_thresh)
    else:
        exact, f1 = dict(exact_raw), dict(f1_raw)
    overall_exact, overall_f1 = _mean(exact), _mean(f1)
    result: dict[str, float] = {"exact": overall_exact["mean"], "f1": overall_f1["mean"],
                                "total": overall_exact["total"]}
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [qid for qid, has in has_answer.items() if has is wanted]
        if qids:
            result[f"{prefix}_exact"] = _mean(exact, qids)["mean"]
            result[f"{prefix}_f1"] = _mean(f1, qids)["mean"]
            result[f"{prefix}_total"] = len(qids)
    if na_probs is not None:
        result["best_exact"], result["best_exact_thresh"] = _best_threshold(predictions, exact_raw, na_probs, has_answer)
        result["best_f1"], result["best_f1_thresh"] = _best_threshold(predictions, f1_raw, na_probs, has_answer)
    return result


# ----------------------------------------------------------------------------- files and CLI

def golds_from_squad_json(payload: Any, file: str) -> tuple[dict[str, list[str]], bool]:
    """Question id -> gold texts from an official SQuAD JSON, and whether any is unanswerable."""
    golds: dict[str, list[str]] = {}
    unanswerable = False
    try:
        for article in payload["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    texts = [answer["text"] for answer in qa["answers"]]
                    golds[str(qa["id"])] = texts
                    unanswerable |= bool(qa.get("is_impossible", False)) or not texts
    except (KeyError, TypeError) as err:
        raise DataError(f"not SQuAD JSON (data -> paragraphs -> qas -> answers): missing {err}", file=file) from None
    return golds, unanswerable


def read_json_file(path: str) -> Any:
    """A metric command's JSON input, or a DataError naming the file (missing, malformed, nested too deeply)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("file not found", file=path) from None
    except json.JSONDecodeError as err:
        raise DataError(f"malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}", file=path) from None
    except RecursionError:
        raise DataError(JSON_TOO_DEEP, file=path) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m utils.squad_metric",
                                     description="Official SQuAD v1.1 / v2.0 evaluation.")
    parser.add_argument("data_file", metavar="data.json", help="Input data JSON file (SQuAD format).")
    parser.add_argument("pred_file", metavar="pred.json", help="Model predictions: {question id: text}.")
    parser.add_argument("--na-prob-file", "-n", metavar="na_prob.json", default=None,
                        help="Model estimates of the probability of no answer (v2.0).")
    parser.add_argument("--na-prob-thresh", "-t", type=finite_float, default=1.0,
                        help="Predict \"\" if the no-answer probability exceeds this (default = 1.0).")
    parser.add_argument("--out-file", "-o", metavar="eval.json", default=None,
                        help="Write the metrics to this file instead of standard output.")
    parser.add_argument("--version", choices=("auto", "1.1", "2.0"), default="auto",
                        help="Metric version; auto = 2.0 when the data has unanswerable questions.")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    golds, unanswerable = golds_from_squad_json(read_json_file(args.data_file), args.data_file)
    if not golds:
        raise DataError("holds no questions to score", file=args.data_file)
    predictions = read_json_file(args.pred_file)
    if not isinstance(predictions, dict):
        raise DataError("expected an object {question id: predicted text}", file=args.pred_file)
    missing = [qid for qid in golds if qid not in predictions]
    bad = next((qid for qid, text in predictions.items() if not isinstance(text, str)), None)
    if bad is not None:
        raise DataError(f"prediction is {type(predictions[bad]).__name__}, expected a string", file=args.pred_file,
                        record=bad)
    version = args.version if args.version != "auto" else ("2.0" if unanswerable or args.na_prob_file else "1.1")
    if version == "1.1":
        if missing:
            print(f"warning: {len(missing)} questions have no prediction (e.g. {missing[0]}); they score 0",
                  file=sys.stderr)
        if unanswerable:
            no_gold = next(qid for qid, texts in golds.items() if not texts)
            raise DataError("question without answers: this is SQuAD v2.0 data; use --version 2.0",
                            file=args.data_file, record=no_gold)
        result = squad_v1_scores(golds, predictions)
    else:
        if missing:
            # The official v2.0 script fails on missing predictions; say so plainly instead.
            raise DataError(f"{len(missing)} questions have no prediction (e.g. {missing[0]}); the v2.0 "
                            "evaluation needs one for every question", file=args.pred_file)
        na_probs = read_json_file(args.na_prob_file) if args.na_prob_file else None
        if na_probs is not None:
            absent = [qid for qid in predictions if qid not in na_probs]
            if absent:
                raise DataError(f"no no-answer probability for question {absent[0]}", file=args.na_prob_file)
            # Python's json reads NaN and Infinity; no probability is either, and they would make
            # the threshold sweep (and the JSON written) meaningless.
            bad = next((qid for qid, value in na_probs.items()
                        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)),
                       None)
            if bad is not None:
                raise DataError("expected a finite number", file=args.na_prob_file, record=bad)
        result = squad_v2_scores(golds, predictions, na_probs, args.na_prob_thresh)
    text = json.dumps(result, indent=2, allow_nan=False) if version == "2.0" else json.dumps(result, allow_nan=False)
    if args.out_file:
        Path(args.out_file).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return result

"""`python -m utils.squad_metric`: the official SQuAD v1.1 / v2.0 evaluation of a predictions file,
as the official scripts' command line (the metric itself: utils.qa.metrics).

    python -m utils.squad_metric DATA_FILE PRED_FILE [--na-prob-file FILE] [--na-prob-thresh 1.0]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from utils.qa.metrics import squad_v1_scores, squad_v2_scores
from utils.run.progress import run_entry_point
from utils.run.flags import number
from utils.run.errors import JSON_TOO_DEEP, DataError


def golds_from_squad_json(payload: Any, file: str, what: str = "SQuAD JSON") -> tuple[dict[str, list[str]], bool]:
    """Question id -> gold texts from a file in the SQuAD layout, and whether any is unanswerable."""
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
        raise DataError(f"not {what} (data -> paragraphs -> qas -> answers): missing {err}", file=file) from None
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
    parser.add_argument("--na-prob-thresh", "-t", type=number(float), default=1.0,
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


if __name__ == "__main__":
    run_entry_point(main)

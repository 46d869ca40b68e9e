"""`python -m utils.drop_metric`: the official DROP / Quoref evaluation of a predictions file, in
percent (the official script's numbers x 100; the metric itself: utils.qa.metrics).

    python -m utils.drop_metric GOLD PRED [--out-file FILE]

GOLD is an original DROP file (passage id -> passage, qa_pairs) or an original Quoref file
(SQuAD layout); PRED a JSON object mapping each query id to a string or a list of strings.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from utils.data.formats import drop_answer_strings
from utils.qa.metrics import Answer, GoldAnswer, drop_scores, quoref_scores
from utils.run.progress import run_entry_point
from utils.run.errors import DataError
from utils.squad_metric import golds_from_squad_json, read_json_file


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


def check_predictions(predictions: Any, file: str) -> dict[str, Answer]:
    """The predictions file's object, each value a string or a list of strings (else DataError)."""
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
    golds: Mapping[str, Any] = (golds_from_squad_json(payload, args.gold_file, "a Quoref file")[0] if quoref
                                else drop_golds_from_file(payload, args.gold_file))
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


if __name__ == "__main__":
    run_entry_point(main)

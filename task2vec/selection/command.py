"""`python -m task2vec.selection`: which source tasks does each selector predict will help each
target, and how good is that prediction against the measured transfer?

    python -m task2vec.selection --results_table results.csv --emb_dir TaskEmb --use_samples \
        --model_name demo_output/tiny_gpt2 --output_dir selection

For every target of the results table (or --target_tasks) and every condition of it (as
TaskDiversity.py groups rows), each selector scores the condition's source sets; the ranking is
scored against the measured transfer (Spearman ρ, NDCG@k with the gain over the plain model as
relevance, Regret@k in the target's metric, the rank of the best source), each with an interval
from resampling the training seeds within every source. A selector whose input is missing (no
--emb_dir, no data, no probe) is skipped with the reason. Writes selection.json, selection.csv and
selection_<target>.png (for each selector, predicted score against measured gain, one point per
source set with its t-interval over seeds).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from task2vec.reporting import json_safe
from task2vec.selection.inputs import (EMBEDDING_SELECTORS, TEXT_SELECTORS, DataPlan, embeddings_for, logme_inputs,
                                       text_inputs)
from task2vec.selection.leaderboard import score_ranking
from task2vec.selection.logme import LOGME_NOTE
from task2vec.selection.measured import measured_conditions
from task2vec.selection.report import leaderboard_lines, plot_selection, write_csv
from task2vec.selection.selectors import SELECTORS, SelectionInputs, predict
from task2vec.transfer import read_results_table
from utils.data.registry import get_task
from utils.run.cli import (add_output_args, add_task_file_arg, files_by_task, non_negative_int,
                           open_unit_interval_float, positive_int, seed_int)
from utils.run.errors import ToolkitError, UnknownTaskError
from utils.run.folder import hold_output_dir
from utils.run.outputs import write_json

logger = logging.getLogger("task2vec.selection")


def name_list(text: str) -> list[str]:
    """argparse type: comma-separated names, at least one."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m task2vec.selection", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results_table", required=True,
                        help="CSV written by run_target_task_GPT2_sst2_multiple.py --results_table (each row's "
                             "summary.json gives its per-seed values).")
    parser.add_argument("--target_tasks", type=name_list, default=None,
                        help="Comma-separated targets to rank sources for (default: every target of the table).")
    parser.add_argument("--selectors", type=name_list, default=None,
                        help=f"Comma-separated selectors (default all: {', '.join(SELECTORS)}).")
    parser.add_argument("--emb_dir", default=None, help="Task2Vec embeddings folder (python -m task2vec).")
    parser.add_argument("--model_name", default=None, help="The probe whose hidden states give TextEmb vectors.")
    add_task_file_arg(parser, "the sources and targets (their training data, for the text selectors)")
    parser.add_argument("--use_samples", action="store_true",
                        help="Read tasks without --task_file from the bundled data/samples (the demo).")
    parser.add_argument("--max_texts", type=positive_int, default=256,
                        help="Texts per task read by the text selectors (a seeded draw).")
    parser.add_argument("--max_length", type=positive_int, default=128, help="Tokens per text.")
    parser.add_argument("--k", type=positive_int, default=3, help="k of NDCG@k and Regret@k.")
    parser.add_argument("--bootstrap", type=non_negative_int, default=2000,
                        help="Seed resamples per score interval (0: no interval).")
    parser.add_argument("--confidence", type=open_unit_interval_float, default=0.95, help="Interval coverage.")
    parser.add_argument("--seed", type=seed_int, default=0, help="Seed of the resampling, the text draw, random.")
    parser.add_argument("--no_plots", action="store_true", help="Write no PNG.")
    add_output_args(parser, required=False, output_help="Where selection.json, .csv and the plots go "
                                                        "(default: selection).")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    selectors = args.selectors or list(SELECTORS)
    unknown = [name for name in selectors if name not in SELECTORS]
    if unknown:
        parser.error(f"--selectors: unknown {unknown}; known: {', '.join(SELECTORS)}")
    try:
        targets = [get_task(name).name for name in args.target_tasks] if args.target_tasks else None
    except UnknownTaskError as err:
        parser.error(f"--target_tasks: {err}")
    output_dir = Path(args.output_dir or "selection")
    with hold_output_dir(output_dir, overwrite=args.overwrite_output_dir, resuming=False):
        return run_selection(args, selectors, targets, output_dir)


def run_selection(args: argparse.Namespace, selectors: list[str], targets: list[str] | None, output_dir: Path) -> dict:
    table = Path(args.results_table)
    rows = read_results_table(table)
    targets = targets or sorted({get_task(row["target_task"]).name for row in rows})
    report: dict = {"results_table": str(table), "selectors": selectors, "k": args.k, "targets": {}}
    for target in targets:
        conditions, skipped = measured_conditions(rows, target, table)
        if not conditions:
            raise ToolkitError(f"{table}: no row of target {target} with a source set and readable seeds")
        tasks = sorted({t for c in conditions for s in c.sources for t in s.sources} | {target})
        inputs, missing = build_inputs(args, selectors, target, tasks, conditions)
        entries = []
        for condition in conditions:
            sets = [source.sources for source in condition.sources]
            if len(sets) < 2:   # nothing to rank: one line, not one per selector
                entries.append({"condition": condition.condition, "selector": None,
                                "skipped": f"one source set ({'+'.join(sets[0])}): no ranking to score"})
                continue
            for name in selectors:
                if name in missing:
                    entries.append({"condition": condition.condition, "selector": name, "skipped": missing[name]})
                    continue
                try:
                    prediction = predict(name, inputs, sets, target)
                except ToolkitError as err:
                    entries.append({"condition": condition.condition, "selector": name, "skipped": str(err)})
                    continue
                predicted = prediction.scores
                undefined = ["+".join(s) for s, value in zip(sets, predicted) if not np.isfinite(value)]
                if undefined:   # e.g. the diversity of a single task: no ranking of every set
                    entries.append({"condition": condition.condition, "selector": name,
                                    "skipped": f"undefined for {', '.join(undefined)}"})
                    continue
                entries.append({"condition": condition.condition, "selector": name,
                                **({"values": prediction.values} if prediction.values else {}),
                                **({"values_reason": prediction.reason} if prediction.reason else {}),
                                **({"note": LOGME_NOTE} if name == "logme" else {}),
                                "predicted": dict(zip(["+".join(s) for s in sets], predicted.tolist())),
                                "scores": score_ranking(predicted, condition, k=args.k, samples=max(1, args.bootstrap),
                                                        seed=args.seed, confidence=args.confidence)})
        report["targets"][target] = {"conditions": [_condition_record(c) for c in conditions], "skipped_rows": skipped,
                                     "leaderboard": entries}
        print("\n".join(leaderboard_lines(target, entries, args.k)))
        if not args.no_plots:
            plot_selection(output_dir / f"selection_{target}.png", target, conditions, entries)
    write_json(output_dir / "selection.json", json_safe(report))
    write_csv(output_dir / "selection.csv", report)
    return report


def build_inputs(args: argparse.Namespace, selectors: list[str], target: str, tasks: list[str],
                 conditions: list) -> tuple[SelectionInputs, dict[str, str]]:
    """The selectors' inputs for one target, and selector -> why it is skipped."""
    missing: dict[str, str] = {}
    vectors, reseeded, absent = embeddings_for(args.emb_dir, tasks) \
        if set(selectors) & set(EMBEDDING_SELECTORS) else ({}, {}, {})
    for name in set(selectors) & set(EMBEDDING_SELECTORS):
        if target in absent:
            missing[name] = f"no embedding of the target {target}: {absent[target]}"
    plan = DataPlan(files_by_task(args.task_file, [get_task(t) for t in tasks], "--task_file"), args.use_samples,
                    args.max_texts, args.seed)
    text_vectors, vocabularies, sizes, logme_values = {}, {}, {}, {}
    if set(selectors) & set(TEXT_SELECTORS) - {"logme"}:
        probe = args.model_name if "textemb" in selectors else None
        text_vectors, vocabularies, sizes, no_data = text_inputs(plan, tasks, probe, args.max_length)
        if target in no_data:
            for name in set(selectors) & set(TEXT_SELECTORS):
                missing[name] = f"the target {target}: {no_data[target]}"
        if "textemb" in selectors and not args.model_name:
            missing["textemb"] = "no --model_name (the probe that gives TextEmb vectors)"
    if "logme" in selectors and "logme" not in missing:
        checkpoints = {}
        for condition in conditions:
            for source in condition.sources:
                checkpoints.setdefault(source.sources, []).extend(dict.fromkeys(source.checkpoints))
        logme_values, why = logme_inputs(plan, target, checkpoints, args.max_length)
        if why:
            missing["logme"] = why
    return SelectionInputs(vectors, reseeded, "task2vec", text_vectors, vocabularies, sizes, logme_values,
                           args.seed), missing


def _condition_record(condition) -> dict:
    return {"condition": condition.condition, "plain_seeds": condition.plain, "plain_lines": condition.plain_lines,
            "sources": [{"sources": list(s.sources), "values": s.values, "mean": float(np.mean(s.values)),
                         "lines": s.lines, "checkpoints": s.checkpoints} for s in condition.sources]}



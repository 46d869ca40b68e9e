"""`python -m task2vec.selection`: which source tasks does each selector predict will help each
target, and how good is that prediction against the measured transfer?

    python -m task2vec.selection --results_table results.csv --emb_dir TaskEmb --use_samples \
        --model_name demo_output/tiny_gpt2 --output_dir selection

For every target (or --target_tasks) and condition of the results table, each selector ranks the
condition's source sets, scored against the measured transfer (task2vec.selection.scores) with
intervals over training seeds. A selector whose input is missing is skipped with the reason.
Writes selection.json, selection.csv and selection_<target>.png.
"""
from __future__ import annotations

import argparse
import csv
import logging
import math
from pathlib import Path

import numpy as np
from scipy import stats

from task2vec.analysis.reporting import condition_label, not_finite_reason
from task2vec.analysis.transfer import read_results_table
from task2vec.embedding.io import json_safe
from task2vec.selection.logme import LOGME_NOTE
from task2vec.selection.scores import MeasuredCondition, measured_conditions, score_ranking
from task2vec.selection.selectors import (EMBEDDING_SELECTORS, SELECTORS, TEXT_SELECTORS, DataPlan, SelectionInputs,
                                          embeddings_for, logme_inputs, predict, text_inputs)
from utils.data.registry import files_by_task, get_task
from utils.run.errors import ToolkitError, UnknownTaskError
from utils.run.flags import SEED, add_output_args, add_task_file_arg, number
from utils.run.outputs import hold_run_folder, write_json
from utils.run.progress import run_entry_point

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
    parser.add_argument("--max_texts", type=number(int, minimum=1), default=256,
                        help="Texts per task read by the text selectors (a seeded draw).")
    parser.add_argument("--max_length", type=number(int, minimum=1), default=128, help="Tokens per text.")
    parser.add_argument("--k", type=number(int, minimum=1), default=3, help="k of NDCG@k and Regret@k.")
    parser.add_argument("--bootstrap", type=number(int, minimum=0), default=2000,
                        help="Seed resamples per score interval (0: no interval).")
    parser.add_argument("--confidence", type=number(float, above=0, below=1), default=0.95, help="Interval coverage.")
    parser.add_argument("--seed", type=SEED, default=0, help="Seed of the resampling, the text draw, random.")
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
    with hold_run_folder(output_dir, overwrite=args.overwrite_output_dir, resuming=False):
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
    write_json(output_dir / "selection.json", json_safe(report, not_finite_reason))
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


def _condition_record(condition: MeasuredCondition) -> dict:
    return {"condition": condition.condition, "plain_seeds": condition.plain, "plain_lines": condition.plain_lines,
            "sources": [{"sources": list(s.sources), "values": s.values, "mean": float(np.mean(s.values)),
                         "lines": s.lines, "checkpoints": s.checkpoints} for s in condition.sources]}


def _interval(entry: dict) -> str:
    if entry.get("value") is None:
        return f"n/a ({entry.get('reason', 'undefined')})"
    low, high = entry.get("ci_low"), entry.get("ci_high")
    bounds = "" if low is None or high is None else f" [{low:.3f}, {high:.3f}]"
    return f"{entry['value']:.3f}{bounds}"


def leaderboard_lines(target: str, entries: list[dict], k: int) -> list[str]:
    """Per condition, one line per selector: each score with its interval; skipped selectors with why."""
    lines = [f"Target {target}:"]
    seen: list = []
    for entry in entries:
        label = condition_label(entry["condition"])
        if label not in seen:
            seen.append(label)
            lines.append(f"  condition {label}")
        if "skipped" in entry:
            lines.append(f"    {entry['selector'] or 'every selector'}: skipped ({entry['skipped']})")
            continue
        scores = entry["scores"]
        values = f" ({entry['values']} values)" if entry.get("values") else ""
        lines.append(f"    {entry['selector']}{values}: "
                     + ", ".join(f"{name} {_interval(value)}" for name, value in scores.items()))
        if entry.get("values_reason"):
            lines.append(f"      raw values: {entry['values_reason']}")
        if entry.get("note"):
            lines.append(f"      note: {entry['note']}")
    return lines


def write_csv(path: Path, report: dict) -> None:
    """selection.csv: target, condition, selector, score, value, interval, undefined draws (or why skipped)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["target", "condition", "selector", "score", "value", "ci_low", "ci_high", "note"])
        for target, part in report["targets"].items():
            for entry in part["leaderboard"]:
                label = condition_label(entry["condition"])
                if "skipped" in entry:
                    writer.writerow([target, label, entry["selector"] or "", "", "", "", "", entry["skipped"]])
                    continue
                for name, value in entry["scores"].items():
                    note = "; ".join(filter(None, [value.get("reason"), entry.get("values_reason"), entry.get("note")]))
                    writer.writerow([target, label, entry["selector"], name,
                                     *("" if value.get(key) is None else value[key] for key in ("value", "ci_low", "ci_high")),
                                     note])


def _mean_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (0 for one seed: no spread to show)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, 0.0
    return mean, float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))


def plot_selection(path: Path, target: str, conditions: list, entries: list[dict]) -> None:
    """For each selector (a panel; the target's first condition with two source sets or more),
    predicted score against the measured gain over the plain model (or the measured score without
    one), one point per source set with its t-interval over seeds."""
    from matplotlib.figure import Figure

    condition = next((c for c in conditions if len(c.sources) >= 2), conditions[0])
    scored = [e for e in entries if "predicted" in e and e["condition"] == condition.condition]
    figure = Figure(figsize=(4.2 * max(1, len(scored)), 3.8))
    plain = float(np.mean(condition.plain)) if condition.plain else None
    for number, entry in enumerate(scored, start=1):
        axes = figure.add_subplot(1, len(scored), number)
        for source in condition.sources:
            mean, half = _mean_interval(source.values)
            y = mean - plain if plain is not None else mean
            x = entry["predicted"][source.label]
            axes.errorbar([x], [y], yerr=[[half], [half]], fmt="o", capsize=3)
            axes.annotate(source.label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ndcg = next((v for name, v in entry["scores"].items() if name.startswith("ndcg")), {})
        axes.set_title(f"{entry['selector']} (NDCG {_interval(ndcg)})", fontsize=8)
        axes.set_xlabel("predicted score", fontsize=8)
        axes.set_ylabel(f"{'gain over the plain model' if plain is not None else 'measured'} "
                        f"({condition.condition['metric']})", fontsize=8)
    figure.suptitle(f"{target}: {condition_label(condition.condition)}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    run_entry_point(main)

"""Rank subsets of source tasks by their Task2Vec diversity, and relate it to the target's score.

    python TaskDiversity.py --emb_dir TaskEmb --source_tasks 'squad,squad_v2,duorc-p,duorc-s,drop' \
        --target_task sst2 --subset_size 3 [--results_table results.csv]

For every subset of --subset_size source tasks: its diversity coefficient (mean pairwise distance
of the task embeddings), the same with the target added, and the distance of the subset's mean
embedding to the target's, each raw and corrected for the embeddings' Monte-Carlo noise; subsets
are ranked by the corrected diversity. With --results_table (the CSV
run_target_task_GPT2_sst2_multiple.py appends to), the rows are grouped by experimental condition,
each source set becomes one point, and the points are correlated with these statistics (exact
permutation p-values, n beside every coefficient). The noise floor is always reported.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from task2vec.analysis import build_report, noise_floor_verdict
from task2vec.comparability import ALLOW_FLAG, load_available_embeddings, load_embeddings
from task2vec.distances import DISTANCES
from task2vec.reporting import (OUTPUT_FILES, condition_label, correlation_text, estimate_text, json_safe,
                                noise_floor_lines, plot_score_vs_diversity, plot_distance_heatmap, ranking_lines,
                                write_matrix_csv, write_points_csv, write_subsets_csv)
from task2vec.transfer import read_results_table, tasks_in_results
from utils.run.cli import add_output_args, open_unit_interval_float, positive_int, run_entry_point, seed_int, task_name
from utils.run.errors import UnknownTaskError
from utils.run.outputs import write_json, write_run_args
from utils.run.folder import hold_run_folder
from utils.data.registry import parse_task_list

logger = logging.getLogger("TaskDiversity")

DEFAULT_SOURCES = "squad,squad_v2,duorc-p,duorc-s,drop"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emb_dir", type=str, default="TaskEmb",
                        help="Folder of task embeddings, one <task>/ folder each (written by `python -m task2vec`).")
    parser.add_argument("--source_tasks", type=str, default=DEFAULT_SOURCES,
                        help="Comma-separated source tasks; the original spellings are accepted (e.g. duorc;SelfRC).")
    parser.add_argument("--target_task", type=task_name, default="sst2", help="The target task.")
    parser.add_argument("--subset_size", type=positive_int, default=3,
                        help="Number of source tasks per subset (2 to the number of source tasks).")
    parser.add_argument("--distance", type=str, default="task2vec", choices=DISTANCES,
                        help="task2vec: Task2Vec normalised cosine of unit-mean embeddings; cosine: plain cosine.")
    parser.add_argument("--results_table", type=str, default=None,
                        help="CSV written by run_target_task_GPT2_sst2_multiple.py --results_table: group its "
                             "rows for --target_task by condition and correlate the target's primary metric with the diversities.")
    parser.add_argument("--confidence", type=open_unit_interval_float, default=0.95,
                        help="Coverage of the confidence intervals (jackknife over tasks or batches; t over seeds).")
    parser.add_argument(ALLOW_FLAG, action="store_true",
                        help="Compare embeddings made with different K, examples used, max length or head "
                             "settings (reported as warnings) instead of refusing them.")
    parser.add_argument("--seed", type=seed_int, default=0,
                        help="Seed of the random orderings of the permutation tests (only above 8 source sets).")
    parser.add_argument("--no_plots", action="store_true", help="Do not draw the PNG figures.")
    add_output_args(parser, required=False, default="task_diversity",
                    contents="diversity.json, diversity.csv, task_distances.csv and the figures")
    return parser


def parse_sources(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """Canonical source names; every invalid combination is a parser error."""
    try:
        sources = [spec.name for spec in parse_task_list(args.source_tasks)]
    except UnknownTaskError as err:
        parser.error(f"--source_tasks: {err}")
    if args.target_task in sources:
        parser.error(f"--target_task {args.target_task} is also a source task; remove it from --source_tasks")
    if not 2 <= args.subset_size <= len(sources):
        parser.error(f"--subset_size must be between 2 and the {len(sources)} source tasks, got {args.subset_size}")
    return sources


def write_outputs(output_dir: Path, report: dict, safe: dict, *, plots: bool) -> None:
    """diversity.json (strict JSON), the CSVs, correlations.json and the figures."""
    write_json(output_dir / "diversity.json", safe)
    write_subsets_csv(output_dir / "diversity.csv", report["subsets"])
    table = report["task_distances"]
    write_matrix_csv(output_dir / "task_distances.csv", table["tasks"], table["matrix"])
    if table["corrected"] is not None:
        write_matrix_csv(output_dir / "task_distances_corrected.csv", table["tasks"], table["corrected"])
    if "transfer" in report:
        write_json(output_dir / "correlations.json", safe["transfer"])
        write_points_csv(output_dir / "transfer_points.csv", report["transfer"])
    if plots:
        plot_distance_heatmap(output_dir / "task_distances.png", table["tasks"], table["matrix"], report["distance"])
        if "transfer" in report:
            plot_score_vs_diversity(output_dir / "score_vs_diversity.png", report["transfer"], report["target"])


def print_report(report: dict) -> None:
    """The ranking, the noise floor and, with a results table, each condition and its correlations."""
    for warning in report["comparability_warnings"]:
        print(f"warning: {warning}")
    print(f"Subsets of {report['subset_size']} source tasks by ascending {report['distance']} "
          f"{report['subsets_ranked_by'].replace('_', ' ')} (target {report['target']}; corrected (raw)):")
    print("\n".join(ranking_lines(report)))
    overall = report["source_set_diversity"]
    print(f"All {len(report['sources'])} sources ({overall['raw']['confidence']:.0%} jackknife CI over tasks): "
          f"diversity {estimate_text(overall['raw'])} raw, {estimate_text(overall['corrected'])} corrected")
    print("\n".join([*noise_floor_lines(report["noise_floor"]), noise_floor_verdict(report["noise_floor"]["pairs"])]))
    if "transfer" not in report:
        return
    print(f"Results table: {len(report['joined_results'])} row(s) joined, {len(report['skipped_results'])} skipped")
    for row in report["skipped_results"]:
        print(f"  skipped line {row['line']} ({row['source_tasks'] or 'no source'}): {row['reason']}")
    for condition in report["transfer"]["conditions"]:
        points = condition["points"]
        duplicates = sum(len(point["duplicate_lines"]) for point in points)
        repeated = f" ({duplicates} repeated rows counted once)" if duplicates else ""
        print(f"Condition {condition_label(condition['condition'])}: {condition['n_rows']} row(s) -> {len(points)} "
              f"source set(s){repeated}")
        if condition["baseline"] is not None:
            base = condition["baseline"]
            print(f"  no source: {base['mean']:.4f} [{base['ci_low']:.4f}, {base['ci_high']:.4f}] "
                  f"over {base['n_seeds']} seeds")
        for point in points:
            if point["runs_share_seeds"]:
                print(f"  warning: runs of {'+'.join(point['sources'])} from one checkpoint share seeds; they are "
                      "pooled as if independent")
        for group in condition["chain_orders"]:
            orders = "; ".join(f"{o['source_tasks']} {o['mean']:.4f} ({o['n_seeds']} seeds)"
                               for o in group["orders"])
            print(f"  chain orders of {'+'.join(group['sources'])}: {orders}")
        correlations = condition["correlations"]
        reasons = {corr["reason"] for corr in correlations.values()}
        if None not in reasons and len(reasons) == 1:   # no coefficient at all, for one reason: say it once
            print(f"  no correlation: {correlation_text(next(iter(correlations.values())))}")
            continue
        for name, corr in correlations.items():
            print(f"  {condition['condition']['metric']} vs {name}: {correlation_text(corr)}")
            if corr["warning"]:
                print(f"    warning: {corr['warning']}")


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    sources = parse_sources(parser, args)
    target = args.target_task

    embeddings = load_embeddings(args.emb_dir, [*sources, target])
    results, missing = None, {}
    if args.results_table:
        results = read_results_table(args.results_table)
        # Source tasks of the table beyond --source_tasks are joined when their embeddings exist.
        extra = [name for name in tasks_in_results(results, target) if name not in embeddings]
        found, missing = load_available_embeddings(args.emb_dir, extra)
        embeddings.update(found)
    report = build_report(embeddings, sources=sources, target=target, subset_size=args.subset_size,
                          distance=args.distance, confidence=args.confidence, emb_dir=args.emb_dir,
                          results=results, missing=missing, results_file=args.results_table,
                          allow_setting_mismatch=args.allow_setting_mismatch, permutation_seed=args.seed)
    safe = json_safe(report)

    with hold_run_folder(args.output_dir, overwrite=args.overwrite_output_dir, outputs=OUTPUT_FILES) as folder:
        write_run_args(folder.path, args, {"sources": sources, "target": target})
        write_outputs(folder.path, report, safe, plots=not args.no_plots)
    print_report(report)
    logger.info("wrote %s", folder.path / "diversity.json")
    return safe


if __name__ == "__main__":
    run_entry_point(main)

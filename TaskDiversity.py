"""Rank subsets of source tasks by their Task2Vec diversity, and relate it to target accuracy.

    python TaskDiversity.py --emb_dir TaskEmb --source_tasks 'squad,squad_v2,duorc-p,duorc-s,drop' \
        --target_task sst2 --subset_size 3 [--results_table results.csv]

For every subset of --subset_size source tasks: its diversity coefficient (mean pairwise distance
of the task embeddings), the same with the target added, and the distance of the subset's mean
embedding to the target's. With --results_table (the CSV run_target_task_GPT2_sst2_multiple.py
appends to), each row's source set is joined with these and correlated with the mean accuracy.
The Monte-Carlo noise floor of the embeddings is always reported beside the diversities.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from task2vec.analysis import build_report, load_available_embeddings, load_embeddings, noise_floor_verdict
from task2vec.distances import DISTANCES
from task2vec.diversity import SET_STATISTICS
from task2vec.reporting import (OUTPUT_FILES, json_safe, noise_floor_lines, plot_accuracy_vs_diversity,
                                plot_distance_heatmap, ranking_lines, write_matrix_csv, write_subsets_csv)
from task2vec.transfer import read_results_table, tasks_in_results
from utils.cli import add_output_args, run_entry_point, task_name
from utils.errors import UnknownTaskError
from utils.outputs import prepare_output_dir, write_json, write_run_args
from utils.tasks import parse_task_list

logger = logging.getLogger("TaskDiversity")

DEFAULT_SOURCES = "squad,squad_v2,duorc-p,duorc-s,drop"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emb_dir", type=str, default="TaskEmb",
                        help="Folder of task embeddings, one <task>/ folder each (written by `python -m task2vec`).")
    parser.add_argument("--source_tasks", type=str, default=DEFAULT_SOURCES,
                        help="Comma-separated source tasks; the original spellings are accepted (e.g. duorc;SelfRC).")
    parser.add_argument("--target_task", type=task_name, default="sst2", help="The target task.")
    parser.add_argument("--subset_size", type=int, default=3,
                        help="Number of source tasks per subset (2 to the number of source tasks).")
    parser.add_argument("--distance", type=str, default="task2vec", choices=DISTANCES,
                        help="task2vec: Task2Vec normalised cosine (scale-invariant); cosine: plain cosine.")
    parser.add_argument("--results_table", type=str, default=None,
                        help="CSV written by run_target_task_GPT2_sst2_multiple.py --results_table: join its "
                             "rows for --target_task with the diversities and correlate with mean accuracy.")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="Coverage of the confidence intervals (jackknife over tasks or batches).")
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
    if not 0 < args.confidence < 1:
        parser.error(f"--confidence must be strictly between 0 and 1, got {args.confidence}")
    return sources


def write_outputs(output_dir: Path, report: dict, safe: dict, *, plots: bool) -> None:
    """diversity.json (strict JSON), the CSVs, correlations.json and the figures."""
    write_json(output_dir / "diversity.json", safe)
    write_subsets_csv(output_dir / "diversity.csv", report["subsets"], report.get("joined_results"))
    table = report["task_distances"]
    write_matrix_csv(output_dir / "task_distances.csv", table["tasks"], table["matrix"])
    if "correlations" in report:
        write_json(output_dir / "correlations.json", safe["correlations"])
    if plots:
        plot_distance_heatmap(output_dir / "task_distances.png", table["tasks"], table["matrix"], report["distance"])
        if "joined_results" in report:
            plot_accuracy_vs_diversity(output_dir / "accuracy_vs_diversity.png", report["joined_results"],
                                       report["correlations"]["diversity"], report["target"])


def print_report(report: dict) -> None:
    """The ranking, the noise floor and, with a results table, the join and its correlations."""
    print(f"Subsets of {report['subset_size']} source tasks by ascending {report['distance']} diversity "
          f"(target {report['target']}):")
    print("\n".join(ranking_lines(report)))
    overall = report["source_set_diversity"]
    print(f"All {len(report['sources'])} sources: diversity {overall['value']:.6f}, "
          f"{overall['confidence']:.0%} jackknife CI [{overall['ci_low']:.6f}, {overall['ci_high']:.6f}]")
    print("\n".join([*noise_floor_lines(report["noise_floor"]),
                     noise_floor_verdict(report["noise_floor"]["pairs"])]))
    if "joined_results" in report:
        print(f"Results table: {len(report['joined_results'])} row(s) joined, "
              f"{len(report['skipped_results'])} skipped")
        for row in report["skipped_results"]:
            print(f"  skipped line {row['line']} ({row['source_tasks'] or 'no source'}): {row['reason']}")
        for column in SET_STATISTICS:
            corr = report["correlations"][column]
            detail = corr["reason"] or (f"Spearman ρ {corr['spearman_rho']:.3f} (p {corr['spearman_p']:.3g}), "
                                        f"Pearson r {corr['pearson_r']:.3f} (p {corr['pearson_p']:.3g})")
            print(f"  mean accuracy vs {column} (n = {corr['n']}): {detail}")


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
                          results=results, missing=missing, results_file=args.results_table)
    safe = json_safe(report)

    output_dir = prepare_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, outputs=OUTPUT_FILES)
    write_run_args(output_dir, args, {"sources": sources, "target": target})
    write_outputs(output_dir, report, safe, plots=not args.no_plots)
    print_report(report)
    logger.info("wrote %s", output_dir / "diversity.json")
    return safe


if __name__ == "__main__":
    run_entry_point(main)

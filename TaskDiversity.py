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

import numpy as np

from task2vec.analysis.distances import DISTANCES
from task2vec.analysis.diversity import noise_floor_summary, set_diversity, subset_diversities, task_distance_table
from task2vec.analysis.reporting import not_finite_reason, report_lines, write_report_files
from task2vec.analysis.transfer import join_results, read_results_table, tasks_in_results, transfer_analysis
from task2vec.embedding.comparability import (ALLOW_FLAG, check_comparable, embedding_summary,
                                              load_available_embeddings, load_embeddings)
from task2vec.embedding.io import json_safe
from utils.data.registry import parse_task_list, task_name
from utils.run.errors import UnknownTaskError
from utils.run.flags import SEED, add_output_args, number
from utils.run.outputs import hold_run_folder, write_run_args
from utils.run.progress import run_entry_point

logger = logging.getLogger("TaskDiversity")

DEFAULT_SOURCES = "squad,squad_v2,duorc-p,duorc-s,drop"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emb_dir", type=str, default="TaskEmb",
                        help="Folder of task embeddings, one <task>/ folder each (written by `python -m task2vec`).")
    parser.add_argument("--source_tasks", type=str, default=DEFAULT_SOURCES,
                        help="Comma-separated source tasks; the original spellings are accepted (e.g. duorc;SelfRC).")
    parser.add_argument("--target_task", type=task_name, default="sst2", help="The target task.")
    parser.add_argument("--subset_size", type=number(int, minimum=1), default=3,
                        help="Number of source tasks per subset (2 to the number of source tasks).")
    parser.add_argument("--distance", type=str, default="task2vec", choices=DISTANCES,
                        help="task2vec: Task2Vec normalised cosine of unit-mean embeddings; cosine: plain cosine.")
    parser.add_argument("--results_table", type=str, default=None,
                        help="CSV written by run_target_task_GPT2_sst2_multiple.py --results_table: group its "
                             "rows for --target_task by condition and correlate the target's primary metric with "
                             "the diversities.")
    parser.add_argument("--confidence", type=number(float, above=0, below=1), default=0.95,
                        help="Coverage of the confidence intervals (jackknife over tasks or batches; t over seeds).")
    parser.add_argument(ALLOW_FLAG, action="store_true",
                        help="Compare embeddings made with different K, examples used, max length or head "
                             "settings (reported as warnings) instead of refusing them.")
    parser.add_argument("--seed", type=SEED, default=0,
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


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    sources = parse_sources(parser, args)
    target, distance, confidence = args.target_task, args.distance, args.confidence
    tasks = [*sources, target]

    # The embeddings: sources, target and, with a results table, its other source tasks that have one.
    embeddings = load_embeddings(args.emb_dir, tasks)
    results, missing = None, {}
    if args.results_table:
        results = read_results_table(args.results_table)
        extra = [name for name in tasks_in_results(results, target) if name not in embeddings]
        found, missing = load_available_embeddings(args.emb_dir, extra)
        embeddings.update(found)
    warnings = check_comparable(embeddings, allow_setting_mismatch=args.allow_setting_mismatch)
    vectors = {name: emb.vector for name, emb in embeddings.items()}
    reseeded = {name: emb.reseeded for name, emb in embeddings.items()}

    # Task distances, the subsets ranked by diversity, the noise floor.
    table = task_distance_table(vectors, tasks, distance, reseeded)
    subsets, ranked_by = subset_diversities(vectors, sources, target, args.subset_size, distance, reseeded)
    report = {
        "distance": distance, "target": target, "sources": sources, "subset_size": args.subset_size,
        "confidence": confidence, "comparability_warnings": warnings, "subsets": subsets,
        "subsets_ranked_by": ranked_by, "task_distances": table,
        "source_set_diversity": set_diversity(table, sources, confidence),
        "noise_floor": noise_floor_summary({name: embeddings[name] for name in tasks}, np.asarray(table["matrix"]),
                                           distance, confidence),
        "embeddings": embedding_summary(args.emb_dir, embeddings),
    }
    # The measured transfer: one point per source set and condition, correlated with the statistics.
    if results is not None:
        joined, skipped = join_results(results, vectors, target, distance, missing, args.results_table, reseeded)
        report.update(results_table=args.results_table, joined_results=joined, skipped_results=skipped,
                      transfer=transfer_analysis(joined, confidence, args.seed))
    safe = json_safe(report, not_finite_reason)

    with hold_run_folder(args.output_dir, overwrite=args.overwrite_output_dir) as folder:
        write_run_args(folder.path, args, {"sources": sources, "target": target})
        write_report_files(folder.path, report, safe, plots=not args.no_plots)
    print("\n".join(report_lines(report)))
    logger.info("wrote %s", folder.path / "diversity.json")
    return safe


if __name__ == "__main__":
    run_entry_point(main)

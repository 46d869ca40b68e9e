"""`python -m utils.data`: load a task's data through its adapter and print what was kept and dropped.

    python -m utils.data --task duorc-p --file ParaphraseRC_train.json [--to_jsonl out.jsonl]
    python -m utils.data --task rte --split validation --file RTE/dev.tsv
    python -m utils.data --list_tasks

The statistics are printed as JSON (and optionally written to a file); the loading itself is in
`utils.data.loading`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from utils.data.loading import load_task_data
from utils.data.records import write_jsonl
from utils.data.registry import SPLITS, TASKS, TableLayout
from utils.run.flags import add_column_args
from utils.run.progress import run_entry_point


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m utils.data`."""
    parser = argparse.ArgumentParser(
        prog="python -m utils.data",
        description="Load a task's data through its adapter, print what was kept and dropped (JSON), "
                    "and optionally write the canonical records.")
    parser.add_argument("--task", type=str, default=None,
                        help="Task name or alias, e.g. squad, squad_v2, duorc-p, 'duorc;SelfRC', drop, "
                             "quoref, mlqa_en, sst2, cola, mrpc, stsb, qqp, mnli, mnli-mm, qnli, rte, wnli "
                             "(see --list_tasks).")
    parser.add_argument("--file", type=str, default=None,
                        help="Local data file or save_to_disk folder. Without it the task's Hugging "
                             "Face Hub dataset is used (needs a network or a populated cache).")
    parser.add_argument("--split", type=str, default="train", choices=SPLITS,
                        help="Logical split; only matters for Hub datasets and saved DatasetDicts (validation "
                             "is MNLI's validation_matched for mnli, validation_mismatched for mnli-mm).")
    parser.add_argument("--to_jsonl", type=str, default=None,
                        help="Write the canonical records here as JSON lines.")
    parser.add_argument("--stats_file", type=str, default=None,
                        help="Also write the statistics to this file (e.g. adapter_stats.json).")
    add_column_args(parser)
    parser.add_argument("--compact", action="store_true",
                        help="Print the statistics on one line instead of indented JSON.")
    parser.add_argument("--list_tasks", action="store_true",
                        help="Print the task registry as JSON and exit.")
    return parser


def registry_table() -> list[dict]:
    """The registry as plain dicts, for --list_tasks."""
    return [{"name": s.name, "aliases": list(s.aliases), "kind": s.kind,
             "version_2_with_negative": s.version_2_with_negative, "hub_id": s.hub_id,
             "hub_config": s.hub_config, "hub_splits": dict(s.hub_splits), "adapter": s.adapter,
             "metric": s.metric,
             "label_names": list(s.label_names) if s.label_names else None,
             "text_pair_required": s.text_pair_required, "is_regression": s.is_regression,
             "regression_range": list(s.regression_range) if s.regression_range else None,
             "table": _layout_table(s.table) if s.table else None, "notes": s.notes}
            for s in TASKS]


def _layout_table(layout: TableLayout) -> dict:
    """A task's TableLayout as plain JSON values (lists, not tuples)."""
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(layout).items()}


def main(argv: list[str] | None = None) -> dict:
    """Print (and optionally write) the adapter statistics of one file; returns them."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_tasks:
        table = registry_table()
        print(json.dumps(table, indent=2))
        return {"tasks": table}
    if args.task is None:
        parser.error("--task is required (or --list_tasks)")
    data = load_task_data(args.task, args.split, args.file, text_column=args.text_column,
                          text_pair_column=args.text_pair_column, label_column=args.label_column,
                          local_hint="--file PATH")
    stats = data.stats.to_dict()
    if args.to_jsonl:
        write_jsonl(args.to_jsonl, data.records)
        stats["written_to"] = args.to_jsonl
    text = json.dumps(stats, indent=2)
    if args.stats_file:
        Path(args.stats_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.stats_file).write_text(text + "\n", encoding="utf-8")
    print(json.dumps(stats) if args.compact else text)
    return stats


if __name__ == "__main__":
    run_entry_point(main)

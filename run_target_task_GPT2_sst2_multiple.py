"""Fine-tune one checkpoint on a classification or regression target (SST-2 by default; any GLUE task)
several times, once per seed, and report every run with mean, standard deviation and a 95% confidence
interval of the target's own metrics.

    python run_target_task_GPT2_sst2_multiple.py --pretrained_model ./pretrained_model_duorc-p
"""
from __future__ import annotations

import argparse
from pathlib import Path

from utils.run.cli import (add_column_args, add_data_file_args, add_features_cache_arg, add_output_args, add_runtime_args,
                       positive_int, run_entry_point, seed_int, task_name)
from utils.training.resume import add_allow_changed_args
from utils.run.folder import hold_output_dir
from utils.classification.args import SAVE_MODEL_CHOICES, SELECTIONS, resolve_seeds
from utils.data.registry import get_task
from utils.results.table import legacy_table_problem
from utils.training.args import add_training_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained_model", type=str, default="gpt2",
                        help="Checkpoint to start every run from: 'gpt2' (Hub) or a folder written by "
                             "run_intermediate_source_GPT2.py, maml_qa.py or save_pretrained (LM, QA or "
                             "classification head; a new classification head is created).")
    parser.add_argument("--dataset_name", type=task_name, default="sst2",
                        help="Target task: a GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, mnli-mm, qnli, rte, wnli; "
                             "spellings such as glue;rte), reported on its primary metric (python -m utils.data "
                             "--list_tasks).")
    add_output_args(parser, required=False, output_help="Where runs/, summary.json and run_args.json go (default: "
                                                        "target_<task>_<name of --pretrained_model>).")
    parser.add_argument("--resume", action="store_true",
                        help="Continue the run in --output_dir: seeds it finished (runs/seed_S/all_results.json) are "
                             "reused after checking that the arguments match its run_args.json; the others are run.")
    parser.add_argument("--num_runs", type=positive_int, default=None,
                        help="Number of runs (seeds 13, 21, 42, 87, 100, 101, ...); default 5.")
    parser.add_argument("--seeds", type=seed_int, nargs="+", default=None,
                        help="Explicit seeds (0 to 2**32 - 1), one run each.")
    parser.add_argument("--max_length", type=positive_int, default=128, help="Sentences are cut to this many tokens.")
    add_column_args(parser)
    parser.add_argument("--selection", type=str, default="holdout", choices=SELECTIONS,
                        help="holdout: keep the epoch with the best primary metric (accuracy, Matthews "
                             "correlation, F1 or Pearson) on a hold-out taken from the training data (never the "
                             "reported validation set; the last epoch where the hold-out cannot tell epochs "
                             "apart); last: the last epoch.")
    parser.add_argument("--holdout_size", type=positive_int, default=1000,
                        help="Largest hold-out: it takes a tenth of the training data, and at least one example "
                             "of each class (or STS-B score bin) that has two.")
    parser.add_argument("--save_model", type=str, default="none", choices=SAVE_MODEL_CHOICES,
                        help="Save each run's model (runs/seed_S/model): the selected epoch, the last one, or none.")
    parser.add_argument("--results_table", type=str, default=None,
                        help="Append one row for this invocation (source chain, seeds, primary metric with its "
                             "mean, std, CI) to this CSV.")
    add_features_cache_arg(parser)
    add_data_file_args(parser)
    parser.add_argument("--validation_mismatched_file", type=str, default=None,
                        help="mnli: the mismatched dev set, scored by the same model as --validation_file (the "
                             "matched one, the primary metric); default dev_mismatched.tsv beside "
                             "--validation_file, or the Hub's validation_mismatched.")
    add_training_args(parser, learning_rate=2e-5, batch_size=32, epochs=3.0, warmup_ratio=0.06,
                      batch_flag="--batch_size", epochs_flag="--epochs", periodic=False)
    add_allow_changed_args(parser)
    add_runtime_args(parser)
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    spec = get_task(args.dataset_name)
    if spec.kind != "classification":
        parser.error(f"--dataset_name {spec.name} is a {spec.kind} task; use run_intermediate_source_GPT2.py")
    if args.validation_mismatched_file and spec.name != "mnli":
        parser.error(f"--validation_mismatched_file is for mnli (scored matched and mismatched), not {spec.name}")
    problem = legacy_table_problem(args.results_table, spec.name, spec.metric) if args.results_table else None
    if problem:   # before any training, which could not be recorded
        parser.error(problem)
    seeds = resolve_seeds(args.num_runs, args.seeds)
    output_dir = Path(args.output_dir or f"target_{spec.name}_{Path(args.pretrained_model.rstrip('/')).name}")
    with hold_output_dir(output_dir, overwrite=args.overwrite_output_dir, resuming=args.resume,
                         resume_flag="--resume") as folder:
        # torch and transformers load only now, so --help, a bad flag or a busy folder is answered at once.
        from utils.classification.target_task import run_target

        return run_target(args, spec, seeds, folder, output_dir)


if __name__ == "__main__":
    run_entry_point(main)

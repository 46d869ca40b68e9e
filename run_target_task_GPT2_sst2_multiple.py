"""Fine-tune one checkpoint on a classification target (SST-2 by default) several times, once per
seed, and report every run with mean, standard deviation and a 95% confidence interval.

    python run_target_task_GPT2_sst2_multiple.py --pretrained_model ./pretrained_model_duorc-p
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from utils.checkpoint import load_model, require_positions
from utils.classification import classification_features, truncation_note
from utils.cli import add_data_file_args, add_runtime_args, positive_int, run_entry_point, seed_int, task_name
from utils.data import load_task_data, same_file_warning
from utils.distributed import barrier
from utils.feature_cache import build_features, default_cache_dir, source_digest, tokenizer_digest
from utils.outputs import JsonlLog, write_json, write_run_args
from utils.resume import RESULT_NEUTRAL_ARGS, add_allow_changed_args, resolve_resume_args
from utils.progress import Progress
from utils.run_setup import RunStart, start_run
from utils.subsets import stratified_sample
from utils.target_task import (SAVE_MODEL_CHOICES, SELECTIONS, TargetData, append_results_table, build_summary,
                               discard_unfinished_seed, finished_seed, require_labels, resolve_seeds, run_seed,
                               split_holdout)
from utils.tasks import get_task
from utils.training import LoopContext
from utils.training_args import add_training_args, loop_settings

logger = logging.getLogger("run_target_task_GPT2_sst2_multiple")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained_model", type=str, default="gpt2",
                        help="Checkpoint to start every run from: 'gpt2' (Hub) or a folder written by "
                             "run_intermediate_source_GPT2.py, maml_qa.py or save_pretrained (LM, QA or "
                             "classification head; a new classification head is created).")
    parser.add_argument("--dataset_name", type=task_name, default="sst2", help="Classification target task.")
    parser.add_argument("--output_dir", type=str, default=None,
                        help="Where runs/, summary.json and run_args.json go (default: "
                             "target_<task>_<name of --pretrained_model>).")
    parser.add_argument("--overwrite_output_dir", action="store_true",
                        help="Replace the run in a non-empty --output_dir (its files are deleted once this run finishes).")
    parser.add_argument("--resume", action="store_true",
                        help="Continue the run in --output_dir: seeds it finished (runs/seed_S/all_results.json) are "
                             "reused after checking that the arguments match its run_args.json; the others are run.")
    parser.add_argument("--num_runs", type=positive_int, default=None,
                        help="Number of runs (seeds 13, 21, 42, 87, 100, 101, ...); default 5.")
    parser.add_argument("--seeds", type=seed_int, nargs="+", default=None,
                        help="Explicit seeds (0 to 2**32 - 1), one run each.")
    parser.add_argument("--max_length", type=positive_int, default=128, help="Sentences are cut to this many tokens.")
    parser.add_argument("--text_column", type=str, default=None, help="Text column of a TSV/CSV/JSONL file.")
    parser.add_argument("--label_column", type=str, default=None, help="Label column of a TSV/CSV/JSONL file.")
    parser.add_argument("--selection", type=str, default="holdout", choices=SELECTIONS,
                        help="holdout: keep the epoch with the best accuracy on a hold-out taken from the training "
                             "data (never the reported validation set); last: the last epoch.")
    parser.add_argument("--holdout_size", type=positive_int, default=1000,
                        help="Hold-out sentences (at most a tenth of the training data).")
    parser.add_argument("--save_model", type=str, default="none", choices=SAVE_MODEL_CHOICES,
                        help="Save each run's model (runs/seed_S/model): the selected epoch, the last one, or none.")
    parser.add_argument("--results_table", type=str, default=None,
                        help="Append one row for this invocation (source chain, seeds, mean, std, CI) to this CSV.")
    parser.add_argument("--features_cache_dir", type=str, default=str(default_cache_dir()),
                        help="Where tokenized features are cached ('none' to turn caching off).")
    add_data_file_args(parser)
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
    seeds = resolve_seeds(args.num_runs, args.seeds)
    output_dir = Path(args.output_dir or f"target_{spec.name}_{Path(args.pretrained_model.rstrip('/')).name}")
    with start_run(args, output_dir, resuming=args.resume, resume_flag="--resume") as run:
        return run_target(args, spec, seeds, run, output_dir)


def run_target(args: argparse.Namespace, spec, seeds: list[int], run: RunStart, output_dir: Path) -> dict:
    """Every seed's run (finished ones reused with --resume), the summary and the table row."""
    dist_ctx, precision, progress = run.dist, run.precision, run.progress
    # Seeds are units: the number of runs may grow or shrink on resumption.
    resumed = resolve_resume_args(args, output_dir, what=str(output_dir),
                                  neutral=RESULT_NEUTRAL_ARGS | {"seeds", "num_runs"}) if args.resume else None

    note = same_file_warning(args.train_file, args.validation_file)
    if note and dist_ctx.is_main:
        logger.warning(note)
    columns = {"text_column": args.text_column, "label_column": args.label_column}
    train_data = load_task_data(spec, "train", args.train_file, **columns)
    eval_data = load_task_data(spec, "validation", args.validation_file, **columns)
    require_labels(train_data.records, "training", train_data.stats.source)
    require_labels(eval_data.records, "validation", eval_data.stats.source)
    train_records, train_subset = stratified_sample(train_data.records, args.max_train_samples, args.data_seed)
    holdout_records: list[dict] = []
    if args.selection == "holdout":
        train_records, holdout_records = split_holdout(train_records, args.holdout_size, args.data_seed)
    eval_records, eval_subset = stratified_sample(eval_data.records, args.max_eval_samples, args.data_seed)

    reference = load_model(args.pretrained_model, "classification", label_names=spec.label_names)
    require_positions(args.max_length, reference.model.config, "--max_length", args.pretrained_model)
    tokenizer = reference.tokenizer
    cache = None if args.features_cache_dir.lower() == "none" else Path(args.features_cache_dir)
    key = {"max_length": args.max_length, "tokenizer": tokenizer_digest(tokenizer),
           "code": source_digest(classification_features)}

    def features(records: list[dict], name: str):
        if not records:
            return None
        built = build_features(records, lambda batch, _: classification_features(batch, tokenizer, args.max_length),
                               name=f"{spec.name}-{name}", settings=key, cache_dir=cache)
        note = truncation_note(f"{spec.name}-{name}", sum(built["truncated"]), len(built), args.max_length)
        if note and dist_ctx.is_main:
            logger.info(note)
        return built

    data = None
    for rank_turn in (True, False):  # rank 0 tokenizes (and caches) first, the others then read the cache
        if dist_ctx.is_main == rank_turn:
            data = TargetData(features(train_records, "train"), features(holdout_records, "holdout"),
                              features(eval_records, "eval"), eval_records)
        barrier(dist_ctx)
    if dist_ctx.is_main:
        write_run_args(output_dir, args, {"seeds": seeds, "resume": resumed, "train_sentences": len(train_records),
                                          "holdout_sentences": len(holdout_records), "eval_sentences": len(eval_records),
                                          "world_size": dist_ctx.world_size, "device": str(dist_ctx.device),
                                          "precision": precision.name})
        for name, loaded in (("train", train_data), ("validation", eval_data)):
            write_json(output_dir / f"adapter_stats_{name}.json", loaded.stats.to_dict())
        write_json(output_dir / "data_subsets.json", {
            "train": train_subset.to_dict(), "validation": eval_subset.to_dict(),
            "holdout": {"seed": args.data_seed, "count": len(holdout_records), "ids": [r["id"] for r in holdout_records]}})
        logger.info("%s from %s: %d training, %d hold-out, %d validation sentences; seeds %s", spec.name,
                    args.pretrained_model, len(train_records), len(holdout_records), len(eval_records), seeds)
    runs = []
    with Progress(len(seeds), "seeds", bar=progress and dist_ctx.is_main, unit="seed",
                  interval_s=60.0 if dist_ctx.is_main else None) as seed_progress:
        for seed in seeds:
            run_dir = output_dir / "runs" / f"seed_{seed}"
            result = finished_seed(run_dir) if args.resume else None
            if result is not None:
                logger.info("seed %d: finished by an earlier invocation; reusing %s", seed, run_dir / "all_results.json")
            else:
                if dist_ctx.is_main:
                    discard_unfinished_seed(run_dir)
                barrier(dist_ctx)
                run_dir.mkdir(parents=True, exist_ok=True)
                ctx = LoopContext(dist_ctx.device, precision, dist_ctx, run_dir,
                                  JsonlLog(run_dir / "log.jsonl", run_id=run.run_id) if dist_ctx.is_main else None,
                                  progress)
                result = run_seed(seed=seed, pretrained=args.pretrained_model, spec=spec, data=data,
                                  settings=loop_settings(args, seed=seed), selection=args.selection,
                                  save_model=args.save_model, run_dir=run_dir, ctx=ctx)
            if result is not None:
                runs.append(result)
                logger.info("seed %d: accuracy %.4f, macro-F1 %.4f (epoch %s)", seed, result["eval_accuracy"],
                            result["eval_macro_f1"], result["selected_epoch"])
            seed_progress.update()
    summary: dict = {}
    if dist_ctx.is_main:
        summary = build_summary(spec=spec, pretrained=args.pretrained_model, lineage=reference.provenance.lineage,
                                runs=runs, settings={k: v for k, v in vars(args).items()}, output_dir=output_dir)
        write_json(output_dir / "summary.json", summary)
        if args.results_table:
            append_results_table(Path(args.results_table), summary, args.max_train_samples, args.selection)
        acc = summary["eval_accuracy"]
        if acc["n"] > 1:
            logger.info("%s accuracy over %d runs: %.4f ± %.4f (95%% CI %.4f–%.4f)", spec.name, acc["n"], acc["mean"],
                        acc["std"], acc["ci_low"], acc["ci_high"])
        else:
            logger.info("%s accuracy of one run: %.4f (one seed gives no std or confidence interval; use --num_runs)",
                        spec.name, acc["mean"])
    return summary


if __name__ == "__main__":
    run_entry_point(main)

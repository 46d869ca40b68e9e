"""Fine-tune one checkpoint on a classification or regression target (SST-2 by default; any GLUE task)
several times, once per seed, and report every run with mean, standard deviation and a 95% confidence
interval of the target's own metrics.

    python run_target_task_GPT2_sst2_multiple.py --pretrained_model ./pretrained_model_duorc-p

The recipe (main): flags -> data (train, hold-out, validation) -> features -> model -> per seed:
train, choose the epoch on the hold-out, evaluate (runs/seed_S/) -> summary.json and the results
table -> the report over seeds.
"""
from __future__ import annotations

import argparse
import logging
import shutil
from dataclasses import replace
from pathlib import Path

from utils.classification.evaluation import (COMPANION_VALIDATION, companion_metrics, holdout_problem, primary_metric,
                                             split_holdout)
from utils.classification.objective import classification_features
from utils.classification.summary import build_summary, results_row
from utils.classification.target import TargetData, finished_seed, require_labels, run_seed
from utils.data.loading import (build_features, companion_file, load_task_data, same_file_warning, source_digest,
                                stratified_sample, tokenizer_digest)
from utils.data.registry import get_task, task_name
from utils.models.loading import load_model, require_positions, truncation_note
from utils.results.table import RESULTS_TABLE_COLUMNS, append_row, table_problem
from utils.run.errors import ToolkitError
from utils.run.flags import (SEED, add_column_args, add_data_file_args, add_features_cache_arg, add_output_args,
                             add_runtime_args, number)
from utils.run.outputs import JsonlLog, hold_run_folder, write_json, write_run_args
from utils.run.progress import Progress, run_entry_point
from utils.training.checkpoints import RESULT_NEUTRAL_ARGS, add_allow_changed_args, resolve_resume_args
from utils.training.loop import add_training_args, loop_settings, make_compiler, speed_choices
from utils.training.runtime import barrier, main_process_first, resolve_attention, start_run

logger = logging.getLogger(__name__)

DEFAULT_SEEDS = (13, 21, 42, 87, 100)
SELECTIONS = ("holdout", "last")
SAVE_MODEL_CHOICES = ("none", "best", "last")
POSITIVE_INT = number(int, minimum=1)


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
    parser.add_argument("--resume_from_checkpoint", type=str, default=None, choices=("latest",),
                        help="latest: continue the run in --output_dir. A seed is this script's unit of resumption: "
                             "seeds it finished (runs/seed_S/all_results.json) are reused after checking that the "
                             "arguments match its run_args.json; the others are run from the start.")
    parser.add_argument("--resume", dest="resume_from_checkpoint", action="store_const", const="latest",
                        help="The same as --resume_from_checkpoint latest.")
    parser.add_argument("--num_runs", type=POSITIVE_INT, default=None,
                        help="Number of runs (seeds 13, 21, 42, 87, 100, 101, ...); default 5.")
    parser.add_argument("--seeds", type=SEED, nargs="+", default=None,
                        help="Explicit seeds (0 to 2**32 - 1), one run each.")
    parser.add_argument("--max_length", type=POSITIVE_INT, default=128, help="Sentences are cut to this many tokens.")
    add_column_args(parser)
    parser.add_argument("--selection", type=str, default="holdout", choices=SELECTIONS,
                        help="holdout: keep the epoch with the best primary metric (accuracy, Matthews "
                             "correlation, F1 or Pearson) on a hold-out taken from the training data (never the "
                             "reported validation set; the last epoch where the hold-out cannot tell epochs "
                             "apart); last: the last epoch.")
    parser.add_argument("--holdout_size", type=POSITIVE_INT, default=1000,
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


def resolve_seeds(num_runs: int | None, seeds: list[int] | None) -> list[int]:
    """--seeds as given, else the first --num_runs of 13, 21, 42, 87, 100, 101, 102, ..."""
    if seeds:
        if num_runs is not None and num_runs != len(seeds):
            raise ToolkitError(f"--num_runs {num_runs} disagrees with the {len(seeds)} --seeds given; give one of them")
        if len(set(seeds)) != len(seeds):
            raise ToolkitError(f"--seeds repeats a seed: {seeds}")
        return list(seeds)
    count = 5 if num_runs is None else num_runs
    return [*DEFAULT_SEEDS, *range(DEFAULT_SEEDS[-1] + 1, DEFAULT_SEEDS[-1] + 1 + count)][:count]


def main(argv: list[str] | None = None) -> dict:
    # ---- flags
    parser = build_parser()
    args = parser.parse_args(argv)
    spec = get_task(args.dataset_name)
    if spec.kind != "classification":
        parser.error(f"--dataset_name {spec.name} is a {spec.kind} task; use run_intermediate_source_GPT2.py")
    if args.validation_mismatched_file and spec.name != "mnli":
        parser.error(f"--validation_mismatched_file is for mnli (scored matched and mismatched), not {spec.name}")
    problem = args.results_table and table_problem(args.results_table, RESULTS_TABLE_COLUMNS, flag="--results_table")
    if problem:   # before any training, which could not be recorded
        parser.error(problem)
    seeds = resolve_seeds(args.num_runs, args.seeds)
    output_dir = Path(args.output_dir or f"target_{spec.name}_{Path(args.pretrained_model.rstrip('/')).name}")
    with hold_run_folder(output_dir, overwrite=args.overwrite_output_dir, resuming=bool(args.resume_from_checkpoint),
                         resume_flag="--resume_from_checkpoint latest") as folder, start_run(args, folder) as started:
        is_main = started.is_main
        # Seeds are units: the number of runs may grow or shrink on resumption.
        args, resumed = resolve_resume_args(args, output_dir, what=str(output_dir),
                                            neutral=RESULT_NEUTRAL_ARGS | {"seeds", "num_runs"}) \
            if args.resume_from_checkpoint else (args, None)

        # ---- data: training (less the hold-out), hold-out, validation (and MNLI's mismatched set)
        note = same_file_warning(args.train_file, args.validation_file)
        if note and is_main:
            logger.warning(note)
        columns = {"text_column": args.text_column, "label_column": args.label_column,
                   "text_pair_column": args.text_pair_column}
        splits = {"train": load_task_data(spec, "train", args.train_file, **columns),
                  "validation": load_task_data(spec, "validation", args.validation_file, **columns)}
        suffix = None
        if spec.name in COMPANION_VALIDATION:
            suffix, other = COMPANION_VALIDATION[spec.name]
            file = companion_file(args.validation_file, args.validation_mismatched_file, suffix,
                                  "--validation_mismatched_file")
            splits[f"validation_{suffix}"] = load_task_data(other, "validation", file, **columns)
        for name, loaded in splits.items():
            require_labels(loaded.records, {"train": "training", "validation": "validation"}.get(
                name, f"{suffix} validation"), loaded.stats.source)
        samples = {name: stratified_sample(loaded.records, args.max_eval_samples if name != "train" else
                                           args.max_train_samples, args.data_seed) for name, loaded in splits.items()}
        train_records, holdout_records = samples["train"][0], []
        holdout = {"holdout_size": 0, "holdout_classes": 0, "problem": None}
        if args.selection == "holdout":
            train_records, holdout_records, classes = split_holdout(train_records, args.holdout_size, args.data_seed)
            holdout = {"holdout_size": len(holdout_records), "holdout_classes": classes,
                       "problem": holdout_problem(spec, [r["label"] for r in holdout_records])}
            if holdout["problem"] and is_main:
                logger.warning("the hold-out cannot choose the epoch (%s): every run keeps its last epoch; give more "
                               "training data or a larger --holdout_size, or use --selection last", holdout["problem"])
        eval_records = samples["validation"][0]

        # ---- features (cached by tokenizer, max_length and the feature code)
        attention = resolve_attention(args.attn_implementation)
        reference = load_model(args.pretrained_model, "classification", label_names=spec.label_names,
                               regression=spec.is_regression, attn_implementation=attention)
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
            if note and is_main:
                logger.info(note)
            return built

        with main_process_first(started):
            companion = None
            if suffix:
                companion_records = samples[f"validation_{suffix}"][0]
                companion = (suffix, features(companion_records, f"eval_{suffix}"), companion_records)
            data = TargetData(features(train_records, "train"), features(holdout_records, "holdout"),
                              features(eval_records, "eval"), eval_records, holdout, companion)
        if is_main:
            settings = loop_settings(args)
            write_run_args(output_dir, args, {
                "seeds": seeds, "resume": resumed, "train_sentences": len(train_records),
                "holdout_sentences": len(holdout_records), "eval_sentences": len(eval_records),
                "world_size": started.world_size, "device": str(started.device), "precision": started.precision.name,
                **speed_choices(settings, reference.model.config._attn_implementation, started.device)})
            for name, loaded in splits.items():
                write_json(output_dir / f"adapter_stats_{name}.json", loaded.stats.to_dict())
            write_json(output_dir / "data_subsets.json", {
                **{name: subset.to_dict() for name, (_, subset) in samples.items()},
                "holdout": {"seed": args.data_seed, "count": len(holdout_records),
                            "ids": [r["id"] for r in holdout_records]}})
            logger.info("%s from %s: %d training, %d hold-out, %d validation sentences; seeds %s", spec.name,
                        args.pretrained_model, len(train_records), len(holdout_records), len(eval_records), seeds)

        # ---- per seed: train, choose the epoch, evaluate (runs/seed_S)
        runs = []
        metric = primary_metric(spec)
        compiler = make_compiler(loop_settings(args))   # one for every seed: they share the compiled graphs
        with Progress(len(seeds), "seeds", bar=started.progress and is_main, unit="seed",
                      interval_s=60.0 if is_main else None) as seed_progress:
            for seed in seeds:
                run_dir = output_dir / "runs" / f"seed_{seed}"
                result = finished_seed(run_dir, spec) if args.resume_from_checkpoint else None
                if result is not None:
                    logger.info("seed %d: finished by an earlier invocation; reusing %s", seed,
                                run_dir / "all_results.json")
                else:
                    if is_main and run_dir.exists():   # what an interrupted seed left: it runs again from the start
                        logger.info("%s: this seed did not finish; running it again from the start", run_dir)
                        shutil.rmtree(run_dir)
                    barrier(started)
                    run_dir.mkdir(parents=True, exist_ok=True)
                    ctx = replace(started, output_dir=run_dir, compiler=compiler,
                                  log=JsonlLog(run_dir / "log.jsonl", run_id=started.run_id) if is_main else None)
                    result = run_seed(seed=seed, pretrained=args.pretrained_model, spec=spec, data=data,
                                      settings=loop_settings(args, seed=seed), selection=args.selection,
                                      save_model=args.save_model, run_dir=run_dir, ctx=ctx,
                                      script=Path(__file__).name, attention=attention)
                if result is not None:
                    runs.append(result)
                    value = result[f"eval_{metric}"]
                    logger.info("seed %d: %s %s (epoch %s)", seed, metric,
                                "undefined" if value is None else f"{value:.4f}", result["selected_epoch"])
                seed_progress.update()
        if not is_main:
            return {}

        # ---- save: summary.json and the results-table row; report over seeds
        summary = build_summary(spec=spec, pretrained=args.pretrained_model, lineage=reference.provenance.lineage,
                                runs=runs, settings=dict(vars(args)), output_dir=output_dir,
                                train_examples=len(train_records))
        write_json(output_dir / "summary.json", summary)
        if args.results_table:   # one row for this invocation, all or nothing and under a lock
            append_row(args.results_table, RESULTS_TABLE_COLUMNS, results_row(summary, args.max_train_samples,
                                                                               args.selection), flag="--results_table")
        for name in (metric, *companion_metrics(spec)):
            log_over_seeds(spec.name, name, summary[f"eval_{name}"])
        return summary


def log_over_seeds(task: str, metric: str, score: dict) -> None:
    """One line: the metric's mean, std and interval over the seeds (or why there are none)."""
    if score["mean"] is None:
        logger.warning("%s %s: %s", task, metric, score["reason"])
    elif score["n"] > 1:
        logger.info("%s %s over %d runs: %.4f ± %.4f (95%% CI %.4f–%.4f)", task, metric, score["n"],
                    score["mean"], score["std"], score["ci_low"], score["ci_high"])
    else:
        logger.info("%s %s of one run: %.4f (one seed gives no std or confidence interval; use --num_runs)",
                    task, metric, score["mean"])


if __name__ == "__main__":
    run_entry_point(main)

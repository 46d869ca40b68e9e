"""One intermediate QA task: fine-tune, evaluate with the task's official metric, save the
checkpoint the next task (or the target script) starts from (the body of
run_intermediate_source_GPT2.py, after its flags are checked and its output folder held).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from utils.models.checkpoint import Provenance, build_lineage, save_checkpoint
from utils.models.loading import require_positions
from utils.data.loading import same_file_warning
from utils.training.distributed import main_process_first
from utils.run.errors import ToolkitError
from utils.run.outputs import JsonlLog, write_all_results, write_json, write_run_args
from utils.qa.pipeline import (cache_dir_from, evaluate_qa, load_qa_model, load_qa_split, make_objective, qa_features,
                               qa_settings, question_truncation_note, write_predictions)
from utils.data.records import has_training_span
from utils.training.resume import resolve_resume_args, total_steps_may_change
from utils.run.folder import RunFolder
from utils.run.setup import RunStart, start_run
from utils.training.runtime import resolve_attention, set_seed
from utils.data.registry import TaskSpec
from utils.training.checkpoints import read_trainer_state, resolve_resume_dir
from utils.training.compilation import compilation_totals, make_compiler
from utils.training.loop import LoopContext, train
from utils.training.schedule import plan_schedule, speed_choices
from utils.training.args import loop_settings
from utils.training.compute import training_compute

logger = logging.getLogger(__name__)
SCRIPT = "run_intermediate_source_GPT2.py"


def train_and_evaluate(args: argparse.Namespace, spec: TaskSpec, folder: RunFolder | None) -> dict:
    """Train, evaluate and save as the flags say, in the output folder rank 0 holds (None on the
    other ranks). Returns all_results (empty on the other ranks)."""
    with start_run(args, folder) as run:
        return _train_and_evaluate(args, spec, run, Path(args.output_dir))


def _train_and_evaluate(args: argparse.Namespace, spec: TaskSpec, run: RunStart, output_dir: Path) -> dict:
    dist_ctx = run.dist
    resume_dir = resolve_resume_dir(args.resume_from_checkpoint, output_dir) if args.resume_from_checkpoint else None
    resumed = resolve_resume_args(args, resume_dir.parent, what=str(resume_dir)) if resume_dir else None
    settings, loop = qa_settings(args, spec.version_2_with_negative), loop_settings(args)
    set_seed(args.seed)
    note = same_file_warning(args.train_file, args.validation_file)
    if note and dist_ctx.is_main:
        logger.warning(note)
    train_data, train_records, train_subset = load_qa_split(spec, "train", args.train_file, limit=args.max_train_samples,
                                                            objective=args.objective, seed=args.data_seed)
    eval_data, eval_records, eval_subset = load_qa_split(spec, "validation", args.validation_file,
                                                         limit=args.max_eval_samples, objective=args.objective,
                                                         seed=args.data_seed)
    if not train_records or not eval_records:
        raise ToolkitError(f"{spec.name}: {len(train_records)} training questions usable by the {args.objective} "
                           f"objective and {len(eval_records)} evaluation questions; see adapter_stats_*.json")

    loaded = load_qa_model(str(resume_dir or args.model_name), args.objective, args.qa_head if not resume_dir else "keep",
                           resolve_attention(args.attn_implementation))
    parent = read_trainer_state(resume_dir).parent if resume_dir else loaded.provenance.__dict__
    require_positions(args.max_seq_length, loaded.model.config, "--max_seq_length", args.model_name)
    model, tokenizer = loaded.model.to(dist_ctx.device), loaded.tokenizer
    cache = cache_dir_from(args.features_cache_dir)
    features = {}
    with main_process_first(dist_ctx):
        features["train"] = qa_features(train_records, tokenizer, settings, training=True, cache_dir=cache, name=spec.name)
        features["eval"] = qa_features(eval_records, tokenizer, settings, training=False, cache_dir=cache, name=spec.name)

    if dist_ctx.is_main:
        for split, records in (("train", train_records), ("validation", eval_records)):
            note = question_truncation_note(records, tokenizer, settings, f"{spec.name}-{split}")
            if note:
                logger.info(note)
    schedule = plan_schedule(len(features["train"]), loop, dist_ctx.world_size, list(features["train"]["length"]))
    if dist_ctx.is_main:
        write_run_args(output_dir, args, {**schedule.__dict__, "resume": resumed, "world_size": dist_ctx.world_size,
                                          "device": str(dist_ctx.device), "precision": run.precision.name,
                                          **speed_choices(loop, loaded.model.config._attn_implementation, dist_ctx.device),
                                          "train_examples": len(train_records), "train_features": len(features["train"]),
                                          "eval_examples": len(eval_records), "eval_features": len(features["eval"])})
        for name, data in (("train", train_data), ("validation", eval_data)):
            write_json(output_dir / f"adapter_stats_{name}.json", data.stats.to_dict())
        write_json(output_dir / "data_subsets.json", {"train": train_subset.to_dict(), "validation": eval_subset.to_dict()})
        logger.info("%s: %d training questions -> %d features, %d evaluation questions; %d steps of %.4g sequences",
                    spec.name, len(train_records), len(features["train"]), len(eval_records), schedule.total_steps,
                    schedule.effective_batch_size)
    ctx = LoopContext(dist_ctx.device, run.precision, dist_ctx, output_dir,
                      JsonlLog(output_dir / "log.jsonl", run_id=run.run_id) if dist_ctx.is_main else None, run.progress,
                      compiler=make_compiler(loop))

    def lineage(metrics: dict, compute: dict | None = None) -> dict:
        return build_lineage(script=SCRIPT, task=spec.name, objective=args.objective, head=loaded.head, seed=args.seed,
                             parent=Provenance(**parent), metrics=metrics,
                             extra={"compute": compute} if compute else None)

    def evaluate(current) -> dict:
        done = evaluate_qa(current, tokenizer, spec, eval_records, features["eval"], settings,
                           loop.per_device_eval_batch_size, ctx)
        return done[0] if done else {}

    train_metrics = train(model, features["train"], list(features["train"]["length"]), make_objective(settings, tokenizer),
                          loop, ctx, save_model=lambda m, folder: save_checkpoint(m, tokenizer, folder, lineage({})),
                          evaluate=evaluate, resume_from=resume_dir, parent=parent,
                          shape_may_change=total_steps_may_change(resumed))
    evaluated = evaluate_qa(model, tokenizer, spec, eval_records, features["eval"], settings,
                            loop.per_device_eval_batch_size, ctx)
    results: dict = {}
    if dist_ctx.is_main:
        metrics, predictions = evaluated
        # Questions with no training row: answers longer than a window, or not spans of a context
        # longer than one window (generative objective).
        used = set(features["train"]["example_index"])
        compute = training_compute(model, train_metrics["train_passes"], train_metrics["train_tokens"])
        results = {**metrics, **train_metrics, **compute, "train_examples": len(train_records),
                   "train_examples_unused": len(train_records) - len(used),
                   "train_examples_without_located_answer": sum(not has_training_span(train_records[i]) for i in used),
                   "eval_subset": eval_subset.strategy, "data_seed": args.data_seed,
                   "train_features": len(features["train"]),
                   "eval_features": len(features["eval"]), "seed": args.seed,
                   **compilation_totals(ctx.compiler)}
        write_predictions(output_dir, predictions, spec)
        save_checkpoint(model, tokenizer, output_dir, lineage(metrics, compute))
        write_all_results(output_dir, results)
        ctx.log.log({"step": train_metrics["train_steps"], **metrics})
        logger.info("%s: %s", spec.name, {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})
    return results

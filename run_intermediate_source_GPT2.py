"""Fine-tune GPT-2 on one intermediate QA task, evaluate it with the official SQuAD metric, and
write a checkpoint the next task (or the target script) starts from.

    python run_intermediate_source_GPT2.py --dataset_name squad --output_dir ./pretrained_model_squad
    python run_intermediate_source_GPT2.py --dataset_name squad_v2 --model_name ./pretrained_model_squad \\
        --output_dir ./pretrained_model_squad_v2

The recipe (main): flags -> data -> model -> features -> train -> evaluate -> save -> report. Each
task is scored with its own official metric over every question of its evaluation set
(utils.qa.metrics); `--resume_from_checkpoint latest` continues the newest checkpoint-N.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from utils.data.registry import get_task, task_name
from utils.qa.features import QA_HEAD_CHOICES, add_qa_args
from utils.run.flags import add_data_file_args, add_output_args, add_runtime_args
from utils.run.outputs import hold_run_folder
from utils.run.progress import run_entry_point
from utils.training.loop import add_training_args
from utils.training.checkpoints import add_allow_changed_args

SCRIPT = "run_intermediate_source_GPT2.py"
logger = logging.getLogger("run_intermediate_source_GPT2")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_name", type=task_name, default="squad",
                        help="Intermediate QA task: squad, squad_v2, duorc-p, duorc-s, drop, quoref, mlqa_en, ...")
    parser.add_argument("--model_name", type=str, default="gpt2",
                        help="Starting weights: 'gpt2' (Hugging Face Hub) or a checkpoint folder with an LM, QA or "
                             "classification head, e.g. the --output_dir of the previous task.")
    parser.add_argument("--qa_head", type=str, default="keep", choices=QA_HEAD_CHOICES,
                        help="When --model_name already has a QA head: keep it (default) or start a fresh one.")
    add_output_args(parser)
    add_data_file_args(parser)
    add_training_args(parser, learning_rate=3e-5, batch_size=12, epochs=2.0, weight_decay=0.01, warmup_ratio=0.06)
    add_qa_args(parser)
    add_allow_changed_args(parser)
    add_runtime_args(parser)
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Train, evaluate and save as the flags say; returns all_results (empty on ranks other than 0)."""
    # ---------------------------------------------------------------- flags
    parser = build_parser()
    args = parser.parse_args(argv)
    spec = get_task(args.dataset_name)
    if spec.kind != "qa":
        parser.error(f"--dataset_name {spec.name} is a {spec.kind} task; this script trains QA tasks "
                     "(use run_target_task_GPT2_sst2_multiple.py for classification)")
    output_dir = Path(args.output_dir)
    with hold_run_folder(output_dir, overwrite=args.overwrite_output_dir,
                         resuming=bool(args.resume_from_checkpoint)) as folder:
        # Lazy imports for start-up time: transformers and datasets load only now, so --help, a bad
        # flag or a busy folder is answered without waiting for them.
        from utils.data.loading import same_file_warning
        from utils.data.records import has_training_span
        from utils.models.checkpoint import Provenance, build_lineage, save_checkpoint
        from utils.models.loading import require_positions
        from utils.qa.features import qa_settings
        from utils.qa.pipeline import (cache_dir_from, evaluate_qa, load_qa_model, load_qa_split, make_objective,
                                       qa_features, question_truncation_note, write_predictions)
        from utils.run.errors import ToolkitError
        from utils.run.outputs import JsonlLog, write_all_results, write_json, write_run_args
        from utils.training.checkpoints import (read_trainer_state, resolve_resume_args, resolve_resume_dir,
                                                total_steps_may_change)
        from utils.training.loop import loop_settings, make_compiler, plan_schedule, speed_choices, train
        from utils.training.runtime import (compilation_totals, main_process_first, resolve_attention, set_seed,
                                            start_run, training_compute)

        with start_run(args, folder) as run:
            resume_dir = resolve_resume_dir(args.resume_from_checkpoint, output_dir) \
                if args.resume_from_checkpoint else None
            args, resumed = resolve_resume_args(args, resume_dir.parent, what=str(resume_dir)) if resume_dir \
                else (args, None)
            settings, loop = qa_settings(args, spec.version_2_with_negative), loop_settings(args)
            set_seed(args.seed)

            # ---------------------------------------------------------------- data
            note = same_file_warning(args.train_file, args.validation_file)
            if note and run.is_main:
                logger.warning(note)
            train_data, train_records, train_subset = load_qa_split(
                spec, "train", args.train_file, limit=args.max_train_samples, objective=args.objective,
                seed=args.data_seed)
            eval_data, eval_records, eval_subset = load_qa_split(
                spec, "validation", args.validation_file, limit=args.max_eval_samples, objective=args.objective,
                seed=args.data_seed)
            if not train_records or not eval_records:
                raise ToolkitError(f"{spec.name}: {len(train_records)} training questions usable by the "
                                   f"{args.objective} objective and {len(eval_records)} evaluation questions; see "
                                   "adapter_stats_*.json")

            # ---------------------------------------------------------------- model
            # A resumed run reloads its weights from the checkpoint, whose lineage names the original parent.
            loaded = load_qa_model(str(resume_dir or args.model_name), args.objective,
                                   "keep" if resume_dir else args.qa_head, resolve_attention(args.attn_implementation))
            parent = read_trainer_state(resume_dir).parent if resume_dir else loaded.provenance.__dict__
            require_positions(args.max_seq_length, loaded.model.config, "--max_seq_length", args.model_name)
            model, tokenizer = loaded.model.to(run.device), loaded.tokenizer

            # ---------------------------------------------------------------- features
            cache = cache_dir_from(args.features_cache_dir)
            with main_process_first(run):
                train_features = qa_features(train_records, tokenizer, settings, training=True, cache_dir=cache,
                                             name=spec.name)
                eval_features = qa_features(eval_records, tokenizer, settings, training=False, cache_dir=cache,
                                            name=spec.name)
            train_lengths = list(train_features["length"])
            schedule = plan_schedule(len(train_features), loop, run.world_size, train_lengths)
            if run.is_main:
                for split, records in (("train", train_records), ("validation", eval_records)):
                    note = question_truncation_note(records, tokenizer, settings, f"{spec.name}-{split}")
                    if note:
                        logger.info(note)
                write_run_args(output_dir, args, {
                    **schedule.__dict__, "resume": resumed, "world_size": run.world_size, "device": str(run.device),
                    "precision": run.precision.name,
                    **speed_choices(loop, loaded.model.config._attn_implementation, run.device),
                    "train_examples": len(train_records), "train_features": len(train_features),
                    "eval_examples": len(eval_records), "eval_features": len(eval_features)})
                for split, data in (("train", train_data), ("validation", eval_data)):
                    write_json(output_dir / f"adapter_stats_{split}.json", data.stats.to_dict())
                write_json(output_dir / "data_subsets.json",
                           {"train": train_subset.to_dict(), "validation": eval_subset.to_dict()})
                logger.info("%s: %d training questions -> %d features, %d evaluation questions; %d steps of %.4g "
                            "sequences", spec.name, len(train_records), len(train_features), len(eval_records),
                            schedule.total_steps, schedule.effective_batch_size)

            # ---------------------------------------------------------------- train
            ctx = replace(run, output_dir=output_dir, compiler=make_compiler(loop),
                          log=JsonlLog(output_dir / "log.jsonl", run_id=run.run_id) if run.is_main else None)

            def lineage(metrics: dict, compute: dict | None = None) -> dict:
                return build_lineage(script=SCRIPT, task=spec.name, objective=args.objective, head=loaded.head,
                                     seed=args.seed, parent=Provenance(**parent), metrics=metrics,
                                     extra={"compute": compute} if compute else None)

            def evaluate(current) -> dict:
                done = evaluate_qa(current, tokenizer, spec, eval_records, eval_features, settings,
                                   loop.per_device_eval_batch_size, ctx)
                return done[0] if done else {}

            train_metrics = train(model, train_features, train_lengths, make_objective(settings, tokenizer), loop, ctx,
                                  save_model=lambda m, at: save_checkpoint(m, tokenizer, at, lineage({})),
                                  evaluate=evaluate, resume_from=resume_dir, parent=parent,
                                  shape_may_change=total_steps_may_change(resumed))

            # ---------------------------------------------------------------- evaluate
            evaluated = evaluate_qa(model, tokenizer, spec, eval_records, eval_features, settings,
                                    loop.per_device_eval_batch_size, ctx)
            if not run.is_main:
                return {}
            metrics, predictions = evaluated

            # ---------------------------------------------------------------- save
            compute = training_compute(model, train_metrics["train_passes"], train_metrics["train_tokens"])
            # Questions with no training row: answers longer than a window, or not spans of a context
            # longer than one window (generative objective).
            used = set(train_features["example_index"])
            results = {**metrics, **train_metrics, **compute, "train_examples": len(train_records),
                       "train_examples_unused": len(train_records) - len(used),
                       "train_examples_without_located_answer": sum(not has_training_span(train_records[i])
                                                                    for i in used),
                       "eval_subset": eval_subset.strategy, "data_seed": args.data_seed,
                       "train_features": len(train_features), "eval_features": len(eval_features), "seed": args.seed,
                       **compilation_totals(ctx.compiler)}
            write_predictions(output_dir, predictions, spec)
            save_checkpoint(model, tokenizer, output_dir, lineage(metrics, compute))
            write_all_results(output_dir, results)

            # ---------------------------------------------------------------- report
            ctx.log.log({"step": train_metrics["train_steps"], **metrics})
            logger.info("%s: %s", spec.name, {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})
            return results


if __name__ == "__main__":
    run_entry_point(main)

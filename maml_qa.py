"""Reptile (first-order MAML) across QA tasks, or first-order MAML or multi-task training on the same
task batches (--algorithm); writes a checkpoint the target script reads.

    python maml_qa.py --tasks 'squad,squad_v2,duorc;SelfRC' [--algorithm reptile|fomaml|multitask]
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import fields, replace
from pathlib import Path

from utils.data.registry import TaskSpec, files_by_task, parse_task_list, shared_data_warnings
from utils.meta.algorithms import STEPS, split_support_query
from utils.meta.evaluation import AdaptationSettings, HeldOutTask, evaluate_adaptation
from utils.meta.training import MetaSettings, TaskStream, meta_train, plan_to_budget
from utils.models.checkpoint import Provenance, build_lineage, save_checkpoint
from utils.models.loading import require_positions
from utils.qa.features import add_qa_args, qa_settings
from utils.qa.pipeline import cache_dir_from, load_qa_model, load_qa_split, make_objective, qa_features
from utils.run.errors import ToolkitError
from utils.run.flags import (LEARNING_RATE, add_data_seed_arg, add_output_args, add_runtime_args, add_task_file_arg,
                             name_path, number)
from utils.run.outputs import (JsonlLog, hold_run_folder, read_json_object, write_all_results, write_json,
                               write_run_args)
from utils.run.progress import run_entry_point
from utils.training.checkpoints import (TrainState, add_allow_changed_args, read_trainer_state, resolve_resume_args,
                                        resolve_resume_dir)
from utils.training.loop import add_eval_batch_size_arg
from utils.training.optim import OPTIMIZERS
from utils.training.runtime import (RunContext, main_process_first, non_embedding_parameters, set_seed, start_run,
                                    stream_seed, training_compute, training_flops)

logger = logging.getLogger("maml_qa")
COMPUTE_UNITS = ("tokens", "flops", "passes")


def step_list(text: str) -> list[int]:
    """argparse type: comma-separated positive integers, sorted."""
    try:
        steps = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not steps or steps[0] <= 0:
        raise argparse.ArgumentTypeError(f"expected positive step counts, got {text!r}")
    return steps


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=str, default="squad,squad_v2,duorc;SelfRC",
                        help="Comma-separated meta-training QA tasks (registry names or the original spellings).")
    parser.add_argument("--model_name", type=str, default="gpt2", help="Starting weights: 'gpt2' or a checkpoint folder.")
    parser.add_argument("--algorithm", choices=tuple(STEPS), default="reptile",
                        help="reptile: θ ← θ + ε(mean adapted weights − θ); fomaml: first-order MAML (a meta-optimizer "
                             "step with the query gradients at the adapted weights); multitask: k inner-optimizer steps "
                             "on θ over the same task batches.")
    parser.add_argument("--meta_lr", type=LEARNING_RATE, default=None,
                        help="fomaml: the outer (meta) optimizer's learning rate (default: --inner_lr).")
    parser.add_argument("--meta_optimizer", choices=OPTIMIZERS, default=None,
                        help="fomaml: the outer optimizer, whose state runs on (default: --inner_optimizer's kind).")
    parser.add_argument("--query_fraction", type=number(float, minimum=0, maximum=1), default=0.2,
                        help="fomaml: the share of each task's questions kept apart as its query set.")
    parser.add_argument("--out", type=str, default="reptile", help="Run name: the model goes to <log_dir>/qa_tasks_<out>/model.")
    parser.add_argument("--log_dir", type=str, default="logs", help="Folder of the run folder qa_tasks_<out>.")
    add_output_args(parser, required=False,
                    output_help="Write the run and its checkpoint here instead of <log_dir>/qa_tasks_<out>[/model].")
    parser.add_argument("--num_examples", type=number(int, minimum=1), default=None,
                        help="Training questions per task (default all): a document-stratified subset (--data_seed).")
    parser.add_argument("--num_train_iterations", type=number(int, minimum=1), default=None,
                        help="Outer (meta) steps (default 1000, or what --match_compute sets).")
    parser.add_argument("--match_compute", type=str, default=None,
                        help="The folder of another training run (maml_qa.py or run_intermediate_source_GPT2.py): "
                             "train until this run's compute (--match_compute_by) is within one batch of that run's.")
    parser.add_argument("--match_compute_by", choices=COMPUTE_UNITS, default="tokens",
                        help="What --match_compute matches: real training tokens, FLOPs (6·N·tokens, N the "
                             "non-embedding parameters), or forward/backward passes.")
    parser.add_argument("--num_inner_steps", type=number(int, minimum=1), default=5, help="Inner steps k per task.")
    parser.add_argument("--inner_lr", type=LEARNING_RATE, default=3e-5, help="Inner-loop learning rate (typical: 1e-5 to 1e-3).")
    parser.add_argument("--outer_lr", type=number(float, minimum=0, maximum=1), default=1.0,
                        help="Reptile's outer step size ε at the first step (1: θ moves to the mean adapted weights); "
                             "unused by fomaml and multitask.")
    parser.add_argument("--outer_lr_final", type=number(float, minimum=0, maximum=1), default=0.0,
                        help="ε at the end; ε falls linearly: outer_lr·(1 − t/T) + outer_lr_final·t/T.")
    parser.add_argument("--meta_batch_size", type=number(int, minimum=1), default=4, help="Tasks per outer step.")
    parser.add_argument("--inner_batch_size", type=number(int, minimum=1), default=8, help="Sequences per inner step.")
    parser.add_argument("--inner_optimizer", choices=OPTIMIZERS, default="adam",
                        help="adam (β1 = 0, as in the Reptile paper), adamw, or sgd.")
    parser.add_argument("--inner_opt_state", choices=("reset", "carry"), default="carry",
                        help="carry: one inner optimizer whose state runs on across tasks, as the OpenAI and "
                             "learn2learn code do (per process); reset: a fresh one per task (N processes = one).")
    parser.add_argument("--sampling_temperature", type=number(float, above=0), default=2.0,
                        help="τ of --task_sampling temperature: task i is drawn with probability ∝ n_i^(1/τ), n_i "
                             "its training rows (τ = 1: proportional; large τ: nearly uniform).")
    parser.add_argument("--task_sampling", choices=("uniform", "proportional", "temperature"), default="proportional",
                        help="Draw tasks uniformly, in proportion to their training data, or with a temperature "
                             "(--sampling_temperature); the same draw for every --algorithm.")
    add_task_file_arg(parser, "--tasks or --eval_tasks (its training data)")
    parser.add_argument("--eval_file", type=name_path, action="append", default=[],
                        help="NAME=PATH: local validation file of a task of --eval_tasks (repeatable).")
    parser.add_argument("--eval_tasks", type=str, default="",
                        help="Comma-separated held-out tasks to evaluate on; none may be among --tasks (a task "
                             "sharing data with a training task is named in a warning).")
    parser.add_argument("--eval_every", type=number(int, minimum=1), default=None, help="Evaluate every N outer steps (and at the end).")
    parser.add_argument("--eval_adapt_steps", type=step_list, default=[20],
                        help="Comma-separated adaptation step counts (e.g. 5,20,50): at each evaluation, F1 of every "
                             "held-out task from θ and after that many steps on its training data (θ restored).")
    add_eval_batch_size_arg(parser)
    parser.add_argument("--max_eval_samples", type=number(int, minimum=1), default=200,
                        help="Validation questions per evaluation task: a document-stratified subset (--data_seed).")
    parser.add_argument("--save_every", type=number(int, minimum=1), default=None, help="Write checkpoint-N every N outer steps.")
    parser.add_argument("--resume_from_checkpoint", type=str, default=None,
                        help="Continue a run from a checkpoint-N folder, or 'latest' for the newest in the run folder.")
    parser.add_argument("--max_grad_norm", type=number(float, minimum=0), default=1.0, help="Inner gradient clipping (0: off).")
    parser.add_argument("--debug", action="store_true", help="A smoke run: 3 outer steps, 16 questions per task, 2 inner steps.")
    add_data_seed_arg(parser)
    add_qa_args(parser)
    add_allow_changed_args(parser)
    add_runtime_args(parser)
    return parser


def read_budget(folder: str) -> dict[str, float | None]:
    """The training compute (passes, tokens, FLOPs or None) another run recorded in its all_results.json."""
    path = Path(folder) / "all_results.json"
    results = read_json_object(path, "give --match_compute the folder of a finished run")
    if results is None:
        raise ToolkitError(f"--match_compute {folder}: no all_results.json there (give the folder of a finished "
                           "maml_qa.py or run_intermediate_source_GPT2.py run)")
    if not all(isinstance(results.get(k), int) for k in ("train_passes", "train_tokens")):
        raise ToolkitError(f"--match_compute {path}: no train_passes / train_tokens (a run from before compute was "
                           "recorded); run it again, or set --num_train_iterations yourself")
    flops = results.get("train_flops")
    return {"passes": results["train_passes"], "tokens": results["train_tokens"],
            "flops": float(flops) if isinstance(flops, (int, float)) else None}


def check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list, list, dict, dict]:
    """The meta-training and held-out tasks and their local files; unworkable flag combinations are parser errors."""
    specs = parse_task_list(args.tasks)
    eval_specs = parse_task_list(args.eval_tasks) if args.eval_tasks.strip() else []
    for spec in [*specs, *eval_specs]:
        if spec.kind != "qa":
            parser.error(f"{spec.name} is a {spec.kind} task; Reptile here runs across QA tasks")
    overlap = [spec.name for spec in eval_specs if spec.name in {trained.name for trained in specs}]
    if overlap:
        parser.error(f"--eval_tasks {','.join(overlap)} also in --tasks: evaluation tasks must be held out; "
                     "remove them from one of the two lists")
    for message in shared_data_warnings(specs, eval_specs):
        logger.warning(message)
    if args.meta_batch_size > len(specs):
        logger.warning("--meta_batch_size %d with %d tasks: tasks are drawn with replacement, so every outer step "
                       "adapts some task more than once; use --meta_batch_size %d or fewer", args.meta_batch_size,
                       len(specs), len(specs))
    if args.match_compute and (args.num_train_iterations is not None or args.debug):
        parser.error("--match_compute sets the number of outer steps; leave out --num_train_iterations and --debug")
    if not args.match_compute and args.match_compute_by != "tokens":
        parser.error("--match_compute_by needs --match_compute")
    return (specs, eval_specs, files_by_task(args.task_file, [*specs, *eval_specs], "--task_file"),
            files_by_task(args.eval_file, eval_specs, "--eval_file"))


def load_task_streams(args: argparse.Namespace, specs: list[TaskSpec], eval_specs: list[TaskSpec],
                      train_files: dict[str, str], eval_files: dict[str, str], tokenizer,
                      run: RunContext) -> tuple[dict, dict, dict, dict, dict]:
    """(support streams, FOMAML query streams, held-out tasks, data subsets, adapter statistics)."""
    settings = qa_settings(args, version_2_with_negative=False)
    per_task = 16 if args.debug else args.num_examples
    cache = cache_dir_from(args.features_cache_dir)
    streams, query_streams, held_out, subsets, adapter_stats = {}, {}, {}, {}, {}

    def split(spec: TaskSpec, name: str, limit: int | None) -> list[dict]:
        data, records, subsets[f"{spec.name}/{name}"] = load_qa_split(
            spec, name, (train_files if name == "train" else eval_files).get(spec.name), limit=limit,
            objective=args.objective, seed=args.data_seed,
            local_hint="--task_file NAME=PATH" if name == "train" else "--eval_file NAME=PATH")
        adapter_stats[f"{spec.name}_{name}"] = data.stats.to_dict()
        return records

    def features(spec: TaskSpec, records: list[dict], training: bool):
        return qa_features(records, tokenizer, settings, training=training, cache_dir=cache, name=spec.name)

    with main_process_first(run):  # rank 0 tokenizes (and caches) first
        for spec in specs:
            rows = features(spec, split(spec, "train", per_task), True)
            if args.algorithm == "fomaml":
                rows, query = split_support_query(rows, args.query_fraction,
                                                  stream_seed(args.data_seed, "support-query", spec.name))
                query_streams[spec.name] = TaskStream(query, args.inner_batch_size,
                                                      seed=stream_seed(args.seed, "meta-query", spec.name))
            streams[spec.name] = TaskStream(rows, args.inner_batch_size,
                                            seed=stream_seed(args.seed, "meta-train", spec.name))
        for spec in eval_specs:
            support = features(spec, split(spec, "train", per_task), True)
            examples = split(spec, "validation", args.max_eval_samples)
            stream = TaskStream(support, args.inner_batch_size, seed=stream_seed(args.seed, "held-out-support", spec.name))
            held_out[spec.name] = HeldOutTask(spec, stream, examples, features(spec, examples, False))
    return streams, query_streams, held_out, subsets, adapter_stats


def meta_settings(args: argparse.Namespace, budget: dict | None, parameters: int, streams: dict,
                  query_streams: dict, log: bool) -> MetaSettings:
    """The outer loop's settings; with --match_compute, the outer steps (and the cut of the last one)
    that bring this run's compute nearest the budget (FLOPs matched as tokens, budget / (6·N))."""
    iterations, inner_steps = (3, 2) if args.debug else (args.num_train_iterations or 1000, args.num_inner_steps)
    values = {f.name: getattr(args, f.name) for f in fields(MetaSettings) if hasattr(args, f.name)}
    meta = MetaSettings(**{**values, "num_train_iterations": iterations, "num_inner_steps": inner_steps})
    if budget is None:
        return meta
    unit = args.match_compute_by
    target = budget["flops"] / training_flops(parameters, 1) if unit == "flops" else budget[unit]
    steps, cut, planned = plan_to_budget(streams, meta, target, "passes" if unit == "passes" else "tokens",
                                         query_streams or None)
    if log:
        logger.info("--match_compute %s: %s %s recorded there; %d outer steps here%s, %s planned", args.match_compute,
                    f"{budget[unit]:,.0f}", unit, steps, f" (the last one cut to inner steps {list(cut)})" if cut else "",
                    f"{planned:,.0f} {'passes' if unit == 'passes' else 'tokens'}")
    return replace(meta, num_train_iterations=steps, final_inner_steps=cut)


def compute_match(budget: dict, unit: str, results: dict, folder: str) -> dict:
    """all_results.json's record of the match: what was matched, the budget, and achieved over budget
    in each unit (None where the budget run did not record it). Warns when the matched quantity is
    off by more than one batch (the run's mean per pass)."""
    achieved = {key: results[f"train_{key}"] for key in COMPUTE_UNITS}
    ratio = {key: (achieved[key] / budget[key] if budget[key] else None) for key in COMPUTE_UNITS}
    one_batch = achieved[unit] / max(1, achieved["passes"])
    if budget[unit] is not None and abs(achieved[unit] - budget[unit]) > one_batch:
        logger.warning("--match_compute: %s %s here against %s in %s, more than one batch apart", f"{achieved[unit]:,.0f}",
                       unit, f"{budget[unit]:,.0f}", folder)
    return {"by": unit, "run": str(Path(folder).resolve()), "budget": dict(budget), "ratio": ratio}


def main(argv: list[str] | None = None) -> dict:
    # ---------------------------------------------------------------- flags
    parser = build_parser()
    args = parser.parse_args(argv)
    specs, eval_specs, train_files, eval_files = check_flags(parser, args)
    budget = read_budget(args.match_compute) if args.match_compute else None
    if budget is not None and budget[args.match_compute_by] is None:
        parser.error(f"--match_compute {args.match_compute}: that run recorded no train_{args.match_compute_by}; "
                     "use --match_compute_by tokens or passes")
    run_dir = Path(args.output_dir) if args.output_dir else Path(args.log_dir) / f"qa_tasks_{args.out}"
    model_dir = run_dir if args.output_dir else run_dir / "model"
    with hold_run_folder(run_dir, overwrite=args.overwrite_output_dir,
                         resuming=bool(args.resume_from_checkpoint)) as folder, start_run(args, folder) as run:
        resume_dir = resolve_resume_dir(args.resume_from_checkpoint, run_dir) if args.resume_from_checkpoint else None
        args, resumed = resolve_resume_args(args, resume_dir.parent, what=str(resume_dir)) if resume_dir else (args, None)
        set_seed(args.seed)
        if args.inner_opt_state == "carry" and args.algorithm != "multitask" and run.enabled and run.is_main:
            logger.warning("--inner_opt_state carry under %d processes: each carries its own inner optimizer state, "
                           "so θ differs from a one-process run (reset makes them agree)", run.world_size)
        # ---------------------------------------------------------------- model
        loaded = load_qa_model(str(resume_dir or args.model_name), args.objective, "keep")
        require_positions(args.max_seq_length, loaded.model.config, "--max_seq_length", args.model_name)
        model, tokenizer = loaded.model.to(run.device), loaded.tokenizer
        parent = read_trainer_state(resume_dir).parent if resume_dir else loaded.provenance.__dict__
        # ---------------------------------------------------------------- data and features
        streams, query_streams, held_out, subsets, adapter_stats = load_task_streams(
            args, specs, eval_specs, train_files, eval_files, tokenizer, run)
        objective = make_objective(qa_settings(args, version_2_with_negative=False), tokenizer)
        meta = meta_settings(args, budget, non_embedding_parameters(model), streams, query_streams, run.is_main)
        adaptation = AdaptationSettings(tuple(args.eval_adapt_steps), args.inner_optimizer, args.inner_lr,
                                        args.max_grad_norm, args.per_device_eval_batch_size)

        def evaluate(step: int, restore=None) -> dict:
            return evaluate_adaptation(model, tokenizer, objective, held_out,
                                       lambda spec: qa_settings(args, spec.version_2_with_negative), adaptation, run,
                                       restore)

        def save(target: Path, state: TrainState) -> None:
            lineage = build_lineage(script="maml_qa.py", task="+".join(s.name for s in specs), objective=args.objective,
                                    head=loaded.head, seed=args.seed, parent=Provenance(**parent),
                                    extra={"meta_training_tasks": [s.name for s in specs], "algorithm": args.algorithm,
                                           "compute": training_compute(model, state.passes, int(state.tokens_seen))})
            save_checkpoint(model, tokenizer, target, lineage)

        if run.is_main:
            write_run_args(run_dir, args, {"tasks": [s.name for s in specs], "eval_tasks": list(held_out),
                                           "resume": resumed, "num_train_iterations": meta.num_train_iterations,
                                           "final_inner_steps": meta.final_inner_steps, "num_inner_steps": meta.num_inner_steps,
                                           "training_rows": {n: len(s.lengths) for n, s in streams.items()},
                                           "query_rows": {n: len(s.lengths) for n, s in query_streams.items()},
                                           "world_size": run.world_size, "model_dir": str(model_dir)})
            write_json(run_dir / "data_subsets.json", {name: info.to_dict() for name, info in subsets.items()})
            for name, stats in adapter_stats.items():   # meta-training tasks and held-out ones alike
                write_json(run_dir / f"adapter_stats_{name}.json", stats)
        # ---------------------------------------------------------------- meta-train
        ctx = replace(run, output_dir=run_dir,
                      log=JsonlLog(run_dir / "meta_log.jsonl", run_id=run.run_id) if run.is_main else None)
        state = meta_train(model, objective, streams, meta, ctx, query_streams=query_streams or None,
                           state=TrainState(parent=parent), resume_from=resume_dir,
                           evaluate=evaluate if held_out else None, save_model=save)
        # ---------------------------------------------------------------- evaluate
        final = evaluate(state.global_step) if held_out else {}
        if not run.is_main:
            return {}
        # ---------------------------------------------------------------- save and report
        save(model_dir, state)
        results = {"algorithm": args.algorithm, "meta_steps": state.global_step,
                   "tasks": ",".join(s.name for s in specs), "seed": args.seed,
                   **training_compute(model, state.passes, int(state.tokens_seen))}
        if budget is not None:   # how near the matched run this one came
            results["compute_match"] = compute_match(budget, args.match_compute_by, results, args.match_compute)
        results.update({f"eval_{name}_{key}": value for name, values in final.items() for key, value in values.items()})
        write_all_results(run_dir, results, records=("compute_match",))
        write_json(run_dir / "meta_final.json", {"eval": final, "model_dir": str(model_dir.resolve())})
        logger.info("%s over %s: %d outer steps, %d forward/backward passes, %d tokens; model in %s; %s",
                    args.algorithm, args.tasks, state.global_step, state.passes, state.tokens_seen, model_dir, final)
        return results


if __name__ == "__main__":
    run_entry_point(main)

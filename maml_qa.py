"""Reptile (first-order MAML) across QA tasks; writes a checkpoint the target script reads.

    python maml_qa.py --tasks 'squad,squad_v2,duorc;SelfRC'
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from utils.checkpoint import Provenance, build_lineage, require_positions, save_checkpoint
from utils.cli import (add_data_seed_arg, add_runtime_args, files_by_task, learning_rate, name_path, non_negative_float,
                       positive_int, run_entry_point, unit_interval_float)
from utils.distributed import barrier
from utils.meta_training import (SAMPLING_CHOICES, MetaSettings, MetaState, TaskStream, adapt, meta_train,
                                 read_meta_state, write_meta_state)
from utils.outputs import JsonlLog, write_all_results, write_json, write_run_args
from utils.qa_pipeline import (add_qa_args, cache_dir_from, evaluate_qa, load_qa_model, load_qa_split, make_objective,
                               qa_features, qa_settings)
from utils.reptile import INNER_OPTIMIZERS, INNER_STATE_CHOICES, make_inner_optimizer, meta_parameters
from utils.resume import add_allow_changed_args, resolve_resume_args
from utils.run_setup import RunStart, start_run
from utils.runtime import set_seed
from utils.tasks import parse_task_list, shared_data_warnings

logger = logging.getLogger("maml_qa")
SCRIPT = "maml_qa.py"


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
    parser.add_argument("--out", type=str, default="reptile", help="Run name: the model goes to <log_dir>/qa_tasks_<out>/model.")
    parser.add_argument("--log_dir", type=str, default="logs", help="Folder of the run folder qa_tasks_<out>.")
    parser.add_argument("--output_dir", type=str, default=None,
                        help="Write the run and its checkpoint here instead of <log_dir>/qa_tasks_<out>[/model].")
    parser.add_argument("--overwrite_output_dir", action="store_true", help="Allow writing into a non-empty run folder.")
    parser.add_argument("--num_examples", type=positive_int, default=None,
                        help="Training questions per task (default all): a random subset drawn with --data_seed, "
                             "stratified by document.")
    parser.add_argument("--num_train_iterations", type=positive_int, default=1000, help="Outer (meta) steps.")
    parser.add_argument("--num_inner_steps", type=positive_int, default=5, help="Inner steps k per task.")
    parser.add_argument("--inner_lr", type=learning_rate, default=3e-5,
                        help="Inner-loop learning rate, at most 1 (typical: 1e-5 to 1e-3).")
    parser.add_argument("--outer_lr", type=unit_interval_float, default=1.0,
                        help="Reptile's outer step size ε at the first step, in [0, 1]: θ ← θ + ε·(mean adapted "
                             "weights − θ), so 1 moves θ all the way to the tasks' adapted weights and more would "
                             "step past them.")
    parser.add_argument("--outer_lr_final", type=unit_interval_float, default=0.0,
                        help="ε at the end, in [0, 1]; ε falls linearly: "
                             "outer_lr·(1 − t/T) + outer_lr_final·t/T.")
    parser.add_argument("--meta_batch_size", type=positive_int, default=4, help="Tasks per outer step.")
    parser.add_argument("--inner_batch_size", type=positive_int, default=8, help="Sequences per inner step.")
    parser.add_argument("--inner_optimizer", choices=INNER_OPTIMIZERS, default="adam",
                        help="adam (β1 = 0, as in the Reptile paper), adamw, or sgd.")
    parser.add_argument("--inner_opt_state", choices=INNER_STATE_CHOICES, default="carry",
                        help="carry (default): one inner optimizer whose state runs on across tasks, as the OpenAI "
                             "and learn2learn code do (per process under torchrun); reset: a fresh one per task, so "
                             "that N processes give the result of one. See benchmarks/reptile_inner_state.py.")
    parser.add_argument("--task_sampling", choices=SAMPLING_CHOICES, default="proportional",
                        help="Draw tasks uniformly or in proportion to their training data.")
    parser.add_argument("--task_file", type=name_path, action="append", default=[],
                        help="NAME=PATH: local training file of a task of --tasks or --eval_tasks (repeatable; any "
                             "format the adapters read; a file for another task is an error).")
    parser.add_argument("--eval_file", type=name_path, action="append", default=[],
                        help="NAME=PATH: local validation file of a task of --eval_tasks (repeatable).")
    parser.add_argument("--eval_tasks", type=str, default="",
                        help="Comma-separated held-out tasks to evaluate on; none may be among --tasks (a task "
                             "sharing data with a training task is named in a warning).")
    parser.add_argument("--eval_every", type=positive_int, default=None, help="Evaluate every N outer steps (and at the end).")
    parser.add_argument("--eval_adapt_steps", type=step_list, default=[20],
                        help="Comma-separated adaptation step counts (e.g. 5,20,50): at each evaluation, F1 of every "
                             "held-out task from θ and after that many steps on its training data (θ restored).")
    parser.add_argument("--max_eval_samples", type=positive_int, default=200,
                        help="Validation questions per evaluation task: a random subset drawn with --data_seed, "
                             "stratified by document (the ids go to data_subsets.json).")
    parser.add_argument("--save_every", type=positive_int, default=None, help="Write checkpoint-N every N outer steps.")
    parser.add_argument("--resume_from_checkpoint", type=str, default=None, help="A checkpoint-N folder of this script.")
    parser.add_argument("--max_grad_norm", type=non_negative_float, default=1.0, help="Inner gradient clipping (0: off).")
    parser.add_argument("--debug", action="store_true",
                        help="A smoke run: 3 outer steps, 16 questions per task, 2 inner steps.")
    add_data_seed_arg(parser)
    add_qa_args(parser)
    add_allow_changed_args(parser)
    add_runtime_args(parser)
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
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
    train_files = files_by_task(args.task_file, [*specs, *eval_specs], "--task_file")
    eval_files = files_by_task(args.eval_file, eval_specs, "--eval_file")
    iterations, per_task, inner_steps = (3, 16, 2) if args.debug else (args.num_train_iterations, args.num_examples,
                                                                      args.num_inner_steps)
    run_dir = Path(args.output_dir) if args.output_dir else Path(args.log_dir) / f"qa_tasks_{args.out}"
    with start_run(args, run_dir, resuming=bool(args.resume_from_checkpoint)) as run:
        return meta_train_and_evaluate(args, run, run_dir, specs=specs, eval_specs=eval_specs,
                                       train_files=train_files, eval_files=eval_files, iterations=iterations,
                                       per_task=per_task, inner_steps=inner_steps)


def meta_train_and_evaluate(args: argparse.Namespace, run: RunStart, run_dir: Path, *, specs: list, eval_specs: list,
                            train_files: dict[str, str], eval_files: dict[str, str], iterations: int,
                            per_task: int | None, inner_steps: int) -> dict:
    """The run itself, inside the held run folder."""
    dist_ctx, precision, progress = run.dist, run.precision, run.progress
    model_dir = run_dir if args.output_dir else run_dir / "model"
    resume_dir = Path(args.resume_from_checkpoint) if args.resume_from_checkpoint else None
    resumed = resolve_resume_args(args, resume_dir.parent, what=str(resume_dir)) if resume_dir else None
    settings = qa_settings(args, version_2_with_negative=False)
    set_seed(args.seed)
    if args.inner_opt_state == "carry" and dist_ctx.world_size > 1 and dist_ctx.is_main:
        logger.warning("--inner_opt_state carry under %d processes: each carries its own inner optimizer state, so "
                       "θ differs from a one-process run; --inner_opt_state reset makes them agree",
                       dist_ctx.world_size)
    state = read_meta_state(resume_dir) if resume_dir else MetaState()

    loaded = load_qa_model(str(resume_dir or args.model_name), args.objective, "keep")
    require_positions(args.max_seq_length, loaded.model.config, "--max_seq_length", args.model_name)
    model, tokenizer = loaded.model.to(dist_ctx.device), loaded.tokenizer
    parent = state.parent if resume_dir else loaded.provenance.__dict__
    cache = cache_dir_from(args.features_cache_dir)
    streams, eval_data, subsets = {}, {}, {}
    for rank_turn in (True, False):  # rank 0 tokenizes (and caches) first
        if dist_ctx.is_main == rank_turn:
            def split(spec, name: str, files: dict[str, str], limit: int | None) -> list[dict]:
                _, records, subsets[f"{spec.name}/{name}"] = load_qa_split(
                    spec, name, files.get(spec.name), limit=limit, objective=args.objective, seed=args.data_seed,
                    local_hint="--task_file NAME=PATH" if name == "train" else "--eval_file NAME=PATH")
                return records

            for index, spec in enumerate(specs):
                rows = qa_features(split(spec, "train", train_files, per_task), tokenizer, settings, training=True,
                                   cache_dir=cache, name=spec.name)
                streams[spec.name] = TaskStream(rows, args.inner_batch_size, seed=args.seed * 1000 + index)
            for spec in eval_specs:
                support = qa_features(split(spec, "train", train_files, per_task), tokenizer, settings, training=True,
                                      cache_dir=cache, name=spec.name)
                examples = split(spec, "validation", eval_files, args.max_eval_samples)
                eval_data[spec.name] = (spec, TaskStream(support, args.inner_batch_size, seed=args.seed + 7), examples,
                                        qa_features(examples, tokenizer, settings, training=False, cache_dir=cache,
                                                    name=spec.name))
        barrier(dist_ctx)
    objective = make_objective(settings, tokenizer)
    from utils.training import LoopContext  # evaluation reuses the prediction helper of the training loop
    ctx = LoopContext(dist_ctx.device, precision, dist_ctx, run_dir, None, progress)
    meta = MetaSettings(iterations, args.meta_batch_size, inner_steps, args.inner_batch_size, args.inner_lr,
                        args.outer_lr, args.outer_lr_final, args.inner_optimizer, args.inner_opt_state,
                        args.task_sampling, args.max_grad_norm, args.seed, args.eval_every, args.save_every)

    def evaluate(step: int, restore=None) -> dict:
        """F1 of each held-out task from θ and after each --eval_adapt_steps count of adaptation
        steps (θ restored after each task)."""
        metrics = {}
        theta = [p.detach().clone() for p in meta_parameters(model)] if restore is None else None
        for name, (spec, stream, examples, features) in eval_data.items():
            task_settings = qa_settings(args, spec.version_2_with_negative)
            curve = {}
            done = evaluate_qa(model, tokenizer, spec, examples, features, task_settings, 32, ctx)
            curve["f1_0"] = done[0]["eval_f1"] if done else None
            optimizer = make_inner_optimizer(args.inner_optimizer, meta_parameters(model), args.inner_lr)
            taken = 0
            for target in args.eval_adapt_steps:
                adapt(model, objective, optimizer, [stream.batch(j) for j in range(taken, target)], dist_ctx.device,
                      precision, args.max_grad_norm)
                taken = target
                done = evaluate_qa(model, tokenizer, spec, examples, features, task_settings, 32, ctx)
                curve[f"f1_{target}"] = done[0]["eval_f1"] if done else None
            if restore is not None:
                restore()
            else:
                with torch.no_grad():
                    torch._foreach_copy_([p.data for p in meta_parameters(model)], theta)
            metrics[name] = curve
        return metrics

    def lineage() -> dict:
        return build_lineage(script=SCRIPT, task="+".join(s.name for s in specs), objective=args.objective,
                             head=loaded.head, seed=args.seed, parent=Provenance(**parent),
                             extra={"meta_training_tasks": [s.name for s in specs]})

    def save(folder: Path, saved: MetaState, carried) -> None:
        if dist_ctx.is_main:
            save_checkpoint(model, tokenizer, folder, lineage())
        barrier(dist_ctx)
        if carried is not None:
            torch.save(carried.state_dict(), folder / f"inner_optimizer_{dist_ctx.rank}.pt")
        torch.save({"cpu": torch.get_rng_state(), **({"cuda": torch.cuda.get_rng_state()} if torch.cuda.is_available() else {})},
                   folder / f"rng_state_{dist_ctx.rank}.pt")
        barrier(dist_ctx)
        if dist_ctx.is_main:
            write_meta_state(folder, MetaState(saved.step, saved.sampler, saved.positions, parent))

    if dist_ctx.is_main:
        write_run_args(run_dir, args, {"tasks": [s.name for s in specs], "eval_tasks": list(eval_data), "resume": resumed,
                                       "num_train_iterations": iterations, "num_inner_steps": inner_steps,
                                       "training_rows": {n: len(s.lengths) for n, s in streams.items()},
                                       "world_size": dist_ctx.world_size, "model_dir": str(model_dir)})
        write_json(run_dir / "data_subsets.json", {name: info.to_dict() for name, info in subsets.items()})
    log = JsonlLog(run_dir / "meta_log.jsonl", run_id=run.run_id) if dist_ctx.is_main else None
    if resume_dir is not None:  # dropout continues exactly where the interrupted run was
        rng = torch.load(resume_dir / f"rng_state_{dist_ctx.rank}.pt", weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    state = meta_train(model, objective, streams, meta, dist_ctx=dist_ctx, precision=precision, output_dir=run_dir,
                       log=log, evaluate=evaluate if eval_data else None, save=save,
                       state=MetaState(state.step, state.sampler, state.positions, parent), resume_from=resume_dir,
                       progress=progress)
    final = evaluate(state.step) if eval_data else {}
    results: dict = {}
    if dist_ctx.is_main:
        save_checkpoint(model, tokenizer, model_dir, lineage())
        results = {"meta_steps": state.step, "tasks": ",".join(s.name for s in specs), "seed": args.seed}
        for name, values in final.items():
            results.update({f"eval_{name}_{key}": value for key, value in values.items()})
        write_all_results(run_dir, results)
        write_json(run_dir / "meta_final.json", {"eval": final, "model_dir": str(model_dir.resolve())})
        logger.info("Reptile over %s: %d outer steps; model in %s; %s", args.tasks, state.step, model_dir, final)
    return results


if __name__ == "__main__":
    run_entry_point(main)

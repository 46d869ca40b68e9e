"""Meta-training across QA tasks (Reptile, FOMAML or multi-task) with evaluation of adaptation on
held-out tasks (the body of maml_qa.py, after its flags are checked and its run folder held)."""
from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import torch

from utils.models.checkpoint import Provenance, build_lineage, save_checkpoint
from utils.models.loading import require_positions
from utils.training.distributed import barrier, main_process_first
from utils.meta.algorithms import split_support_query
from utils.meta.args import COMPUTE_UNITS
from utils.meta.training import (MetaSettings, MetaState, TaskStream, meta_train, plan_to_budget, read_meta_state,
                                  write_meta_state)
from utils.training.compute import non_embedding_parameters, training_compute, training_flops
from utils.run.outputs import JsonlLog, write_all_results, write_json, write_run_args
from utils.qa.pipeline import cache_dir_from, load_qa_model, load_qa_split, make_objective, qa_features, qa_settings
from utils.meta.evaluation import AdaptationSettings, HeldOutTask, evaluate_adaptation, support_stream
from utils.training.resume import resolve_resume_args
from utils.run.folder import RunFolder
from utils.run.setup import RunStart, start_run
from utils.training.runtime import restore_rng_state, save_rng_state, set_seed, stream_seed
from utils.data.registry import TaskSpec
from utils.training.loop import LoopContext

logger = logging.getLogger(__name__)
SCRIPT = "maml_qa.py"


def matched_settings(meta: MetaSettings, budget: dict, unit: str, parameters: int, streams: dict,
                     query_streams: dict | None, folder: str, log: bool) -> MetaSettings:
    """`meta` with the outer steps (and the cut of the last one) that bring this run's compute in
    `unit` nearest the budget (utils.meta.training.plan_to_budget); FLOPs are matched as tokens,
    budget_flops / (6·N) with this model's N."""
    target = budget["flops"] / training_flops(parameters, 1) if unit == "flops" else budget[unit]
    steps, cut, planned = plan_to_budget(streams, meta, target, "passes" if unit == "passes" else "tokens",
                                         query_streams)
    if log:
        logger.info("--match_compute %s: %s %s recorded there; %d outer steps here%s, %s planned", folder,
                    f"{budget[unit]:,.0f}", unit, steps, f" (the last one cut to inner steps {list(cut)})" if cut else "",
                    f"{planned:,.0f} {'passes' if unit == 'passes' else 'tokens'}")
    return replace(meta, num_train_iterations=steps, final_inner_steps=cut)


def compute_match(budget: dict, unit: str, results: dict, folder: str) -> dict:
    """all_results.json's record of the match: what was matched, the budget, and achieved over
    budget in tokens, FLOPs and passes (None where the budget run did not record it). Warns when
    the matched quantity is off by more than one batch (the run's mean tokens or FLOPs per pass)."""
    achieved = {"tokens": results["train_tokens"], "flops": results["train_flops"], "passes": results["train_passes"]}
    ratio = {key: (achieved[key] / budget[key] if budget[key] else None) for key in COMPUTE_UNITS}
    one_batch = achieved[unit] / max(1, achieved["passes"])
    if budget[unit] is not None and abs(achieved[unit] - budget[unit]) > one_batch:
        logger.warning("--match_compute: %s %s here against %s in %s, more than one batch apart", f"{achieved[unit]:,.0f}",
                       unit, f"{budget[unit]:,.0f}", folder)
    return {"by": unit, "run": str(Path(folder).resolve()), "budget": dict(budget), "ratio": ratio}


def meta_train_and_evaluate(args: argparse.Namespace, folder: RunFolder | None, run_dir: Path, **plan) -> dict:
    """maml_qa.py once its flags are checked and rank 0 holds `run_dir`: Reptile over the tasks,
    evaluation of adaptation on the held-out ones, the final checkpoint. `plan` holds what main()
    derived from the flags (see `_meta_train_and_evaluate`). Returns all_results (empty on ranks
    other than 0)."""
    with start_run(args, folder) as run:
        return _meta_train_and_evaluate(args, run, run_dir, **plan)


def _meta_train_and_evaluate(args: argparse.Namespace, run: RunStart, run_dir: Path, *, specs: list[TaskSpec],
                             eval_specs: list[TaskSpec], train_files: dict[str, str], eval_files: dict[str, str],
                             iterations: int, per_task: int | None, inner_steps: int,
                             budget: dict[str, int] | None = None) -> dict:
    dist_ctx, precision, progress = run.dist, run.precision, run.progress
    model_dir = run_dir if args.output_dir else run_dir / "model"
    resume_dir = Path(args.resume_from_checkpoint) if args.resume_from_checkpoint else None
    resumed = resolve_resume_args(args, resume_dir.parent, what=str(resume_dir)) if resume_dir else None
    settings = qa_settings(args, version_2_with_negative=False)
    set_seed(args.seed)
    if args.inner_opt_state == "carry" and args.algorithm != "multitask" and dist_ctx.world_size > 1 \
            and dist_ctx.is_main:
        logger.warning("--inner_opt_state carry under %d processes: each carries its own inner optimizer state, so "
                       "θ differs from a one-process run; --inner_opt_state reset makes them agree",
                       dist_ctx.world_size)
    state = read_meta_state(resume_dir) if resume_dir else MetaState()

    loaded = load_qa_model(str(resume_dir or args.model_name), args.objective, "keep")
    require_positions(args.max_seq_length, loaded.model.config, "--max_seq_length", args.model_name)
    model, tokenizer = loaded.model.to(dist_ctx.device), loaded.tokenizer
    parent = state.parent if resume_dir else loaded.provenance.__dict__
    cache = cache_dir_from(args.features_cache_dir)
    streams, query_streams, held_out, subsets, adapter_stats = {}, {}, {}, {}, {}
    with main_process_first(dist_ctx):  # rank 0 tokenizes (and caches) first
        def split(spec, name: str, files: dict[str, str], limit: int | None) -> list[dict]:
            data, records, subsets[f"{spec.name}/{name}"] = load_qa_split(
                spec, name, files.get(spec.name), limit=limit, objective=args.objective, seed=args.data_seed,
                local_hint="--task_file NAME=PATH" if name == "train" else "--eval_file NAME=PATH")
            adapter_stats[f"{spec.name}_{name}"] = data.stats.to_dict()
            return records

        for spec in specs:
            rows = qa_features(split(spec, "train", train_files, per_task), tokenizer, settings, training=True,
                               cache_dir=cache, name=spec.name)
            if args.algorithm == "fomaml":
                rows, query = split_support_query(rows, args.query_fraction,
                                                  stream_seed(args.data_seed, "support-query", spec.name))
                query_streams[spec.name] = TaskStream(query, args.inner_batch_size,
                                                      seed=stream_seed(args.seed, "meta-query", spec.name))
            streams[spec.name] = TaskStream(rows, args.inner_batch_size,
                                            seed=stream_seed(args.seed, "meta-train", spec.name))
        for spec in eval_specs:
            support = qa_features(split(spec, "train", train_files, per_task), tokenizer, settings, training=True,
                                  cache_dir=cache, name=spec.name)
            examples = split(spec, "validation", eval_files, args.max_eval_samples)
            held_out[spec.name] = HeldOutTask(spec, support_stream(support, args.inner_batch_size, args.seed, spec.name),
                                              examples, qa_features(examples, tokenizer, settings, training=False,
                                                                    cache_dir=cache, name=spec.name))
    objective = make_objective(settings, tokenizer)
    ctx = LoopContext(dist_ctx.device, precision, dist_ctx, run_dir, None, progress)
    meta = MetaSettings(iterations, args.meta_batch_size, inner_steps, args.inner_batch_size, args.inner_lr,
                        args.outer_lr, args.outer_lr_final, args.inner_optimizer, args.inner_opt_state,
                        args.task_sampling, args.max_grad_norm, args.seed, args.eval_every, args.save_every,
                        args.algorithm, args.meta_lr, args.meta_optimizer, args.sampling_temperature)
    if budget is not None:
        meta = matched_settings(meta, budget, args.match_compute_by, non_embedding_parameters(model), streams,
                                query_streams or None, args.match_compute, log=dist_ctx.is_main)

    adaptation = AdaptationSettings(tuple(args.eval_adapt_steps), args.inner_optimizer, args.inner_lr,
                                    args.max_grad_norm, args.per_device_eval_batch_size)

    def evaluate(step: int, restore=None) -> dict:
        """F1 of each held-out task from θ and after each --eval_adapt_steps count (utils.meta.evaluation)."""
        return evaluate_adaptation(model, tokenizer, objective, held_out,
                                   lambda spec: qa_settings(args, spec.version_2_with_negative), adaptation, ctx, restore)

    def lineage(reached: MetaState) -> dict:
        return build_lineage(script=SCRIPT, task="+".join(s.name for s in specs), objective=args.objective,
                             head=loaded.head, seed=args.seed, parent=Provenance(**parent),
                             extra={"meta_training_tasks": [s.name for s in specs], "algorithm": args.algorithm,
                                    "compute": training_compute(model, reached.passes, reached.tokens)})

    def save(folder: Path, saved: MetaState, optimizers: dict) -> None:
        if dist_ctx.is_main:
            save_checkpoint(model, tokenizer, folder, lineage(saved))
        barrier(dist_ctx)
        for name, optimizer in optimizers.items():
            torch.save(optimizer.state_dict(), folder / f"{name}_{dist_ctx.rank}.pt")
        save_rng_state(folder, dist_ctx.rank)
        barrier(dist_ctx)
        if dist_ctx.is_main:
            write_meta_state(folder, MetaState(saved.step, saved.sampler, saved.positions, parent, saved.passes,
                                               saved.tokens))

    if dist_ctx.is_main:
        write_run_args(run_dir, args, {"tasks": [s.name for s in specs], "eval_tasks": list(held_out), "resume": resumed,
                                       "num_train_iterations": meta.num_train_iterations,
                                       "final_inner_steps": meta.final_inner_steps, "num_inner_steps": inner_steps,
                                       "training_rows": {n: len(s.lengths) for n, s in streams.items()},
                                       "query_rows": {n: len(s.lengths) for n, s in query_streams.items()},
                                       "world_size": dist_ctx.world_size, "model_dir": str(model_dir)})
        write_json(run_dir / "data_subsets.json", {name: info.to_dict() for name, info in subsets.items()})
        for name, stats in adapter_stats.items():   # meta-training tasks and held-out ones alike
            write_json(run_dir / f"adapter_stats_{name}.json", stats)
    log = JsonlLog(run_dir / "meta_log.jsonl", run_id=run.run_id) if dist_ctx.is_main else None
    if resume_dir is not None:  # dropout continues exactly where the interrupted run was
        restore_rng_state(resume_dir, dist_ctx.rank)
    state = meta_train(model, objective, streams, meta, dist_ctx=dist_ctx, precision=precision, output_dir=run_dir,
                       log=log, evaluate=evaluate if held_out else None, save=save,
                       state=MetaState(state.step, state.sampler, state.positions, parent, state.passes, state.tokens),
                       resume_from=resume_dir, progress=progress, query_streams=query_streams or None)
    final = evaluate(state.step) if held_out else {}
    results: dict = {}
    if dist_ctx.is_main:
        save_checkpoint(model, tokenizer, model_dir, lineage(state))
        results = {"algorithm": args.algorithm, "meta_steps": state.step, "tasks": ",".join(s.name for s in specs),
                   "seed": args.seed, **training_compute(model, state.passes, state.tokens)}
        if budget is not None:   # how near the matched run this one came
            results["compute_match"] = compute_match(budget, args.match_compute_by, results, args.match_compute)
        for name, values in final.items():
            results.update({f"eval_{name}_{key}": value for key, value in values.items()})
        write_all_results(run_dir, results, records=("compute_match",))
        write_json(run_dir / "meta_final.json", {"eval": final, "model_dir": str(model_dir.resolve())})
        logger.info("%s over %s: %d outer steps, %d forward/backward passes, %d tokens; model in %s; %s",
                    args.algorithm, args.tasks, state.step, state.passes, state.tokens, model_dir, final)
    return results

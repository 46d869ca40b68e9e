"""Reptile (first-order MAML) across QA tasks, or first-order MAML or multi-task training on the same
task batches (--algorithm); writes a checkpoint the target script reads.

    python maml_qa.py --tasks 'squad,squad_v2,duorc;SelfRC' [--algorithm reptile|fomaml|multitask]
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from utils.run.cli import (add_data_seed_arg, add_output_args, add_runtime_args, add_task_file_arg, files_by_task,
                           learning_rate, name_path, non_negative_float, positive_float, positive_int, run_entry_point,
                           unit_interval_float)
from utils.meta.args import (ALGORITHMS, COMPUTE_UNITS, INNER_OPTIMIZERS, INNER_STATE_CHOICES, SAMPLING_CHOICES,
                             read_budget, step_list)
from utils.qa.args import add_qa_args
from utils.training.args import add_eval_batch_size_arg
from utils.training.resume import add_allow_changed_args
from utils.run.folder import hold_output_dir
from utils.data.registry import parse_task_list, shared_data_warnings

logger = logging.getLogger("maml_qa")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=str, default="squad,squad_v2,duorc;SelfRC",
                        help="Comma-separated meta-training QA tasks (registry names or the original spellings).")
    parser.add_argument("--model_name", type=str, default="gpt2", help="Starting weights: 'gpt2' or a checkpoint folder.")
    parser.add_argument("--algorithm", choices=ALGORITHMS, default="reptile",
                        help="reptile: θ ← θ + ε(mean adapted weights − θ); fomaml: first-order MAML, a step of the "
                             "meta optimizer on θ with the mean gradient of each task's query loss at its adapted "
                             "weights; multitask: no adaptation, "
                             "k optimizer steps of the inner optimizer on θ over the same task batches (the baseline "
                             "at the same number of forward/backward passes). See utils/meta/algorithms.py.")
    parser.add_argument("--meta_lr", type=learning_rate, default=None,
                        help="fomaml: the outer (meta) optimizer's learning rate (default: --inner_lr).")
    parser.add_argument("--meta_optimizer", choices=INNER_OPTIMIZERS, default=None,
                        help="fomaml: the outer optimizer, whose state runs on across outer steps (default: the kind "
                             "of --inner_optimizer).")
    parser.add_argument("--query_fraction", type=unit_interval_float, default=0.2,
                        help="fomaml: the share of each task's questions kept apart as its query set (support and "
                             "query batches never share a question).")
    parser.add_argument("--out", type=str, default="reptile", help="Run name: the model goes to <log_dir>/qa_tasks_<out>/model.")
    parser.add_argument("--log_dir", type=str, default="logs", help="Folder of the run folder qa_tasks_<out>.")
    add_output_args(parser, required=False,
                    output_help="Write the run and its checkpoint here instead of <log_dir>/qa_tasks_<out>[/model].")
    parser.add_argument("--num_examples", type=positive_int, default=None,
                        help="Training questions per task (default all): a random subset drawn with --data_seed, "
                             "stratified by document.")
    parser.add_argument("--num_train_iterations", type=positive_int, default=None,
                        help="Outer (meta) steps (default 1000, or what --match_compute sets).")
    parser.add_argument("--match_compute", type=str, default=None,
                        help="The folder of another training run (maml_qa.py of any --algorithm, or "
                             "run_intermediate_source_GPT2.py): train until this run's compute (--match_compute_by) "
                             "is nearest to what that run recorded, within one batch (the last outer step may "
                             "stop after any task's inner step).")
    parser.add_argument("--match_compute_by", choices=COMPUTE_UNITS, default="tokens",
                        help="What --match_compute matches: real training tokens (default), FLOPs (6·N·tokens, "
                             "N the non-embedding parameters: differs from tokens when the models differ), or "
                             "forward/backward passes (batches, whatever their size).")
    parser.add_argument("--num_inner_steps", type=positive_int, default=5, help="Inner steps k per task.")
    parser.add_argument("--inner_lr", type=learning_rate, default=3e-5,
                        help="Inner-loop learning rate, at most 1 (typical: 1e-5 to 1e-3).")
    parser.add_argument("--outer_lr", type=unit_interval_float, default=1.0,
                        help="The outer step size ε at the first step, in [0, 1]: Reptile θ ← θ + ε·(mean adapted "
                             "weights − θ), so 1 moves θ all the way to the tasks' adapted weights and more would "
                             "step past them; unused by fomaml (--meta_lr) and multitask.")
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
    parser.add_argument("--sampling_temperature", type=positive_float, default=2.0,
                        help="τ of --task_sampling temperature: task i is drawn with probability ∝ n_i^(1/τ), n_i "
                             "its training rows (τ = 1: proportional; large τ: nearly uniform).")
    parser.add_argument("--task_sampling", choices=SAMPLING_CHOICES, default="proportional",
                        help="Draw tasks uniformly, in proportion to their training data, or with a temperature "
                             "(--sampling_temperature); the same draw for every --algorithm.")
    add_task_file_arg(parser, "--tasks or --eval_tasks (its training data)")
    parser.add_argument("--eval_file", type=name_path, action="append", default=[],
                        help="NAME=PATH: local validation file of a task of --eval_tasks (repeatable).")
    parser.add_argument("--eval_tasks", type=str, default="",
                        help="Comma-separated held-out tasks to evaluate on; none may be among --tasks (a task "
                             "sharing data with a training task is named in a warning).")
    parser.add_argument("--eval_every", type=positive_int, default=None, help="Evaluate every N outer steps (and at the end).")
    parser.add_argument("--eval_adapt_steps", type=step_list, default=[20],
                        help="Comma-separated adaptation step counts (e.g. 5,20,50): at each evaluation, F1 of every "
                             "held-out task from θ and after that many steps on its training data (θ restored).")
    add_eval_batch_size_arg(parser)
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
    if args.meta_batch_size > len(specs):
        logger.warning("--meta_batch_size %d with %d tasks: tasks are drawn with replacement, so every outer step "
                       "adapts some task more than once (each time on its next batches); use --meta_batch_size %d "
                       "or fewer to lower the repeats", args.meta_batch_size, len(specs), len(specs))
    train_files = files_by_task(args.task_file, [*specs, *eval_specs], "--task_file")
    eval_files = files_by_task(args.eval_file, eval_specs, "--eval_file")
    iterations, per_task, inner_steps = (3, 16, 2) if args.debug else (args.num_train_iterations or 1000,
                                                                      args.num_examples, args.num_inner_steps)
    budget = None
    if args.match_compute:
        if args.num_train_iterations is not None or args.debug:
            parser.error("--match_compute sets the number of outer steps; leave out --num_train_iterations and --debug")
        budget = read_budget(args.match_compute)
        if budget[args.match_compute_by] is None:
            parser.error(f"--match_compute {args.match_compute}: that run recorded no train_{args.match_compute_by}; "
                         "use --match_compute_by tokens or passes")
    elif args.match_compute_by != "tokens":
        parser.error("--match_compute_by needs --match_compute")
    run_dir = Path(args.output_dir) if args.output_dir else Path(args.log_dir) / f"qa_tasks_{args.out}"
    with hold_output_dir(run_dir, overwrite=args.overwrite_output_dir,
                         resuming=bool(args.resume_from_checkpoint)) as folder:
        # torch and transformers load only now, so --help, a bad flag or a busy folder is answered at once.
        from utils.meta.run import meta_train_and_evaluate

        return meta_train_and_evaluate(args, folder, run_dir, specs=specs, eval_specs=eval_specs,
                                       train_files=train_files, eval_files=eval_files, iterations=iterations,
                                       per_task=per_task, inner_steps=inner_steps, budget=budget)


if __name__ == "__main__":
    run_entry_point(main)

"""Embed tasks with Task2Vec (diagonal Fisher of a fixed GPT-2 probe) into TaskEmb/<task>/.

    python -m task2vec --tasks squad,squad_v2,duorc-p,duorc-s,drop,sst2 --model_name gpt2
    python -m task2vec --tasks sst2 --model_name demo_output/tiny_gpt2 --use_samples

Data come from --task_file NAME=PATH, the bundled samples (--use_samples) or the Hub. Each task
gets embedding.npy, embedding.json, batches.npy and, unless --no_noise_floor, the re-embeddings
with a new Monte-Carlo seed that give the noise floor. Under torchrun the batches of each task are
spread over the processes; the result equals a single process's.
"""
from __future__ import annotations

import argparse

from task2vec.options import ESTIMATORS, OBJECTIVES
from utils.run.cli import (add_output_args, add_runtime_args, add_task_file_arg, files_by_task, learning_rate,
                       non_negative_float, non_negative_int, positive_int)
from utils.run.folder import hold_output_dir
from utils.data.registry import get_task

DEFAULT_TASKS = "squad,squad_v2,duorc-p,duorc-s,drop,sst2"


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m task2vec`."""
    parser = argparse.ArgumentParser(prog="python -m task2vec", description=__doc__.split("\n\n")[0])
    data = parser.add_argument_group("tasks and data")
    data.add_argument("--tasks", type=str, default=DEFAULT_TASKS,
                      help="Comma-separated tasks (registry names or the original spellings, e.g. duorc;SelfRC).")
    add_task_file_arg(data, "--tasks")
    data.add_argument("--use_samples", action="store_true",
                      help="Read every task without --task_file from the bundled data/samples (the demo).")
    data.add_argument("--split", choices=("train", "validation"), default="train", help="Which split to embed.")
    parser.add_argument("--model_name", type=str, default="gpt2",
                        help="The probe: a causal LM checkpoint folder or Hub name; it is never trained.")
    add_output_args(parser, required=False, default="TaskEmb",
                    output_help="Embedding folder; each task is written to <output_dir>/<task>/. Tasks already "
                                "there are kept; replacing one needs --overwrite_output_dir.",
                    overwrite_help="Replace tasks already embedded in --output_dir (others are kept either way).")
    fim = parser.add_argument_group("Fisher estimate")
    fim.add_argument("--objective", choices=OBJECTIVES, default="lm",
                     help="lm: next-token loss on the task's text; task: the task's own head (span or classes; "
                          "not for a regression task such as stsb).")
    fim.add_argument("--estimator", choices=ESTIMATORS, default="mc",
                     help="mc: labels sampled from the probe (the true Fisher; trust this one); empirical: the "
                          "data's labels, squared per sequence with cross terms (not a Fisher); minibatch_sq: "
                          "square of minibatch-mean gradients, as published code does (scale F/(K·N_mb)).")
    fim.add_argument("--num_samples", type=positive_int, default=None,
                     help="K: label samples per prediction; default 4 for mc and minibatch_sq (the noise floor "
                          "falls about as 1/K), and always 1 for empirical (the data's labels).")
    fim.add_argument("--max_length", type=positive_int, default=128, help="Tokens per probe sequence.")
    fim.add_argument("--batch_size", type=positive_int, default=64, help="Sequences per batch (B).")
    fim.add_argument("--num_batches", type=positive_int, default=8,
                     help="Disjoint batches per task (n); the task embedding pools them, batches.npy keeps each.")
    fim.add_argument("--chunk_size", type=positive_int, default=16, help="Sequences per forward pass (memory).")
    fim.add_argument("--minibatch_size", type=positive_int, default=8, help="M for --estimator minibatch_sq.")
    fim.add_argument("--include_biases", action="store_true",
                     help="Also cover the biases of the same layers (a sensitivity analysis; off for parity).")
    fim.add_argument("--no_noise_floor", action="store_true",
                     help="Skip the re-embedding with a new Monte-Carlo seed (halves the time; no noise floor).")
    head = parser.add_argument_group("head fitting (on cached features of the frozen body)")
    head.add_argument("--head_steps", type=non_negative_int, default=640,
                      help="AdamW steps (a fixed budget, independent of the data size); 0 keeps the LM head as it is.")
    head.add_argument("--head_learning_rate", type=learning_rate, default=None,
                      help="At most 1; default 5e-5 for the lm objective (a pretrained head), 1e-3 for task (a new "
                           "head).")
    head.add_argument("--head_weight_decay", type=non_negative_float, default=1e-4, help="AdamW weight decay.")
    head.add_argument("--head_batch_size", type=positive_int, default=8, help="Sequences per head step.")
    add_runtime_args(parser)
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Embed every task of --tasks into --output_dir; returns {output_dir, model_name, tasks: {...}}.

    Raises:
        ToolkitError: tasks already embedded there without --overwrite_output_dir, unusable data
            or settings (checked before the probe is loaded where possible).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.estimator == "empirical" and args.num_samples not in (None, 1):
        parser.error("--estimator empirical uses the data's labels: leave --num_samples out (or 1)")
    if args.precision == "fp16":
        parser.error("--precision fp16: the Fisher backward has no loss scaling and fp16 gradients underflow; "
                     "use bf16 or fp32")
    names = [name.strip() for name in args.tasks.split(",") if name.strip()]
    specs = list({spec.name: spec for spec in map(get_task, names)}.values())  # aliases of one task count once
    if not specs:
        parser.error("--tasks names no task")
    regression = [spec.name for spec in specs if spec.is_regression]
    if args.objective == "task" and regression:
        # Said before the probe loads; task2vec.sequences.task_rows refuses the same for callers of the library.
        parser.error(f"{', '.join(regression)}: a regression target has no task objective (its probe heads are "
                     "softmax classifiers; no Gaussian head for a score is built); embed it with --objective lm")
    files = files_by_task(args.task_file, specs, "--task_file")
    with hold_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, check_empty=False) as folder:
        # torch and transformers load only now, so --help, a bad flag or a busy folder is answered at once.
        from task2vec.run import embed_tasks

        return embed_tasks(args, specs, files, folder)

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
import logging
from dataclasses import replace
from pathlib import Path

from task2vec.analysis.diversity import embedding_noise_report
from task2vec.embedding.embed import RECORDS_STREAM, EmbeddingSettings, derived_seed, embed_task
from task2vec.embedding.fisher import ESTIMATORS
from task2vec.embedding.io import save_task_embedding, task_folder
from task2vec.embedding.probe import HeadSettings
from task2vec.embedding.sequences import OBJECTIVES, subsample_records
from utils.data.loading import load_task_data, sample_file
from utils.data.registry import files_by_task, get_task
from utils.models.loading import load_model, require_positions
from utils.run.errors import ToolkitError
from utils.run.flags import LEARNING_RATE, add_output_args, add_runtime_args, add_task_file_arg, number
from utils.run.outputs import hold_run_folder
from utils.run.progress import Progress, run_entry_point
from utils.training.runtime import set_seed, start_run

logger = logging.getLogger("task2vec")
DEFAULT_TASKS = "squad,squad_v2,duorc-p,duorc-s,drop,sst2"
DEFAULT_HEAD_LR = {"lm": 5e-5, "task": 1e-3}
DEFAULT_NUM_SAMPLES = 4


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m task2vec`."""
    positive = number(int, minimum=1)
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
    # --objective is the original name; the QA script's --objective is another thing (its training loss).
    fim.add_argument("--probe_objective", "--objective", dest="objective", choices=OBJECTIVES, default="lm",
                     help="lm: next-token loss on the task's text; task: the task's own head (span or classes; "
                          "not for a regression task such as stsb).")
    fim.add_argument("--estimator", choices=ESTIMATORS, default="mc",
                     help="mc: labels sampled from the probe (the true Fisher); empirical: the data's labels, "
                          "squared per sequence with cross terms (not a Fisher); minibatch_sq: square of "
                          "minibatch-mean gradients, as published code does (scale F/(K·N_mb)).")
    fim.add_argument("--num_samples", type=positive, default=None,
                     help="K: label samples per prediction; default 4 for mc and minibatch_sq, always 1 for "
                          "empirical (the data's labels).")
    fim.add_argument("--max_length", type=positive, default=128, help="Tokens per probe sequence.")
    fim.add_argument("--batch_size", type=positive, default=64, help="Sequences per batch (B).")
    fim.add_argument("--num_batches", type=positive, default=8,
                     help="Disjoint batches per task (n); the task embedding pools them, batches.npy keeps each.")
    fim.add_argument("--chunk_size", type=positive, default=16, help="Sequences per forward pass (memory).")
    fim.add_argument("--minibatch_size", type=positive, default=8, help="M for --estimator minibatch_sq.")
    fim.add_argument("--include_biases", action="store_true", help="Also cover the biases of the same layers.")
    fim.add_argument("--no_noise_floor", action="store_true",
                     help="Skip the re-embedding with a new Monte-Carlo seed (halves the time; no noise floor).")
    head = parser.add_argument_group("head fitting (on cached features of the frozen body)")
    head.add_argument("--head_steps", type=number(int, minimum=0), default=640,
                      help="AdamW steps (a fixed budget, independent of the data size); 0 keeps the LM head as it is.")
    head.add_argument("--head_learning_rate", type=LEARNING_RATE, default=None,
                      help="Default 5e-5 for the lm objective (a pretrained head), 1e-3 for task (a new head).")
    head.add_argument("--head_weight_decay", type=number(float, minimum=0), default=1e-4, help="AdamW weight decay.")
    head.add_argument("--head_batch_size", type=positive, default=8, help="Sequences per head step.")
    add_runtime_args(parser)
    return parser


def settings_from(args: argparse.Namespace) -> EmbeddingSettings:
    """The embedding settings the parsed flags describe."""
    return EmbeddingSettings(
        objective=args.objective, estimator=args.estimator,
        num_samples=1 if args.estimator == "empirical" else (args.num_samples or DEFAULT_NUM_SAMPLES),
        max_length=args.max_length, batch_size=args.batch_size, num_batches=args.num_batches,
        chunk_size=args.chunk_size, minibatch_size=args.minibatch_size,
        include=("bias",) if args.include_biases else (),
        head=HeadSettings(args.head_steps, args.head_learning_rate or DEFAULT_HEAD_LR[args.objective],
                          args.head_weight_decay, args.head_batch_size),
        noise_floor=not args.no_noise_floor, seed=args.seed)


def main(argv: list[str] | None = None) -> dict:
    """Embed every task of --tasks into --output_dir; returns {output_dir, model_name, tasks: {...}}."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.estimator == "empirical" and args.num_samples not in (None, 1):
        parser.error("--estimator empirical uses the data's labels: leave --num_samples out (or 1)")
    if args.precision == "fp16":
        parser.error("--precision fp16: the Fisher backward has no loss scaling and fp16 gradients underflow; "
                     "use bf16 or fp32")
    specs = list({spec.name: spec for spec in map(get_task, filter(None, map(str.strip, args.tasks.split(","))))}
                 .values())   # aliases of one task count once
    if not specs:
        parser.error("--tasks names no task")
    regression = [spec.name for spec in specs if spec.is_regression]
    if args.objective == "task" and regression:
        parser.error(f"{', '.join(regression)}: a regression target has no task objective (its probe heads are "
                     "softmax classifiers); embed it with --objective lm")
    files = files_by_task(args.task_file, specs, "--task_file")
    settings = settings_from(args)
    settings.validate()

    # Tasks are added to the folder (resuming=True): each task's own files are replaced or kept below.
    with hold_run_folder(args.output_dir, overwrite=args.overwrite_output_dir, resuming=True) as folder:
        existing = [spec.name for spec in specs if task_folder(args.output_dir, spec.name).exists()]
        if existing and not args.overwrite_output_dir:
            raise ToolkitError(f"{args.output_dir} already holds {', '.join(existing)}; pass --overwrite_output_dir "
                               "to replace them or choose another --output_dir")
        set_seed(args.seed)
        with start_run(args, folder) as run:
            # The task objective fits heads of its own and never reads the LM head, which a chain through a
            # QA or classifier head of an untied family (Llama, GPT-NeoX) no longer has.
            loaded = load_model(args.model_name, "lm", allow_new_lm_head=settings.objective == "task")
            require_positions(args.max_length, loaded.model.config, "--max_length", args.model_name)
            loaded.model.to(run.device)
            summary: dict = {"output_dir": str(Path(args.output_dir)), "model_name": args.model_name, "tasks": {}}
            needed = settings.batch_size * settings.num_batches
            with Progress(len(specs), "tasks", bar=run.progress and run.is_main, unit="task",
                          interval_s=60.0 if run.is_main else None) as task_progress:
                for spec in specs:
                    source = files.get(spec.name) or (str(sample_file(spec.name, args.split)) if args.use_samples
                                                      else None)
                    data = load_task_data(spec, args.split, source, local_hint="--task_file NAME=PATH or --use_samples")
                    records = subsample_records(data.span_records(), needed,
                                                derived_seed(args.seed, spec.name, RECORDS_STREAM))
                    embedding = embed_task(loaded, spec, records, settings, run, source=data.stats.source)
                    if embedding is not None:
                        embedding = replace(embedding, metadata={**embedding.metadata,
                                                                 "noise_floor": embedding_noise_report(embedding)})
                        summary["tasks"][spec.name] = save(args.output_dir, embedding)
                    task_progress.update()
    return summary


def save(output_dir: str, embedding) -> dict:
    """Write one task's embedding folder; its line in the summary."""
    folder = save_task_embedding(output_dir, embedding)
    floor, examples = embedding.metadata["noise_floor"], embedding.metadata["examples"]
    compute = embedding.metadata["compute"]
    logger.info("%s: %d coordinates from %d examples in %d batches -> %s; noise floor %s, data diversity %s "
                "(%s corrected for the noise)", embedding.task, embedding.dimension, examples["examples_used"],
                examples["batches"], folder, *(("n/a" if floor[key] is None else f"{floor[key]:.4g}")
                                               for key in ("task", "data_diversity", "data_diversity_corrected")))
    logger.info("%s: %d Fisher passes over %d tokens, about %.3g FLOPs (embedding.json: compute)", embedding.task,
                compute["fisher_passes"], compute["fisher_tokens"], compute["flops"])
    return {"path": str(folder), "dimension": embedding.dimension, "examples_used": examples["examples_used"],
            "noise_floor": floor, "compute": compute}


if __name__ == "__main__":
    run_entry_point(main)

"""The body of `python -m task2vec`, once its flags are checked and its output folder held:
embed each task with the fixed probe and write TaskEmb/<task>/."""
from __future__ import annotations

import argparse
import logging
from functools import partial
from pathlib import Path

from task2vec.embed import RECORDS_STREAM, EmbeddingContext, EmbeddingSettings, derived_seed, embed_task
from task2vec.io import save_task_embedding, task_folder
from task2vec.probe import HeadSettings
from task2vec.sequences import subsample_records
from utils.models.loading import load_model, require_positions
from utils.data.loading import load_task_data
from utils.run.errors import ToolkitError
from utils.run.progress import Progress
from utils.run.folder import RunFolder
from utils.run.setup import RunStart, start_run
from utils.training.runtime import set_seed
from utils.data.samples import sample_file
from utils.data.registry import TaskSpec
from utils.training.loop import autocast_context

logger = logging.getLogger("task2vec")
DEFAULT_HEAD_LR = {"lm": 5e-5, "task": 1e-3}
DEFAULT_NUM_SAMPLES = 4


def settings_from(args: argparse.Namespace) -> EmbeddingSettings:
    """The embedding settings the parsed flags describe."""
    learning_rate = args.head_learning_rate or DEFAULT_HEAD_LR[args.objective]
    return EmbeddingSettings(
        objective=args.objective, estimator=args.estimator,
        num_samples=1 if args.estimator == "empirical" else (args.num_samples or DEFAULT_NUM_SAMPLES),
        max_length=args.max_length, batch_size=args.batch_size, num_batches=args.num_batches,
        chunk_size=args.chunk_size, minibatch_size=args.minibatch_size,
        include=("bias",) if args.include_biases else (),
        head=HeadSettings(args.head_steps, learning_rate, args.head_weight_decay, args.head_batch_size),
        noise_floor=not args.no_noise_floor, seed=args.seed)


def task_source(spec, files: dict[str, str], use_samples: bool, split: str) -> str | None:
    """The local file of a task, or None for the Hub."""
    if spec.name in files:
        return files[spec.name]
    return str(sample_file(spec.name, split)) if use_samples else None


def embed_tasks(args: argparse.Namespace, specs: list[TaskSpec], files: dict[str, str], folder: RunFolder | None) -> dict:
    """`python -m task2vec` once its flags are checked and rank 0 holds --output_dir: embed each
    task with the probe. Returns {output_dir, model_name, tasks: {...}}.

    Raises:
        ToolkitError: tasks already embedded there without --overwrite_output_dir, or unusable
            settings or data.
    """
    settings = settings_from(args)
    settings.validate()
    existing = [spec.name for spec in specs if task_folder(args.output_dir, spec.name).exists()]
    if existing and not args.overwrite_output_dir:
        raise ToolkitError(f"{args.output_dir} already holds {', '.join(existing)}; pass --overwrite_output_dir "
                           "to replace them or choose another --output_dir")
    set_seed(args.seed)
    with start_run(args, folder) as run:
        return _embed_tasks(args, specs, files, settings, run)


def _embed_tasks(args: argparse.Namespace, specs: list[TaskSpec], files: dict[str, str], settings: EmbeddingSettings,
                 run: RunStart) -> dict:
    dist = run.dist
    # The task objective fits heads of its own and never reads the LM head, which a chain through a
    # QA or classifier head of an untied family (Llama, GPT-NeoX) no longer has.
    loaded = load_model(args.model_name, "lm", allow_new_lm_head=settings.objective == "task")
    require_positions(args.max_length, loaded.model.config, "--max_length", args.model_name)
    loaded.model.to(run.device)
    ctx = EmbeddingContext(run.device, partial(autocast_context, run.precision, run.device), dist,
                           run.progress and dist.is_main)
    needed = settings.batch_size * settings.num_batches
    summary: dict = {"output_dir": str(Path(args.output_dir)), "model_name": args.model_name, "tasks": {}}
    with Progress(len(specs), "tasks", bar=ctx.progress, unit="task",
                  interval_s=60.0 if dist.is_main else None) as task_progress:
        for spec in specs:
            source = task_source(spec, files, args.use_samples, args.split)
            data = load_task_data(spec, args.split, source, local_hint="--task_file NAME=PATH or --use_samples")
            records = subsample_records(data.span_records(), needed, derived_seed(args.seed, spec.name, RECORDS_STREAM))
            embedding = embed_task(loaded, spec, records, settings, ctx, source=data.stats.source)
            if embedding is not None:
                summary["tasks"][spec.name] = _save(args.output_dir, spec.name, embedding)
            task_progress.update()
    return summary


def _save(output_dir: str, name: str, embedding) -> dict:
    """Write one task's embedding folder; its line in the summary."""
    folder = save_task_embedding(output_dir, embedding)
    floor = embedding.metadata["noise_floor"]
    examples = embedding.metadata["examples"]
    logger.info("%s: %d coordinates from %d examples in %d batches -> %s; noise floor %s, data diversity %s "
                "(%s corrected for the noise)", name, embedding.dimension, examples["examples_used"],
                examples["batches"], folder, _fmt(floor["task"]), _fmt(floor["data_diversity"]),
                _fmt(floor["data_diversity_corrected"]))
    compute = embedding.metadata["compute"]
    logger.info("%s: %d Fisher passes over %d tokens, about %.3g FLOPs (embedding.json: compute)", name,
                compute["fisher_passes"], compute["fisher_tokens"], compute["flops"])
    return {"path": str(folder), "dimension": embedding.dimension, "examples_used": examples["examples_used"],
            "noise_floor": floor, "compute": compute}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


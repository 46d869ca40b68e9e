"""One classification or regression target, fine-tuned from the same checkpoint once per seed (the
pieces of run_target_task_GPT2_sst2_multiple.py, and its body: `run_target`).

Every run starts again from the checkpoint; runs differ only by seed, which fixes the new head's
initialisation, the data order and dropout. The epoch is chosen on the target's primary metric
(utils.classification.evaluation) over a hold-out taken from the training data (never on the
validation set that is reported), or the last epoch is used.
"""
from __future__ import annotations

import argparse
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.models.checkpoint import build_lineage, save_checkpoint
from utils.models.loading import LoadedModel, load_model, require_positions
from utils.classification.evaluation import (companion_metrics, evaluation_results, metric_names, predictions_of,
                                             primary_metric, selection_score)
from utils.classification.metrics import COMPANION_VALIDATION
from utils.classification.selection import choose_epoch, holdout_problem, split_holdout
from utils.classification.objective import ClassificationObjective, RegressionObjective, classification_features
from utils.classification.summary import append_results_table, build_summary
from utils.data.loading import companion_file, load_task_data, same_file_warning
from utils.training.distributed import barrier, broadcast_from_main, main_process_first
from utils.run.errors import ToolkitError
from utils.data.feature_cache import build_features, source_digest, tokenizer_digest
from utils.run.outputs import JsonlLog, read_json_object, write_all_results, write_json, write_run_args
from utils.run.progress import Progress
from utils.data.records import UNLABELLED, write_jsonl
from utils.training.resume import RESULT_NEUTRAL_ARGS, resolve_resume_args
from utils.run.folder import RunFolder
from utils.run.setup import RunStart, start_run
from utils.training.runtime import resolve_attention, set_seed
from utils.data.subsets import stratified_sample
from utils.models.tokenization import truncation_note
from utils.data.registry import TaskSpec
from utils.training.inference import predict
from utils.training.compute import training_compute
from utils.training.compilation import make_compiler
from utils.training.loop import LoopContext, train
from utils.training.schedule import plan_schedule, speed_choices
from utils.training.args import LoopSettings, loop_settings

logger = logging.getLogger(__name__)


def require_labels(records: list[dict], what: str, file: str) -> None:
    """Refuse unlabelled records (GLUE's test file) for training or evaluation."""
    if any(record["label"] == UNLABELLED for record in records):
        raise ToolkitError(f"{file}: the {what} data has no labels: no label column was found. If the file has one "
                           "under another name, give it with --label_column NAME; GLUE test files hide their labels, "
                           "so use a labelled file (e.g. dev.tsv for validation)")


@dataclass(frozen=True)
class TargetData:
    """Feature rows (dicts with input_ids, labels, length) and the records they came from."""

    train_rows: Any
    holdout_rows: Any | None
    eval_rows: Any
    eval_records: list[dict]
    holdout: dict          # the selection object's hold-out part: rule, holdout_size, holdout_classes, problem
    # A companion dev set the same model is scored on (MNLI mismatched): (metric suffix, rows, records).
    companion: tuple[str, Any, list[dict]] | None = None


def _outputs(model, rows, objective: ClassificationObjective | RegressionObjective, batch_size: int,
             ctx: LoopContext) -> np.ndarray | None:
    """(N, C) logits, or (N, 1) regression scores, of `rows` in their order (None off rank 0)."""
    outputs = predict(model, rows, list(rows["length"]), objective.forward, objective.collate, batch_size, ctx,
                      compilable=True, pad_token_id=objective.pad_token_id)
    return None if outputs is None else np.stack(outputs)


def run_seed(*, seed: int, pretrained: str, spec: TaskSpec, data: TargetData, settings: LoopSettings, selection: str,
             save_model: str, run_dir: Path, ctx: LoopContext, attention: str | None = None) -> dict | None:
    """Fine-tune one copy of the checkpoint with `seed`; write the run's files; return its results
    (on rank 0; None elsewhere)."""
    set_seed(seed)  # before loading: the new head's initialisation draws from it
    loaded: LoadedModel = load_model(pretrained, "classification", label_names=spec.label_names,
                                     regression=spec.is_regression, attn_implementation=attention)
    model = loaded.model.to(ctx.device)
    objective = target_objective(spec, loaded.tokenizer.pad_token_id)
    schedule = plan_schedule(len(data.train_rows), settings, ctx.dist.world_size, list(data.train_rows["length"]))
    holdout_key = f"holdout_{primary_metric(spec)}"
    holdout = selection == "holdout"
    best: dict[str, Any] = {"score": -math.inf, "epoch": None, "state": None, "curve": []}

    def holdout_step(current: torch.nn.Module) -> dict:
        """After each epoch: the hold-out's primary metric; remember the weights of the best epoch."""
        epoch = len(best["curve"]) + 1
        outputs = _outputs(current, data.holdout_rows, objective, settings.per_device_eval_batch_size, ctx)
        score = None if outputs is None else selection_score(spec, np.asarray(data.holdout_rows["labels"]), outputs)
        score = broadcast_from_main(ctx.dist, score)
        best["curve"].append(score)
        # A copy of the weights only where they may be chosen: never when the hold-out is known unusable.
        if data.holdout["problem"] is None and (best["epoch"] is None or score > best["score"]):
            best.update(score=score, epoch=epoch,
                        state={k: v.detach().to("cpu", copy=True) for k, v in current.state_dict().items()})
        return {"epoch": epoch, holdout_key: _finite_or_none(score)}

    scored = holdout and data.holdout_rows is not None
    per_epoch = LoopSettings(**{**settings.__dict__, "eval_steps": schedule.steps_per_epoch}) if scored else settings
    train_metrics = train(model, data.train_rows, list(data.train_rows["length"]), objective, per_epoch, ctx,
                          save_model=lambda m, folder: None, evaluate=holdout_step if scored else None)
    if scored:
        holdout_step(model)  # the final epoch (the loop evaluates only between epochs)
    if save_model == "last" and ctx.dist.is_main:
        _save_run_model(model, loaded, spec, seed, run_dir)
    choice = {"rule": "last", "degenerate": False, "reason": None}
    selected = None
    if holdout:
        selected, reason = choose_epoch(best["curve"], data.holdout["problem"])
        selected = selected or (len(best["curve"]) if scored else math.ceil(schedule.total_steps / schedule.steps_per_epoch))
        choice = {"rule": "last" if reason else "holdout", "degenerate": reason is not None, "reason": reason}
        if reason and ctx.dist.is_main:
            logger.warning("seed %d: the hold-out cannot choose the epoch (%s); the last epoch is kept", seed, reason)
        if not reason and selected != len(best["curve"]):
            model.load_state_dict(best["state"])   # the copy of the first best epoch, the one choose_epoch names
    if save_model == "best" and ctx.dist.is_main:
        _save_run_model(model, loaded, spec, seed, run_dir)
    outputs = _outputs(model, data.eval_rows, objective, settings.per_device_eval_batch_size, ctx)
    if outputs is None:
        return None
    labels = np.asarray(data.eval_rows["labels"])
    results = {"primary_metric": primary_metric(spec), **evaluation_results(spec, labels, outputs)}
    if data.companion is not None:   # the same model on the second dev set; the first one's named too
        suffix, rows, records = data.companion
        other = _outputs(model, rows, objective, settings.per_device_eval_batch_size, ctx)
        other_labels = np.asarray(rows["labels"])
        results.update({f"eval_{name}_matched": results[f"eval_{name}"] for name in metric_names(spec)})
        results.update({f"{key}_{suffix}": value for key, value in evaluation_results(spec, other_labels, other).items()})
        results[f"eval_samples_{suffix}"] = len(other_labels)
        write_jsonl(run_dir / f"predictions_{suffix}.jsonl", prediction_rows(spec, records, other_labels, other))
    results.update({"eval_samples": len(labels), "train_examples": len(data.train_rows),
                    "train_loss": train_metrics["train_loss"], "train_steps": train_metrics["train_steps"],
                    "selection": selection, **{f"selection_{key}": value for key, value in choice.items()},
                    "holdout_size": data.holdout["holdout_size"], "holdout_classes": data.holdout["holdout_classes"],
                    **training_compute(model, train_metrics["train_passes"], train_metrics["train_tokens"]),
                    "selected_epoch": selected,
                    holdout_key: _finite_or_none(best["curve"][selected - 1]) if scored else None,
                    "holdout_curve": [_finite_or_none(x) for x in best["curve"]] if scored else None, "seed": seed})
    # Timings vary from run to run; they go to the log so that all_results.json is reproducible.
    ctx.log.log({"event": "train_end", **train_metrics})
    write_jsonl(run_dir / "predictions.jsonl", prediction_rows(spec, data.eval_records, labels, outputs))
    write_all_results(run_dir, results)  # last: its presence marks the seed as finished
    return results


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def target_objective(spec: TaskSpec, pad_token_id: int) -> ClassificationObjective | RegressionObjective:
    """Cross-entropy over the classes, or mean squared error of a regression target's score."""
    return RegressionObjective(pad_token_id) if spec.is_regression else ClassificationObjective(pad_token_id)


def prediction_rows(spec: TaskSpec, records: list[dict], labels: np.ndarray, outputs: np.ndarray):
    """predictions.jsonl rows: id, label, prediction and the logits (a class task) or the score."""
    predictions = predictions_of(outputs, spec.is_regression)
    for record, label, prediction, row in zip(records, labels, predictions, outputs):
        if spec.is_regression:
            yield {"id": record["id"], "label": float(label), "prediction": float(prediction)}
        else:
            yield {"id": record["id"], "label": int(label), "prediction": int(prediction),
                   "logits": [float(x) for x in row]}


def finished_seed(run_dir: Path, spec: TaskSpec) -> dict | None:
    """The results of a seed an earlier invocation finished (its all_results.json, written last),
    or None.

    Raises:
        ToolkitError: the file is there but unreadable (not a finished seed of this script for
            this target).
    """
    path = run_dir / "all_results.json"
    results = read_json_object(path, f"delete {run_dir} to run that seed again")
    if results is None:
        return None
    key = f"eval_{primary_metric(spec)}"
    if key not in results:
        raise ToolkitError(f"{path} holds no {key}: not a finished seed of this script on {spec.name}; delete "
                           f"{run_dir} to run that seed again")
    return results


def discard_unfinished_seed(run_dir: Path) -> None:
    """Remove what an interrupted seed left (it is run again from the start)."""
    if run_dir.exists():
        logger.info("%s: this seed did not finish; running it again from the start", run_dir)
        shutil.rmtree(run_dir)


def _save_run_model(model, loaded: LoadedModel, spec: TaskSpec, seed: int, run_dir: Path) -> None:
    lineage = build_lineage(script="run_target_task_GPT2_sst2_multiple.py", task=spec.name, objective="classification",
                            head="classification", seed=seed, parent=loaded.provenance)
    save_checkpoint(model, loaded.tokenizer, run_dir / "model", lineage)


def run_target(args: argparse.Namespace, spec: TaskSpec, seeds: list[int], folder: RunFolder | None,
               output_dir: Path) -> dict:
    """run_target_task_GPT2_sst2_multiple.py once its flags are checked and rank 0 holds
    `output_dir`: every seed's run (finished ones reused with --resume), the summary and the
    results-table row. Returns the summary (empty on ranks other than 0)."""
    with start_run(args, folder) as run:
        return _run_target(args, spec, seeds, run, output_dir)


def _run_target(args: argparse.Namespace, spec: TaskSpec, seeds: list[int], run: RunStart, output_dir: Path) -> dict:
    dist_ctx, precision, progress = run.dist, run.precision, run.progress
    # Seeds are units: the number of runs may grow or shrink on resumption.
    resumed = resolve_resume_args(args, output_dir, what=str(output_dir),
                                  neutral=RESULT_NEUTRAL_ARGS | {"seeds", "num_runs"}) if args.resume else None

    note = same_file_warning(args.train_file, args.validation_file)
    if note and dist_ctx.is_main:
        logger.warning(note)
    columns = {"text_column": args.text_column, "label_column": args.label_column,
               "text_pair_column": args.text_pair_column}
    train_data = load_task_data(spec, "train", args.train_file, **columns)
    eval_data = load_task_data(spec, "validation", args.validation_file, **columns)
    require_labels(train_data.records, "training", train_data.stats.source)
    require_labels(eval_data.records, "validation", eval_data.stats.source)
    train_records, train_subset = stratified_sample(train_data.records, args.max_train_samples, args.data_seed)
    holdout_records: list[dict] = []
    holdout = {"holdout_size": 0, "holdout_classes": 0, "problem": None}
    if args.selection == "holdout":
        train_records, holdout_records, classes = split_holdout(train_records, args.holdout_size, args.data_seed)
        holdout = {"holdout_size": len(holdout_records), "holdout_classes": classes,
                   "problem": holdout_problem(spec, [r["label"] for r in holdout_records])}
        if holdout["problem"] and dist_ctx.is_main:
            logger.warning("the hold-out cannot choose the epoch (%s): every run keeps its last epoch; give more "
                           "training data or a larger --holdout_size, or use --selection last", holdout["problem"])
    eval_records, eval_subset = stratified_sample(eval_data.records, args.max_eval_samples, args.data_seed)
    companion_data = None
    if spec.name in COMPANION_VALIDATION:
        suffix, other = COMPANION_VALIDATION[spec.name]
        file = companion_file(args.validation_file, args.validation_mismatched_file, suffix,
                              "--validation_mismatched_file")
        companion_data = load_task_data(other, "validation", file, **columns)
        require_labels(companion_data.records, f"{suffix} validation", companion_data.stats.source)
        companion_records, companion_subset = stratified_sample(companion_data.records, args.max_eval_samples,
                                                                args.data_seed)

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
        if note and dist_ctx.is_main:
            logger.info(note)
        return built

    with main_process_first(dist_ctx):
        data = TargetData(features(train_records, "train"), features(holdout_records, "holdout"),
                          features(eval_records, "eval"), eval_records, holdout,
                          (suffix, features(companion_records, f"eval_{suffix}"), companion_records)
                          if companion_data else None)
    if dist_ctx.is_main:
        write_run_args(output_dir, args, {"seeds": seeds, "resume": resumed, "train_sentences": len(train_records),
                                          "holdout_sentences": len(holdout_records), "eval_sentences": len(eval_records),
                                          "world_size": dist_ctx.world_size, "device": str(dist_ctx.device),
                                          "precision": precision.name,
                                          **speed_choices(loop_settings(args), reference.model.config._attn_implementation,
                                                         dist_ctx.device)})
        loaded_splits = [("train", train_data), ("validation", eval_data)]
        subsets = {"train": train_subset.to_dict(), "validation": eval_subset.to_dict(),
                   "holdout": {"seed": args.data_seed, "count": len(holdout_records),
                               "ids": [r["id"] for r in holdout_records]}}
        if companion_data:
            loaded_splits.append((f"validation_{suffix}", companion_data))
            subsets[f"validation_{suffix}"] = companion_subset.to_dict()
        for name, loaded in loaded_splits:
            write_json(output_dir / f"adapter_stats_{name}.json", loaded.stats.to_dict())
        write_json(output_dir / "data_subsets.json", subsets)
        logger.info("%s from %s: %d training, %d hold-out, %d validation sentences; seeds %s", spec.name,
                    args.pretrained_model, len(train_records), len(holdout_records), len(eval_records), seeds)
    runs = []
    metric = primary_metric(spec)
    compiler = make_compiler(loop_settings(args))   # one for every seed: they share the compiled graphs
    with Progress(len(seeds), "seeds", bar=progress and dist_ctx.is_main, unit="seed",
                  interval_s=60.0 if dist_ctx.is_main else None) as seed_progress:
        for seed in seeds:
            run_dir = output_dir / "runs" / f"seed_{seed}"
            result = finished_seed(run_dir, spec) if args.resume else None
            if result is not None:
                logger.info("seed %d: finished by an earlier invocation; reusing %s", seed, run_dir / "all_results.json")
            else:
                if dist_ctx.is_main:
                    discard_unfinished_seed(run_dir)
                barrier(dist_ctx)
                run_dir.mkdir(parents=True, exist_ok=True)
                ctx = LoopContext(dist_ctx.device, precision, dist_ctx, run_dir,
                                  JsonlLog(run_dir / "log.jsonl", run_id=run.run_id) if dist_ctx.is_main else None,
                                  progress, compiler=compiler)
                result = run_seed(seed=seed, pretrained=args.pretrained_model, spec=spec, data=data,
                                  settings=loop_settings(args, seed=seed), selection=args.selection,
                                  save_model=args.save_model, run_dir=run_dir, ctx=ctx, attention=attention)
            if result is not None:
                runs.append(result)
                logger.info("seed %d: %s %s (epoch %s)", seed, metric, _shown(result[f"eval_{metric}"]),
                            result["selected_epoch"])
            seed_progress.update()
    summary: dict = {}
    if dist_ctx.is_main:
        summary = build_summary(spec=spec, pretrained=args.pretrained_model, lineage=reference.provenance.lineage,
                                runs=runs, settings={k: v for k, v in vars(args).items()}, output_dir=output_dir,
                                train_examples=len(train_records))
        write_json(output_dir / "summary.json", summary)
        if args.results_table:
            append_results_table(Path(args.results_table), summary, args.max_train_samples, args.selection)
        for name in (metric, *companion_metrics(spec)):
            _log_over_seeds(spec.name, name, summary[f"eval_{name}"])
    return summary


def _log_over_seeds(task: str, metric: str, score: dict) -> None:
    if score["mean"] is None:
        logger.warning("%s %s: %s", task, metric, score["reason"])
    elif score["n"] > 1:
        logger.info("%s %s over %d runs: %.4f ± %.4f (95%% CI %.4f–%.4f)", task, metric, score["n"],
                    score["mean"], score["std"], score["ci_low"], score["ci_high"])
    else:
        logger.info("%s %s of one run: %.4f (one seed gives no std or confidence interval; use --num_runs)",
                    task, metric, score["mean"])


def _shown(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"

"""One seed's run on a classification or regression target: a fresh copy of the checkpoint
fine-tuned, its epoch chosen, evaluated, and its files written (runs/seed_S/).

Runs differ only by seed (the new head's initialisation, data order, dropout). The epoch is chosen
on the primary metric of a hold-out from the training data, or is the last. A seed is the unit of
resumption: its all_results.json, written last, marks it finished.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.classification.evaluation import (choose_epoch, evaluation_results, metric_names, prediction_rows,
                                             primary_metric, selection_score)
from utils.classification.objective import ClassificationObjective, RegressionObjective
from utils.data.records import UNLABELLED, write_jsonl
from utils.data.registry import TaskSpec
from utils.models.checkpoint import build_lineage, save_checkpoint
from utils.models.loading import LoadedModel, load_model
from utils.run.errors import ToolkitError
from utils.run.outputs import read_json_object, write_all_results
from utils.training.loop import LoopSettings, plan_schedule, predict, train
from utils.training.runtime import RunContext, broadcast_from_main, set_seed, training_compute

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
    holdout: dict          # the hold-out's rule, holdout_size, holdout_classes, problem
    # A companion dev set the same model is scored on (MNLI mismatched): (metric suffix, rows, records).
    companion: tuple[str, Any, list[dict]] | None = None


def _outputs(model, rows, objective: ClassificationObjective, batch_size: int, ctx: RunContext) -> np.ndarray | None:
    """(N, C) logits, or (N, 1) regression scores, of `rows` in their order (None off rank 0)."""
    outputs = predict(model, rows, list(rows["length"]), objective.forward, objective.collate, batch_size, ctx,
                      compilable=True, pad_token_id=objective.pad_token_id)
    return None if outputs is None else np.stack(outputs)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def run_seed(*, seed: int, pretrained: str, spec: TaskSpec, data: TargetData, settings: LoopSettings, selection: str,
             save_model: str, run_dir: Path, ctx: RunContext, script: str, attention: str | None = None) -> dict | None:
    """Fine-tune one copy of the checkpoint with `seed`, choose its epoch, evaluate it and write the
    run's files (`script` is recorded in a saved model's lineage); return its results (on rank 0;
    None elsewhere)."""
    set_seed(seed)  # before loading: the new head's initialisation draws from it
    loaded: LoadedModel = load_model(pretrained, "classification", label_names=spec.label_names,
                                     regression=spec.is_regression, attn_implementation=attention)
    model = loaded.model.to(ctx.device)
    objective = (RegressionObjective if spec.is_regression else ClassificationObjective)(loaded.tokenizer.pad_token_id)
    schedule = plan_schedule(len(data.train_rows), settings, ctx.world_size, list(data.train_rows["length"]))
    holdout_key = f"holdout_{primary_metric(spec)}"
    holdout = selection == "holdout"
    best: dict[str, Any] = {"score": -math.inf, "epoch": None, "state": None, "curve": []}

    def holdout_step(current: torch.nn.Module) -> dict:
        """After each epoch: the hold-out's primary metric; remember the weights of the best epoch."""
        epoch = len(best["curve"]) + 1
        outputs = _outputs(current, data.holdout_rows, objective, settings.per_device_eval_batch_size, ctx)
        score = None if outputs is None else selection_score(spec, np.asarray(data.holdout_rows["labels"]), outputs)
        score = broadcast_from_main(ctx, score)
        best["curve"].append(score)
        # A copy of the weights only where they may be chosen: never when the hold-out is known unusable.
        if data.holdout["problem"] is None and (best["epoch"] is None or score > best["score"]):
            best.update(score=score, epoch=epoch,
                        state={k: v.detach().to("cpu", copy=True) for k, v in current.state_dict().items()})
        return {"epoch": epoch, holdout_key: _finite_or_none(score)}

    # --- train, evaluating the hold-out after every epoch
    scored = holdout and data.holdout_rows is not None
    per_epoch = LoopSettings(**{**settings.__dict__, "eval_steps": schedule.steps_per_epoch}) if scored else settings
    train_metrics = train(model, data.train_rows, list(data.train_rows["length"]), objective, per_epoch, ctx,
                          save_model=lambda m, folder: None, evaluate=holdout_step if scored else None)
    if scored:
        holdout_step(model)  # the final epoch (the loop evaluates only between epochs)
    if save_model == "last" and ctx.is_main:
        save_run_model(model, loaded, spec, seed, run_dir, script)
    # --- select the epoch
    choice = {"rule": "last", "degenerate": False, "reason": None}
    selected = None
    if holdout:
        selected, reason = choose_epoch(best["curve"], data.holdout["problem"])
        selected = selected or (len(best["curve"]) if scored else math.ceil(schedule.total_steps / schedule.steps_per_epoch))
        choice = {"rule": "last" if reason else "holdout", "degenerate": reason is not None, "reason": reason}
        if reason and ctx.is_main:
            logger.warning("seed %d: the hold-out cannot choose the epoch (%s); the last epoch is kept", seed, reason)
        if not reason and selected != len(best["curve"]):
            model.load_state_dict(best["state"])   # the copy of the first best epoch, the one choose_epoch names
    if save_model == "best" and ctx.is_main:
        save_run_model(model, loaded, spec, seed, run_dir, script)
    # --- evaluate on the validation set (and a companion dev set)
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


def save_run_model(model, loaded: LoadedModel, spec: TaskSpec, seed: int, run_dir: Path, script: str) -> None:
    """The run's model in run_dir/model, its lineage naming `script`."""
    lineage = build_lineage(script=script, task=spec.name, objective="classification", head="classification",
                            seed=seed, parent=loaded.provenance)
    save_checkpoint(model, loaded.tokenizer, run_dir / "model", lineage)


def finished_seed(run_dir: Path, spec: TaskSpec) -> dict | None:
    """The results of a seed an earlier invocation finished (its all_results.json, written last),
    or None; a ToolkitError if the file is there but is not a finished seed of this target."""
    path = run_dir / "all_results.json"
    results = read_json_object(path, f"delete {run_dir} to run that seed again")
    if results is None:
        return None
    key = f"eval_{primary_metric(spec)}"
    if key not in results:
        raise ToolkitError(f"{path} holds no {key}: not a finished seed on {spec.name}; delete {run_dir} to run "
                           "that seed again")
    return results

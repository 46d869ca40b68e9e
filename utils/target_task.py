"""One classification target, fine-tuned from the same checkpoint once per seed (the pieces of
run_target_task_GPT2_sst2_multiple.py).

Every run starts again from the checkpoint; runs differ only by seed, which fixes the new head's
initialisation, the data order and dropout. The epoch is chosen on a hold-out taken from the
training data (never on the validation set that is reported), or the last epoch is used.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.checkpoint import LoadedModel, build_lineage, load_model, save_checkpoint
from utils.classification import ClassificationObjective, classification_report, softmax_cross_entropy
from utils.distributed import broadcast_from_main
from utils.errors import ToolkitError
from utils.outputs import utc_now, write_all_results
from utils.records import UNLABELLED, write_jsonl
from utils.results_table import append_row
from utils.runtime import set_seed
from utils.seed_statistics import json_ready, summarize
from utils.tasks import TaskSpec
from utils.training import LoopContext, LoopSettings, plan_schedule, predict, train

logger = logging.getLogger(__name__)
DEFAULT_SEEDS = (13, 21, 42, 87, 100)
SELECTIONS = ("holdout", "last")
SAVE_MODEL_CHOICES = ("none", "best", "last")
RESULTS_TABLE_COLUMNS = ("created_at", "target_task", "pretrained_model", "source_chain", "source_tasks",
                         "objectives", "max_train_samples", "selection", "seeds", "n", "mean_accuracy",
                         "std_accuracy", "ci95_low", "ci95_high", "min_accuracy", "max_accuracy", "output_dir")


def resolve_seeds(num_runs: int | None, seeds: list[int] | None) -> list[int]:
    """--seeds as given, else the first --num_runs of 13, 21, 42, 87, 100, 101, 102, ...

    Raises:
        ToolkitError: both given and disagreeing, or a seed repeated.
    """
    if seeds:
        if num_runs is not None and num_runs != len(seeds):
            raise ToolkitError(f"--num_runs {num_runs} disagrees with the {len(seeds)} --seeds given; give one of them")
        if len(set(seeds)) != len(seeds):
            raise ToolkitError(f"--seeds repeats a seed: {seeds}")
        return list(seeds)
    count = 5 if num_runs is None else num_runs
    extra = [DEFAULT_SEEDS[-1] + i for i in range(1, max(0, count - len(DEFAULT_SEEDS)) + 1)]
    return list(DEFAULT_SEEDS + tuple(extra))[:count]


def require_labels(records: list[dict], what: str, file: str) -> None:
    """Refuse unlabelled records (GLUE's test file) for training or evaluation."""
    if any(record["label"] == UNLABELLED for record in records):
        raise ToolkitError(f"{file}: the {what} data has no labels (GLUE test files hide them); use a labelled file, "
                           "e.g. dev.tsv for validation")


def split_holdout(records: list[dict], size: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(training, hold-out): `size` records, at most a tenth of them, drawn with `seed`."""
    size = min(size, max(1, len(records) // 10))
    chosen = set(np.random.default_rng(seed).choice(len(records), size=size, replace=False).tolist())
    return ([r for i, r in enumerate(records) if i not in chosen], [r for i, r in enumerate(records) if i in chosen])


@dataclass(frozen=True)
class TargetData:
    """Feature rows (dicts with input_ids, labels, length) and the records they came from."""

    train_rows: Any
    holdout_rows: Any | None
    eval_rows: Any
    eval_records: list[dict]


def _logits(model, rows, objective: ClassificationObjective, batch_size: int, ctx: LoopContext) -> np.ndarray | None:
    outputs = predict(model, rows, list(rows["length"]), objective.forward, objective.collate, batch_size, ctx)
    return None if outputs is None else np.stack(outputs)


def run_seed(*, seed: int, pretrained: str, spec: TaskSpec, data: TargetData, settings: LoopSettings, selection: str,
             save_model: str, run_dir: Path, ctx: LoopContext) -> dict | None:
    """Fine-tune one copy of the checkpoint with `seed`; write the run's files; return its results
    (on rank 0; None elsewhere)."""
    set_seed(seed)  # before loading: the new head's initialisation draws from it
    loaded: LoadedModel = load_model(pretrained, "classification", label_names=spec.label_names)
    model = loaded.model.to(ctx.device)
    objective = ClassificationObjective(loaded.tokenizer.pad_token_id)
    schedule = plan_schedule(len(data.train_rows), settings, ctx.dist.world_size)
    best: dict[str, Any] = {"accuracy": -1.0, "epoch": None, "state": None, "curve": []}

    def holdout_step(current: torch.nn.Module) -> dict:
        """After each epoch: hold-out accuracy; remember the weights of the best epoch."""
        epoch = len(best["curve"]) + 1
        logits = _logits(current, data.holdout_rows, objective, settings.per_device_eval_batch_size, ctx)
        accuracy = None if logits is None else float(np.mean(logits.argmax(1) == np.asarray(data.holdout_rows["labels"])))
        accuracy = broadcast_from_main(ctx.dist, accuracy)
        best["curve"].append(accuracy)
        if accuracy > best["accuracy"]:
            best.update(accuracy=accuracy, epoch=epoch,
                        state={k: v.detach().to("cpu", copy=True) for k, v in current.state_dict().items()})
        return {"epoch": epoch, "holdout_accuracy": accuracy}

    per_epoch = LoopSettings(**{**settings.__dict__, "eval_steps": schedule.steps_per_epoch}) \
        if selection == "holdout" else settings
    train_metrics = train(model, data.train_rows, list(data.train_rows["length"]), objective, per_epoch, ctx,
                          save_model=lambda m, folder: None, evaluate=holdout_step if selection == "holdout" else None)
    if selection == "holdout":
        holdout_step(model)  # the final epoch (the loop evaluates only between epochs)
    if save_model == "last" and ctx.dist.is_main:
        _save_run_model(model, loaded, spec, seed, run_dir)
    if selection == "holdout" and best["state"] is not None and best["epoch"] != len(best["curve"]):
        model.load_state_dict(best["state"])
    if save_model == "best" and ctx.dist.is_main:
        _save_run_model(model, loaded, spec, seed, run_dir)
    logits = _logits(model, data.eval_rows, objective, settings.per_device_eval_batch_size, ctx)
    if logits is None:
        return None
    labels = np.asarray(data.eval_rows["labels"])
    predictions = logits.argmax(1)
    report = classification_report(labels, predictions, spec.label_names)
    results = {f"eval_{key}": value for key, value in report.items()}
    results.update({"eval_loss": softmax_cross_entropy(logits, labels), "eval_samples": len(labels),
                    "train_loss": train_metrics["train_loss"], "train_steps": train_metrics["train_steps"],
                    "selection": selection, "selected_epoch": best["epoch"] if selection == "holdout" else None,
                    "holdout_accuracy": best["accuracy"] if selection == "holdout" else None,
                    "holdout_curve": best["curve"] if selection == "holdout" else None, "seed": seed})
    # Timings vary from run to run; they go to the log so that all_results.json is reproducible.
    ctx.log.log({"event": "train_end", **train_metrics})
    write_jsonl(run_dir / "predictions.jsonl",
                ({"id": record["id"], "label": int(label), "prediction": int(prediction),
                  "logits": [float(x) for x in row]}
                 for record, label, prediction, row in zip(data.eval_records, labels, predictions, logits)))
    write_all_results(run_dir, results)  # last: its presence marks the seed as finished
    return results


def finished_seed(run_dir: Path) -> dict | None:
    """The results of a seed an earlier invocation finished (its all_results.json, written last),
    or None.

    Raises:
        ToolkitError: the file is there but unreadable (not a finished seed of this script).
    """
    path = run_dir / "all_results.json"
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ToolkitError(f"{path}: malformed JSON at line {err.lineno}; delete {run_dir} to run that seed "
                           "again") from None
    if not isinstance(results, dict) or "eval_accuracy" not in results:
        raise ToolkitError(f"{path} holds no eval_accuracy: not a finished seed of this script; delete {run_dir} "
                           "to run that seed again")
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


def chain_description(lineage: dict | None, pretrained: str) -> dict[str, str]:
    """Source chain ("gpt2 > squad > squad_v2"), its tasks and objectives, for tables."""
    if not lineage:
        return {"source_chain": pretrained, "source_tasks": "", "objectives": ""}
    chain = lineage.get("chain", [])
    names = [entry.get("task") or Path(str(entry.get("path") or entry.get("script"))).name for entry in chain]
    tasks = [entry["task"] for entry in chain if entry.get("task")]
    objectives = sorted({entry["objective"] for entry in chain if entry.get("objective")})
    return {"source_chain": " > ".join(names), "source_tasks": ";".join(tasks), "objectives": ";".join(objectives)}


def build_summary(*, spec: TaskSpec, pretrained: str, lineage: dict | None, runs: list[dict], settings: dict,
                  output_dir: Path) -> dict:
    """summary.json: every run, mean / std / 95% t-interval / min / max of accuracy and macro-F1
    (std and interval null with a single run)."""
    accuracies = [run["eval_accuracy"] for run in runs]
    return {
        "target_task": spec.name,
        "pretrained_model": pretrained,
        "lineage": lineage,
        **chain_description(lineage, pretrained),
        "seeds": [run["seed"] for run in runs],
        "runs": [{"seed": run["seed"], "eval_accuracy": run["eval_accuracy"], "eval_macro_f1": run["eval_macro_f1"],
                  "eval_loss": run["eval_loss"], "selected_epoch": run["selected_epoch"],
                  "results": f"runs/seed_{run['seed']}/all_results.json",
                  "predictions": f"runs/seed_{run['seed']}/predictions.jsonl"} for run in runs],
        "eval_accuracy": json_ready(summarize(accuracies)),
        "eval_macro_f1": json_ready(summarize([run["eval_macro_f1"] for run in runs])),
        "settings": settings,
        "output_dir": str(output_dir.resolve()),
        "created_at": utc_now(),
    }


def append_results_table(path: Path, summary: dict, max_train_samples: int | None, selection: str) -> None:
    """Append one row for this invocation to a CSV (header written once, and checked after), all
    or nothing and under a lock (utils.results_table).

    With a single run the std and CI cells read "nan": there is no estimate of the spread.

    Raises:
        ToolkitError: the file exists with other columns, or the append failed (file unchanged).
    """
    accuracy = summary["eval_accuracy"]
    row = {"created_at": summary["created_at"], "target_task": summary["target_task"],
           "pretrained_model": summary["pretrained_model"], "source_chain": summary["source_chain"],
           "source_tasks": summary["source_tasks"], "objectives": summary["objectives"],
           "max_train_samples": "" if max_train_samples is None else max_train_samples, "selection": selection,
           "seeds": ";".join(str(s) for s in summary["seeds"]), "n": accuracy["n"],
           "mean_accuracy": accuracy["mean"], "std_accuracy": _cell(accuracy["std"]),
           "ci95_low": _cell(accuracy["ci_low"]), "ci95_high": _cell(accuracy["ci_high"]),
           "min_accuracy": accuracy["min"], "max_accuracy": accuracy["max"],
           "output_dir": summary["output_dir"]}
    append_row(path, RESULTS_TABLE_COLUMNS, row, flag="--results_table")


def _cell(value: float | None) -> float | str:
    """A statistic for the CSV; "nan" where it is undefined (one run)."""
    return "nan" if value is None else value

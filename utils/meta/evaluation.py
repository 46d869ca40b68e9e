"""Evaluation of adaptation on held-out tasks: how well Reptile's θ learns a task it never saw.

For each held-out task, F1 (the task's official metric) is measured from θ itself (`f1_0`) and
after each count k of `adapt_steps` inner steps on the task's own training data (`f1_k`, steps
counted from θ: the counts are cumulative, so 5,20 means 5 steps, evaluate, 15 more, evaluate).
The inner optimizer is a fresh one per task, as at meta-test time, and θ is restored after each
task, so the evaluation never changes the meta-parameters. The support batches come from the
task's own deterministic stream (`support_stream`), the same at every evaluation of a run.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from utils.data.registry import TaskSpec
from utils.meta.reptile import make_inner_optimizer, meta_parameters
from utils.meta.training import TaskStream, adapt
from utils.qa.pipeline import QASettings, evaluate_qa
from utils.training.loop import LoopContext
from utils.training.runtime import stream_seed


@dataclass(frozen=True)
class HeldOutTask:
    """A held-out task: its support stream (training features) and its evaluation set."""

    spec: TaskSpec
    support: TaskStream
    examples: list[dict]
    features: Any


@dataclass(frozen=True)
class AdaptationSettings:
    """How adaptation is measured: inner optimizer and step counts, and the evaluation batch size."""

    adapt_steps: tuple[int, ...]
    inner_optimizer: str
    inner_lr: float
    max_grad_norm: float
    eval_batch_size: int


def support_stream(rows: Any, batch_size: int, seed: int, task: str) -> TaskStream:
    """The support batches of a held-out task: their own stream, seeded by (run seed, task)."""
    return TaskStream(rows, batch_size, seed=stream_seed(seed, "held-out-support", task))


def evaluate_adaptation(model: torch.nn.Module, tokenizer: Any, objective: Any, tasks: dict[str, HeldOutTask],
                        qa_settings_for: Callable[[TaskSpec], QASettings], settings: AdaptationSettings,
                        ctx: LoopContext, restore: Callable[[], None] | None = None) -> dict[str, dict]:
    """{task: {"f1_0": ..., "f1_<k>": ... for k in adapt_steps}} (values None on ranks other than 0).

    Args:
        qa_settings_for: the post-processing settings of a task (SQuAD v2 tasks score no-answer).
        restore: puts θ back after a task (e.g. from Reptile's own copy); default: a copy of the
            meta-parameters taken here.
    """
    theta = [p.detach().clone() for p in meta_parameters(model)] if restore is None else None
    metrics = {}
    for name, task in tasks.items():
        task_settings = qa_settings_for(task.spec)
        curve = {"f1_0": _f1(model, tokenizer, task, task_settings, settings.eval_batch_size, ctx)}
        optimizer = make_inner_optimizer(settings.inner_optimizer, meta_parameters(model), settings.inner_lr)
        taken = 0
        for target in settings.adapt_steps:
            adapt(model, objective, optimizer, [task.support.batch(j) for j in range(taken, target)], ctx.device,
                  ctx.precision, settings.max_grad_norm)
            taken = target
            curve[f"f1_{target}"] = _f1(model, tokenizer, task, task_settings, settings.eval_batch_size, ctx)
        if restore is not None:
            restore()
        else:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in meta_parameters(model)], theta)
        metrics[name] = curve
    return metrics


def _f1(model: torch.nn.Module, tokenizer: Any, task: HeldOutTask, settings: QASettings, batch_size: int,
        ctx: LoopContext) -> float | None:
    done = evaluate_qa(model, tokenizer, task.spec, task.examples, task.features, settings, batch_size, ctx)
    return done[0]["eval_f1"] if done else None

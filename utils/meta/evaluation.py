"""Evaluation of adaptation on held-out tasks: how well the meta-trained θ learns a task it never saw.

For each held-out task, F1 (its official metric) from θ itself (`f1_0`) and after k inner steps on
its own training data for each k of `adapt_steps` (`f1_k`; cumulative: 5,20 means 5 steps, evaluate,
15 more, evaluate), with a fresh inner optimizer per task as at meta-test time; θ is restored after
each task. The support batches come from the task's own seeded stream, the same at every evaluation."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from utils.data.registry import TaskSpec
from utils.meta.algorithms import adapt, inner_optimizer, meta_parameters
from utils.meta.training import TaskStream
from utils.qa.features import QASettings
from utils.qa.pipeline import evaluate_qa
from utils.training.runtime import RunContext


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


def evaluate_adaptation(model: torch.nn.Module, tokenizer: Any, objective: Any, tasks: dict[str, HeldOutTask],
                        qa_settings_for: Callable[[TaskSpec], QASettings], settings: AdaptationSettings,
                        ctx: RunContext, restore: Callable[[], None] | None = None) -> dict[str, dict]:
    """{task: {"f1_0": ..., "f1_<k>": ... for k in adapt_steps}} (values None on ranks other than 0).
    `qa_settings_for`: a task's post-processing settings; `restore` puts θ back after a task
    (default: from a copy of the meta-parameters taken here)."""
    if restore is None:
        theta = [p.detach().clone() for p in meta_parameters(model)]

        def restore() -> None:
            torch._foreach_copy_([p.data for p in meta_parameters(model)], theta)
    metrics = {}
    for name, task in tasks.items():
        task_settings = qa_settings_for(task.spec)
        curve = {"f1_0": _f1(model, tokenizer, task, task_settings, settings.eval_batch_size, ctx)}
        optimizer = inner_optimizer(settings.inner_optimizer, model, settings.inner_lr)
        for taken, target in zip((0, *settings.adapt_steps), settings.adapt_steps):
            adapt(model, objective, optimizer, [task.support.batch(j) for j in range(taken, target)], ctx,
                  settings.max_grad_norm)
            curve[f"f1_{target}"] = _f1(model, tokenizer, task, task_settings, settings.eval_batch_size, ctx)
        restore()
        metrics[name] = curve
    return metrics


def _f1(model: torch.nn.Module, tokenizer: Any, task: HeldOutTask, settings: QASettings, batch_size: int,
        ctx: RunContext) -> float | None:
    done = evaluate_qa(model, tokenizer, task.spec, task.examples, task.features, settings, batch_size, ctx)
    return done[0]["eval_f1"] if done else None

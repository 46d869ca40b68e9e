"""The training loop's pieces, checked against hand computations: gradient-accumulation weighting,
the learning-rate schedule, weight-decay grouping, and the batches."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from utils.training.loop import evaluation_batches, length_grouped_batches, shard_for_training
from utils.training.runtime import RunContext
from utils.run.outputs import JsonlLog
from utils.training.runtime import resolve_precision
from utils.training.loop import LoopSettings
from utils.training.loop import supervised_items, train
from utils.training.optim import build_optimizer, linear_schedule
from utils.training.loop import plan_schedule


class TokenMean:
    """A causal-LM-like objective: the mean over supervised tokens of (w·x − y)², with -100 labels
    ignored, so each micro-batch's loss is a mean over its own number of items."""

    name = "token_mean"

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(row["x"]) for row in rows) + 1
        x = torch.zeros(len(rows), width)
        labels = torch.full((len(rows), width), -100)
        for i, row in enumerate(rows):
            x[i, 1:len(row["x"]) + 1] = torch.tensor(row["x"])
            labels[i, 1:len(row["x"]) + 1] = 1
        return {"input_ids": labels.clamp(min=0), "attention_mask": (labels != -100).long(), "x": x, "labels": labels}

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["labels"] != -100
        errors = (model(batch["x"].unsqueeze(-1)).squeeze(-1) - 2 * batch["x"]) ** 2
        return errors[mask].mean()


def context(tmp_path: Path) -> RunContext:
    device = torch.device("cpu")
    return RunContext(device, resolve_precision("fp32", device), output_dir=tmp_path, log=JsonlLog(tmp_path / "log.jsonl"))


def test_accumulated_micro_batches_equal_one_big_batch(tmp_path):
    """Rows of 1 and 3 supervised tokens: two micro-batches of one row each must give the gradient
    of the mean over all 4 tokens (weights 1/4 and 3/4), not the mean of the two means."""
    rows = [{"x": [1.0]}, {"x": [2.0, 3.0, 4.0]}]
    # The gradient of each micro-batch is read by a hook (no clipping; the step itself is negligible).
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(model.weight, 0.5)
    seen = []
    model.weight.register_hook(lambda grad: seen.append(grad.clone()))
    settings = LoopSettings(learning_rate=1e-9, max_steps=1, per_device_train_batch_size=1,
                            gradient_accumulation_steps=2, max_grad_norm=0.0, group_by_length=False, logging_steps=10)
    train(model, rows, [1, 3], TokenMean(), settings, context(tmp_path), save_model=lambda m, f: None)
    accumulated = sum(seen)
    # By hand: d/dw mean over tokens of (w·x − 2x)² = mean of 2(w − 2)x², w = 0.5.
    xs = torch.tensor([1.0, 2.0, 3.0, 4.0])
    expected = (2 * (0.5 - 2) * xs ** 2).mean()
    assert float(accumulated) == pytest.approx(float(expected), rel=1e-6)
    wrong = ((2 * (0.5 - 2) * xs[:1] ** 2).mean() + (2 * (0.5 - 2) * xs[1:] ** 2).mean()) / 2
    assert float(accumulated) != pytest.approx(float(wrong), rel=1e-3)


def test_supervised_items_counts_shifted_labels_or_rows():
    labels = torch.tensor([[-100, 5, 6, -100], [-100, -100, 7, 8]])
    assert supervised_items({"labels": labels, "input_ids": labels}) == 4  # positions 1.. of each row
    assert supervised_items({"input_ids": torch.zeros(3, 9, dtype=torch.long), "labels": torch.tensor([0, 1, 0])}) == 3


def test_linear_schedule_by_hand():
    """lr × (s+1)/(W+1) during W warm-up steps, then linear decay to 0 at T."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    schedule = linear_schedule(optimizer, warmup_steps=3, total_steps=10)
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    expected = [1 / 4, 2 / 4, 3 / 4] + [(10 - s) / 7 for s in range(3, 10)]
    assert seen == pytest.approx(expected)
    assert optimizer.param_groups[0]["lr"] == 0.0  # at T


def test_no_weight_decay_on_biases_and_layer_norms():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=8))
    optimizer = build_optimizer(model, 1e-3, weight_decay=0.01, device=torch.device("cpu"))
    decayed, free = optimizer.param_groups
    assert decayed["weight_decay"] == 0.01 and free["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    free_names = sorted(names[id(p)] for p in free["params"])
    decayed_names = sorted(names[id(p)] for p in decayed["params"])
    assert all(n.endswith("bias") or ".ln_" in n for n in free_names)
    assert "transformer.ln_f.weight" in free_names and "transformer.h.0.ln_1.weight" in free_names
    assert "transformer.h.0.attn.c_attn.weight" in decayed_names and "transformer.wte.weight" in decayed_names
    assert len(free_names) + len(decayed_names) == len(list(model.parameters()))


def test_plan_schedule_by_hand():
    settings = LoopSettings(per_device_train_batch_size=4, gradient_accumulation_steps=3, num_train_epochs=2.5,
                            warmup_ratio=0.1)
    plan = plan_schedule(50, settings, world_size=2)
    # ceil(50 / 4) = 13 batches, 6 per process; 2 optimizer steps per epoch; 2.5 epochs -> 5 steps.
    assert (plan.batches_per_epoch, plan.steps_per_epoch, plan.total_steps) == (6, 2, 5)
    assert plan.warmup_steps == round(0.1 * 5) and plan.effective_batch_size == 4 * 3 * 2


def test_length_grouped_batches_cover_every_row_once_and_group_lengths():
    lengths = [((i * 37) % 101) + 1 for i in range(400)]
    batches = length_grouped_batches(lengths, 8, seed=3, epoch=0, group_factor=5)
    flat = sorted(i for batch in batches for i in batch)
    assert flat == list(range(400))
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # the longest batch first
    def spread(of: list[list[int]]) -> float:
        return sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in of) / len(of)

    shuffled = length_grouped_batches(lengths, 8, seed=3, epoch=0, grouped=False)
    # Sorted mega-batches of 40 cut in 5: about 100/5 = 20 apart; random batches of 8 from
    # 1..101: about 100·7/9 = 78.
    assert spread(batches) < 25 and spread(shuffled) > 60
    assert batches == length_grouped_batches(lengths, 8, seed=3, epoch=0, group_factor=5)
    assert batches != length_grouped_batches(lengths, 8, seed=3, epoch=1, group_factor=5)


def test_shards_and_evaluation_batches():
    batches = [[i] for i in range(7)]
    assert shard_for_training(batches, 0, 2) == [[0], [2], [4]] and shard_for_training(batches, 1, 2) == [[1], [3], [5]]
    lengths = [3, 9, 1, 5, 7]
    both = evaluation_batches(lengths, 2, 0, 2) + evaluation_batches(lengths, 2, 1, 2)
    assert sorted(i for batch in both for i in batch) == list(range(5))
    assert evaluation_batches(lengths, 2) == [[1, 4], [3, 0], [2]]  # longest first
    assert math.isclose(sum(map(len, evaluation_batches(lengths, 2))), 5)

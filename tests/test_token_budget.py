"""Token-budget batches (--max_tokens_per_batch): the cut by hand, every row once within the budget,
the fixed-size batches when all lengths agree, and the same loss curve as fixed batches then."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_training_loop import TokenMean, context
from utils.run.errors import ToolkitError
from utils.training.loop import LoopSettings
from utils.training.loop import length_grouped_batches, token_budget_cut
from utils.training.loop import train
from utils.training.loop import plan_schedule


def test_the_cut_by_hand():
    lengths = np.array([10, 9, 3, 3, 2])
    # Longest first: 10 pads to 16, so 32 tokens take two rows; then 3 pads to 8: four rows fit, three remain.
    batches = token_budget_cut(np.arange(5), lengths, 32, 8)
    assert [b.tolist() for b in batches] == [[0, 1], [2, 3, 4]]
    with pytest.raises(ValueError, match="a sequence of 10 tokens .* raise it to at least 16"):
        token_budget_cut(np.arange(5), lengths, 15, 8)


@pytest.mark.parametrize("seed", range(5))
def test_every_row_once_within_the_budget_and_deterministic(seed):
    lengths = np.random.default_rng(seed).integers(1, 120, size=500)
    batches = length_grouped_batches(lengths, 16, seed=seed, epoch=1, max_tokens=512)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for batch in batches:
        width = -(-int(lengths[batch].max()) // 8) * 8
        assert len(batch) * width <= 512
    assert batches == length_grouped_batches(lengths, 16, seed=seed, epoch=1, max_tokens=512)
    assert batches != length_grouped_batches(lengths, 16, seed=seed, epoch=2, max_tokens=512)
    # Short rows come many to a batch, long ones few.
    sizes = {len(b): int(lengths[b].max()) for b in batches}
    assert max(sizes) > 16 > min(sizes)


def test_equal_lengths_give_the_fixed_batches():
    lengths = [16] * 100
    assert length_grouped_batches(lengths, 4, seed=3, epoch=0, max_tokens=64) == \
        length_grouped_batches(lengths, 4, seed=3, epoch=0)


def test_the_loss_curve_equals_the_fixed_batch_curve_when_the_batches_coincide(tmp_path):
    rows = [{"x": list(np.random.default_rng(i).normal(size=8))} for i in range(40)]   # 8 supervised tokens each
    lengths = [8] * 40
    curves = []
    for budget in (None, 4 * 8):
        model = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.constant_(model.weight, 0.5)
        folder = tmp_path / str(budget)
        folder.mkdir()
        settings = LoopSettings(learning_rate=1e-2, num_train_epochs=2, per_device_train_batch_size=4,
                                max_grad_norm=0.0, logging_steps=1, max_tokens_per_batch=budget)
        metrics = train(model, rows, lengths, TokenMean(), settings, context(folder), save_model=lambda m, f: None)
        curves.append((metrics["train_loss"], metrics["train_passes"], float(model.weight.detach())))
    assert curves[0] == curves[1] and curves[0][1] == 20


def test_the_schedule_counts_token_budget_batches():
    lengths = [8] * 30 + [64] * 10
    settings = LoopSettings(per_device_train_batch_size=4, num_train_epochs=1, max_tokens_per_batch=128)
    schedule = plan_schedule(40, settings, 1, lengths)
    # 30 rows of 8 (16 per batch: 2 batches) and 10 rows of 64 (2 per batch: 5 batches).
    assert schedule.batches_per_epoch == 7 and schedule.effective_batch_size == pytest.approx(40 / 7)
    with pytest.raises(ToolkitError, match="raise it to at least 64"):
        plan_schedule(40, LoopSettings(per_device_train_batch_size=4, max_tokens_per_batch=32), 1, lengths)


def test_on_the_tiny_gpt2_the_50_step_loss_curve_equals_the_fixed_batch_curve(tiny_checkpoint, tmp_path):
    """The tiny GPT-2 classifier, 200 rows of 8 tokens, batch 4: 50 steps, every step's loss equal
    (the same batches, so the same computation)."""
    import json

    from utils.classification.objective import ClassificationObjective
    from utils.models.loading import load_model

    generator = np.random.default_rng(0)
    rows = [{"input_ids": generator.integers(0, 500, size=8).tolist(), "labels": int(generator.integers(2)), "length": 8}
            for _ in range(200)]
    curves = []
    for budget in (None, 32):
        torch.manual_seed(0)
        loaded = load_model(tiny_checkpoint, "classification", label_names=("a", "b"))
        folder = tmp_path / str(budget)
        folder.mkdir()
        settings = LoopSettings(learning_rate=1e-3, num_train_epochs=1, per_device_train_batch_size=4,
                                logging_steps=1, max_tokens_per_batch=budget)
        train(loaded.model, rows, [8] * 200, ClassificationObjective(loaded.tokenizer.pad_token_id), settings,
              context(folder), save_model=lambda m, f: None)
        curves.append([e["loss"] for e in map(json.loads, open(folder / "log.jsonl")) if "loss" in e])
    assert len(curves[0]) == 50 and curves[0] == curves[1]

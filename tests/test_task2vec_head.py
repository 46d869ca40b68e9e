"""Fitting the probe's head (task2vec.embedding.probe): the chunked vocabulary loss and gradient against autograd's
full softmax, the fit against an independent AdamW reference and against the optimum of a long
full-batch L-BFGS, the reported losses against brute force, determinism, and the progress lines."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from task2vec.embedding.predictions import head_chunk_rows
from task2vec.embedding.probe import HeadSettings, fit_head, head_schedule, lm_head_loss

GPT2_VOCAB = 50257


def problem(tokens: int, width: int, vocab: int, dtype: torch.dtype, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(tokens, width, generator=generator, dtype=dtype)
    weight = torch.randn(vocab, width, generator=generator, dtype=dtype) * 0.5
    bias = torch.randn(vocab, generator=generator, dtype=dtype)
    targets = torch.randint(0, vocab, (tokens,), generator=generator)
    return features, weight, bias, targets


def autograd_reference(features, weight, bias, targets):
    """F.cross_entropy on the full (N, C) logits, differentiated by autograd."""
    weight = weight.clone().requires_grad_(True)
    bias = None if bias is None else bias.clone().requires_grad_(True)
    loss = F.cross_entropy(F.linear(features, weight, bias), targets)
    loss.backward()
    return loss.item(), weight.grad, None if bias is None else bias.grad


@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_loss_and_gradient_equal_autograd_over_the_full_softmax(with_bias):
    # 100 tokens of GPT-2's vocabulary: three chunks on a CPU (41, 41, 18 rows), so the chunk
    # boundaries are crossed.
    assert head_chunk_rows(GPT2_VOCAB, torch.device("cpu")) < 100
    features, weight, bias, targets = problem(100, 5, GPT2_VOCAB, torch.float64)
    bias = bias if with_bias else None
    result = lm_head_loss(features, targets, weight, bias)
    loss, weight_grad, bias_grad = autograd_reference(features, weight, bias, targets)
    assert result.count == 100
    assert result.loss == pytest.approx(loss, rel=1e-12)
    torch.testing.assert_close(result.weight_grad, weight_grad, rtol=1e-10, atol=1e-16)
    if with_bias:
        torch.testing.assert_close(result.bias_grad, bias_grad, rtol=1e-10, atol=1e-16)
    else:
        assert result.bias_grad is None
    # fp32, as the probe runs it: autograd's own fp32 answer differs from fp64 by as much
    single = lm_head_loss(features.float(), targets, weight.float(), None if bias is None else bias.float())
    assert single.loss == pytest.approx(loss, rel=1e-5)
    torch.testing.assert_close(single.weight_grad.double(), weight_grad, rtol=1e-4, atol=1e-9)
    assert lm_head_loss(features, targets, weight, bias, gradient=False).weight_grad is None


def test_an_underflowed_target_probability_is_recomputed_not_infinite():
    features, weight, bias, targets = problem(30, 4, 200, torch.float32)
    weight[targets[3]] = -40.0 * features[3].sign()     # logit about 150 below the rest for row 3: p = 0 in fp32
    result = lm_head_loss(features, targets, weight, bias)
    loss, weight_grad, _ = autograd_reference(features.double(), weight.double(), bias.double(), targets)
    assert result.loss == pytest.approx(loss, rel=1e-6) and loss > 150 / 30
    torch.testing.assert_close(result.weight_grad.double(), weight_grad, rtol=1e-4, atol=1e-7)


def lm_rows(vocab: int, lengths: list[int], width: int, dtype: torch.dtype, seed: int = 1):
    """Probe rows of random tokens and cached (T_i, width) hidden states for them."""
    generator = torch.Generator().manual_seed(seed)
    rows = [{"input_ids": torch.randint(0, vocab, (n,), generator=generator).tolist()} for n in lengths]
    hidden = {i: torch.randn(n, width, generator=generator, dtype=dtype) for i, n in enumerate(lengths)}
    return rows, hidden


def reference_adamw_fit(head: nn.Module, hidden: dict, rows: list[dict], schedule: list[list[int]],
                        settings: HeadSettings) -> list[float]:
    """Written apart from task2vec.embedding.probe: torch's AdamW on F.cross_entropy of the full logits of each
    step's tokens, differentiated by autograd (what the head fit computed before the chunked gradient)."""
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.learning_rate, eps=1e-8,
                                  weight_decay=settings.weight_decay)
    losses = []
    for step in schedule:
        inputs = torch.cat([hidden[i][:-1] for i in step])
        targets = torch.cat([torch.tensor(rows[i]["input_ids"][1:]) for i in step])
        loss = F.cross_entropy(head(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def full_data_loss(head: nn.Module, hidden: dict, rows: list[dict]) -> float:
    """Mean cross-entropy over every next token of every row, one row at a time with full logits."""
    total, count = 0.0, 0
    with torch.no_grad():
        for i, row in enumerate(rows):
            targets = torch.tensor(row["input_ids"][1:])
            total += F.cross_entropy(head(hidden[i][:-1]).double(), targets, reduction="sum").item()
            count += targets.numel()
    return total / count


@pytest.mark.parametrize("with_bias", [False, True])
def test_the_fit_equals_an_autograd_adamw_reference_and_reports_full_data_losses(with_bias):
    vocab, width = 300, 8
    rows, hidden = lm_rows(vocab, [9, 5, 12, 7, 6, 10], width, torch.float64)
    settings = HeadSettings(steps=40, learning_rate=1e-2, weight_decay=1e-2, batch_size=2)
    schedule = head_schedule(len(rows), settings, torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    ours = nn.Linear(width, vocab, bias=with_bias).double()
    theirs = nn.Linear(width, vocab, bias=with_bias).double()
    theirs.load_state_dict(ours.state_dict())
    initial = full_data_loss(ours, hidden, rows)
    report = fit_head(ours, "lm", hidden, rows, schedule, settings, torch.device("cpu"))
    losses = reference_adamw_fit(theirs, hidden, rows, schedule, settings)
    for name, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], value, rtol=1e-9, atol=1e-12)
    assert report["steps"] == 40 and report["first_loss"] == pytest.approx(sum(losses[:10]) / 10, rel=1e-10)
    assert report["last_loss"] == pytest.approx(sum(losses[-10:]) / 10, rel=1e-10)
    assert report["full_data_loss"] == pytest.approx(full_data_loss(ours, hidden, rows), rel=1e-10)
    assert report["predictions"] == sum(len(r["input_ids"]) - 1 for r in rows)
    assert report["full_data_loss"] < initial


def test_a_long_fit_reaches_the_optimum_of_a_full_batch_lbfgs():
    # Random labels on 109 tokens, 6 classes and 3 features: far from separable, so the cross-entropy
    # has a finite minimiser, found here by L-BFGS in float64 to a gradient norm of 1e-10.
    vocab, width = 6, 3
    rows, hidden = lm_rows(vocab, [23, 21, 26, 19, 25], width, torch.float64, seed=5)
    inputs = torch.cat([hidden[i][:-1] for i in range(len(rows))])
    targets = torch.cat([torch.tensor(r["input_ids"][1:]) for r in rows])
    optimum = nn.Linear(width, vocab).double()
    solver = torch.optim.LBFGS(optimum.parameters(), lr=1, max_iter=2000, tolerance_grad=1e-10,
                               tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure():
        solver.zero_grad()
        loss = F.cross_entropy(optimum(inputs), targets)
        loss.backward()
        return loss

    solver.step(closure)
    best = full_data_loss(optimum, hidden, rows)
    # every step sees every row (batch_size = rows); AdamW without decay, 600 steps
    settings = HeadSettings(steps=600, learning_rate=3e-2, weight_decay=0.0, batch_size=len(rows))
    schedule = head_schedule(len(rows), settings, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    head = nn.Linear(width, vocab).double()
    start = full_data_loss(head, hidden, rows)
    report = fit_head(head, "lm", hidden, rows, schedule, settings, torch.device("cpu"))
    assert start > best + 0.1
    assert report["full_data_loss"] == pytest.approx(best, rel=1e-8)
    assert report["full_data_loss"] >= best - 1e-9


def test_same_schedule_same_head_bit_for_bit():
    rows, hidden = lm_rows(GPT2_VOCAB, [30, 20, 45], 3, torch.float32)
    settings = HeadSettings(steps=4, learning_rate=1e-3, weight_decay=1e-4, batch_size=2)
    heads = []
    for _ in range(2):
        schedule = head_schedule(len(rows), settings, torch.Generator().manual_seed(9))
        torch.manual_seed(0)
        head = nn.Linear(3, GPT2_VOCAB, bias=False)
        fit_head(head, "lm", hidden, rows, schedule, settings, torch.device("cpu"))
        heads.append(head.weight.detach())
    assert torch.equal(heads[0], heads[1])


def test_a_non_finite_loss_stops_the_fit():
    rows, hidden = lm_rows(50, [5, 6], 3, torch.float32)
    hidden[0][1, 0] = float("nan")
    settings = HeadSettings(steps=3, learning_rate=1e-3, weight_decay=0.0, batch_size=2)
    schedule = head_schedule(len(rows), settings, torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="step 1 is nan"):
        fit_head(nn.Linear(3, 50), "lm", hidden, rows, schedule, settings, torch.device("cpu"))


def test_without_a_terminal_the_head_fit_logs_step_total_eta_and_loss(tiny_checkpoint, caplog):
    from task2vec.embedding.embed import EmbeddingSettings, embed_task
    from utils.data.loading import load_task_data
    from utils.data.registry import get_task
    from utils.data.loading import sample_file
    from utils.models.loading import load_model
    from utils.training.runtime import RunContext

    caplog.set_level(logging.INFO)
    device = torch.device("cpu")
    settings = EmbeddingSettings(batch_size=8, num_batches=1, num_samples=1, noise_floor=False,
                                 head=HeadSettings(3, 5e-5, 1e-4, 4))
    context = RunContext(device, progress_interval_s=0.0)
    records = load_task_data("sst2", "train", sample_file("sst2", "train")).records
    embedding = embed_task(load_model(tiny_checkpoint, "lm"), get_task("sst2"), records, settings, context,
                           source="samples")
    lines = [r.getMessage() for r in caplog.records if r.name == "utils.run.progress"]
    head = [line for line in lines if line.startswith("head sst2:")]
    assert [line.split(" (")[0] for line in head] == ["head sst2: 1 of 3", "head sst2: 2 of 3", "head sst2: 3 of 3"]
    assert all(" elapsed, ETA " in line and ", loss " in line for line in head)
    said = [r.getMessage() for r in caplog.records if r.name == "task2vec.embedding.embed"]
    assert any(line.startswith("sst2: fitting the lm head, 3 AdamW steps of 4 sequences") for line in said)
    assert any(line.startswith("sst2: head fitted in ") for line in said)
    meta = embedding.metadata["head"]
    assert meta["steps"] == 3 and meta["learning_rate"] == 5e-5 and meta["predictions"] > 0
    assert meta["full_data_loss"] > 0 and meta["seconds"] >= 0

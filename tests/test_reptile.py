"""Reptile's update checked against independent computations on a tiny GPT-2 (dropout off)."""
import copy

import pytest
import torch

from utils.models.loading import load_model
from utils.meta.algorithms import MetaBuffers, annealed_epsilon, inner_optimizer, meta_parameters


@pytest.fixture()
def model(tiny_checkpoint):
    torch.manual_seed(0)
    return load_model(tiny_checkpoint, "lm").model.train()  # the tiny checkpoint has no dropout


def task_batches(seed, vocab, count=3):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (2, 12), generator=generator) for _ in range(count)]


def inner(model, optimizer, batches):
    for ids in batches:
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def params_of(model):
    return [p.detach().clone() for p in meta_parameters(model)]


def test_batched_update_equals_the_formula_from_independent_copies(model):
    vocab = model.config.vocab_size
    tasks = [task_batches(s, vocab) for s in (1, 2, 3)]
    theta = params_of(model)
    adapted = []
    for batches in tasks:  # the reference: one deep copy per task
        clone = copy.deepcopy(model)
        inner(clone, torch.optim.SGD(meta_parameters(clone), lr=0.05), batches)
        adapted.append(params_of(clone))
    epsilon = 0.3
    expected = [t + epsilon * (sum(a[i] for a in adapted) / 3 - t) for i, t in enumerate(theta)]

    buffers = MetaBuffers(meta_parameters(model))
    buffers.begin()
    for batches in tasks:
        buffers.restore()
        inner(model, torch.optim.SGD(meta_parameters(model), lr=0.05), batches)
        buffers.add()
    norm = buffers.update(epsilon)
    for got, want in zip(params_of(model), expected):
        assert torch.allclose(got, want, atol=1e-6)
    assert norm == pytest.approx(torch.sqrt(sum(((w - t) ** 2).sum() for w, t in zip(expected, theta))).item(), rel=1e-4)


def test_one_sgd_step_is_a_gradient_step_on_the_mean_loss(model):
    vocab = model.config.vocab_size
    tasks = [task_batches(s, vocab, count=1) for s in (4, 5)]
    alpha, epsilon = 0.1, 0.5
    theta = params_of(model)
    grads = []
    for batches in tasks:
        model.zero_grad(set_to_none=True)
        model(input_ids=batches[0], labels=batches[0]).loss.backward()
        grads.append([p.grad.detach().clone() for p in meta_parameters(model)])
    model.zero_grad(set_to_none=True)
    expected = [t - epsilon * alpha * (g0 + g1) / 2 for t, g0, g1 in zip(theta, *grads)]
    buffers = MetaBuffers(meta_parameters(model))
    buffers.begin()
    for batches in tasks:
        buffers.restore()
        inner(model, torch.optim.SGD(meta_parameters(model), lr=alpha), batches)
        buffers.add()
    buffers.update(epsilon)
    for got, want in zip(params_of(model), expected):
        assert torch.allclose(got, want, atol=1e-6)


def test_epsilon_one_with_one_task_is_plain_fine_tuning(model):
    batches = task_batches(7, model.config.vocab_size)
    reference = copy.deepcopy(model)
    inner(reference, inner_optimizer("adam", reference, 1e-3), batches)
    buffers = MetaBuffers(meta_parameters(model))
    buffers.begin()
    inner(model, inner_optimizer("adam", model, 1e-3), batches)
    buffers.add()
    buffers.update(1.0)
    for got, want in zip(params_of(model), params_of(reference)):
        assert torch.allclose(got, want, atol=1e-6)


def test_epsilon_zero_leaves_theta_unchanged(model):
    theta = params_of(model)
    buffers = MetaBuffers(meta_parameters(model))
    buffers.begin()
    inner(model, inner_optimizer("sgd", model, 0.1), task_batches(8, model.config.vocab_size))
    buffers.add()
    assert buffers.update(0.0) == 0.0
    for got, want in zip(params_of(model), theta):
        assert torch.equal(got, want)


def test_schedule_matches_its_formula():
    assert annealed_epsilon(0, 100, 1.0) == 1.0
    assert annealed_epsilon(50, 100, 1.0) == 0.5
    assert annealed_epsilon(99, 100, 1.0) == pytest.approx(0.01)
    assert annealed_epsilon(50, 100, 1.0, final=0.2) == pytest.approx(0.6)


def run_two_tasks(model, kind, carry):
    buffers = MetaBuffers(meta_parameters(model))
    buffers.begin()
    optimizer = inner_optimizer(kind, model, 1e-2)
    for seed in (10, 11):
        buffers.restore()
        if not carry:
            optimizer = inner_optimizer(kind, model, 1e-2)
        inner(model, optimizer, task_batches(seed, model.config.vocab_size, count=2))
        buffers.add()
    buffers.update(0.5)
    return params_of(model)


def test_carried_optimizer_state_matters_for_adam_not_for_sgd(model):
    start = copy.deepcopy(model.state_dict())
    results = {}
    for kind in ("adam", "sgd"):
        for carry in (False, True):
            model.load_state_dict(start)
            results[kind, carry] = run_two_tasks(model, kind, carry)
    assert any(not torch.allclose(a, b) for a, b in zip(results["adam", False], results["adam", True]))
    assert all(torch.equal(a, b) for a, b in zip(results["sgd", False], results["sgd", True]))


def test_tied_weights_stay_tied_and_buffers_are_untouched(model):
    assert model.lm_head.weight is model.transformer.wte.weight
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.weight" not in names  # counted once, through wte
    buffers_before = {n: b.clone() for n, b in model.named_buffers()}
    reptile = MetaBuffers(meta_parameters(model))
    reptile.begin()
    inner(model, inner_optimizer("adam", model, 1e-2), task_batches(12, model.config.vocab_size))
    reptile.add()
    reptile.update(0.5)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert torch.equal(model.lm_head.weight, model.transformer.wte.weight)
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers_before[name]), name

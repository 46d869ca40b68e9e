"""FOMAML and multi-task training in the meta-training loop, checked against independent
computations (deep copies, torch.autograd.grad, a plain optimizer loop) on a tiny GPT-2 without
dropout."""
from __future__ import annotations

import copy
import json

import datasets
import pytest
import torch

from utils.meta.algorithms import meta_parameters, split_support_query
from utils.meta.training import MetaSettings, TaskStream, meta_train
from utils.models.loading import load_model
from utils.run.outputs import JsonlLog
from utils.training.runtime import RunContext

LENGTH = 10


class LMObjective:
    """Next-token loss of equal-length rows (the test's own, independent of the project's objectives)."""

    name = "lm"

    def collate(self, rows):
        return {"input_ids": torch.tensor([row["input_ids"] for row in rows])}

    def loss(self, model, batch):
        return model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss


def task_rows(seed: int, vocab: int, count: int = 12):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (count, LENGTH), generator=generator).tolist()
    return datasets.Dataset.from_list([{"input_ids": row, "length": LENGTH, "example_id": f"{seed}-{i}"}
                                       for i, row in enumerate(ids)])


@pytest.fixture()
def model(tiny_checkpoint):
    torch.manual_seed(0)
    return load_model(tiny_checkpoint, "lm").model.train()


def settings(**changes) -> MetaSettings:
    base = dict(num_train_iterations=2, meta_batch_size=2, num_inner_steps=2, inner_batch_size=3, inner_lr=0.1,
                outer_lr=0.5, outer_lr_final=0.5, inner_optimizer="sgd", inner_opt_state="reset",
                task_sampling="uniform", max_grad_norm=0.0, seed=5, eval_every=None, save_every=None)
    return MetaSettings(**{**base, **changes})


def run(model, streams, meta: MetaSettings, tmp_path, query_streams=None) -> list[dict]:
    """meta_train on one CPU process; returns its log records of the outer steps."""
    log = JsonlLog(tmp_path / "meta_log.jsonl")
    meta_train(model, LMObjective(), streams, meta, RunContext(torch.device("cpu"), output_dir=tmp_path, log=log),
               query_streams=query_streams)
    return [e for e in map(json.loads, open(tmp_path / "meta_log.jsonl")) if "tasks" in e]


def grads(model, objective, rows):
    params = meta_parameters(model)
    loss = objective.loss(model, objective.collate(rows))
    return [torch.zeros_like(p) if g is None else g for p, g in
            zip(params, torch.autograd.grad(loss, params, allow_unused=True))]


def streams_of(vocab):
    support = {name: TaskStream(task_rows(seed, vocab), 3, seed=seed) for seed, name in ((1, "a"), (2, "b"))}
    query = {name: TaskStream(task_rows(seed + 10, vocab, 6), 3, seed=seed) for seed, name in ((1, "a"), (2, "b"))}
    return support, query


def expected_fomaml(model, support, query, steps, inner_lr, outer_lr, k, last_cut=None):
    """θ after the logged outer steps, by deep copies: k SGD steps on the support batches from θ,
    the query gradient at φ, θ ← θ − β·mean (an SGD meta optimizer with learning rate β); the last
    step's task i takes last_cut[i] steps when given."""
    objective = LMObjective()
    theta = copy.deepcopy(model)
    positions = {name: 0 for name in support}
    query_positions = {name: 0 for name in support}
    for number, tasks in enumerate(steps):
        total = [torch.zeros_like(p) for p in meta_parameters(theta)]
        for slot, name in enumerate(tasks):
            adapted = copy.deepcopy(theta)
            inner = last_cut[slot] if last_cut and number == len(steps) - 1 else k
            for j in range(inner):
                g = grads(adapted, objective, support[name].batch(positions[name] + j))
                with torch.no_grad():
                    for p, gi in zip(meta_parameters(adapted), g):
                        p -= inner_lr * gi
            positions[name] += inner
            g = grads(adapted, objective, query[name].batch(query_positions[name]))
            query_positions[name] += 1
            total = [t + gi for t, gi in zip(total, g)]
        with torch.no_grad():
            for p, t in zip(meta_parameters(theta), total):
                p -= outer_lr * t / len(tasks)
    return theta


@pytest.mark.parametrize("inner_lr", [0.1, 0.0])
def test_fomaml_update_equals_deep_copies_and_autograd(model, tmp_path, inner_lr):
    """θ' by the loop = θ' by copies; with inner step size 0 it is gradient descent on the query
    loss at θ itself (then φ = θ)."""
    vocab = model.config.vocab_size
    support, query = streams_of(vocab)
    before = copy.deepcopy(model)
    steps = run(model, support, settings(algorithm="fomaml", inner_lr=inner_lr, meta_lr=0.5, meta_optimizer="sgd"),
                tmp_path, query)
    expected = expected_fomaml(before, support, query, [s["tasks"] for s in steps], inner_lr, 0.5, 2)
    for got, want in zip(meta_parameters(model), meta_parameters(expected)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert any(not torch.equal(got, old) for got, old in zip(meta_parameters(model), meta_parameters(before)))
    assert all(len(s["query_losses"]) == 2 for s in steps)
    assert [s["passes"] for s in steps] == [6, 12]   # (k + 1) passes per sampled task


def test_a_last_outer_step_cut_short_adapts_its_first_tasks_only(model, tmp_path):
    """final_inner_steps (a compute budget met within one batch): FOMAML's last step adapts its
    first task 2 steps and its second 1, and counts those passes; multi-task's cut step takes its
    second optimizer step on the first task's batch alone."""
    vocab = model.config.vocab_size
    support, query = streams_of(vocab)
    before = copy.deepcopy(model)
    steps = run(model, support, settings(algorithm="fomaml", meta_lr=0.5, meta_optimizer="sgd",
                                         final_inner_steps=(2, 1)), tmp_path, query)
    expected = expected_fomaml(before, support, query, [s["tasks"] for s in steps], 0.1, 0.5, 2, last_cut=(2, 1))
    for got, want in zip(meta_parameters(model), meta_parameters(expected)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert [s["passes"] for s in steps] == [6, 6 + 3 + 2]

    model = copy.deepcopy(before)
    folder = tmp_path / "multitask"
    folder.mkdir()
    steps = run(model, support, settings(algorithm="multitask", num_train_iterations=1, final_inner_steps=(2, 1)),
                folder)
    assert steps[0]["passes"] == 3
    first, second = steps[0]["tasks"]
    theta = copy.deepcopy(before)
    for batches in ([support[first].batch(0), support[second].batch(0 if first != second else 2)],
                    [support[first].batch(1)]):    # step 2: the first task's batch alone, not halved
        g = [sum(parts) / len(batches) for parts in zip(*(grads(theta, LMObjective(), rows) for rows in batches))]
        with torch.no_grad():
            for p, gi in zip(meta_parameters(theta), g):
                p -= 0.1 * gi
    for got, want in zip(meta_parameters(model), meta_parameters(theta)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_fomaml_with_zero_inner_steps_size_is_gradient_descent_on_the_query_loss(model, tmp_path):
    vocab = model.config.vocab_size
    support, query = streams_of(vocab)
    theta = copy.deepcopy(model)
    steps = run(model, support, settings(algorithm="fomaml", inner_lr=0.0, num_train_iterations=1, meta_lr=0.5,
                                         meta_optimizer="sgd"), tmp_path, query)
    positions = {name: 0 for name in support}
    total = [torch.zeros_like(p) for p in meta_parameters(theta)]
    for name in steps[0]["tasks"]:
        g = grads(theta, LMObjective(), query[name].batch(positions[name]))
        positions[name] += 1
        total = [t + gi for t, gi in zip(total, g)]
    with torch.no_grad():
        for p, t in zip(meta_parameters(theta), total):
            p -= 0.5 * t / 2
    for got, want in zip(meta_parameters(model), meta_parameters(theta)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_multitask_with_one_task_is_plain_fine_tuning_step_for_step(model, tmp_path, optimizer):
    vocab = model.config.vocab_size
    stream = TaskStream(task_rows(1, vocab), 3, seed=1)
    plain = copy.deepcopy(model)
    steps = run(model, {"a": stream}, settings(algorithm="multitask", meta_batch_size=1, num_inner_steps=3,
                                               num_train_iterations=2, inner_optimizer=optimizer, inner_lr=1e-2),
                tmp_path)
    params = meta_parameters(plain)
    step_by = torch.optim.SGD(params, lr=1e-2) if optimizer == "sgd" else \
        torch.optim.Adam(params, lr=1e-2, betas=(0.0, 0.999))
    losses = []
    objective = LMObjective()
    for position in range(6):
        loss = objective.loss(plain, objective.collate(stream.batch(position)))
        loss.backward()
        step_by.step()
        step_by.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    logged = [value for s in steps for value in s["inner_losses"][0]]
    assert logged == pytest.approx(losses, abs=1e-6)
    for got, want in zip(meta_parameters(model), params):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert [s["passes"] for s in steps] == [3, 6] and steps[-1]["tokens"] == 6 * 3 * LENGTH


def test_reptile_multitask_and_fomaml_count_their_passes_and_tokens(model, tmp_path):
    """The same sampled tasks and stream batches: Reptile and multi-task m·k passes per step, FOMAML m·(k+1)."""
    vocab = model.config.vocab_size
    support, query = streams_of(vocab)
    counts = {}
    for algorithm in ("reptile", "multitask", "fomaml"):
        folder = tmp_path / algorithm
        folder.mkdir()
        steps = run(copy.deepcopy(model), support, settings(algorithm=algorithm, num_train_iterations=3), folder,
                    query if algorithm == "fomaml" else None)
        counts[algorithm] = (steps[-1]["passes"], steps[-1]["tokens"], [s["tasks"] for s in steps])
    assert counts["reptile"] == counts["multitask"] == (12, 12 * 3 * LENGTH, counts["fomaml"][2])
    assert counts["fomaml"][:2] == (18, 18 * 3 * LENGTH)


def test_support_and_query_never_share_a_question():
    rows = datasets.Dataset.from_list([{"example_id": f"q{i // 2}", "length": 5} for i in range(40)])  # 2 windows each
    support, query = split_support_query(rows, 0.25, seed=3)
    assert set(support["example_id"]).isdisjoint(query["example_id"])
    assert len(set(query["example_id"])) == 5 and len(support) + len(query) == 40
    again, _ = split_support_query(rows, 0.25, seed=3)
    assert again["example_id"] == support["example_id"]


def test_task_sampling_probabilities_by_hand():
    from utils.meta.training import sampling_probabilities

    assert sampling_probabilities([1, 4, 16], "uniform") is None
    assert sampling_probabilities([1, 4, 16], "proportional") == pytest.approx([1 / 21, 4 / 21, 16 / 21])
    assert sampling_probabilities([1, 4, 16], "temperature", 2.0) == pytest.approx([1 / 7, 2 / 7, 4 / 7])  # √n
    assert sampling_probabilities([1, 4, 16], "temperature", 1.0) == pytest.approx([1 / 21, 4 / 21, 16 / 21])

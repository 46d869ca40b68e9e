"""The Fisher estimators against brute force, exact enumeration and invariances (float64, tiny GPT-2)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from task2vec.embedding.fisher import diagonal_fisher, fisher_sums, sample_labels
from task2vec.embedding.layout import build_layout, flatten, objective_exclusions, select_parameters
from task2vec.embedding.predictions import next_token_predictions
from task2vec.embedding.probe import (PREDICTIONS, HeadSettings, ProbeModel, cache_hidden_states, collate_fn, fit_head,
                            head_schedule, new_head)

VOCAB = 50


def tiny_lm(vocab: int = VOCAB, n_embd: int = 16, seed: int = 0) -> GPT2LMHeadModel:
    config = GPT2Config(n_layer=2, n_head=2, n_embd=n_embd, vocab_size=vocab, n_positions=16, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).double().eval()


def padded_batch(lengths: list[int], width: int, vocab: int = VOCAB, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (len(lengths), width), generator=generator)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
        ids[row, length:] = 0   # pad id; masked anyway
    return ids, mask


def assert_same(fast: dict, slow: dict, rtol: float) -> None:
    """Equal within rtol; the absolute slack only covers coordinates that are zero in exact arithmetic
    (the attention KEY bias: adding a constant to every key leaves each query's softmax unchanged, so its
    gradient is pure rounding, ~1e-20 relative to the parameter's largest value)."""
    assert fast.keys() == slow.keys()
    for name in fast:
        torch.testing.assert_close(fast[name], slow[name], rtol=rtol, atol=1e-15 * float(slow[name].abs().max()),
                                   msg=name)


@pytest.mark.parametrize("include", [(), ("bias",)])
def test_empirical_hooks_equal_the_per_sequence_loop(include):
    model = tiny_lm()
    ids, mask = padded_batch([10, 6, 3, 8], 10)
    covered = select_parameters(model, "transformer", include)
    fast = diagonal_fisher(model, ids, mask, estimator="empirical", parameters=covered)
    slow = diagonal_fisher(model, ids, mask, estimator="empirical", parameters=covered, method="loop")
    assert len(fast) == len(covered) == (13 if not include else 26)
    assert_same(fast, slow, rtol=1e-8)
    assert all(value.abs().sum() > 0 for value in fast.values())


def test_mc_hooks_equal_the_loop_given_the_same_labels():
    model = tiny_lm()
    ids, mask = padded_batch([9, 4, 7], 9)
    predictions = next_token_predictions(model, {"input_ids": ids, "attention_mask": mask})
    labels = sample_labels(predictions, 3, torch.Generator().manual_seed(5))              # (K=3, B, T-1)
    fast = diagonal_fisher(model, ids, mask, estimator="mc", num_samples=3, labels=labels)
    slow = diagonal_fisher(model, ids, mask, estimator="mc", num_samples=3, labels=labels, method="loop")
    assert_same(fast, slow, rtol=1e-8)
    # The sampled labels are not the data's: the estimate differs from the empirical one.
    empirical = diagonal_fisher(model, ids, mask, estimator="empirical")
    assert not torch.allclose(fast["transformer.h.0.mlp.c_fc.weight"], empirical["transformer.h.0.mlp.c_fc.weight"])


def test_untied_lm_head_and_task_heads_match_the_loop():
    """The engine is generic: a probe with its own LM, classification or span head."""
    lm = tiny_lm()
    generator = torch.Generator().manual_seed(3)
    ids, mask = padded_batch([7, 5, 3], 8)
    batches = {
        "lm": {"input_ids": ids, "attention_mask": mask},
        "classification": {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1])},
        "span": {"input_ids": ids, "attention_mask": mask,
                 "candidates": mask.bool() & (torch.arange(8) >= 1), "start_positions": torch.tensor([2, 1, 2]),
                 "end_positions": torch.tensor([4, 3, 2])},
    }
    for kind, batch in batches.items():
        head = new_head(lm, kind, 2, generator).double()
        probe = ProbeModel(lm.transformer, head, "transformer", kind).eval()
        covered = select_parameters(probe, "transformer")
        for estimator in ("empirical", "mc"):
            labels = None
            if estimator == "mc":
                labels = sample_labels(PREDICTIONS[kind](probe, batch), 2, torch.Generator().manual_seed(9))
            kwargs = dict(estimator=estimator, num_samples=2 if labels is not None else 1, labels=labels)
            fast = fisher_sums(probe, batch, PREDICTIONS[kind], covered, **kwargs)
            slow = fisher_sums(probe, batch, PREDICTIONS[kind], covered, method="loop", **kwargs)
            assert fast.weight == slow.weight
            assert_same(fast.diagonal(), slow.diagonal(), rtol=1e-8)


def exact_fisher(model, ids, mask, covered) -> dict[str, torch.Tensor]:
    """sum_b sum_t sum_y p_bt(y) (d log p_bt(y)/dw)^2 / sum m, by one backward per (b, t, y)."""
    params = dict(model.named_parameters())
    tensors = [params[p.name] for p in covered]
    total = {p.name: torch.zeros(p.shape, dtype=torch.float64) for p in covered}
    count = 0
    for b in range(ids.size(0)):
        log_probs = torch.log_softmax(model(input_ids=ids[b:b + 1], attention_mask=mask[b:b + 1]).logits[0], -1)
        for t in range(ids.size(1) - 1):
            if not (mask[b, t] and mask[b, t + 1]):
                continue
            count += 1
            for y in range(log_probs.size(-1)):
                grads = torch.autograd.grad(log_probs[t, y], tensors, retain_graph=True)
                for parameter, grad in zip(covered, grads):
                    total[parameter.name] += log_probs[t, y].exp().detach() * grad.square()
    return {name: value / count for name, value in total.items()}


@pytest.mark.slow
def test_mc_average_matches_the_exact_expectation_and_minibatch_sq_its_scaled_version():
    vocab = 8
    model = tiny_lm(vocab=vocab, n_embd=8)
    ids, mask = padded_batch([5, 3], 5, vocab=vocab)
    covered = select_parameters(model, "transformer")
    exact = flatten(covered, exact_fisher(model, ids, mask, covered)).numpy()
    generator = torch.Generator().manual_seed(11)
    draws = 1500
    mc = np.stack([flatten(covered, diagonal_fisher(model, ids, mask, generator=generator, parameters=covered)).numpy()
                   for _ in range(draws)])                                               # (M, D)
    mc_mean, mc_se = mc.mean(0), mc.std(0, ddof=1) / np.sqrt(draws)
    within = np.abs(mc_mean - exact) <= 4 * mc_se
    assert within.mean() >= 0.99, within.mean()
    # Square of the mean-loss gradient of one minibatch holding all N_mb predictions, K = 2 label
    # samples averaged in the loss: E = exact / (K · N_mb), the scale the README states.
    predictions = int((mask[:, :-1] & mask[:, 1:]).sum())
    sq = np.stack([flatten(covered, diagonal_fisher(model, ids, mask, estimator="minibatch_sq", generator=generator,
                                                    parameters=covered, minibatch_size=2, num_samples=2)).numpy()
                   for _ in range(draws)])
    sq_mean, sq_se = sq.mean(0), sq.std(0, ddof=1) / np.sqrt(draws)
    assert (np.abs(sq_mean - exact / (2 * predictions)) <= 4 * sq_se).mean() >= 0.99
    assert (np.abs(sq_mean - exact / predictions) <= 4 * sq_se).mean() < 0.5   # the K matters
    # Negative control: the data-label (empirical) square is not an estimate of the Fisher here.
    empirical = flatten(covered, diagonal_fisher(model, ids, mask, estimator="empirical", parameters=covered)).numpy()
    assert (np.abs(empirical - exact) <= 4 * mc_se).mean() < 0.5


@pytest.mark.parametrize("estimator", ["mc", "empirical"])
def test_appending_pads_changes_no_embedding(estimator):
    model = tiny_lm()
    ids, mask = padded_batch([8, 5, 2], 8)
    wider_ids = torch.cat([ids, torch.zeros(3, 6, dtype=torch.long)], dim=1)
    wider_mask = torch.cat([mask, torch.zeros(3, 6, dtype=torch.long)], dim=1)
    covered = select_parameters(model, "transformer")
    narrow = diagonal_fisher(model, ids, mask, estimator=estimator, num_samples=1,
                             generator=torch.Generator().manual_seed(2))
    wide = diagonal_fisher(model, wider_ids, wider_mask, estimator=estimator, num_samples=1,
                           generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(flatten(covered, wide), flatten(covered, narrow), rtol=1e-10, atol=0.0)


def test_the_function_leaves_the_model_as_it_found_it():
    model = tiny_lm().train()
    model.transformer.h[0].mlp.c_fc.weight.requires_grad_(False)
    ids, mask = padded_batch([6, 4], 6)
    diagonal_fisher(model, ids, mask)
    assert model.training and all(m.training for m in model.modules())
    assert not model.transformer.h[0].mlp.c_fc.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert not model.transformer.h[0].mlp.c_fc._forward_hooks


def test_gpt2_small_layout_has_102144_coordinates_per_output_unit():
    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config())
    covered = select_parameters(model, "transformer")
    blocks = build_layout(covered)
    assert blocks[-1].end == 102_144 and len(blocks) == 12 * 6 + 1
    first = {b.name: b for b in blocks if ".h.0." in b.name}
    assert [b.name for b in blocks[:6]] == [f"transformer.h.0.{n}.weight" for n in
                                           ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")]
    assert (first["transformer.h.0.attn.c_attn.weight"].start, first["transformer.h.0.attn.c_attn.weight"].end) == (768, 3072)
    assert first["transformer.h.0.mlp.c_fc.weight"].end - first["transformer.h.0.mlp.c_fc.weight"].start == 3072
    assert first["transformer.h.0.mlp.c_fc.weight"].reduction == "mean over axis 0 (inputs)"
    assert blocks[-1].name == "transformer.ln_f.weight" and blocks[-1].start == 101_376
    assert not any("wte" in b.name or "wpe" in b.name or "lm_head" in b.name for b in blocks)
    with_biases = {b.name: b for b in build_layout(select_parameters(model, "transformer", ("bias",)))}
    # every covered module has a bias of its output width, less the 768 key biases of each block
    assert max(b.end for b in with_biases.values()) == 2 * 102_144 - 12 * 768 == 195_072
    key_bias = with_biases["transformer.h.3.attn.c_attn.bias"]
    assert key_bias.excluded == ((768, 1536),) and key_bias.end - key_bias.start == 2 * 768
    assert sum(bool(b.excluded) for b in with_biases.values()) == 12


def test_reduction_is_a_mean_over_inputs_for_each_output_unit():
    model = tiny_lm()
    covered = select_parameters(model, "transformer")
    diagonals = {}
    for p in covered:
        value = torch.zeros(p.shape, dtype=torch.float64)
        if len(p.shape) == 2:   # Conv1D (in, out): output unit o gets o + 0.5 * input index
            value += torch.arange(p.shape[1]) + 0.5 * torch.arange(p.shape[0])[:, None]
        else:
            value += torch.arange(p.shape[0])
        diagonals[p.name] = value
    vector = flatten(covered, diagonals)
    block = {b.name: b for b in build_layout(covered)}["transformer.h.0.attn.c_attn.weight"]  # (16, 48)
    expected = torch.arange(48, dtype=torch.float64) + 0.5 * 7.5   # mean of 0..15 is 7.5
    torch.testing.assert_close(vector[block.start:block.end], expected)


def test_fitting_the_untied_lm_head_never_touches_the_token_embedding():
    lm = tiny_lm().float()
    before = lm.transformer.wte.weight.detach().clone()
    head = new_head(lm, "lm", 0, torch.Generator().manual_seed(0))
    probe = ProbeModel(lm.transformer, head, "transformer", "lm").eval()
    rows = [{"input_ids": torch.randint(1, VOCAB, (n,)).tolist()} for n in (6, 9, 4, 7)]
    hidden = cache_hidden_states(probe, rows, collate_fn("lm", 0), 2, torch.device("cpu"), torch.no_grad)
    settings = HeadSettings(30, 1e-2, 0.0, 2)
    schedule = head_schedule(len(rows), settings, torch.Generator().manual_seed(1))
    assert len(schedule) == 30 and all(len(step) == 2 for step in schedule)
    report = fit_head(head, "lm", dict(enumerate(hidden)), rows, schedule, settings, torch.device("cpu"))
    assert torch.equal(lm.transformer.wte.weight, before)
    assert torch.equal(lm.lm_head.weight, before)          # the model's own (tied) head is untouched too
    assert not torch.equal(head.weight, before)
    assert report["last_loss"] < report["first_loss"]


def test_a_model_whose_logits_are_not_its_head_on_the_body_is_refused():
    class ScaledLogits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.base_model = inner.transformer

        def get_output_embeddings(self):
            return self.inner.lm_head

        def forward(self, **batch):
            output = self.inner(**batch)
            output.logits = output.logits * 2.0
            return output

    ids, mask = padded_batch([5, 4], 5)
    with pytest.raises(ValueError, match="does not compute its logits"):
        diagonal_fisher(ScaledLogits(tiny_lm()), ids, mask)


def test_left_padding_is_refused():
    ids, mask = padded_batch([5, 3], 5)
    with pytest.raises(ValueError, match="pad on the right"):
        diagonal_fisher(tiny_lm(), ids, mask.flip(1))


def probe_batches(lm) -> dict[str, tuple]:
    """(probe, batch) for the LM head, a span head and a class head on the same body."""
    generator = torch.Generator().manual_seed(3)
    ids, mask = padded_batch([7, 5, 3, 8], 8)
    batches = {"lm": {"input_ids": ids, "attention_mask": mask},
               "classification": {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1, 0])},
               "span": {"input_ids": ids, "attention_mask": mask, "candidates": mask.bool() & (torch.arange(8) >= 1),
                        "start_positions": torch.tensor([2, 1, 2, 3]), "end_positions": torch.tensor([4, 3, 2, 6])}}
    result = {}
    for kind, batch in batches.items():
        head = new_head(lm, kind, 2, generator).double()
        result[kind] = (ProbeModel(lm.transformer, head, "transformer", kind).eval(), batch)
    return result


def test_the_attention_key_bias_is_structurally_zero_and_left_out():
    """Adding b_k to every key adds q_i·b_k to all logits of query i, which the softmax ignores: the
    gradient of ANY loss with respect to the key bias is zero. Checked by autograd on an arbitrary
    loss, then on the Fisher of every head; the layout drops exactly that slice, and under the task
    objective ln_f.bias (zero under the span head, whose softmax runs over positions); nothing else
    is structurally zero."""
    lm = tiny_lm()
    n_embd = lm.config.n_embd
    ids, mask = padded_batch([7, 5, 3], 8)
    loss = (lm(input_ids=ids, attention_mask=mask).logits.sin() * torch.randn(3, 8, VOCAB, dtype=torch.float64,
                                                                               generator=torch.Generator().manual_seed(0))).sum()
    bias = lm.transformer.h[1].attn.c_attn.bias
    (grad,) = torch.autograd.grad(loss, [bias])
    assert grad[n_embd:2 * n_embd].abs().max() < 1e-12 * grad.abs().max()
    assert grad[:n_embd].abs().min() > 0 and grad[2 * n_embd:].abs().min() > 0   # query and value biases count

    for kind, (probe, batch) in probe_batches(lm).items():
        objective = "lm" if kind == "lm" else "task"
        exclude = objective_exclusions(probe, "transformer", objective, ("bias",))
        assert exclude == (() if kind == "lm" else ("transformer.ln_f.bias",))
        assert objective_exclusions(probe, "transformer", objective, ()) == ()
        if kind == "span":   # the excluded bias is structurally zero there
            everything = select_parameters(probe, "transformer", ("bias",))
            full = fisher_sums(probe, batch, PREDICTIONS[kind], everything, estimator="empirical").diagonal()
            largest = max(float(value.max()) for value in full.values())
            assert float(full["transformer.ln_f.bias"].max()) <= 1e-20 * largest
        covered = select_parameters(probe, "transformer", ("bias",), exclude)
        blocks = {b.name: b for b in build_layout(covered)}
        for estimator, samples in (("empirical", 1), ("mc", 4)):
            sums = fisher_sums(probe, batch, PREDICTIONS[kind], covered, estimator=estimator, num_samples=samples,
                               generator=torch.Generator().manual_seed(1))
            diagonal = sums.diagonal()
            vector = flatten(covered, diagonal)
            expected = []
            for parameter in covered:
                value = diagonal[parameter.name]
                if parameter.attribute == "bias" and parameter.module_name.endswith("c_attn"):
                    scale = float(value.abs().max())
                    assert value[n_embd:2 * n_embd].abs().max() <= 1e-20 * scale, (kind, parameter.name)
                    value = torch.cat([value[:n_embd], value[2 * n_embd:]])
                elif len(parameter.shape) == 2:
                    value = value.mean(dim=0)                     # Conv1D (in, out): per output unit
                expected.append(value)
                block = blocks[parameter.name]
                assert block.end - block.start == expected[-1].numel()
            torch.testing.assert_close(vector, torch.cat(expected), rtol=0, atol=0)
            # nothing else in the layout is structurally zero
            assert vector.min() > 1e-12 * vector.max(), (kind, estimator, float(vector.min() / vector.max()))

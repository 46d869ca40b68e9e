"""The diagonal of the Fisher information of a fixed probe, per parameter, three estimators.

Notation: a batch of B sequences; sequence b has predictions p = 1..P (next tokens for a causal
LM; one class for a classifier; a start and an end position for a span head), each a softmax over
C outcomes with logits z_bp, and a mask m_bp that is 1 for the predictions that count (padding
and positions without a target are 0). For a parameter tensor w:

    s_b^(k) = sum_p m_bp * d/dw log p_w(y_bp^(k) | x_b)             (the per-SEQUENCE score)
    F       = sum_b sum_k (s_b^(k))**2 / (K * sum_b sum_p m_bp)      (elementwise square)

`mc` (the default, the *true* Fisher): y^(k) ~ p_w(. | x), K samples per prediction. Given x the
sampled scores of different positions are independent with zero mean, so the square of their sum
is unbiased for the sum of their squares: F estimates the prediction-averaged Fisher diagonal.
`empirical`: the per-SEQUENCE empirical Fisher with cross terms. y_bp is the data's label (the
next token, the class, the gold span ends), K = 1, and the same formula applies:
s_b = sum_p m_bp d/dw log p_w(y_bp | x_b) is squared per sequence, so

    s_b**2 = sum_p g_bp**2 + sum_{p != q} g_bp * g_bq,     g_bp = m_bp d/dw log p_w(y_bp | x_b),

and with data labels the cross terms between positions of one sequence do not vanish (E[g_bp] is
not 0 away from an optimum). It is neither the Fisher nor the per-token empirical Fisher
sum_p g_bp**2 (Kunstner et al. 2019); it has no sampling noise. Offered for comparison with TaskEmb
(Vu et al.), which squares gradients of data-label losses too.
`minibatch_sq`: the reference implementations' estimator (Task2Vec, Beyond Scale). The batch is
cut into minibatches of M sequences; minibatch j has N_j counted predictions and the loss
L_j = -(1/(K N_j)) sum_k sum_b sum_p m_bp log p_w(y_bp^(k) | x_b) on sampled labels (K samples per
prediction, averaged in the loss). The estimate is the mean over minibatches of (dL_j/dw)**2.
Sampled scores are independent with zero mean, so E[(dL_j/dw)**2] = F_j / (K N_j), with F_j the
prediction-averaged Fisher over minibatch j: with minibatches of N_mb predictions each it
estimates F / (K * N_mb) (tested at K = 2), with a much higher variance. Kept to compare with
published numbers. Unlike Beyond Scale, padding is masked here too.

The per-sequence estimators (`mc`, `empirical`) form per-sequence gradients from layer hooks, in
one forward and K backward passes over the whole batch (`task2vec.fisher_engine`, which also keeps
the brute-force loop `method="loop"` for tests and benchmarks); what a probe predicts and the
softmax chunks the estimators read are in `task2vec.predictions`. This module holds the public
entry points, the Monte-Carlo label sampling and the `minibatch_sq` estimator.
Nothing is attached to the model: hooks live in a context manager and are removed on exit, and the
model's train/eval mode and requires_grad flags are restored.
"""
from __future__ import annotations

import torch
from torch import nn

from task2vec.fisher_engine import FisherSums, LabelRule, hooked_sums, looped_sums, probe_mode
from task2vec.layout import CoveredParameter, select_parameters
from task2vec.options import ESTIMATORS
from task2vec.predictions import (OutputFn, Predictions, accumulator_dtype, check_factored_head,
                                  next_token_predictions, probability_chunks)

METHODS = ("hooks", "loop")


def sample_labels(predictions: Predictions, num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """(K, B, P) labels drawn from softmax(logits), independently for each counted prediction and sample.

    Only counted predictions are drawn (in row-major order, in fixed-size chunks of counted rows),
    so the draws do not depend on how much padding a batch carries; uncounted positions get 0.
    """
    labels = torch.zeros(num_samples, *predictions.mask.shape, dtype=torch.long, device=predictions.mask.device)
    drawn = torch.cat([torch.multinomial(probs, num_samples, replacement=True, generator=generator)
                       for _, probs in probability_chunks(predictions)] or
                      [torch.zeros(0, num_samples, dtype=torch.long, device=labels.device)])           # (N, K)
    labels[:, predictions.mask] = drawn.T
    return labels


def _minibatch_square_sums(model: nn.Module, batch: dict[str, torch.Tensor], output_fn: OutputFn,
                           covered: list[CoveredParameter], num_samples: int, generator: torch.Generator,
                           minibatch_size: int) -> FisherSums:
    """sum over minibatches of (gradient of the minibatch's mean loss on sampled labels)**2."""
    parameters = dict(model.named_parameters())
    tensors = [parameters[p.name] for p in covered]
    squares: dict[str, torch.Tensor] = {}
    minibatches = 0
    size = next(iter(batch.values())).size(0)
    for start in range(0, size, minibatch_size):
        part = {key: value[start:start + minibatch_size] for key, value in batch.items()}
        predictions = output_fn(model, part)
        if not predictions.mask.any():
            continue
        labels = sample_labels(predictions, num_samples, generator)                    # (K, b, P)
        logits = predictions.full_logits()
        log_probs = torch.log_softmax(logits.to(accumulator_dtype(logits)), dim=-1)
        picked = log_probs.unsqueeze(0).expand(num_samples, *log_probs.shape).gather(
            -1, labels.unsqueeze(-1)).squeeze(-1)                                       # (K, b, P)
        loss = -(picked * predictions.mask).sum() / (predictions.mask.sum() * num_samples)
        grads = torch.autograd.grad(loss, tensors)
        for parameter, grad in zip(covered, grads):
            value = grad.to(log_probs.dtype).square()
            squares[parameter.name] = squares[parameter.name] + value if parameter.name in squares else value
        minibatches += 1
    if not squares:
        squares = {p.name: torch.zeros(p.shape, dtype=torch.float32) for p in covered}
    return FisherSums(squares, float(minibatches))


def fisher_sums(model: nn.Module, batch: dict[str, torch.Tensor], output_fn: OutputFn,
                covered: list[CoveredParameter], *, estimator: str = "mc", num_samples: int = 1,
                generator: torch.Generator | None = None, labels: torch.Tensor | None = None,
                method: str = "hooks", minibatch_size: int = 8) -> FisherSums:
    """Unnormalised Fisher sums of `covered` parameters over one batch (see the module docstring).

    Args:
        model: the probe; put in eval mode for the call and restored afterwards.
        output_fn: may run the model under autocast; everything after it (softmax, sampling, the
            per-sequence products and their squares) runs in fp32 (fp64 for a float64 model).
        batch: tensors with a leading batch axis, passed to `output_fn`.
        output_fn: the probe's predictions for a batch (next tokens, classes or span ends).
        covered: the parameters to cover (task2vec.layout.select_parameters).
        estimator: "mc", "empirical" or "minibatch_sq".
        num_samples: K, label samples per prediction ("mc", "minibatch_sq"); 1 for "empirical".
        generator: the Monte-Carlo generator, on the model's device (a seed-0 one when None).
        labels: (K, B, P) labels to use instead of sampling ("mc" only), to compare methods.
            Sampling with a generator gives the labels `sample_labels` gives with the same generator.
        method: "hooks" (vectorised) or "loop" (brute force over sequences).
        minibatch_size: M, sequences per minibatch for "minibatch_sq".

    Returns:
        FisherSums; `.diagonal()` gives F for each covered parameter, in its own shape.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    if labels is not None and estimator != "mc":
        raise ValueError("explicit labels only make sense for the mc estimator")
    parameters = dict(model.named_parameters())
    missing = [p.name for p in covered if p.name not in parameters]
    if missing:
        raise ValueError(f"the model has no parameters named {missing[:3]}")
    device = next(iter(batch.values())).device
    generator = generator if generator is not None else torch.Generator(device=device).manual_seed(0)
    # The caller's autocast (if any) must not reach the estimator's own arithmetic: output_fn
    # re-enables it for the forward pass when it wants mixed precision.
    with probe_mode(model, [parameters[p.name] for p in covered]), torch.autocast(device.type, enabled=False):
        if estimator == "minibatch_sq":
            return _minibatch_square_sums(model, batch, output_fn, covered, num_samples, generator, minibatch_size)
        rule = LabelRule(estimator, num_samples, generator, labels)
        return (hooked_sums if method == "hooks" else looped_sums)(model, batch, output_fn, covered, rule)


def diagonal_fisher(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                    estimator: str = "mc", num_samples: int = 1, generator: torch.Generator | None = None,
                    labels: torch.Tensor | None = None, method: str = "hooks",
                    parameters: list[CoveredParameter] | None = None,
                    minibatch_size: int = 8) -> dict[str, torch.Tensor]:
    """The diagonal Fisher of a causal LM's next-token distribution on a batch of sequences.

    F = sum_b sum_k (sum_t m_bt d/dw log p(y_bt^(k) | x_b,<t))**2 / (K * sum_b sum_t m_bt), where m marks
    the valid next-token positions (t and t+1 both real tokens) and y is the data's next token
    (`empirical`) or a sample from the model (`mc`, K samples). `minibatch_sq` is the reference
    estimator (module docstring). The model is used as given (its own, possibly tied, head).

    Args:
        model: a causal LM whose forward(input_ids=, attention_mask=) returns `.logits` (B, T, V).
        input_ids, attention_mask: (B, T), right-padded.
        parameters: the covered parameters; default: linear and LayerNorm weights of the body
            (`model.base_model_prefix`, "transformer" for GPT-2).
        Others: as in `fisher_sums`.

    Returns:
        {parameter name: unreduced diagonal of that parameter's shape}.

    Raises:
        ValueError: the model's logits are not its output embeddings applied to its base model's
            last hidden state (checked on the first sequence).
    """
    with probe_mode(model, []):
        check_factored_head(model, input_ids, attention_mask)
    if parameters is None:
        parameters = select_parameters(model, getattr(model, "base_model_prefix", "transformer"))
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    return fisher_sums(model, batch, next_token_predictions, parameters, estimator=estimator,
                       num_samples=num_samples, generator=generator, labels=labels, method=method,
                       minibatch_size=minibatch_size).diagonal()

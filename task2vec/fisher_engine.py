"""The engine of the per-sequence Fisher estimators (`mc`, `empirical`; see `task2vec.fisher`).

Per-sequence gradients come from layer hooks, in one forward and K backward passes over the whole
batch: for a linear map y = x W (HF Conv1D, W of shape (in, out)) the gradient of sequence b is
sum_t x_bt^T delta_bt = X_b^T Delta_b, where delta = d(sum_b l_b)/dy is nonzero only on sequence
b's own positions because sequences do not interact in a forward pass. LayerNorm and RMSNorm
weights get sum_t delta_bt * xhat_bt with xhat the normalised input (for RMSNorm
xhat = x / sqrt(mean(x**2) + eps), without centring). A brute-force loop over sequences with
ordinary autograd (`looped_sums`, `method="loop"`) computes the same numbers and is kept for tests
and benchmarks. Also here: `FisherSums`, the unnormalised sums every estimator returns, and
`probe_mode`, which puts a probe in eval mode with gradients on for the duration and restores it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from task2vec.layout import CoveredParameter
from task2vec.predictions import OutputFn, Predictions, accumulator_dtype, probability_chunks

# Per-sequence weight gradients are formed for this many elements at a time (about 64 MB in fp32).
GRADIENT_CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class FisherSums:
    """Unnormalised Fisher sums, so that batches (and processes) can be merged before dividing."""

    squares: dict[str, torch.Tensor]  # parameter name -> sum of squared scores, the parameter's shape
    weight: float                     # K * sum m for per-sequence estimators; minibatches for minibatch_sq

    def merge(self, other: FisherSums) -> FisherSums:
        """The sums of both (same parameters)."""
        return FisherSums({name: self.squares[name] + other.squares[name] for name in self.squares},
                          self.weight + other.weight)

    def diagonal(self) -> dict[str, torch.Tensor]:
        """F = squares / weight for every parameter."""
        if self.weight <= 0:
            raise ValueError("no prediction was counted (every mask is empty); the Fisher is undefined")
        return {name: value / self.weight for name, value in self.squares.items()}


@contextlib.contextmanager
def probe_mode(model: nn.Module, parameters: list[nn.Parameter]) -> Iterator[None]:
    """Eval mode and requires_grad on the covered parameters for the duration; both restored."""
    modes = {module: module.training for module in model.modules()}
    flags = [parameter.requires_grad for parameter in parameters]
    try:
        model.eval()
        for parameter in parameters:
            parameter.requires_grad_(True)
        with torch.enable_grad():
            yield
    finally:
        for module, training in modes.items():
            module.training = training
        for parameter, flag in zip(parameters, flags):
            parameter.requires_grad_(flag)


class _ActivationCapture:
    """Forward hooks that keep each covered module's input and output tensors (nothing else)."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [module.register_forward_hook(self._hook(name)) for name, module in modules.items()]

    def _hook(self, name: str):
        def keep(_module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            self.inputs[name] = args[0]
            self.outputs[name] = output
        return keep

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def _per_sequence_squares(parameter: CoveredParameter, module: nn.Module, inputs: torch.Tensor,
                          delta: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """sum_b (per-sequence gradient of `parameter`)**2 from the module's input and output gradient.

    inputs: (B, T, in) and delta: (B, T, out); returns a tensor of the parameter's shape.
    """
    batch = inputs.size(0)
    # Captured activations belong to the autograd graph; their products must not extend it.
    x = inputs.detach().reshape(batch, -1, inputs.size(-1)).to(dtype)    # (B, T, in)
    d = delta.detach().reshape(batch, -1, delta.size(-1)).to(dtype)      # (B, T, out)
    if parameter.attribute == "bias":
        return d.sum(dim=1).square().sum(dim=0)                 # (out,)
    if parameter.kind == "layernorm":
        xhat = F.layer_norm(x, module.normalized_shape, None, None, module.eps)
        return (d * xhat).sum(dim=1).square().sum(dim=0)        # (d,)
    if parameter.kind == "rmsnorm":
        xhat = rms_normalized(module, inputs.detach()).reshape(batch, -1, inputs.size(-1)).to(dtype)
        return (d * xhat).sum(dim=1).square().sum(dim=0)        # (d,)
    total = torch.zeros(parameter.shape, dtype=dtype, device=x.device)
    step = max(1, GRADIENT_CHUNK_ELEMENTS // (x.size(-1) * d.size(-1)))
    for start in range(0, batch, step):
        xs, ds = x[start:start + step], d[start:start + step]
        if parameter.kind == "conv1d":
            grads = torch.bmm(xs.transpose(1, 2), ds)           # (b, in, out), as Conv1D's weight
        else:
            grads = torch.bmm(ds.transpose(1, 2), xs)           # (b, out, in), as nn.Linear's weight
        total += grads.square().sum(dim=0)
    return total


def rms_normalized(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x / sqrt(mean(x**2) + eps) over the last axis, rounded as the module rounds it: transformers'
    RMSNorms (`variance_epsilon`) compute in fp32 and cast back; torch's nn.RMSNorm computes half
    precision in fp32 too, with fp32's machine epsilon when its eps is None. The weight's gradient is
    sum_t delta_t * this."""
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) or hasattr(module, "variance_epsilon") else x
    eps = getattr(module, "variance_epsilon", None)
    if eps is None:
        eps = module.eps if module.eps is not None else torch.finfo(xf.dtype).eps
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


@dataclass(frozen=True)
class LabelRule:
    """Where the labels of the per-sequence estimators come from."""

    estimator: str
    num_samples: int
    generator: torch.Generator
    labels: torch.Tensor | None = None   # (K, B, P) explicit labels (mc only)

    @property
    def count(self) -> int:
        """K: label sets per prediction."""
        return 1 if self.estimator == "empirical" else self.num_samples

    def given(self, predictions: Predictions) -> torch.Tensor | None:
        """(K, N) labels of all N counted predictions (row-major order) when they do not depend on
        the probabilities (the data's for `empirical`, explicit ones); None when they are sampled."""
        if self.estimator == "empirical":
            return predictions.targets[predictions.mask].unsqueeze(0)
        if self.labels is not None:
            if self.labels.shape[1:] != predictions.mask.shape:
                raise ValueError(f"labels of shape {tuple(self.labels.shape)} do not match predictions "
                                 f"{tuple(predictions.mask.shape)}")
            return self.labels.to(predictions.mask.device)[:, predictions.mask]
        return None

    def chunk(self, predictions: Predictions, rows: slice, probs: torch.Tensor) -> torch.Tensor:
        """(K, n) labels of the counted predictions `rows` (row-major order), whose softmax is `probs`."""
        given = self.given(predictions)
        if given is not None:
            return given[:, rows]
        return torch.multinomial(probs, self.num_samples, replacement=True, generator=self.generator).T

    def rows(self, first: int, last: int) -> LabelRule:
        """The rule for sequences [first, last) of the batch alone."""
        labels = None if self.labels is None else self.labels[:, first:last]
        return LabelRule(self.estimator, self.num_samples, self.generator, labels)


def _output_gradients(predictions: Predictions, rule: LabelRule) -> tuple[torch.Tensor, torch.Tensor]:
    """The tensor to differentiate from and, for each label set k, d(sum_b sum_p m_bp log p(y^(k)_bp))/d it.

    Not factored: the logits, with gradient m * (onehot(y) - p), shape (K, B, P, C).
    Factored (logits = f W^T + b): the features f, with gradient W[y] - p W at counted positions,
    shape (K, B, P, d); the head is applied chunk by chunk and its gradient never formed.
    """
    target = predictions.features if predictions.factored else predictions.logits
    dtype = accumulator_dtype(target)
    grads = torch.zeros(rule.count, *target.shape, dtype=dtype, device=target.device)
    counted = _feature_gradients if predictions.factored else _logit_gradients
    grads[:, predictions.mask] = counted(predictions, rule, dtype)
    return target, grads


def _feature_gradients(predictions: Predictions, rule: LabelRule, dtype: torch.dtype) -> torch.Tensor:
    """(K, N, d): W[y^(k)_n] - sum_c p_nc W_c for the N counted predictions of a factored head."""
    weight = predictions.head_weight.detach().to(dtype)                                        # (C, d)
    size = int(predictions.mask.sum())
    expected = torch.empty(size, weight.size(1), dtype=dtype, device=weight.device)            # (N, d)
    # Labels that do not depend on the probabilities are gathered once, not once per chunk.
    labels = rule.given(predictions)                                                           # (K, N)
    sampled = labels is None
    if sampled:
        labels = torch.empty(rule.count, size, dtype=torch.long, device=weight.device)
    for rows, probs in probability_chunks(predictions):
        if sampled:
            labels[:, rows] = rule.chunk(predictions, rows, probs)
        torch.mm(probs, weight, out=expected[rows])
    return weight[labels] - expected.unsqueeze(0)


def _logit_gradients(predictions: Predictions, rule: LabelRule, dtype: torch.dtype) -> torch.Tensor:
    """(K, N, C): onehot(y^(k)_n) - p_n for the N counted predictions of a head given its logits."""
    counted = torch.zeros(rule.count, int(predictions.mask.sum()), predictions.logits.size(-1), dtype=dtype,
                          device=predictions.logits.device)
    for rows, probs in probability_chunks(predictions):
        labels = rule.chunk(predictions, rows, probs)                                          # (K, n)
        counted[:, rows] = F.one_hot(labels, probs.size(-1)).to(dtype) - probs.unsqueeze(0)
    return counted


def hooked_sums(model: nn.Module, batch: dict[str, torch.Tensor], output_fn: OutputFn,
                 covered: list[CoveredParameter], rule: LabelRule) -> FisherSums:
    """Per-sequence estimators, vectorised: one forward, one backward through the body per label set."""
    modules = dict(model.named_modules())
    used = {parameter.module_name: modules[parameter.module_name] for parameter in covered}
    capture = _ActivationCapture(used)
    try:
        predictions = output_fn(model, batch)
    finally:
        capture.close()
    target, grads = _output_gradients(predictions, rule)
    dtype = grads.dtype
    names = list(used)
    outputs = [capture.outputs[name] for name in names]
    squares = {p.name: torch.zeros(p.shape, dtype=dtype, device=target.device) for p in covered}
    for k in range(rule.count):
        deltas = torch.autograd.grad(target, outputs, grad_outputs=grads[k].to(target.dtype),
                                     retain_graph=k < rule.count - 1, allow_unused=True)
        unused = [name for name, delta in zip(names, deltas) if delta is None]
        if unused:
            raise ValueError(f"covered modules {unused[:3]} do not influence the predictions; cover other parameters")
        by_module = dict(zip(names, deltas))
        for parameter in covered:
            squares[parameter.name] += _per_sequence_squares(
                parameter, used[parameter.module_name], capture.inputs[parameter.module_name],
                by_module[parameter.module_name], dtype)
    return FisherSums(squares, float(predictions.mask.sum()) * rule.count)


def _all_labels(rule: LabelRule, predictions: Predictions) -> torch.Tensor:
    """(K, B, P) labels of every prediction (0 where not counted)."""
    labels = torch.zeros(rule.count, *predictions.mask.shape, dtype=torch.long, device=predictions.mask.device)
    chunks = [rule.chunk(predictions, rows, probs) for rows, probs in probability_chunks(predictions)]
    if chunks:
        labels[:, predictions.mask] = torch.cat(chunks, dim=1)
    return labels


def looped_sums(model: nn.Module, batch: dict[str, torch.Tensor], output_fn: OutputFn,
                 covered: list[CoveredParameter], rule: LabelRule) -> FisherSums:
    """Per-sequence estimators by brute force: each sequence alone, full logits, ordinary autograd."""
    parameters = dict(model.named_parameters())
    tensors = [parameters[p.name] for p in covered]
    squares: dict[str, torch.Tensor] = {}
    count = 0.0
    for b in range(next(iter(batch.values())).size(0)):
        predictions = output_fn(model, {key: value[b:b + 1] for key, value in batch.items()})
        labels = _all_labels(rule.rows(b, b + 1), predictions)                                 # (K, 1, P)
        logits = predictions.full_logits()
        log_probs = torch.log_softmax(logits.to(accumulator_dtype(logits)), dim=-1)
        for k in range(rule.count):
            picked = log_probs.gather(-1, labels[k].unsqueeze(-1)).squeeze(-1)                 # (1, P)
            score = (picked * predictions.mask).sum()
            grads = torch.autograd.grad(score, tensors, retain_graph=k < rule.count - 1)
            for parameter, grad in zip(covered, grads):
                value = grad.to(log_probs.dtype).square()
                squares[parameter.name] = squares[parameter.name] + value if parameter.name in squares else value
        count += float(predictions.mask.sum()) * rule.count
    return FisherSums(squares, count)

"""The diagonal of the Fisher information of a fixed probe, per parameter, three estimators.

A batch of B sequences; sequence b has predictions p (next tokens, one class, or span start and
end), each a softmax over C outcomes with logits z_bp, and a mask m_bp of those that count:

    s_b^(k) = sum_p m_bp * d/dw log p_w(y_bp^(k) | x_b)             (the per-SEQUENCE score)
    F       = sum_b sum_k (s_b^(k))**2 / (K * sum_b sum_p m_bp)      (elementwise square)

`mc` (default, the true Fisher): y^(k) ~ p_w(. | x), K samples per prediction. Given x, sampled
scores of different positions are independent with zero mean, so the square of their sum is
unbiased for the sum of their squares. `empirical`: y is the data's label, K = 1; its cross terms
do not vanish, so it is neither the Fisher nor the per-token empirical Fisher (Kunstner et al.
2019); kept to compare with TaskEmb. `minibatch_sq` (Task2Vec, Beyond Scale): the mean over
minibatches of (dL_j/dw)**2, L_j the mean loss on sampled labels over its N_j predictions; it
estimates F / (K * N_mb), with a much higher variance.

The per-sequence estimators take per-sequence gradients from layer hooks, one forward and K
backward passes: for y = x W the gradient of sequence b is X_b^T Delta_b (norm weights:
sum_t delta_bt * xhat_bt). `method="loop"` computes the same by brute force over sequences. Hooks,
train/eval mode and requires_grad flags are restored on exit.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from task2vec.embedding.layout import CoveredParameter, select_parameters
from task2vec.embedding.predictions import (OutputFn, Predictions, accumulator_dtype, check_factored_head,
                                            next_token_predictions, probability_chunks)

# mc: labels sampled from the probe; empirical: the data's labels; minibatch_sq: squared
# minibatch-mean gradients.
ESTIMATORS = ("mc", "empirical", "minibatch_sq")
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
    """sum_b (per-sequence gradient of `parameter`)**2 from the module's (B, T, in) input and
    (B, T, out) output gradient."""
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
    """The tensor to differentiate from and, for each label set k, d(sum_b sum_p m_bp log p(y^(k)_bp))/d it:
    the logits, gradient m * (onehot(y) - p), (K, B, P, C); or, factored (logits = f W^T + b), the
    features, gradient W[y] - p W at counted positions, (K, B, P, d), without forming the logits."""
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
    """(K, B, P) labels of every prediction (0 where not counted), drawn in row-major order in
    fixed-size chunks of counted rows, so the draws do not depend on a batch's padding."""
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
            _add_squares(squares, covered, grads, log_probs.dtype)
        count += float(predictions.mask.sum()) * rule.count
    return FisherSums(squares, count)


def _add_squares(squares: dict[str, torch.Tensor], covered: list[CoveredParameter], grads: tuple,
                 dtype: torch.dtype) -> None:
    """squares[name] += grad**2 for every covered parameter (in `dtype`)."""
    for parameter, grad in zip(covered, grads):
        value = grad.to(dtype).square()
        squares[parameter.name] = squares[parameter.name] + value if parameter.name in squares else value


METHODS = ("hooks", "loop")


def sample_labels(predictions: Predictions, num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """(K, B, P) labels drawn from softmax(logits) for each counted prediction and sample (0 elsewhere)."""
    return _all_labels(LabelRule("mc", num_samples, generator), predictions)


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
        _add_squares(squares, covered, torch.autograd.grad(loss, tensors), log_probs.dtype)
        minibatches += 1
    if not squares:
        squares = {p.name: torch.zeros(p.shape, dtype=torch.float32) for p in covered}
    return FisherSums(squares, float(minibatches))


def fisher_sums(model: nn.Module, batch: dict[str, torch.Tensor], output_fn: OutputFn,
                covered: list[CoveredParameter], *, estimator: str = "mc", num_samples: int = 1,
                generator: torch.Generator | None = None, labels: torch.Tensor | None = None,
                method: str = "hooks", minibatch_size: int = 8) -> FisherSums:
    """Unnormalised Fisher sums of `covered` parameters over one batch (see the module docstring).

    `output_fn` gives the probe's predictions and may autocast its forward; everything after it runs
    in fp32 (fp64 for a float64 model). K = `num_samples`; `generator` (seed 0 when None) draws the
    labels `sample_labels` would; explicit (K, B, P) `labels` replace sampling ("mc" only).
    `minibatch_size` is M for "minibatch_sq". `.diagonal()` of the result gives F per parameter.
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
    """{parameter name: unreduced Fisher diagonal} of a causal LM's next-token distribution on
    (B, T) right-padded sequences, with the model's own (possibly tied) head.

    The mask marks positions where t and t+1 are both real tokens; the default parameters are the
    body's linear and norm weights; the other arguments are `fisher_sums`'. ValueError when the
    logits are not the output embeddings applied to the base model's last hidden state.
    """
    with probe_mode(model, []):
        check_factored_head(model, input_ids, attention_mask)
    if parameters is None:
        parameters = select_parameters(model, getattr(model, "base_model_prefix", "transformer"))
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    return fisher_sums(model, batch, next_token_predictions, parameters, estimator=estimator,
                       num_samples=num_samples, generator=generator, labels=labels, method=method,
                       minibatch_size=minibatch_size).diagonal()

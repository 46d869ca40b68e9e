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

Per-sequence gradients come from layer hooks, in one forward and K backward passes over the whole
batch: for a linear map y = x W (HF Conv1D, W of shape (in, out)) the gradient of sequence b is
sum_t x_bt^T delta_bt = X_b^T Delta_b, where delta = d(sum_b l_b)/dy is nonzero only on sequence
b's own positions because sequences do not interact in a forward pass. LayerNorm and RMSNorm
weights get sum_t delta_bt * xhat_bt with xhat the normalised input (for RMSNorm
xhat = x / sqrt(mean(x**2) + eps), without centring). A brute-force loop over sequences with
ordinary autograd (`method="loop"`) computes the same numbers and is kept for tests and benchmarks.
Nothing is attached to the model: hooks live in a context manager and are removed on exit, and the
model's train/eval mode and requires_grad flags are restored.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from task2vec.layout import CoveredParameter, select_parameters
from task2vec.options import ESTIMATORS

METHODS = ("hooks", "loop")
# Per-sequence weight gradients are formed for this many elements at a time (about 64 MB in fp32).
GRADIENT_CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class Predictions:
    """What a probe predicts for a batch: the softmax outputs whose log-likelihood is differentiated.

    Either `logits` is given, or the logits are a linear map of `features` (a vocabulary-sized LM
    head): logits = features @ head_weight.T + head_bias. The factored form lets the estimators
    work on a few hundred positions at a time instead of holding (B, P, V) logits, their softmax
    and their gradient for a 50,257-word vocabulary.
    """

    mask: torch.Tensor                      # (B, P) bool, True where the prediction counts
    targets: torch.Tensor                   # (B, P) long, the data's labels (any value where mask is False)
    logits: torch.Tensor | None = None      # (B, P, C)
    features: torch.Tensor | None = None    # (B, P, d)
    head_weight: torch.Tensor | None = None  # (C, d)
    head_bias: torch.Tensor | None = None    # (C,)

    @property
    def factored(self) -> bool:
        """True when the logits are given as features and a linear head."""
        return self.logits is None

    def full_logits(self) -> torch.Tensor:
        """(B, P, C) logits (computed from the features when factored)."""
        if self.logits is not None:
            return self.logits
        return F.linear(self.features.to(self.head_weight.dtype), self.head_weight, self.head_bias)


OutputFn = Callable[[nn.Module, dict[str, torch.Tensor]], Predictions]


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


def next_token_predictions(model: nn.Module, batch: dict[str, torch.Tensor]) -> Predictions:
    """A causal LM's next-token predictions: position t predicts token t+1.

    Position t counts iff both t and t+1 are real tokens. Batches must be right-padded: GPT-2 has
    absolute positions, counted from the first column. The model must compute its logits as
    `get_output_embeddings()` applied to the last hidden state of `base_model` (GPT-2 and most HF
    causal LMs do; `check_factored_head` verifies it).

    Raises:
        ValueError: a row with padding before a real token.
    """
    if bool((batch["attention_mask"][:, 1:] > batch["attention_mask"][:, :-1]).any()):
        raise ValueError("the attention mask has padding before real tokens; pad on the right")
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    head = model.get_output_embeddings()
    real = batch["attention_mask"].bool()                                                        # (B, T)
    return Predictions(real[:, :-1] & real[:, 1:], batch["input_ids"][:, 1:], features=hidden[:, :-1],
                       head_weight=head.weight, head_bias=head.bias)


@torch.no_grad()
def check_factored_head(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    """Raise ValueError unless model(...).logits == output_embeddings(base_model(...)) on one sequence."""
    # The first positions of one sequence suffice: a wrong head shows at every position.
    row = {"input_ids": input_ids[:1, :16], "attention_mask": attention_mask[:1, :16]}
    direct = model(**row).logits[:, :-1]
    factored = next_token_predictions(model, row).full_logits()
    if not torch.allclose(direct, factored, rtol=1e-4, atol=1e-4 * float(direct.abs().max())):
        raise ValueError(f"{type(model).__name__} does not compute its logits as its output embeddings applied to "
                         "the base model's last hidden state; the next-token Fisher cannot use it as a probe")


HEAD_CHUNK_ELEMENTS = 1 << 22  # logits formed for at most this many (position, class) pairs at a time


def _head_chunks(predictions: Predictions) -> Iterator[tuple[slice, torch.Tensor]]:
    """(rows, probabilities) of the counted predictions, a few hundred rows at a time, in row-major order.

    The probabilities live in one buffer reused for every chunk (a fresh multi-megabyte tensor per
    chunk costs more in page faults than the softmax itself): use each before asking for the next.
    """
    dtype = _accumulator_dtype(predictions.features)
    counted = predictions.features.detach()[predictions.mask].to(dtype)                         # (N, d)
    weight_t = predictions.head_weight.detach().to(dtype).T                                     # (d, C)
    bias = None if predictions.head_bias is None else predictions.head_bias.detach().to(dtype)
    step = max(1, HEAD_CHUNK_ELEMENTS // weight_t.size(1))
    buffer = torch.empty(min(step, counted.size(0)), weight_t.size(1), dtype=dtype, device=counted.device)
    for start in range(0, counted.size(0), step):
        rows = slice(start, min(start + step, counted.size(0)))
        probs = buffer[:rows.stop - rows.start]                                                 # (n, C)
        torch.mm(counted[rows], weight_t, out=probs)
        if bias is not None:
            probs += bias
        probs -= probs.amax(dim=-1, keepdim=True)
        probs.exp_()
        probs /= probs.sum(dim=-1, keepdim=True)
        yield rows, probs


def sample_labels(predictions: Predictions, num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """(K, B, P) labels drawn from softmax(logits), independently for each counted prediction and sample.

    Only counted predictions are drawn (in row-major order, in fixed-size chunks of counted rows),
    so the draws do not depend on how much padding a batch carries; uncounted positions get 0.
    """
    labels = torch.zeros(num_samples, *predictions.mask.shape, dtype=torch.long, device=predictions.mask.device)
    drawn = torch.cat([torch.multinomial(probs, num_samples, replacement=True, generator=generator)
                       for _, probs in _probability_chunks(predictions)] or
                      [torch.zeros(0, num_samples, dtype=torch.long, device=labels.device)])           # (N, K)
    labels[:, predictions.mask] = drawn.T
    return labels


def _probability_chunks(predictions: Predictions) -> Iterator[tuple[slice, torch.Tensor]]:
    """(rows, softmax probabilities) of the counted predictions, chunked when the head is factored."""
    if predictions.factored:
        yield from _head_chunks(predictions)
        return
    logits = predictions.logits.detach()[predictions.mask]                                      # (N, C)
    yield slice(0, logits.size(0)), torch.softmax(logits.to(_accumulator_dtype(logits)), dim=-1)


def _accumulator_dtype(tensor: torch.Tensor) -> torch.dtype:
    # Squared gradients underflow in half precision; float64 models (tests) keep float64.
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


@contextlib.contextmanager
def _probe_mode(model: nn.Module, parameters: list[nn.Parameter]) -> Iterator[None]:
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
    RMSNorms (`variance_epsilon`) compute in fp32 and cast back, torch's nn.RMSNorm in x's dtype
    (eps None: that dtype's machine epsilon). The weight's gradient is sum_t delta_t * this."""
    if hasattr(module, "variance_epsilon"):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + module.variance_epsilon)).to(x.dtype)
    eps = module.eps if module.eps is not None else torch.finfo(x.dtype).eps
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


@dataclass(frozen=True)
class _LabelRule:
    """Where the labels of the per-sequence estimators come from."""

    estimator: str
    num_samples: int
    generator: torch.Generator
    labels: torch.Tensor | None = None   # (K, B, P) explicit labels (mc only)

    @property
    def count(self) -> int:
        """K: label sets per prediction."""
        return 1 if self.estimator == "empirical" else self.num_samples

    def chunk(self, predictions: Predictions, rows: slice, probs: torch.Tensor) -> torch.Tensor:
        """(K, n) labels of the counted predictions `rows` (row-major order), whose softmax is `probs`."""
        if self.estimator == "empirical":
            return predictions.targets[predictions.mask][rows].unsqueeze(0)
        if self.labels is not None:
            if self.labels.shape[1:] != predictions.mask.shape:
                raise ValueError(f"labels of shape {tuple(self.labels.shape)} do not match predictions "
                                 f"{tuple(predictions.mask.shape)}")
            return self.labels.to(predictions.mask.device)[:, predictions.mask][:, rows]
        return torch.multinomial(probs, self.num_samples, replacement=True, generator=self.generator).T

    def rows(self, first: int, last: int) -> _LabelRule:
        """The rule for sequences [first, last) of the batch alone."""
        labels = None if self.labels is None else self.labels[:, first:last]
        return _LabelRule(self.estimator, self.num_samples, self.generator, labels)


def _output_gradients(predictions: Predictions, rule: _LabelRule) -> tuple[torch.Tensor, torch.Tensor]:
    """The tensor to differentiate from and, for each label set k, d(sum_b sum_p m_bp log p(y^(k)_bp))/d it.

    Not factored: the logits, with gradient m * (onehot(y) - p), shape (K, B, P, C).
    Factored (logits = f W^T + b): the features f, with gradient W[y] - p W at counted positions,
    shape (K, B, P, d); the head is applied chunk by chunk and its gradient never formed.
    """
    target = predictions.features if predictions.factored else predictions.logits
    dtype = _accumulator_dtype(target)
    grads = torch.zeros(rule.count, *target.shape, dtype=dtype, device=target.device)
    counted = torch.zeros(rule.count, int(predictions.mask.sum()), target.size(-1), dtype=dtype, device=target.device)
    weight = predictions.head_weight.detach().to(dtype) if predictions.factored else None
    for rows, probs in _probability_chunks(predictions):
        labels = rule.chunk(predictions, rows, probs)                                          # (K, n)
        if predictions.factored:
            counted[:, rows] = weight[labels] - (probs @ weight).unsqueeze(0)                  # (K, n, d)
        else:
            onehot = F.one_hot(labels, probs.size(-1)).to(dtype)                               # (K, n, C)
            counted[:, rows] = onehot - probs.unsqueeze(0)
    grads[:, predictions.mask] = counted
    return target, grads


def _hooked_sums(model: nn.Module, batch: dict[str, torch.Tensor], output_fn: OutputFn,
                 covered: list[CoveredParameter], rule: _LabelRule) -> FisherSums:
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


def _all_labels(rule: _LabelRule, predictions: Predictions) -> torch.Tensor:
    """(K, B, P) labels of every prediction (0 where not counted)."""
    labels = torch.zeros(rule.count, *predictions.mask.shape, dtype=torch.long, device=predictions.mask.device)
    chunks = [rule.chunk(predictions, rows, probs) for rows, probs in _probability_chunks(predictions)]
    if chunks:
        labels[:, predictions.mask] = torch.cat(chunks, dim=1)
    return labels


def _looped_sums(model: nn.Module, batch: dict[str, torch.Tensor], output_fn: OutputFn,
                 covered: list[CoveredParameter], rule: _LabelRule) -> FisherSums:
    """Per-sequence estimators by brute force: each sequence alone, full logits, ordinary autograd."""
    parameters = dict(model.named_parameters())
    tensors = [parameters[p.name] for p in covered]
    squares: dict[str, torch.Tensor] = {}
    count = 0.0
    for b in range(next(iter(batch.values())).size(0)):
        predictions = output_fn(model, {key: value[b:b + 1] for key, value in batch.items()})
        labels = _all_labels(rule.rows(b, b + 1), predictions)                                 # (K, 1, P)
        logits = predictions.full_logits()
        log_probs = torch.log_softmax(logits.to(_accumulator_dtype(logits)), dim=-1)
        for k in range(rule.count):
            picked = log_probs.gather(-1, labels[k].unsqueeze(-1)).squeeze(-1)                 # (1, P)
            score = (picked * predictions.mask).sum()
            grads = torch.autograd.grad(score, tensors, retain_graph=k < rule.count - 1)
            for parameter, grad in zip(covered, grads):
                value = grad.to(log_probs.dtype).square()
                squares[parameter.name] = squares[parameter.name] + value if parameter.name in squares else value
        count += float(predictions.mask.sum()) * rule.count
    return FisherSums(squares, count)


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
        log_probs = torch.log_softmax(logits.to(_accumulator_dtype(logits)), dim=-1)
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
    with _probe_mode(model, [parameters[p.name] for p in covered]), torch.autocast(device.type, enabled=False):
        if estimator == "minibatch_sq":
            return _minibatch_square_sums(model, batch, output_fn, covered, num_samples, generator, minibatch_size)
        rule = _LabelRule(estimator, num_samples, generator, labels)
        return (_hooked_sums if method == "hooks" else _looped_sums)(model, batch, output_fn, covered, rule)


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
    with _probe_mode(model, []):
        check_factored_head(model, input_ids, attention_mask)
    if parameters is None:
        parameters = select_parameters(model, getattr(model, "base_model_prefix", "transformer"))
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    return fisher_sums(model, batch, next_token_predictions, parameters, estimator=estimator,
                       num_samples=num_samples, generator=generator, labels=labels, method=method,
                       minibatch_size=minibatch_size).diagonal()

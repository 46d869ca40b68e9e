"""What a probe predicts for a batch, the softmax outputs the Fisher estimators differentiate,
read in chunks (`probability_chunks`) so that (B, P, V) logits are never formed."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Predictions:
    """The counted predictions of a batch: their `logits`, or (factored, for a vocabulary-sized
    head) logits = features @ head_weight.T + head_bias, formed a few hundred positions at a time."""

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


def next_token_predictions(model: nn.Module, batch: dict[str, torch.Tensor]) -> Predictions:
    """A causal LM's next-token predictions: position t predicts token t+1 and counts iff both are
    real tokens. Right padding only (GPT-2's absolute positions count from the first column); the
    logits must be `get_output_embeddings()` of `base_model`'s last hidden state (`check_factored_head`)."""
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


HEAD_CHUNK_ELEMENTS = 1 << 22      # logits formed for at most this many (position, class) pairs at a time
CPU_HEAD_CHUNK_ELEMENTS = 1 << 21  # the same on a CPU (`head_chunk_rows` says why it is smaller)


def head_chunk_rows(classes: int, device: torch.device) -> int:
    """Rows of logits per chunk of the vocabulary head: floor(E / classes), at least 1, with E
    CPU_HEAD_CHUNK_ELEMENTS on a CPU and HEAD_CHUNK_ELEMENTS on an accelerator."""
    # On a CPU a chunk is written, softmaxed and read again: it should stay in the last-level cache.
    elements = CPU_HEAD_CHUNK_ELEMENTS if device.type == "cpu" else HEAD_CHUNK_ELEMENTS
    return max(1, elements // classes)


def _head_chunks(predictions: Predictions) -> Iterator[tuple[slice, torch.Tensor]]:
    """(rows, softmax(f W^T + b)) of the counted predictions, a few rows at a time, in one buffer
    reused for every chunk (cheaper than page faults): use each before asking for the next."""
    dtype = accumulator_dtype(predictions.features)
    counted = predictions.features.detach()[predictions.mask].to(dtype)                         # (N, d)
    weight_t = predictions.head_weight.detach().to(dtype).T                                     # (d, C)
    bias = None if predictions.head_bias is None else predictions.head_bias.detach().to(dtype)
    step = head_chunk_rows(weight_t.size(1), counted.device)
    buffer = torch.empty(min(step, counted.size(0)), weight_t.size(1), dtype=dtype, device=counted.device)
    for start in range(0, counted.size(0), step):
        rows = slice(start, min(start + step, counted.size(0)))
        probs = buffer[:rows.stop - rows.start]                                                 # (n, C)
        if bias is None:
            torch.mm(counted[rows], weight_t, out=probs)
        else:
            torch.addmm(bias, counted[rows], weight_t, out=probs)
        # One fused kernel; out= may alias the input (torch's out= contract: softmax(z), copied in).
        torch.softmax(probs, dim=-1, out=probs)
        # The fused kernel sums exp(z - max z) in plain fp32 lanes: over 50,257 classes its rows
        # sum to 1 +- 1e-5. Dividing by the cascaded torch.sum brings them back to 1 +- 1e-7.
        probs /= probs.sum(dim=-1, keepdim=True)
        yield rows, probs


def probability_chunks(predictions: Predictions) -> Iterator[tuple[slice, torch.Tensor]]:
    """(rows, softmax probabilities) of the counted predictions, chunked when the head is factored."""
    if predictions.factored:
        yield from _head_chunks(predictions)
        return
    logits = predictions.logits.detach()[predictions.mask]                                      # (N, C)
    yield slice(0, logits.size(0)), torch.softmax(logits.to(accumulator_dtype(logits)), dim=-1)


def accumulator_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype the estimators compute in for values computed from `tensor`: fp32, or fp64 for fp64."""
    # Squared gradients underflow in half precision; float64 models (tests) keep float64.
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32

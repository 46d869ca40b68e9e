"""Which parameters an embedding covers, and how each one's Fisher diagonal becomes coordinates.

Default (Task2Vec parity): the weights of every linear layer and norm (LayerNorm or RMSNorm) in the
probe's body, for any family of utils.models.families. Excluded: the token embedding and the LM
head (tied in GPT-2, vocabulary-sized, noisy, and rewritten by head fitting) and the position
embedding. Biases are opt-in. Each tensor is reduced per output unit ("filter-wise", as Task2Vec
does per conv filter): the mean over the inputs (axis 0 of HF Conv1D's (in, out) weight, axis 1 of
nn.Linear's); norm weights and biases are kept as they are. GPT-2 small: 102,144 coordinates.

Structurally zero coordinates are left out. The key part of GPT-2's `attn.c_attn.bias` adds q_i·b_k
to every logit of query i, a constant the softmax ignores: its gradient is exactly zero and its
Fisher pure rounding (so with biases GPT-2 small has 195,072 coordinates). With rotary positions
the key bias counts, except in dimensions rotary leaves alone (GPT-NeoX turns only a quarter of
each head); each family names those (`ModelFamily.structural_zero_bias`). Likewise the final
LayerNorm's bias adds one vector to every position, which a span softmax ignores; QA and
classification tasks must share a layout, so with the task objective it is left out for every head
(`objective_exclusions`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from utils.models.families import FAMILIES, Ranges, family_of

ModuleKind = Literal["conv1d", "linear", "layernorm", "rmsnorm"]
NORM_KINDS = ("layernorm", "rmsnorm")
INCLUDE_CHOICES = ("bias",)


@dataclass(frozen=True)
class CoveredParameter:
    """One parameter tensor the Fisher covers, with the module whose hooks give its gradients."""

    name: str            # full parameter name in the probe, e.g. transformer.h.0.mlp.c_fc.weight
    module_name: str     # e.g. transformer.h.0.mlp.c_fc
    kind: ModuleKind
    attribute: Literal["weight", "bias"]
    shape: tuple[int, ...]
    excluded: Ranges = ()   # [start, end) ranges of its coordinates that are structurally zero


@dataclass(frozen=True)
class LayoutBlock:
    """Where one parameter's reduced coordinates lie in the embedding vector: [start, end)."""

    name: str
    kind: ModuleKind
    shape: tuple[int, ...]
    reduction: str
    start: int
    end: int
    excluded: Ranges = ()   # the parameter's own coordinates left out (structurally zero), as ranges


def module_kind(module: nn.Module) -> ModuleKind | None:
    """The kind of a module whose parameters an embedding can cover, else None."""
    if isinstance(module, Conv1D):
        return "conv1d"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        return "layernorm"
    if is_rms_norm(module):
        return "rmsnorm"
    return None


def is_rms_norm(module: nn.Module) -> bool:
    """torch's nn.RMSNorm with a weight, or a transformers RMSNorm (LlamaRMSNorm, Qwen2RMSNorm, ...:
    `weight * x / sqrt(mean(x**2) + variance_epsilon)`, computed in fp32)."""
    if isinstance(module, nn.RMSNorm):
        return module.weight is not None
    return type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon") \
        and isinstance(getattr(module, "weight", None), nn.Parameter)


def select_parameters(model: nn.Module, body_prefix: str = "transformer", include: tuple[str, ...] = (),
                      exclude: tuple[str, ...] = ()) -> list[CoveredParameter]:
    """The covered parameters of `model`: linear/Conv1D/LayerNorm/RMSNorm weights under `body_prefix`
    (never the head), plus the groups of INCLUDE_CHOICES in `include`, less the names in `exclude`."""
    unknown = sorted(set(include) - set(INCLUDE_CHOICES))
    if unknown:
        raise ValueError(f"unknown parameter groups {unknown}; choose from {INCLUDE_CHOICES}")
    structural_zeros = body_family(model, body_prefix).structural_zero_bias
    covered = []
    for module_name, module in model.named_modules():
        kind = module_kind(module)
        if kind is None or not (module_name == body_prefix or module_name.startswith(body_prefix + ".")):
            continue
        has_bias = getattr(module, "bias", None) is not None
        attributes = ["weight"] + (["bias"] if "bias" in include and has_bias else [])
        for attribute in attributes:
            if f"{module_name}.{attribute}" in exclude:
                continue
            tensor = getattr(module, attribute)
            excluded = structural_zeros(model, module_name) if attribute == "bias" else ()
            covered.append(CoveredParameter(f"{module_name}.{attribute}", module_name, kind, attribute,
                                            tuple(tensor.shape), excluded))
    if not covered:
        raise ValueError(f"no linear or norm parameter found under {body_prefix!r}")
    return covered


def body_family(model: nn.Module, body_prefix: str):
    """The family of the body under `body_prefix` (from its config; GPT-2 when it has none)."""
    config = getattr(model.get_submodule(body_prefix), "config", None)
    return FAMILIES["gpt2"] if config is None else family_of(config, body_prefix)


def objective_exclusions(model: nn.Module, body_prefix: str, objective: str, include: tuple[str, ...]) -> tuple[str, ...]:
    """Parameters to leave out for an objective: with "task" and biases covered, the bias of the
    body's last LayerNorm (GPT-2: transformer.ln_f.bias), structurally zero under a span head and
    left out for every head so that QA and classification tasks share a layout (module docstring)."""
    if objective != "task" or "bias" not in include:
        return ()
    norms = [name for name, module in model.named_modules()
             if (name == body_prefix or name.startswith(body_prefix + ".")) and module_kind(module) == "layernorm"]
    return (f"{norms[-1]}.bias",) if norms else ()


def _reduction(parameter: CoveredParameter) -> str:
    if parameter.attribute == "bias" or parameter.kind in NORM_KINDS:
        return "none"
    return "mean over axis 0 (inputs)" if parameter.kind == "conv1d" else "mean over axis 1 (inputs)"


def reduce_per_output_unit(parameter: CoveredParameter, diagonal: torch.Tensor) -> torch.Tensor:
    """(out,) coordinates of one parameter's unreduced Fisher diagonal (its own shape), without its
    excluded (structurally zero) ones."""
    reduction = _reduction(parameter)
    if reduction == "none":
        values = diagonal.reshape(-1)
        if parameter.excluded:
            keep = torch.ones(values.numel(), dtype=torch.bool, device=values.device)
            for start, end in parameter.excluded:
                keep[start:end] = False
            values = values[keep]
        return values
    return diagonal.mean(dim=0 if parameter.kind == "conv1d" else 1)


def build_layout(covered: list[CoveredParameter]) -> list[LayoutBlock]:
    """The manifest: one block per covered parameter, in order, with its [start, end) range."""
    blocks, start = [], 0
    for parameter in covered:
        width = parameter.shape[-1] if parameter.kind == "conv1d" and parameter.attribute == "weight" \
            else parameter.shape[0]
        width -= sum(end - start for start, end in parameter.excluded)
        blocks.append(LayoutBlock(parameter.name, parameter.kind, parameter.shape, _reduction(parameter),
                                  start, start + width, parameter.excluded))
        start += width
    return blocks


def excluded_json(excluded: Ranges) -> list | None:
    """The excluded coordinates as JSON: null, one [start, end) pair (GPT-2's key bias), or a list
    of pairs when they are not contiguous (GPT-NeoX's per-head key bias)."""
    if not excluded:
        return None
    return list(excluded[0]) if len(excluded) == 1 else [list(r) for r in excluded]


def layout_manifest(blocks: list[LayoutBlock]) -> list[dict]:
    """The layout as JSON-ready dicts ("excluded": the parameter's coordinates left out, `excluded_json`)."""
    return [{**asdict(block), "shape": list(block.shape), "excluded": excluded_json(block.excluded)}
            for block in blocks]


def layout_digest(blocks: list[LayoutBlock]) -> str:
    """A short hash of names, shapes, reductions and exclusions: equal digests mean comparable
    coordinates (a block without exclusions hashes as it did before exclusions existed)."""
    key = json.dumps([[b.name, list(b.shape), b.reduction, b.start, b.end]
                      + ([] if not b.excluded else [excluded_json(b.excluded)]) for b in blocks])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def flatten(covered: list[CoveredParameter], diagonals: dict[str, torch.Tensor]) -> torch.Tensor:
    """(D,) embedding: every covered parameter's reduced diagonal, concatenated in layout order."""
    return torch.cat([reduce_per_output_unit(p, diagonals[p.name]) for p in covered])


def block_traces(blocks: list[LayoutBlock], vector: torch.Tensor) -> dict[str, float]:
    """Trace (sum of the unreduced diagonal) of each covered parameter, from the reduced vector: a
    mean over the inputs times their number is their sum (excluded coordinates are zero)."""
    traces = {}
    for block in blocks:
        fan_in = 1
        if block.reduction.startswith("mean over axis 0"):
            fan_in = block.shape[0]
        elif block.reduction.startswith("mean over axis 1"):
            fan_in = block.shape[1]
        traces[block.name] = float(vector[block.start:block.end].double().sum() * fan_in)
    return traces

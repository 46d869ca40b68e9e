"""Which parameters an embedding covers, and how each one's Fisher diagonal becomes coordinates.

Default (Task2Vec parity for a transformer): the weights of every linear layer and LayerNorm
inside the probe's body (for GPT-2: `attn.c_attn`, `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj`,
`ln_1`, `ln_2` of each block and `ln_f`). Excluded: the token embedding and the LM head (tied in
GPT-2, vocabulary-sized, sparse and noisy, and rewritten by head fitting) and the position
embedding. Biases are opt-in.

Each covered tensor is reduced *per output unit* ("filter-wise", as Task2Vec does per conv
filter): HF `Conv1D` stores its weight as (in, out), so the mean runs over axis 0; `nn.Linear`
stores (out, in), so the mean runs over axis 1; LayerNorm weights and biases are kept as they are.
For GPT-2 small that is 12 x (2304 + 768 + 3072 + 768 + 768 + 768) + 768 = 102,144 coordinates.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

ModuleKind = Literal["conv1d", "linear", "layernorm"]
INCLUDE_CHOICES = ("bias",)


@dataclass(frozen=True)
class CoveredParameter:
    """One parameter tensor the Fisher covers, with the module whose hooks give its gradients."""

    name: str            # full parameter name in the probe, e.g. transformer.h.0.mlp.c_fc.weight
    module_name: str     # e.g. transformer.h.0.mlp.c_fc
    kind: ModuleKind
    attribute: Literal["weight", "bias"]
    shape: tuple[int, ...]


@dataclass(frozen=True)
class LayoutBlock:
    """Where one parameter's reduced coordinates lie in the embedding vector: [start, end)."""

    name: str
    kind: ModuleKind
    shape: tuple[int, ...]
    reduction: str
    start: int
    end: int


def module_kind(module: nn.Module) -> ModuleKind | None:
    """The kind of a module whose parameters an embedding can cover, else None."""
    if isinstance(module, Conv1D):
        return "conv1d"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        return "layernorm"
    return None


def select_parameters(model: nn.Module, body_prefix: str = "transformer", include: tuple[str, ...] = ()
                      ) -> list[CoveredParameter]:
    """The covered parameters of `model`: linear/Conv1D/LayerNorm weights under `body_prefix`.

    Args:
        model: the probe (body plus a head); only modules whose name starts with `body_prefix`
            are considered, so the head is never covered.
        include: extra groups from INCLUDE_CHOICES ("bias": the biases of the same modules).

    Raises:
        ValueError: an unknown group, or no covered parameter at all.
    """
    unknown = sorted(set(include) - set(INCLUDE_CHOICES))
    if unknown:
        raise ValueError(f"unknown parameter groups {unknown}; choose from {INCLUDE_CHOICES}")
    covered = []
    for module_name, module in model.named_modules():
        kind = module_kind(module)
        if kind is None or not (module_name == body_prefix or module_name.startswith(body_prefix + ".")):
            continue
        attributes = ["weight"] + (["bias"] if "bias" in include and module.bias is not None else [])
        for attribute in attributes:
            tensor = getattr(module, attribute)
            covered.append(CoveredParameter(f"{module_name}.{attribute}", module_name, kind, attribute,
                                            tuple(tensor.shape)))
    if not covered:
        raise ValueError(f"no linear or LayerNorm parameter found under {body_prefix!r}")
    return covered


def _reduction(parameter: CoveredParameter) -> str:
    if parameter.attribute == "bias" or parameter.kind == "layernorm":
        return "none"
    return "mean over axis 0 (inputs)" if parameter.kind == "conv1d" else "mean over axis 1 (inputs)"


def reduce_per_output_unit(parameter: CoveredParameter, diagonal: torch.Tensor) -> torch.Tensor:
    """(out,) coordinates of one parameter's unreduced Fisher diagonal (its own shape)."""
    reduction = _reduction(parameter)
    if reduction == "none":
        return diagonal.reshape(-1)
    return diagonal.mean(dim=0 if parameter.kind == "conv1d" else 1)


def build_layout(covered: list[CoveredParameter]) -> list[LayoutBlock]:
    """The manifest: one block per covered parameter, in order, with its [start, end) range."""
    blocks, start = [], 0
    for parameter in covered:
        width = parameter.shape[-1] if parameter.kind == "conv1d" and parameter.attribute == "weight" \
            else parameter.shape[0]
        blocks.append(LayoutBlock(parameter.name, parameter.kind, parameter.shape, _reduction(parameter),
                                  start, start + width))
        start += width
    return blocks


def layout_manifest(blocks: list[LayoutBlock]) -> list[dict]:
    """The layout as JSON-ready dicts."""
    return [{**asdict(block), "shape": list(block.shape)} for block in blocks]


def layout_digest(blocks: list[LayoutBlock]) -> str:
    """A short hash of names, shapes and reductions: equal digests mean comparable coordinates."""
    key = json.dumps([[b.name, list(b.shape), b.reduction, b.start, b.end] for b in blocks])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def flatten(covered: list[CoveredParameter], diagonals: dict[str, torch.Tensor]) -> torch.Tensor:
    """(D,) embedding: every covered parameter's reduced diagonal, concatenated in layout order."""
    return torch.cat([reduce_per_output_unit(p, diagonals[p.name]) for p in covered])


def block_traces(blocks: list[LayoutBlock], vector: torch.Tensor) -> dict[str, float]:
    """Trace (sum of the unreduced diagonal) of each covered parameter, from the reduced vector.

    A mean over the inputs times their number is their sum, so the trace needs no second pass.
    """
    traces = {}
    for block in blocks:
        fan_in = 1
        if block.reduction.startswith("mean over axis 0"):
            fan_in = block.shape[0]
        elif block.reduction.startswith("mean over axis 1"):
            fan_in = block.shape[1]
        traces[block.name] = float(vector[block.start:block.end].double().sum() * fan_in)
    return traces

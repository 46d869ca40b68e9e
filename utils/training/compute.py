"""Compute accounting: how much training a run did, so that two runs can be compared at equal cost.

    passes  forward+backward passes of a batch (micro-batch), all processes together
    tokens  real (unpadded) tokens in those passes
    FLOPs   ≈ 6·N·tokens for training and 2·N·tokens for inference (Kaplan et al. 2020, section
            2.1: 2N per token forward, twice that backward), N the NON-EMBEDDING parameters:
            every parameter except those of nn.Embedding modules (token and position embeddings;
            an output matrix tied to the token embedding is that same parameter). Attention's
            context-dependent term (2·n_layer·n_ctx·d per token) is left out, as there: an estimate
            for comparing runs, not a measurement.
"""
from __future__ import annotations

import torch


def non_embedding_parameters(model: torch.nn.Module) -> int:
    """N: the number of parameters outside nn.Embedding modules, each shared parameter once."""
    embedding = {id(p) for module in model.modules() if isinstance(module, torch.nn.Embedding)
                 for p in module.parameters(recurse=False)}
    return sum(p.numel() for p in model.parameters() if id(p) not in embedding)


def training_flops(parameters: int, tokens: int) -> float:
    """6·N·tokens: the training FLOPs estimate (module docstring)."""
    return 6.0 * parameters * tokens


def inference_flops(parameters: int, tokens: int) -> float:
    """2·N·tokens: a forward pass only."""
    return 2.0 * parameters * tokens


def training_compute(model: torch.nn.Module, passes: int, tokens: int) -> dict[str, float | int]:
    """The compute record of a training run, for all_results.json and the lineage."""
    parameters = non_embedding_parameters(model)
    return {"train_passes": int(passes), "train_tokens": int(tokens), "non_embedding_parameters": parameters,
            "train_flops": training_flops(parameters, int(tokens))}

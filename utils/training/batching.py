"""Batches that waste little on padding: length-grouped for training, length-sorted for evaluation.

Padding every sequence to `max_seq_length` spends most of the compute on pad tokens when lengths
vary (SST-2 sentences, SQuAD questions with short contexts). Instead, sequences of similar length
share a batch and each batch is padded only to its own longest sequence.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def length_grouped_batches(lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int,
                           group_factor: int = 50, grouped: bool = True,
                           max_tokens: int | None = None, multiple: int = 8) -> list[list[int]]:
    """One epoch of training batches (lists of indices), the same for a given (seed, epoch).

    The indices are shuffled, cut into mega-batches of `group_factor * batch_size`, each sorted by
    length and cut into batches, and the batches shuffled again; the batch holding the longest
    sequence goes first, so a too-large batch fails at once rather than hours in. With
    `grouped=False` batches are plain random slices.

    With `max_tokens` (token-budget batches) a sorted mega-batch is cut greedily instead: a batch
    takes the next sequences while count × (its longest length rounded up to `multiple`) stays
    within `max_tokens` padded tokens, so short sequences come many to a batch and long ones few;
    when every sequence has one length L and max_tokens = batch_size × L (L a multiple of
    `multiple`) the batches are exactly the fixed-size ones.

    Raises:
        ValueError: batch_size not positive, or a sequence longer than max_tokens.
    """
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    rng = np.random.default_rng([seed, epoch])
    lengths_array = np.asarray(lengths)
    order = rng.permutation(len(lengths_array))
    if not grouped:
        return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    chunk = batch_size * group_factor
    batches: list[np.ndarray] = []
    for begin in range(0, len(order), chunk):
        mega = order[begin:begin + chunk]
        mega = mega[np.argsort(-lengths_array[mega], kind="stable")]
        if max_tokens is None:
            batches.extend(mega[i:i + batch_size] for i in range(0, len(mega), batch_size))
        else:
            batches.extend(token_budget_cut(mega, lengths_array, max_tokens, multiple))
    batches = [batches[i] for i in rng.permutation(len(batches))]
    longest = max(range(len(batches)), key=lambda i: lengths_array[batches[i]].max())
    batches.insert(0, batches.pop(longest))
    return [batch.tolist() for batch in batches]


def round_up(width: int, multiple: int) -> int:
    """`width` rounded up to a multiple of `multiple`."""
    return -(-width // multiple) * multiple


def token_budget_cut(order: np.ndarray, lengths: np.ndarray, max_tokens: int, multiple: int) -> list[np.ndarray]:
    """Consecutive runs of `order` (sorted longest first) whose padded size, count × the first
    (longest) length rounded up to `multiple`, is at most max_tokens."""
    batches, start = [], 0
    while start < len(order):
        width = round_up(int(lengths[order[start]]), multiple)
        if width > max_tokens:
            raise ValueError(f"a sequence of {int(lengths[order[start]])} tokens (padded to {width}) does not fit "
                             f"--max_tokens_per_batch {max_tokens}; raise it to at least {width}")
        count = max(1, max_tokens // width)
        batches.append(order[start:start + count])
        start += count
    return batches


def shard_for_training(batches: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """This rank's batches: every world_size-th one, the same count on every rank (the remainder
    is dropped, so that all ranks take the same number of optimizer steps)."""
    per_rank = len(batches) // world_size
    return batches[rank::world_size][:per_rank]


def evaluation_batches(lengths: Sequence[int], batch_size: int, rank: int = 0, world_size: int = 1
                       ) -> list[list[int]]:
    """This rank's evaluation batches: sorted by length, every example exactly once over all ranks."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    mine = order[rank::world_size]
    return [mine[i:i + batch_size].tolist() for i in range(0, len(mine), batch_size)]


def padded_width(sequences: Sequence[Sequence[int]], multiple: int = 1) -> int:
    """The longest length, rounded up to a multiple (few distinct shapes keep GPU kernels and the
    allocator warm; tensor cores like multiples of 8)."""
    return round_up(max(len(s) for s in sequences), multiple)


def pad_sequences(sequences: Sequence[Sequence[int]], pad_value: int, multiple: int = 1) -> torch.Tensor:
    """(B, T) tensor of the sequences right-padded with `pad_value` to the longest one (rounded up
    to `multiple`)."""
    width = padded_width(sequences, multiple)
    out = torch.full((len(sequences), width), pad_value, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        out[row, :len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
    return out


def attention_mask_for(sequences: Sequence[Sequence[int]], multiple: int = 1) -> torch.Tensor:
    """(B, T) mask: 1 on real tokens, 0 on right padding."""
    width = padded_width(sequences, multiple)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        mask[row, :len(sequence)] = 1
    return mask

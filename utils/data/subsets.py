"""Seeded random subsets of a split, stratified by document (DESIGN.md section 11).

`--max_train_samples` / `--max_eval_samples` never take the first N records: the first 200
SQuAD dev questions are one article, so such a "subset" measures one topic. Instead the records
are grouped by document (article title, movie, passage; the context when nothing else is known;
each record on its own for classification) and the N draws are shared among the documents in
proportion to their size (proportionate stratified sampling):

    quota_h = floor(N·n_h / M) + B_h,   P(B_h = 1) = frac(N·n_h / M),   Σ_h quota_h = N,

where n_h is the size of document h and M the number of records; the rounding bits B_h come
from systematic sampling over the fractional parts (one uniform draw), and the quota of a
document is drawn without replacement within it. Every record is then chosen with probability
exactly N / M, and the subset spreads over the documents instead of filling a few.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STRATEGY = "stratified_by_document"
_DOCUMENT_FIELDS = ("title", "movie_id", "passage_id")


def document_key(record: dict) -> str:
    """The document of a record: its article title, movie or passage id when the adapter kept
    one, else its context (QA), else the record itself (a classification sentence)."""
    meta = record.get("meta") or {}
    for name in _DOCUMENT_FIELDS:
        if meta.get(name):
            return f"{name}:{meta[name]}"
    if "context" in record:
        return f"context:{record['context']}"
    return f"id:{record['id']}"


def proportional_quotas(sizes: Sequence[int], count: int, rng: np.random.Generator) -> np.ndarray:
    """Per-stratum sample sizes summing to `count`, each floor or ceil of count·size/total, rounded
    up with probability equal to its fractional part (see the module docstring).

    Raises:
        ValueError: count larger than the total, or a stratum without records.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if np.any(sizes <= 0):
        raise ValueError("every stratum needs at least one record")
    if not 0 <= count <= total:
        raise ValueError(f"cannot draw {count} of {total} records")
    exact = count * sizes                                        # quota × total, in integers
    quotas = exact // total
    remainders = exact % total                                   # fractional parts × total
    extra = int(remainders.sum() // total)
    if extra:
        # Systematic sampling over the remainders, strata in a random order: stratum h is rounded
        # up iff one of the points u, u + total, ... falls in its slice of length remainders[h].
        order = rng.permutation(len(sizes))
        edges = np.cumsum(remainders[order])                     # (S,)
        points = int(rng.integers(total)) + total * np.arange(extra)
        hit = np.searchsorted(edges, points, side="right")       # the slice each point falls in
        quotas[order[hit]] += 1
    return quotas


@dataclass(frozen=True)
class SubsetInfo:
    """How a subset was drawn, for the run's outputs (data_subsets.json)."""

    seed: int
    total: int
    count: int
    strategy: str
    documents: int
    documents_sampled: int
    ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "seed": self.seed, "total": self.total, "count": self.count,
                "documents": self.documents, "documents_sampled": self.documents_sampled, "ids": list(self.ids)}


def stratified_sample(records: Sequence[dict], count: int | None, seed: int) -> tuple[list[dict], SubsetInfo]:
    """`count` records drawn as the module docstring says (all of them, in order, when count is
    None or not smaller than the number of records), returned in their original order."""
    groups: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        groups.setdefault(document_key(record), []).append(index)
    total = len(records)
    if count is None or count >= total:
        return list(records), SubsetInfo(seed, total, total, "all", len(groups), len(groups))
    rng = np.random.default_rng(seed)
    members = list(groups.values())
    quotas = proportional_quotas([len(m) for m in members], count, rng)
    chosen: list[int] = []
    for indices, quota in zip(members, quotas):
        if quota:
            chosen.extend(rng.choice(indices, size=int(quota), replace=False).tolist())
    chosen.sort()
    subset = [records[i] for i in chosen]
    info = SubsetInfo(seed, total, len(subset), STRATEGY, len(groups), int(np.count_nonzero(quotas)),
                      [str(record["id"]) for record in subset])
    return subset, info

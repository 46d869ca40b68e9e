"""Seeded random subsets of a split, stratified by document or by label (DESIGN.md section 11).

`--max_train_samples` / `--max_eval_samples` never take the first N records: the first 200
SQuAD dev questions are one article, so such a "subset" measures one topic. Instead the records
are grouped into strata and the N draws are shared among the strata in proportion to their size
(proportionate stratified sampling):

    quota_h = floor(N·n_h / M) + B_h,   P(B_h = 1) = frac(N·n_h / M),   Σ_h quota_h = N,

where n_h is the size of stratum h and M the number of records; the rounding bits B_h come
from systematic sampling over the fractional parts (one uniform draw), and the quota of a
stratum is drawn without replacement within it. Every record is then chosen with probability
exactly N / M, and the subset spreads over the strata instead of filling a few.

The strata (`SubsetInfo.strategy` says which rule was used):

* QA records (a record with a `context` key, or with no `label` key): by document, i.e. article
  title, movie or passage id when the adapter kept one, else the context ("stratified_by_document").
* Class records (no `context`, an int `label`; a bool is not a number here): one stratum per
  label value, in increasing label order ("stratified_by_label"). The unlabelled -1 of a GLUE test
  file is a class of its own, so an all-unlabelled split is plain random sampling.
* Regression records (no `context`, a float `label`, as utils.data.records.score_label makes
  every STS-B score, 3.0 included): B = 5 quantile bins of the split's own labels
  ("stratified_by_label_bins"). The edges are e_j = np.quantile(y, j / B, method="linear") for
  j = 1..B-1 (the 20/40/60/80% quantiles); bin k holds the labels e_k <= y < e_{k+1} with
  e_0 = -inf, e_B = +inf, so a label equal to an edge goes to the bin ABOVE it (bin index =
  #{j : e_j <= y}, np.searchsorted(edges, y, side="right")). Tied labels can make edges coincide
  and a bin empty; empty bins are dropped. The edges are recorded in `SubsetInfo.bin_edges`.

A split takes one rule: records of different kinds (QA and labelled, or int and float labels)
are refused, never silently mixed. Same seed and same records give the same subset, so runs from
different source checkpoints see the same examples.
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STRATEGY = "stratified_by_document"
LABEL_STRATEGY = "stratified_by_label"
BIN_STRATEGY = "stratified_by_label_bins"
LABEL_BINS = 5
_DOCUMENT_FIELDS = ("title", "movie_id", "passage_id")


def document_key(record: dict) -> str:
    """The document of a record: its article title, movie or passage id when the adapter kept
    one, else its context (QA), else the record itself."""
    meta = record.get("meta") or {}
    for name in _DOCUMENT_FIELDS:
        if meta.get(name):
            return f"{name}:{meta[name]}"
    if "context" in record:
        return f"context:{record['context']}"
    return f"id:{record['id']}"


def record_kind(record: dict) -> str:
    """Which stratification rule a record calls for: "document" (a `context` key, or no `label`),
    "class" (an integral label that is not a bool) or "score" (any other real label, e.g. a float).

    Raises:
        ValueError: a label that is a bool or not a number.
    """
    if "context" in record or "label" not in record:
        return "document"
    label = record["label"]
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, numbers.Real):
        raise ValueError(f"record {record.get('id')!r}: label {label!r} is neither an int class index nor a "
                         "float score; load the records through the task's adapter "
                         "(utils.data.records.validate_classification_record) so labels have their task's type")
    return "class" if isinstance(label, numbers.Integral) else "score"


def split_kind(records: Sequence[dict]) -> str:
    """The one kind (record_kind) shared by every record of a split ("document" for no records).

    Raises:
        ValueError: the split mixes kinds, e.g. int and float labels; the message names one record
            of each kind.
    """
    first: dict[str, Any] = {}
    for record in records:
        first.setdefault(record_kind(record), record.get("id"))
    if len(first) > 1:
        examples = ", ".join(f"{kind} (e.g. record {rid!r})" for kind, rid in first.items())
        raise ValueError(f"cannot stratify a split that mixes record kinds: {examples}. A class task's labels "
                         "must all be ints and a regression task's all floats (write 3.0, not 3, or load the file "
                         "through the task's adapter, which converts scores); QA and classification records "
                         "belong in different splits")
    return next(iter(first), "document")


def label_bin_edges(labels: np.ndarray, bins: int = LABEL_BINS) -> np.ndarray:
    """The bins - 1 inner edges e_j = quantile(labels, j / bins), j = 1..bins-1 (linear
    interpolation, numpy's default method, named so a numpy default change cannot move them).

    Raises:
        ValueError: bins < 1, no labels, or a label that is not finite.
    """
    labels = np.asarray(labels, dtype=np.float64)
    if bins < 1:
        raise ValueError(f"need at least one label bin, got {bins}")
    if labels.size == 0 or not np.all(np.isfinite(labels)):
        raise ValueError("label bins need at least one label and finite labels only; check the regression "
                         "task's scores (utils.data.records.score_label refuses NaN and infinity)")
    return np.quantile(labels, np.arange(1, bins) / bins, method="linear")


def label_bin(labels: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index #{j : edges_j <= y} of each label y: a label equal to an edge goes to the bin above."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(labels, dtype=np.float64), side="right")


def strata(records: Sequence[dict], bins: int = LABEL_BINS) -> tuple[str, list[list[int]], list[float] | None]:
    """The split's strategy, its strata (record indices, each in file order, none empty) and, for
    regression, the bin edges; the rule is the module docstring's."""
    kind = split_kind(records)
    groups: dict[Any, list[int]] = {}
    if kind == "document":
        for index, record in enumerate(records):
            groups.setdefault(document_key(record), []).append(index)
        return STRATEGY, list(groups.values()), None           # first-appearance order, as before
    labels = [record["label"] for record in records]
    if kind == "class":
        for index, label in enumerate(labels):
            groups.setdefault(int(label), []).append(index)
        return LABEL_STRATEGY, [groups[key] for key in sorted(groups)], None
    edges = label_bin_edges(np.asarray(labels, dtype=np.float64), bins)
    for index, bin_index in enumerate(label_bin(labels, edges).tolist()):
        groups.setdefault(bin_index, []).append(index)        # a bin no label falls in never appears
    return BIN_STRATEGY, [groups[key] for key in sorted(groups)], [float(edge) for edge in edges]


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
    """How a subset was drawn, for the run's outputs (data_subsets.json).

    `documents` / `documents_sampled` count the strata (documents, classes or non-empty label
    bins, as `strategy` says) and those with at least one record drawn; `bin_edges` holds the
    regression bins' inner edges (None, and absent from to_dict, for every other strategy).
    """

    seed: int
    total: int
    count: int
    strategy: str
    documents: int
    documents_sampled: int
    ids: list[str] = field(default_factory=list)
    bin_edges: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"strategy": self.strategy, "seed": self.seed, "total": self.total, "count": self.count,
               "documents": self.documents, "documents_sampled": self.documents_sampled, "ids": list(self.ids)}
        if self.bin_edges is not None:
            out["bin_edges"] = list(self.bin_edges)
        return out


def stratified_sample(records: Sequence[dict], count: int | None, seed: int, *,
                      bins: int = LABEL_BINS) -> tuple[list[dict], SubsetInfo]:
    """`count` records drawn as the module docstring says (all of them, in order, when count is
    None or not smaller than the number of records), returned in their original order.

    Args:
        bins: the number of label quantile bins of a regression split (ignored otherwise).

    Raises:
        ValueError: a split of mixed record kinds or a label of the wrong type (see split_kind),
            even when every record is kept, so a run never depends on whether a subset was asked for.
    """
    strategy, members, edges = strata(records, bins)
    total = len(records)
    if count is None or count >= total:
        return list(records), SubsetInfo(seed, total, total, "all", len(members), len(members))
    rng = np.random.default_rng(seed)
    quotas = proportional_quotas([len(m) for m in members], count, rng)
    chosen: list[int] = []
    for indices, quota in zip(members, quotas):
        if quota:
            chosen.extend(rng.choice(indices, size=int(quota), replace=False).tolist())
    chosen.sort()
    subset = [records[i] for i in chosen]
    info = SubsetInfo(seed, total, len(subset), strategy, len(members), int(np.count_nonzero(quotas)),
                      [str(record["id"]) for record in subset], edges)
    return subset, info

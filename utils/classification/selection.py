"""Choosing the epoch of a target run on a hold-out taken from its training data: the stratified
hold-out, whether it can tell epochs apart at all, and the epoch chosen (the best, or the last
where the hold-out cannot choose). The reported validation set is never used to choose.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from utils.data.registry import TaskSpec
from utils.data.subsets import proportional_quotas, strata


def split_holdout(records: list[dict], size: int, seed: int) -> tuple[list[dict], list[dict], int]:
    """(training, hold-out, number of strata the hold-out holds), stratified by label.

    The strata are the classes (for a regression target, five quantile bins of the scores;
    utils.data.subsets.strata). The hold-out takes max(E, ⌊N/10⌋) records, at most `size`, where E
    is the number of strata with two records or more: first one record of each such stratum (so a
    one-class hold-out happens only when the data or `size` allow no other), then the rest shared
    in proportion to the strata's remaining sizes (utils.data.subsets.proportional_quotas), never
    taking a stratum's last record, so training keeps every class. Drawn with `seed`; records keep
    their order.
    """
    if not records:
        return [], [], 0
    _, members, _ = strata(records)
    sizes = np.array([len(m) for m in members])
    eligible = sizes >= 2
    count = min(size, max(int(eligible.sum()), len(records) // 10), int((sizes - 1).sum()))
    rng = np.random.default_rng(seed)
    quotas = np.zeros(len(members), dtype=np.int64)
    if count >= eligible.sum():
        quotas += eligible
    spare = sizes - 1 - quotas                      # what each stratum can still give, keeping one
    remaining, open_strata = count - int(quotas.sum()), np.flatnonzero(spare > 0)
    if remaining > 0:
        quotas[open_strata] += proportional_quotas(spare[open_strata], remaining, rng)
    chosen = {i for indices, quota in zip(members, quotas) if quota
              for i in rng.choice(indices, size=int(quota), replace=False).tolist()}
    return ([r for i, r in enumerate(records) if i not in chosen], [r for i, r in enumerate(records) if i in chosen],
            int(np.count_nonzero(quotas)))


def holdout_problem(spec: TaskSpec, labels: Sequence[float]) -> str | None:
    """Why a hold-out cannot tell epochs apart whatever the model does, or None.

    Empty; one class (accuracy then rewards predicting that class, and MCC and F1 are constant);
    for a regression target fewer than three examples (a Pearson correlation of two points is ±1)
    or one score (undefined).
    """
    if len(labels) == 0:
        return "the training data is too small to hold any example out"
    distinct = len(set(labels))
    if spec.is_regression and len(labels) < 3:
        return f"a hold-out of {len(labels)} examples is too small (a Pearson correlation of two points is ±1)"
    if distinct < 2:
        what = "score" if spec.is_regression else "class"
        return f"every one of the {len(labels)} hold-out examples has the same {what}"
    return None


def choose_epoch(curve: Sequence[float], problem: str | None) -> tuple[int | None, str | None]:
    """(the best epoch, 1-based, or None; why the last epoch is taken instead, or None).

    The best epoch on the hold-out (non-finite scores count as -inf; among tied best epochs the
    earliest), except that the last epoch is taken when the hold-out cannot tell epochs apart:
    `problem` says so before training, or the score is the same at every epoch.
    """
    if problem is not None:
        return None, problem
    if len(curve) > 1 and len(set(curve)) == 1:
        value = "undefined" if not math.isfinite(curve[0]) else f"{curve[0]:.4g}"
        return None, f"the hold-out metric is {value} at every epoch"
    return int(np.argmax(curve)) + 1, None

"""Subsets of classification splits are stratified by label (utils/data/loading.py): classes for a
class task, quantile bins of the scores for a regression task; QA splits keep their document strata."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from utils.data.records import validate_classification_record
from utils.data.loading import label_bin, stratified_sample

SEEDS = 2000            # Monte-Carlo draws; the seeds are fixed, so the checks cannot flake


def class_records(sizes: dict[int, int], seed: int = 0) -> list[dict]:
    """Records with `sizes[k]` of class k, interleaved in a fixed shuffled order."""
    labels = [label for label, size in sizes.items() for _ in range(size)]
    order = np.random.default_rng(seed).permutation(len(labels))
    return [{"id": f"s{i}", "text": f"sentence {i}", "label": labels[j]} for i, j in enumerate(order)]


def score_records(labels: list[float]) -> list[dict]:
    return [{"id": f"p{i}", "text": "a", "text_pair": "b", "label": float(y)} for i, y in enumerate(labels)]


def floor_ceil(count: int, size: int, total: int) -> set[int]:
    """{floor, ceil} of count·size/total, in integers."""
    low, rest = divmod(count * size, total)
    return {low, low + (rest > 0)}


def check_proportional(records: list[dict], stratum_of: list[int], count: int) -> None:
    """Over SEEDS seeds: every stratum gets floor or ceil of its share, the subset is in file order
    without repeats, and each record is chosen with probability count / total (5 standard errors)."""
    total = len(records)
    sizes = Counter(stratum_of)
    index = {record["id"]: i for i, record in enumerate(records)}
    chosen = np.zeros(total)
    for seed in range(SEEDS):
        subset, info = stratified_sample(records, count, seed)
        positions = [index[record["id"]] for record in subset]
        assert len(subset) == count == info.count and positions == sorted(set(positions))
        assert info.ids == [record["id"] for record in subset]
        drawn = Counter(stratum_of[i] for i in positions)
        for stratum, size in sizes.items():
            assert drawn[stratum] in floor_ceil(count, size, total), (seed, stratum)
        chosen[positions] += 1
    p = count / total
    assert np.all(np.abs(chosen / SEEDS - p) < 5 * np.sqrt(p * (1 - p) / SEEDS))


# ----------------------------------------------------------------------------- (a) classes

def test_class_counts_are_proportional_and_every_record_equally_likely():
    records = class_records({0: 37, 1: 11, 2: 2, 3: 50})
    check_proportional(records, [record["label"] for record in records], count=23)
    _, info = stratified_sample(records, 23, seed=0)
    assert info.strategy == "stratified_by_label" and info.documents == 4 and info.bin_edges is None
    assert "bin_edges" not in info.to_dict()


def test_class_subsets_are_seeded():
    records = class_records({0: 40, 1: 60})
    first, info = stratified_sample(records, 25, seed=5)
    again, info_again = stratified_sample(records, 25, seed=5)
    other, _ = stratified_sample(records, 25, seed=6)
    assert first == again and info.ids == info_again.ids and info.ids != [r["id"] for r in other]
    assert Counter(r["label"] for r in first) == {0: 10, 1: 15}          # exact shares: no rounding


# ----------------------------------------------------------------------------- (b) regression bins

def test_score_bins_are_quantiles_and_counts_proportional():
    rng = np.random.default_rng(11)
    labels = (np.round(rng.uniform(0, 5, size=150) * 5) / 5).tolist()     # STS-B-like: many ties
    records = score_records(labels)
    edges = np.quantile(np.array(labels), [0.2, 0.4, 0.6, 0.8])
    stratum_of = [sum(y >= e for e in edges) for y in labels]              # an edge's label goes above
    check_proportional(records, stratum_of, count=31)
    _, info = stratified_sample(records, 31, seed=0)
    assert info.strategy == "stratified_by_label_bins" and info.bin_edges == edges.tolist()
    assert info.documents == len(set(stratum_of)) and info.to_dict()["bin_edges"] == edges.tolist()


def test_tied_scores_empty_bins_are_dropped_and_edge_labels_go_above():
    labels = [0.0] * 30 + np.linspace(0.5, 5.0, 20).tolist()
    records = score_records(labels)
    edges = np.quantile(np.array(labels), [0.2, 0.4, 0.6, 0.8])
    assert edges[0] == edges[1] == 0.0                                    # bins 0 and 1 are empty
    assert label_bin(np.array([0.0]), edges).tolist() == [2]               # 0.0 == an edge: the bin above
    assert label_bin(np.array([1.0, 2.0, 2.5]), np.array([2.0])).tolist() == [0, 1, 1]
    stratum_of = [sum(y >= e for e in edges) for y in labels]
    assert sorted(Counter(stratum_of)) == [2, 3, 4]
    check_proportional(records, stratum_of, count=10)
    _, info = stratified_sample(records, 10, seed=0)
    assert info.documents == 3 and info.bin_edges == edges.tolist()


def test_scores_from_the_adapter_are_floats_even_when_whole():
    raw = [{"id": str(i), "text": "a", "text_pair": "b", "label": y} for i, y in enumerate([3, 1.5, 4, 0, 5, 2.2])]
    records = [validate_classification_record(r, (0.0, 5.0), file=None, where=i, text_pair=True)
               for i, r in enumerate(raw)]
    assert all(type(r["label"]) is float for r in records)
    _, info = stratified_sample(records, 3, seed=0)
    assert info.strategy == "stratified_by_label_bins"


def test_mixed_or_untyped_labels_are_refused():
    with pytest.raises(ValueError, match="mixes record kinds.*regression task's all floats"):
        stratified_sample([{"id": "a", "text": "x", "label": 1}, {"id": "b", "text": "y", "label": 2.5}], 1, 0)
    with pytest.raises(ValueError, match="mixes record kinds"):          # even when nothing is dropped
        stratified_sample([{"id": "a", "text": "x", "label": 1}, {"id": "b", "context": "c"}], None, 0)
    with pytest.raises(ValueError, match="neither an int class index nor a float score"):
        stratified_sample([{"id": "a", "text": "x", "label": True}], None, 0)
    with pytest.raises(ValueError, match="neither an int"):
        stratified_sample([{"id": "a", "text": "x", "label": "1"}], None, 0)
    with pytest.raises(ValueError, match="finite labels"):
        stratified_sample(score_records([1.0, float("nan")]), 1, 0)
    with pytest.raises(ValueError, match="at least one label bin"):
        stratified_sample(score_records([1.0, 2.0]), 1, 0, bins=0)


# ----------------------------------------------------------------------------- (c) QA unchanged

def qa_records() -> list[dict]:
    """Five documents (sizes 7, 3, 5, 1, 4) interleaved; even ones have a title, odd ones only a context."""
    sizes = [7, 3, 5, 1, 4]
    records = []
    for i in range(max(sizes)):
        for d, size in enumerate(sizes):
            if i < size:
                meta = {"meta": {"title": f"article{d}"}} if d % 2 == 0 else {}
                records.append({"id": f"q{d}-{i}", "context": f"passage {d}", "question": "?", **meta})
    return records


# Drawn by the document-strata code before label strata existed; QA subsets must not move.
QA_EXPECTED = {
    (0, 7): (["q0-0", "q0-1", "q1-1", "q2-2", "q4-2", "q2-3", "q4-3"], 4),
    (3, 11): (["q0-0", "q2-0", "q4-0", "q1-1", "q4-1", "q1-2", "q4-2", "q0-3", "q2-3", "q0-4", "q0-5"], 4),
    (12345, 2): (["q0-2", "q1-2"], 2),
}


@pytest.mark.parametrize("seed,count", list(QA_EXPECTED))
def test_qa_subsets_are_unchanged(seed, count):
    ids, sampled = QA_EXPECTED[seed, count]
    subset, info = stratified_sample(qa_records(), count, seed)
    assert [r["id"] for r in subset] == info.ids == ids
    assert (info.strategy, info.documents, info.documents_sampled) == ("stratified_by_document", 5, sampled)
    assert set(info.to_dict()) == {"strategy", "seed", "total", "count", "documents", "documents_sampled", "ids"}


# ----------------------------------------------------------------------------- (d) edge cases

@pytest.mark.parametrize("records", [class_records({0: 3, 1: 4}), score_records([0.5, 1.0, 3.0, 4.2, 5.0]),
                                     qa_records()], ids=["classes", "scores", "qa"])
@pytest.mark.parametrize("count", [None, "len", "more"])
def test_a_count_not_below_the_size_keeps_everything_in_order(records, count):
    count = {None: None, "len": len(records), "more": len(records) + 5}[count]
    subset, info = stratified_sample(records, count, seed=1)
    assert subset == records and info.strategy == "all" and info.count == info.total == len(records)


def test_one_class_or_one_score_is_plain_random_sampling():
    records = class_records({1: 40})
    check_proportional(records, [0] * 40, count=9)
    _, info = stratified_sample(records, 9, seed=0)
    assert (info.strategy, info.documents, info.documents_sampled) == ("stratified_by_label", 1, 1)
    _, info = stratified_sample(score_records([2.5] * 12), 5, seed=0)
    assert info.documents == 1 and info.bin_edges == [2.5] * 4 and info.count == 5


def test_empty_split():
    subset, info = stratified_sample([], 3, seed=0)
    assert subset == [] and info.strategy == "all" and info.documents == 0

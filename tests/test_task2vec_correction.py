"""task2vec.analysis.correction: distances corrected for the embeddings' Monte-Carlo noise, checked on a
synthetic generator whose true distances are known."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.spatial.distance import cosine as scipy_cosine

from task2vec.analysis.diversity import noise_floor_verdict, resolved_pairs, subset_diversities
from task2vec.analysis.correction import (MAX_FLOOR_SUM, corrected_distance, corrected_matrix, is_resolved, noise_bias,
                                 noise_scale)
from task2vec.analysis.diversity import corrected_data_diversity, set_statistics


def reference_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Task2Vec distance written independently: unit means, the pair's ratios, scipy's cosine."""
    a, b = a / a.mean(), b / b.mean()
    return float(scipy_cosine(a / (a + b), b / (a + b)))


def noisy(rng: np.random.Generator, truth: np.ndarray, samples: float) -> np.ndarray:
    """A Monte-Carlo Fisher estimate of `truth`: each coordinate is the mean of `samples` squared
    standard normal scores times its true value (a chi-square over its degrees of freedom)."""
    return truth * rng.chisquare(samples, size=truth.shape) / samples


def true_pair(rng: np.random.Generator, dimension: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Two Fisher-like embeddings: a shared log-normal profile, task-specific deviations of size
    `spread`, and overall scales 3.7 apart (which the distance ignores)."""
    profile = rng.normal(0.0, 2.0, dimension)
    return (np.exp(profile + spread * rng.standard_normal(dimension)),
            3.7 * np.exp(profile + spread * rng.standard_normal(dimension)))


def test_no_noise_changes_nothing_and_the_first_order_term_is_half_the_floors():
    raw = np.array([0.0, 0.01, 0.1, 0.5, 1.0])
    np.testing.assert_allclose(corrected_distance(raw, 0.0, 0.0), raw, rtol=1e-14, atol=1e-16)
    # For small floors the correction is d − (f_a + f_b)/2 up to terms of second order in them.
    for f_a, f_b in [(1e-4, 3e-4), (1e-3, 2e-3)]:
        got = corrected_distance(0.02, f_a, f_b)
        assert abs(got - (0.02 - (f_a + f_b) / 2)) < 10 * (f_a + f_b) * max(f_a, f_b, 0.02)
    assert noise_bias(0.01, 0.03) == pytest.approx(0.02)
    # By hand: V(0.03) = 0.03/1.97, V(0.01) = 0.01/1.99, V(0.02) = 0.02/1.98.
    v_raw, v_a, v_b = 0.03 / 1.97, 0.01 / 1.99, 0.02 / 1.98
    v_star = (v_raw - (v_a + v_b) / 2 - (v_a - v_b) ** 2 / 2) / (1 - 2 * (v_a + v_b))
    assert corrected_distance(0.03, 0.01, 0.02) == pytest.approx(2 * v_star / (1 + v_star), rel=1e-14)
    assert noise_scale(0.5) == pytest.approx(1 / 3)
    assert corrected_distance(0.03, 0.01, 0.02, "cosine") == pytest.approx(0.015, rel=1e-14)


def test_negative_values_are_kept_and_impossible_inputs_refused():
    assert corrected_distance(0.001, 0.01, 0.01) < 0          # below what the noise alone gives: reported
    assert math.isnan(corrected_distance(0.3, 0.3, MAX_FLOOR_SUM))
    assert math.isnan(corrected_distance(0.3, math.nan, 0.01))
    with pytest.raises(ValueError, match="outside"):
        corrected_distance(1.2, 0.0, 0.0)
    with pytest.raises(ValueError, match="no noise correction"):
        corrected_distance(0.1, 0.0, 0.0, "kl")
    matrix = corrected_matrix(np.array([[0.0, 0.1, 0.2], [0.1, 0.0, 0.3], [0.2, 0.3, 0.0]]), np.array([0.01, 0.02, 0.03]))
    assert np.array_equal(matrix, matrix.T) and np.all(np.diag(matrix) == 0.0)
    assert matrix[0, 2] == pytest.approx(float(corrected_distance(0.2, 0.01, 0.03)), rel=1e-15)
    assert is_resolved(raw=0.04, corrected=0.02) is True and is_resolved(raw=0.04, corrected=0.019) is False
    assert is_resolved(raw=0.3, corrected=math.nan) is None and is_resolved(raw=0.3, corrected=None) is None


def test_a_pair_is_resolved_when_half_its_raw_distance_is_signal_beyond_first_order():
    """is_resolved against a hand computation where the first-order rule (corrected ≥ (f_a + f_b)/2)
    and the full one (corrected ≥ raw − corrected) disagree: raw 0.18, floors 0.11 and 0.11."""
    # By hand: V(0.18) = 0.18/1.82 = 9/91, V(0.11) = 0.11/1.89 = 11/189, (V_a − V_b)² = 0;
    # V* = (9/91 − 11/189)/(1 − 4·11/189) = (100/2457)/(145/189) = 20/377; d* = 2V*/(1 + V*) = 40/397.
    corrected = float(corrected_distance(0.18, 0.11, 0.11))
    assert corrected == pytest.approx(40 / 397, rel=1e-13)
    assert 0.18 - 40 / 397 <= 40 / 397 < (0.11 + 0.11) / 2          # 0.0792 <= 0.1008 < 0.11: they disagree
    assert is_resolved(raw=0.18, corrected=corrected) is True
    # raw 0.15: V* = (0.15/1.85 − 11/189)/(145/189) = 0.0298, d* = 0.0579 < 0.15 − 0.0579: not resolved.
    assert is_resolved(raw=0.15, corrected=float(corrected_distance(0.15, 0.11, 0.11))) is False
    # The cosine correction is first-order, so there the two rules are the same rule.
    cosine = float(corrected_distance(0.18, 0.11, 0.11, "cosine"))
    assert is_resolved(raw=0.18, corrected=cosine) is (cosine >= 0.11) is False
    with pytest.raises(TypeError):
        is_resolved(0.18, corrected)        # keyword-only: raw and corrected cannot be swapped unnoticed
    # The reports use the same rule: a resolved pair although its corrected distance is below (f_a + f_b)/2.
    matrix = np.array([[0.0, 0.18, 0.15], [0.18, 0.0, 0.15], [0.15, 0.15, 0.0]])
    pairs = resolved_pairs(["a", "b", "c"], matrix, {name: {"task_level": 0.11} for name in "abc"})
    assert [pair["resolved"] for pair in pairs] == [True, False, False]
    assert pairs[0]["bias"] == pytest.approx(0.11) and pairs[0]["bias_removed"] == pytest.approx(0.18 - 40 / 397)
    assert "2 of 3 task pairs are not resolved (a / c, b / c;" in noise_floor_verdict(pairs)


def test_the_first_order_bias_formula_holds_for_small_distances_only():
    """E[d̂] − d against (f_a + f_b)/2 at true distances of about 0.01 and 0.3, chi-square noise with
    floors about 0.03 and 0.11 (100 repetitions each; the full grid with standard errors is
    benchmarks/task2vec_bias_formula.py): at 0.01 the formula holds, at 0.3 the noise adds well
    under half of it; the full correction under-corrects there (a few percent of d) and the
    first-order one over-corrects by more."""
    rng = np.random.default_rng(11)
    measured = {}
    for spread in (0.1008, 0.7155):        # true distances about 0.01 and 0.3 (log-ratio sd √2·spread)
        rows = []
        for _ in range(100):
            a, b = true_pair(rng, 2000, spread)
            a1, a2, b1, b2 = noisy(rng, a, 64.6), noisy(rng, a, 64.6), noisy(rng, b, 16.2), noisy(rng, b, 16.2)
            raw, f_a, f_b = reference_distance(a1, b1), reference_distance(a1, a2), reference_distance(b1, b2)
            rows.append((reference_distance(a, b), raw, (f_a + f_b) / 2, float(corrected_distance(raw, f_a, f_b))))
        truth, raw, half, corrected = np.asarray(rows).T
        measured[round(float(np.mean(truth)), 2)] = (np.mean(raw - truth) / np.mean(half),
                                                     np.mean(corrected - truth) / np.mean(truth),
                                                     np.mean(raw - half - truth) / np.mean(truth))
    print("\ntrue distance: (raw bias / ((f_a + f_b)/2), full residual / d, first-order residual / d)",
          {d: tuple(round(float(v), 4) for v in values) for d, values in measured.items()})
    assert set(measured) == {0.01, 0.3}
    small_share, _, _ = measured[0.01]
    large_share, large_residual, large_first_order = measured[0.3]
    assert 0.95 < small_share < 1.05
    assert 0.3 < large_share < 0.5
    assert 0.02 < large_residual < 0.07 and large_first_order < -0.1


def test_the_floor_is_twice_what_one_noisy_embedding_adds():
    """d(e, e') between two noisy copies estimates 2ν; one noisy copy lies ν from the truth."""
    rng = np.random.default_rng(5)
    to_truth, floors = [], []
    for _ in range(200):
        truth = np.exp(rng.normal(0.0, 2.0, 1000))
        first, second = noisy(rng, truth, 100), noisy(rng, truth, 100)
        to_truth.append(reference_distance(first, truth))
        floors.append(reference_distance(first, second))
    ratio = np.mean(floors) / np.mean(to_truth)
    print(f"\nfloor {np.mean(floors):.5f}, one copy to the truth {np.mean(to_truth):.5f}, ratio {ratio:.3f}")
    assert ratio == pytest.approx(2.0, rel=0.03)


def test_correction_is_unbiased_on_a_generator_with_known_distances():
    """The acceptance check. 400 repetitions; each draws a true pair (D = 1000 coordinates, true
    distance about 0.01) and Monte-Carlo estimates of both with chi-square noise of 400 and 67
    degrees of freedom (floors about 0.005 and 0.03, as K = 8 and K = 1 gave on the real tasks),
    each estimated twice for its floor. The raw distance is biased by far more than its standard
    error, the corrected one lies within 2 standard errors of the truth; the first-order
    correction alone is still biased by more than 2 (the attenuation term of the derivation)."""
    rng = np.random.default_rng(2024)
    repetitions = 400
    errors = {"raw": [], "first_order": [], "corrected": []}
    truths, floor_pairs = [], []
    for _ in range(repetitions):
        a, b = true_pair(rng, 1000, 0.1)
        truth = reference_distance(a, b)
        a1, a2, b1, b2 = noisy(rng, a, 400), noisy(rng, a, 400), noisy(rng, b, 67), noisy(rng, b, 67)
        raw, f_a, f_b = reference_distance(a1, b1), reference_distance(a1, a2), reference_distance(b1, b2)
        errors["raw"].append(raw - truth)
        errors["first_order"].append(raw - (f_a + f_b) / 2 - truth)
        errors["corrected"].append(float(corrected_distance(raw, f_a, f_b)) - truth)
        truths.append(truth)
        floor_pairs.append((f_a, f_b))
    summary = {name: (np.mean(values), np.std(values, ddof=1) / math.sqrt(repetitions))
               for name, values in errors.items()}
    print(f"\ntrue distance {np.mean(truths):.5f}, floors {np.mean(floor_pairs, axis=0).round(5)}, "
          f"{repetitions} repetitions; mean error (SE): "
          + "; ".join(f"{name} {mean:+.2e} ({se:.1e}, {mean / se:+.1f} SE)" for name, (mean, se) in summary.items()))
    raw_mean, raw_se = summary["raw"]
    assert raw_mean > 50 * raw_se and raw_mean > np.mean(truths)      # the noise more than doubles it
    corrected_mean, corrected_se = summary["corrected"]
    assert abs(corrected_mean) < 2 * corrected_se
    first_mean, first_se = summary["first_order"]
    assert abs(first_mean) > 2 * first_se


def test_a_noisily_embedded_task_no_longer_ranks_as_more_diverse():
    """Four tasks: A, B, C equally far apart, N truly close to A but embedded from few samples.
    The raw diversity ranks the subset without N (A, B, C) as the LEAST diverse; the corrected one
    ranks the two subsets holding both A and N lowest, as the true embeddings do."""
    rng = np.random.default_rng(7)
    profile = rng.normal(0.0, 2.0, 1500)
    truth = {name: np.exp(profile + 0.15 * rng.standard_normal(1500)) for name in "ABC"}
    truth["N"] = truth["A"] * np.exp(0.01 * rng.standard_normal(1500))
    samples = {"A": 400, "B": 400, "C": 400, "N": 30}
    vectors = {name: noisy(rng, value, samples[name]) for name, value in truth.items()}
    reseeded = {name: noisy(rng, value, samples[name]) for name, value in truth.items()}
    names = ["A", "B", "C", "N"]

    def true_diversity(subset):
        return np.mean([reference_distance(truth[i], truth[j]) for i, j in itertools.combinations(subset, 2)])

    expected_lowest = {("A", "B", "N"), ("A", "C", "N")}
    assert {s for s in itertools.combinations(names, 3) if s != ("B", "C", "N")} - {("A", "B", "C")} == expected_lowest
    assert max(true_diversity(s) for s in expected_lowest) < min(true_diversity(s) for s in [("A", "B", "C"),
                                                                                              ("B", "C", "N")])
    target = np.exp(profile)
    vectors["T"], reseeded["T"] = noisy(rng, target, 400), noisy(rng, target, 400)
    ranked, key = subset_diversities(vectors, names, "T", 3, "task2vec", reseeded)
    assert key == "diversity_corrected"
    assert {tuple(entry["tasks"]) for entry in ranked[:2]} == expected_lowest
    raw_order = sorted(ranked, key=lambda entry: entry["diversity"])
    assert tuple(raw_order[0]["tasks"]) == ("A", "B", "C")
    for entry in ranked:   # the corrected diversity is the mean of the corrected pair distances
        pairs = itertools.combinations(entry["tasks"], 2)
        expected = np.mean([float(corrected_distance(reference_distance(vectors[i], vectors[j]),
                                                     reference_distance(vectors[i], reseeded[i]),
                                                     reference_distance(vectors[j], reseeded[j])))
                            for i, j in pairs])
        assert entry["diversity_corrected"] == pytest.approx(expected, rel=1e-10)


def test_corrected_statistics_against_an_independent_computation():
    rng = np.random.default_rng(9)
    truth = [np.exp(rng.normal(0.0, 1.0, 64)) for _ in range(4)]
    first = [noisy(rng, t, 50) for t in truth]
    second = [noisy(rng, t, 50) for t in truth]
    floors = [reference_distance(a, b) for a, b in zip(first, second)]
    members, target = first[:3], first[3]
    got = set_statistics(members, target, "task2vec", second[:3], second[3])
    pair = [float(corrected_distance(reference_distance(first[i], first[j]), floors[i], floors[j]))
            for i, j in itertools.combinations(range(3), 2)]
    with_target = [float(corrected_distance(reference_distance(first[i], first[j]), floors[i], floors[j]))
                   for i, j in itertools.combinations(range(4), 2)]
    mean = np.mean([m / m.sum() for m in members], axis=0)
    mean_reseeded = np.mean([m / m.sum() for m in second[:3]], axis=0)
    to_target = float(corrected_distance(reference_distance(mean, target), reference_distance(mean, mean_reseeded),
                                         floors[3]))
    assert got["diversity_corrected"] == pytest.approx(np.mean(pair), rel=1e-10)
    assert got["diversity_with_target_corrected"] == pytest.approx(np.mean(with_target), rel=1e-10)
    assert got["distance_to_target_corrected"] == pytest.approx(to_target, rel=1e-10)
    missing = set_statistics(members, target, "task2vec", [second[0], None, second[2]], second[3])
    assert math.isnan(missing["diversity_corrected"]) and not math.isnan(missing["diversity"])
    batches, batches_reseeded = np.stack(first), np.stack(second)
    estimate = corrected_data_diversity(batches, batches_reseeded)
    every_pair = [float(corrected_distance(reference_distance(first[i], first[j]), floors[i], floors[j]))
                  for i, j in itertools.combinations(range(4), 2)]
    assert estimate.value == pytest.approx(np.mean(every_pair), rel=1e-10)
    assert 0.0 <= estimate.ci_low <= estimate.ci_high <= 1.0

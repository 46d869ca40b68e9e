"""task2vec.analysis.distances and task2vec.analysis.diversity: distance properties (the scale convention among them),
vectorised against a scipy loop, the diversity coefficient and its jackknife interval (including a
coverage simulation and the cut to [0, 1])."""
from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import cosine as scipy_cosine

import task2vec.analysis.distances as distances_module
from task2vec.analysis.distances import (DISTANCES, cosine_distance, cross_distances, distance_function, paired_distances,
                                pairwise_distances, task2vec_distance)
from task2vec.analysis.diversity import (cross_diversity, data_diversity, diversity_coefficient, jackknife_leave_one_out,
                                noise_floor)


def reference_task2vec(a: np.ndarray, b: np.ndarray) -> float:
    """The Task2Vec distance written independently: unit-mean scaling, mask 0/0 coordinates,
    normalise the pair, scipy cosine."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    a, b = (x / x.mean() if x.mean() > 0 else x for x in (a, b))
    keep = (a + b) > 1e-12 * (a.mean() + b.mean())
    u, v = a[keep] / (a + b)[keep], b[keep] / (a + b)[keep]
    return float(scipy_cosine(u, v))


def reference_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(scipy_cosine(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)))


REFERENCES = {"task2vec": reference_task2vec, "cosine": reference_cosine}


def positive_vectors(rng: np.random.Generator, n: int, dimension: int) -> np.ndarray:
    """Log-normal vectors with very different scales per row, as Fisher diagonals have."""
    return np.exp(rng.normal(0.0, 2.0, size=(n, dimension)) + rng.normal(0.0, 5.0, size=(n, 1)))


def with_zero_coordinates(rng: np.random.Generator, n: int, dimension: int) -> np.ndarray:
    """Positive vectors with about a third of the coordinates exactly zero (some zero in every row)."""
    vectors = positive_vectors(rng, n, dimension)
    vectors[rng.random((n, dimension)) < 0.35] = 0.0
    vectors[:, 0] = 0.0  # a coordinate that is 0/0 for every pair
    return vectors


# --- distance properties -----------------------------------------------------------------------

@pytest.mark.parametrize("name", DISTANCES)
def test_identity_and_scale_invariance(name):
    pair = distance_function(name)
    rng = np.random.default_rng(0)
    for vector in positive_vectors(rng, 20, 64):
        assert pair(vector, vector) == pytest.approx(0.0, abs=1e-12)
        for scale in (1e-9, 0.5, 3.0, 1e9):
            assert pair(vector, scale * vector) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", DISTANCES)
@pytest.mark.parametrize("zeros", [False, True])
def test_rescaling_either_embedding_changes_nothing(name, zeros):
    """The claimed invariance: d(c1·a, c2·b) = d(a, b) for any c1, c2 > 0, also through the
    vectorised all-pairs and cross kernels."""
    pair = distance_function(name)
    rng = np.random.default_rng(13)
    vectors = (with_zero_coordinates if zeros else positive_vectors)(rng, 12, 48)
    for a, b in zip(vectors[::2], vectors[1::2]):
        base = pair(a, b)
        assert 0.0 < base < 1.0
        for c1, c2 in itertools.product((1e-9, 0.37, 1.0, 3.0, 1e9), repeat=2):
            assert pair(c1 * a, c2 * b) == pytest.approx(base, rel=1e-12, abs=1e-15), (c1, c2)
    scales = np.exp(rng.uniform(-20, 20, size=(12, 1)))
    np.testing.assert_allclose(pairwise_distances(vectors * scales, name), pairwise_distances(vectors, name),
                               rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(cross_distances(vectors[:5] * 7.0, vectors * scales, name),
                               cross_distances(vectors[:5], vectors, name), rtol=1e-12, atol=1e-15)


def test_the_scale_convention_by_hand():
    """a = (1, 3), b = (3, 1): u = (1/4, 3/4), v = (3/4, 1/4), cos = (6/16)/(10/16) = 0.6, d = 0.4.
    Without the unit-mean scaling, 3a gives u = (1/2, 9/10), v = (1/2, 1/10) and
    cos = 0.34/√(1.06·0.26), d = 0.3524: the normalised cosine alone is not scale-invariant."""
    a, b = np.array([1.0, 3.0]), np.array([3.0, 1.0])
    assert task2vec_distance(a, b) == pytest.approx(0.4, rel=1e-14)
    assert task2vec_distance(3 * a, b) == pytest.approx(0.4, rel=1e-14)
    assert task2vec_distance(a, 100 * b) == pytest.approx(0.4, rel=1e-14)
    unscaled = float(scipy_cosine(3 * a / (3 * a + b), b / (3 * a + b)))
    assert unscaled == pytest.approx(1 - 0.34 / math.sqrt(1.06 * 0.26), rel=1e-12)
    assert abs(unscaled - 0.4) > 0.04


@pytest.mark.parametrize("name", DISTANCES)
def test_symmetric_and_in_unit_interval(name):
    pair = distance_function(name)
    rng = np.random.default_rng(1)
    first, second = positive_vectors(rng, 200, 32), positive_vectors(rng, 200, 32)
    for a, b in zip(first, second):
        forward = pair(a, b)
        assert forward == pair(b, a)
        assert 0.0 <= forward <= 1.0


@pytest.mark.parametrize("name", DISTANCES)
def test_disjoint_supports_give_one(name):
    a = np.array([1.0, 2.0, 0.0, 0.0, 0.0])
    b = np.array([0.0, 0.0, 3.0, 4.0, 0.0])
    assert distance_function(name)(a, b) == 1.0


@pytest.mark.parametrize("name", DISTANCES)
def test_zeros_never_give_nan(name):
    pair = distance_function(name)
    zero, vector = np.zeros(6), np.array([0.0, 1.0, 2.0, 0.0, 5.0, 1e-30])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division warnings either
        assert pair(zero, zero) == 0.0
        assert pair(zero, vector) == 1.0 and pair(vector, zero) == 1.0
        partial = pair(vector, np.array([0.0, 3.0, 0.0, 0.0, 1.0, 0.0]))
    assert math.isfinite(partial) and 0.0 < partial < 1.0
    assert partial == pytest.approx(REFERENCES[name](vector, np.array([0.0, 3.0, 0.0, 0.0, 1.0, 0.0])), rel=1e-12)


def test_task2vec_weights_coordinates_equally_unlike_cosine():
    """A tiny coordinate that differs a lot moves the Task2Vec distance but hardly the cosine."""
    a, b = np.array([1e6, 1e-6]), np.array([1e6, 1e-3])
    assert cosine_distance(a, b) < 1e-15
    assert task2vec_distance(a, b) > 0.1


@pytest.mark.parametrize("bad, message", [
    (np.array([1.0, -1.0, 2.0]), "negative"),
    (np.array([1.0, np.nan, 2.0]), "NaN"),
    (np.array([1.0, np.inf, 2.0]), "NaN or infinite"),
    (np.array([1.0, 2.0]), "different dimensions"),
])
def test_bad_inputs_raise(bad, message):
    good = np.array([1.0, 1.0, 1.0])
    for pair in (task2vec_distance, cosine_distance):
        with pytest.raises(ValueError, match=message):
            pair(good, bad)


def test_unknown_distance_lists_choices():
    with pytest.raises(ValueError, match="task2vec.*cosine"):
        distance_function("euclidean")
    with pytest.raises(ValueError, match="choose one of"):
        pairwise_distances(np.ones((2, 3)), "kl")


# --- vectorised all-pairs against a scipy loop -------------------------------------------------

@pytest.mark.parametrize("name", DISTANCES)
@pytest.mark.parametrize("zeros", [False, True])
@pytest.mark.parametrize("block_rows", [None, 1, 3])
def test_pairwise_matches_scipy_loop(name, zeros, block_rows):
    rng = np.random.default_rng(2)
    embeddings = (with_zero_coordinates if zeros else positive_vectors)(rng, 9, 40)
    matrix = pairwise_distances(embeddings, name, block_rows=block_rows)
    expected = np.zeros((9, 9))
    for i, j in itertools.combinations(range(9), 2):
        expected[i, j] = expected[j, i] = REFERENCES[name](embeddings[i], embeddings[j])
    assert matrix.dtype == np.float64 and matrix.shape == (9, 9)
    np.testing.assert_allclose(matrix, expected, rtol=1e-12, atol=0)
    assert np.array_equal(matrix, matrix.T)
    assert np.all(np.diag(matrix) == 0.0)


@pytest.mark.parametrize("name", DISTANCES)
@pytest.mark.parametrize("zeros", [False, True])
def test_cross_matches_scipy_loop(name, zeros):
    rng = np.random.default_rng(3)
    make = with_zero_coordinates if zeros else positive_vectors
    first, second = make(rng, 5, 30), make(rng, 7, 30)
    matrix = cross_distances(first, second, name, block_rows=2)
    expected = np.array([[REFERENCES[name](a, b) for b in second] for a in first])
    assert matrix.shape == (5, 7)
    np.testing.assert_allclose(matrix, expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose(paired_distances(first, second[:5], name),
                               [REFERENCES[name](a, b) for a, b in zip(first, second[:5])], rtol=1e-12, atol=0)


def test_blocks_over_columns_give_the_same_matrix(monkeypatch):
    """With a tiny memory budget the kernels tile rows and columns; the numbers must not change."""
    rng = np.random.default_rng(4)
    embeddings = with_zero_coordinates(rng, 11, 20)
    whole = pairwise_distances(embeddings)
    whole_cross = cross_distances(embeddings[:4], embeddings)
    monkeypatch.setattr(distances_module, "MAX_BLOCK_ELEMENTS", 45)  # 2 columns × 20 coordinates per block
    np.testing.assert_array_equal(pairwise_distances(embeddings), whole)
    np.testing.assert_array_equal(cross_distances(embeddings[:4], embeddings), whole_cross)


def test_all_zero_rows_in_a_matrix():
    embeddings = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0, 0.0]])
    matrix = pairwise_distances(embeddings)
    np.testing.assert_array_equal(matrix, [[0, 0, 1], [0, 0, 1], [1, 1, 0]])


# --- diversity coefficient ---------------------------------------------------------------------

def test_identical_embeddings_have_zero_diversity():
    vector = np.exp(np.random.default_rng(5).normal(size=25))
    estimate = data_diversity(np.tile(vector, (6, 1)))
    assert estimate.value == pytest.approx(0.0, abs=1e-12)
    assert estimate.se == pytest.approx(0.0, abs=1e-12)


def test_upper_triangle_mean_equals_off_diagonal_mean_and_keeps_zeros():
    rng = np.random.default_rng(6)
    matrix = pairwise_distances(positive_vectors(rng, 8, 16))
    matrix[1, 2] = matrix[2, 1] = 0.0  # a genuine zero distance is data, not a missing value
    off_diagonal = matrix[~np.eye(8, dtype=bool)]
    estimate = diversity_coefficient(matrix)
    assert estimate.value == pytest.approx(off_diagonal.mean(), rel=1e-14)
    assert estimate.value == pytest.approx(matrix.sum() / (8 * 7), rel=1e-14)


def test_jackknife_equals_brute_force_leave_one_out():
    rng = np.random.default_rng(7)
    n = 10
    matrix = pairwise_distances(positive_vectors(rng, n, 12))
    leave_out = []
    for k in range(n):
        keep = [i for i in range(n) if i != k]
        sub = matrix[np.ix_(keep, keep)]
        leave_out.append(sub[np.triu_indices(n - 1, 1)].mean())
    leave_out = np.array(leave_out)
    np.testing.assert_allclose(jackknife_leave_one_out(matrix), leave_out, rtol=1e-12)
    se = math.sqrt((n - 1) / n * np.sum((leave_out - leave_out.mean()) ** 2))
    estimate = diversity_coefficient(matrix, confidence=0.9)
    assert estimate.se == pytest.approx(se, rel=1e-10)
    half = stats.t.ppf(0.95, n - 1) * se
    assert (estimate.ci_low, estimate.ci_high) == pytest.approx((estimate.value - half, estimate.value + half))
    pairs = matrix[np.triu_indices(n, 1)]
    assert estimate.naive_se == pytest.approx(pairs.std(ddof=1) / math.sqrt(len(pairs)), rel=1e-12)
    assert estimate.n == n and estimate.confidence == 0.9 and "jackknife" in estimate.method


def test_intervals_never_leave_zero_to_one():
    """A small diversity with a large jackknife SE: the t-interval reaches below 0 and is cut there;
    a bias-corrected matrix with a negative mean keeps its negative point estimate."""
    matrix = np.array([[0.0, 0.001, 0.2, 0.001], [0.001, 0.0, 0.001, 0.0], [0.2, 0.001, 0.0, 0.001],
                       [0.001, 0.0, 0.001, 0.0]])
    estimate = diversity_coefficient(matrix)
    pairs = matrix[np.triu_indices(4, 1)]
    leave_out = np.array([np.delete(np.delete(matrix, k, 0), k, 1)[np.triu_indices(3, 1)].mean() for k in range(4)])
    se = math.sqrt(3 / 4 * np.sum((leave_out - leave_out.mean()) ** 2))
    half = stats.t.ppf(0.975, 3) * se
    assert estimate.value == pytest.approx(pairs.mean(), rel=1e-14) and estimate.value - half < 0
    assert estimate.ci_low == 0.0 and estimate.ci_high == pytest.approx(estimate.value + half, rel=1e-12)
    assert estimate.ci_clipped and estimate.naive_ci_low >= 0.0
    negative = diversity_coefficient(matrix - 0.05)     # as corrected distances below the noise can be
    assert negative.value == pytest.approx(pairs.mean() - 0.05, rel=1e-12) and negative.value < 0
    assert negative.ci_low == 0.0 and negative.ci_high >= 0.0 and negative.ci_clipped
    assert not diversity_coefficient(pairwise_distances(positive_vectors(np.random.default_rng(3), 9, 8))).ci_clipped


def test_two_embeddings_give_a_value_but_no_interval():
    estimate = diversity_coefficient(np.array([[0.0, 0.3], [0.3, 0.0]]))
    assert estimate.value == pytest.approx(0.3)
    for field in ("se", "ci_low", "ci_high", "naive_se", "naive_ci_low", "naive_ci_high"):
        assert math.isnan(getattr(estimate, field)), field
    assert set(estimate.to_dict()) >= {"value", "se", "ci_low", "ci_high", "n", "method"}


@pytest.mark.parametrize("matrix, message", [
    (np.zeros((1, 1)), "at least 2"),
    (np.zeros((2, 3)), "square"),
    (np.array([[0.0, 0.1], [0.2, 0.0]]), "symmetric"),
    (np.array([[0.0, np.nan], [np.nan, 0.0]]), "NaN"),
])
def test_diversity_rejects_bad_matrices(matrix, message):
    with pytest.raises(ValueError, match=message):
        diversity_coefficient(matrix)


def test_jackknife_interval_covers_the_truth():
    """n = 50 batch embeddings exp(common log-profile + Gaussian noise), 300 repetitions.

    The true diversity (population mean distance between two independent batches) comes from
    200,000 independent pairs. The jackknife 95% interval must cover it in 92–98% of repetitions
    and its SE must match the Monte-Carlo SD of the estimator within 20%; the naive interval
    (pairs taken as i.i.d.) is far too narrow.
    """
    rng = np.random.default_rng(2024)
    n, dimension, repetitions = 50, 16, 300
    profile = rng.normal(0.0, 1.0, dimension)

    def draw(count: int) -> np.ndarray:
        return np.exp(profile + 0.5 * rng.standard_normal((count, dimension)))   # (count, D)

    truth = paired_distances(draw(200_000), draw(200_000)).mean()
    estimates = [diversity_coefficient(pairwise_distances(draw(n))) for _ in range(repetitions)]
    values = np.array([e.value for e in estimates])
    coverage = np.mean([e.ci_low <= truth <= e.ci_high for e in estimates])
    naive_coverage = np.mean([e.naive_ci_low <= truth <= e.naive_ci_high for e in estimates])
    mean_se, mean_naive_se = np.mean([e.se for e in estimates]), np.mean([e.naive_se for e in estimates])
    sd = values.std(ddof=1)
    print(f"\ntruth {truth:.5f}; estimator mean {values.mean():.5f}, Monte-Carlo SD {sd:.5f}; "
          f"jackknife SE {mean_se:.5f} (ratio {mean_se / sd:.3f}), coverage {coverage:.3f}; "
          f"naive SE {mean_naive_se:.5f}, coverage {naive_coverage:.3f}")
    assert 0.92 <= coverage <= 0.98
    assert abs(mean_se / sd - 1) < 0.2
    assert naive_coverage < 0.8
    assert mean_naive_se < mean_se


# --- cross-diversity, noise floor --------------------------------------------------------------

def test_cross_diversity_is_the_full_matrix_mean():
    rng = np.random.default_rng(8)
    first, second = positive_vectors(rng, 6, 10), positive_vectors(rng, 4, 10)
    matrix = cross_distances(first, second)
    estimate = cross_diversity(matrix)
    assert estimate.value == pytest.approx(matrix.mean(), rel=1e-14)
    se = math.sqrt(matrix.mean(1).var(ddof=1) / 6 + matrix.mean(0).var(ddof=1) / 4)
    assert estimate.se == pytest.approx(se, rel=1e-12)
    half = stats.t.ppf(0.975, 3) * se
    assert estimate.ci_high == pytest.approx(estimate.value + half)
    assert estimate.naive_se == pytest.approx(matrix.std(ddof=1) / math.sqrt(24), rel=1e-12)
    single = cross_diversity(matrix[:1])
    assert single.value == pytest.approx(matrix[0].mean()) and math.isnan(single.se)


def test_noise_floor():
    rng = np.random.default_rng(9)
    batches = positive_vectors(rng, 5, 12)
    same = noise_floor(batches, batches.copy())
    assert same["mean"] == pytest.approx(0.0, abs=1e-12) and same["n"] == 5 and len(same["per_item"]) == 5
    noisy = batches * np.exp(0.1 * rng.standard_normal(batches.shape))
    floor = noise_floor(batches, noisy)
    assert floor["per_item"] == pytest.approx([reference_task2vec(a, b) for a, b in zip(batches, noisy)], rel=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        noise_floor(batches, batches[:4])


def test_data_diversity_is_the_coefficient_of_the_batch_distances():
    rng = np.random.default_rng(10)
    batches = positive_vectors(rng, 7, 12)
    assert data_diversity(batches, "cosine") == diversity_coefficient(pairwise_distances(batches, "cosine"))

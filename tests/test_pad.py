"""Proxy A-distance: ~0 for one distribution split in two, ~2 for separable domains, monotone in between."""

import numpy as np
import pytest

from minidann.proxy_a_distance import proxy_a_distance, proxy_a_distance_details


def _features(seed, n=600, d=40):
    return np.random.default_rng(seed).standard_normal((n, d))


def test_a_feature_set_against_itself_is_near_zero():
    # One distribution, shuffled and split in two halves: no linear classifier can beat chance by much.
    X = _features(0)
    perm = np.random.default_rng(1).permutation(len(X))
    r = proxy_a_distance_details(X[perm[:300]], X[perm[300:]])
    assert r.test_error > 0.4
    assert r.distance < 0.3
    # identical rows labelled both 0 and 1: also indistinguishable
    assert proxy_a_distance(X, X) < 0.3


def test_well_separated_sets_are_near_two():
    X = _features(0)
    Y = _features(1) + 4.0  # every coordinate shifted by 4 standard deviations
    r = proxy_a_distance_details(X, Y)
    assert r.test_error == 0.0
    assert r.distance == pytest.approx(2.0)


def test_separable_small_sets_are_near_two():
    # 60 + 60 rows in 5-D, shifted by 3: small sets, where the strongest regularisation predicts one class only
    values = []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        values.append(proxy_a_distance(rng.standard_normal((60, 5)), rng.standard_normal((60, 5)) + 3, seed=seed))
    assert min(values) > 1.9, sorted(values)[:5]


def test_grows_with_the_shift_between_domains():
    X, Y = _features(0), _features(1)
    values = [proxy_a_distance(X, Y + shift) for shift in (0.0, 0.15, 0.4, 1.0)]
    assert values == sorted(values), values
    assert values[0] < 0.3 < values[2] < values[3]


def test_clips_negative_values_and_reports_the_raw_one():
    # Find a seed where chance error lands above 0.5: the raw value is negative, the returned one 0.
    X = _features(0, n=200)
    results = [proxy_a_distance_details(X[:100], X[100:], seed=s) for s in range(20)]
    negative = [r for r in results if r.raw_distance < 0]
    assert negative, "expected at least one split with error above 0.5"
    for r in negative:
        assert r.distance == 0.0
        assert r.raw_distance == pytest.approx(2 * (1 - 2 * r.test_error))
    assert all(0.0 <= r.distance <= 2.0 for r in results)


def test_same_seed_same_value_and_balanced_split():
    X, Y = _features(0, n=500), _features(1, n=300) + 0.3
    a = proxy_a_distance_details(X, Y, seed=3)
    assert a == proxy_a_distance_details(X, Y, seed=3)
    # the larger domain is subsampled to the smaller: 2 x 300 rows, half to train, half to test
    assert (a.n_train, a.n_test) == (300, 300)
    assert a.C in a.errors and a.alpha == a.C


def test_accepts_float32_and_more_features_than_rows():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 500)).astype(np.float32)
    Y = X + np.float32(0.0)
    Y[:, :10] += 3.0  # ten separating coordinates among 500
    assert proxy_a_distance(X, Y) > 1.8


@pytest.mark.parametrize("xs, xt", [
    (np.zeros((20, 3)), np.zeros((20, 4))),  # different D
    (np.zeros(20), np.zeros((20, 1))),  # not 2-D
    (np.zeros((5, 3)), np.zeros((20, 3))),  # too few rows
    (np.full((20, 3), np.nan), np.zeros((20, 3))),  # not finite
])
def test_rejects_bad_inputs(xs, xt):
    with pytest.raises(ValueError, match="proxy_a_distance"):
        proxy_a_distance(xs, xt)


def test_mnist_sized_features():
    # (how long this takes is the benchmark's business, not a test's: about 2 s on two cores)
    rng = np.random.default_rng(0)
    Xs = np.maximum(rng.standard_normal((2000, 2352)), 0).astype(np.float32)  # ReLU-like, 7 x 7 x 48 features
    Xt = np.maximum(rng.standard_normal((2000, 2352)) + 0.05, 0).astype(np.float32)
    d = proxy_a_distance(Xs, Xt)
    assert 0.5 < d < 1.8


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_leaves_the_callers_features_untouched(dtype):
    X, Y = _features(0, n=200).astype(dtype), (_features(1, n=200) + 0.5).astype(dtype)
    X0, Y0 = X.copy(), Y.copy()
    proxy_a_distance(X, Y)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(Y, Y0)


def test_refuses_no_features_and_no_value_of_c():
    with pytest.raises(ValueError, match="at least one feature"):
        proxy_a_distance(np.zeros((10, 0)), np.zeros((10, 0)))
    with pytest.raises(ValueError, match="at least one value of C > 0"):
        proxy_a_distance(_features(0, 20, 3), _features(1, 20, 3), Cs=())
    with pytest.raises(ValueError, match="at least one value of C > 0"):
        proxy_a_distance(_features(0, 20, 3), _features(1, 20, 3), Cs=(0.1, 0.0))


def test_keeps_the_lowest_held_out_error_over_the_grid():
    # The paper's recipe: one SVM per C, each measured on the held-out half, the lowest error wins.
    X, Y = _features(0, n=300, d=20), _features(1, n=300, d=20) + 0.25
    r = proxy_a_distance_details(X, Y, Cs=(1e-5, 1e-3, 1e-1))
    assert set(r.errors) == {1e-5, 1e-3, 1e-1}
    assert r.test_error == min(r.errors.values()) and r.errors[r.C] == r.test_error
    assert len(set(r.errors.values())) > 1  # the grid matters here: the strongest C = 1e-5 underfits
    assert r.raw_distance == pytest.approx(2 * (1 - 2 * r.test_error))
    # one C gives that C's error
    one = proxy_a_distance_details(X, Y, Cs=(1e-5,))
    assert one.test_error == r.errors[1e-5]


@pytest.mark.parametrize("delta", [0.5, 1.0, 2.0, 3.0])
def test_two_gaussian_clouds_give_the_bayes_distance(delta):
    # Two unit Gaussians whose means lie delta apart: the best linear classifier errs with probability
    # Phi(-delta / 2), so d_A should come out near 2 (1 - 2 Phi(-delta / 2)) (0.39, 0.77, 1.37, 1.73).
    from math import erf, sqrt

    rng = np.random.default_rng(int(delta * 10))
    X = rng.standard_normal((2000, 10))
    Y = rng.standard_normal((2000, 10))
    Y[:, 0] += delta
    bayes = 0.5 * (1 + erf(-delta / 2 / sqrt(2)))
    assert proxy_a_distance(X, Y) == pytest.approx(2 * (1 - 2 * bayes), abs=0.1)

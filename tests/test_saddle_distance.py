"""The optimal-transport distance and the pruning subset."""

import itertools

import numpy as np
import pytest

from mlmd.saddle.distance import log_ratio_distance, ot_distance, pruned_subset


def _brute_force(a, b, numbers):
    worst = 0.0
    for z in np.unique(numbers):
        idx = np.flatnonzero(numbers == z)
        best = min(sum(np.linalg.norm(a[i] - b[j]) for i, j in zip(idx, perm))
                   for perm in itertools.permutations(idx))
        worst = max(worst, best)
    return worst


@pytest.mark.parametrize("seed", range(5))
def test_ot_distance_matches_brute_force_and_is_permutation_invariant(seed):
    rng = np.random.default_rng(seed)
    numbers = np.array([1, 1, 1, 8, 8, 6])
    a = rng.normal(size=(6, 3))
    b = a + 0.7 * rng.normal(size=(6, 3))
    d = ot_distance(a, b, numbers)
    assert d == pytest.approx(_brute_force(a, b, numbers), rel=1e-12)
    # permuting atoms of the same element in either configuration changes nothing
    perm = np.array([2, 0, 1, 4, 3, 5])
    assert ot_distance(a[perm], b, numbers) == pytest.approx(d, rel=1e-12)
    assert ot_distance(a, b[perm], numbers) == pytest.approx(d, rel=1e-12)
    assert ot_distance(a, a[perm], numbers) == pytest.approx(0.0, abs=1e-12)
    # symmetric, and the max over types: never below any single type's matched displacement
    assert ot_distance(b, a, numbers) == pytest.approx(d, rel=1e-12)
    assert d >= np.linalg.norm(a[5] - b[5]) - 1e-12


def test_log_ratio_distance():
    assert log_ratio_distance(np.array([1 / 2.0, 1 / 3.0]), np.array([1 / 2.2, 1 / 3.0])) == pytest.approx(
        np.log(1.1))


def test_pruned_subset_keeps_newest_and_farthest_points():
    numbers = np.array([13])
    # points on a line at x = 0, 0.1, 0.2, 5.0, 0.3, 0.4 (oldest to newest); the outlier at 5 is the farthest
    xs = [0.0, 0.1, 0.2, 5.0, 0.3, 0.4]
    points = np.array([[x, 0.0, 0.0] for x in xs])
    subset = pruned_subset(points, numbers, size=4, newest=2)
    assert len(subset) == 4
    assert {4, 5} <= set(subset.tolist())  # the two newest
    assert 3 in subset  # farthest from the newest
    assert 0 in subset  # then the farthest from {0.3, 0.4, 5.0}
    np.testing.assert_array_equal(pruned_subset(points, numbers, size=10, newest=2), np.arange(6))


def test_pruned_subset_is_permutation_invariant():
    rng = np.random.default_rng(3)
    numbers = np.array([1, 1, 8])
    base = rng.normal(size=(8, 3, 3))
    swapped = base[:, [1, 0, 2]]  # same configurations, H atoms listed the other way round
    a = pruned_subset(base.reshape(8, -1), numbers, size=5, newest=2)
    b = pruned_subset(swapped.reshape(8, -1), numbers, size=5, newest=2)
    np.testing.assert_array_equal(a, b)

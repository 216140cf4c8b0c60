"""Distances between configurations: the permutation-invariant optimal-transport distance and the
interatomic-distance-ratio trust criterion, plus farthest-point sampling for pruning.

Optimal-transport distance (Å). For each element type t among the moving
atoms, atoms of configuration a are assigned one-to-one to atoms of
configuration b of the same element by the assignment that minimises the
summed Euclidean displacement (``scipy.optimize.linear_sum_assignment``, the
earth mover's distance with unit masses):

    d_t(a, b) = min_pi sum_{i in t} |r_i(a) - r_pi(i)(b)|,     d(a, b) = max_t d_t(a, b)

We take the **maximum over types**, not the sum: a single light atom that
moves far (an H hop) is not drowned out by many heavy atoms that move a little,
and d is an upper bound on how far any one element's atoms moved in total.
The distance is invariant to permuting atoms of the same element and is a
metric on configurations modulo such permutations.

Distance ratio (dimensionless), the trust criterion of Koistinen et al.:

    d_ratio(a, b) = max_pairs |log(r_ij(a) / r_ij(b))|
"""

from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment


def ot_distance(positions_a: np.ndarray, positions_b: np.ndarray, numbers: Sequence[int]) -> float:
    """Permutation-invariant distance (Å) between two [n, 3] position arrays of the same atoms."""
    positions_a = np.asarray(positions_a, dtype=float).reshape(-1, 3)
    positions_b = np.asarray(positions_b, dtype=float).reshape(-1, 3)
    numbers = np.asarray(numbers)
    worst = 0.0
    for z in np.unique(numbers):
        a = positions_a[numbers == z]
        b = positions_b[numbers == z]
        cost = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
        rows, cols = linear_sum_assignment(cost)
        worst = max(worst, float(cost[rows, cols].sum()))
    return worst


def ot_distances_to(x: np.ndarray, points: np.ndarray, numbers: Sequence[int]) -> np.ndarray:
    """OT distances (Å) from one flattened configuration ``x`` to each row of ``points``."""
    return np.array([ot_distance(x, p, numbers) for p in np.atleast_2d(points)])


def log_ratio_distance(inverse_distances_a: np.ndarray, inverse_distances_b: np.ndarray) -> float:
    """max_pairs |log(r(a) / r(b))| from the inverse pair distances (1/Å) of two configurations."""
    return float(np.abs(np.log(inverse_distances_a) - np.log(inverse_distances_b)).max())


def pruned_subset(points: np.ndarray, numbers: Sequence[int], size: int, newest: int) -> np.ndarray:
    """Indices of a fixed-size subset for fitting hyperparameters.

    The ``newest`` most recent rows of ``points`` (ordered oldest to newest)
    are always kept; the rest of the subset is filled by farthest-point
    sampling under :func:`ot_distance`: repeatedly add the point whose
    distance to the chosen set is largest (ties go to the newer point).
    Returns sorted indices; all indices when there are no more than ``size``.
    """
    n = len(points)
    if n <= size:
        return np.arange(n)
    newest = max(1, min(newest, size))
    chosen = list(range(n - newest, n))
    nearest = np.full(n, np.inf)
    for c in chosen:
        nearest = np.minimum(nearest, ot_distances_to(points[c], points, numbers))
    while len(chosen) < size:
        candidates = np.setdiff1d(np.arange(n), chosen)
        # the newest of the farthest candidates: argmax over the reversed order
        order = candidates[::-1]
        pick = int(order[np.argmax(nearest[order])])
        chosen.append(pick)
        nearest = np.minimum(nearest, ot_distances_to(points[pick], points, numbers))
    return np.sort(np.array(chosen))

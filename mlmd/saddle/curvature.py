"""The lowest curvatures of the true surface at a point, from finite-difference Hessian-vector products.

A Davidson iteration on the true Hessian ``H`` (eV/Å²) of the free
coordinates, which it never forms: each product costs one true gradient call,
``H v ≈ P (∇E(x + h v) - ∇E(x)) / h`` (forward difference, ``h`` in Å, ``v``
a unit vector), with ``P`` the projector that removes rigid translations and
rotations when the potential is invariant under them (:func:`rigid_basis`).
The subspace starts from the search's final mode and a seeded random vector
(so that a negative curvature of another symmetry than the mode is not
missed) and grows by the residual ``r = H y - θ y`` of whichever of the two
lowest Ritz pairs ``(θ, y)`` has the larger one, until both residuals are
below ``residual_tolerance`` (eV/Å²), the subspace spans every free
direction (then the Ritz values are the Hessian's eigenvalues) or the call
budget is spent. Ritz values are upper bounds on the Hessian's lowest
eigenvalues (Cauchy interlacing), so two negative Ritz values prove at least
two negative curvatures.
"""

from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np

#: directions shorter than this after projection and orthogonalisation add nothing to the subspace
INDEPENDENT = 1e-6


def rigid_basis(positions: np.ndarray, rotations: bool) -> np.ndarray:
    """Orthonormal rows [k, 3n] spanning rigid translations (and rotations about the centroid) of ``positions``."""
    n = len(positions)
    vectors = []
    for axis in range(3):
        t = np.zeros((n, 3))
        t[:, axis] = 1.0
        vectors.append(t.ravel())
    if rotations:
        centred = positions - positions.mean(axis=0)
        for axis in np.eye(3):
            vectors.append(np.cross(axis, centred).ravel())
    basis: List[np.ndarray] = []
    for v in vectors:
        for b in basis:
            v = v - (v @ b) * b
        norm = np.linalg.norm(v)
        if norm > 1e-6 * np.sqrt(n):  # a linear molecule has no rotation about its axis
            basis.append(v / norm)
    return np.array(basis).reshape(len(basis), 3 * n)


@dataclass
class Curvatures:
    """Lowest Ritz values (eV/Å²) of the true Hessian, their residual norms and what they cost.

    ``values``/``residuals``: the two lowest (one when the space has one
    direction); ``vector``: the unit Ritz vector of the lowest; ``calls``:
    true gradient evaluations spent; ``complete``: the subspace spans every
    free direction (the values are the Hessian's exact lowest eigenvalues,
    up to the finite-difference error); ``dimension``: free directions after
    removing rigid motions.
    """

    values: np.ndarray
    residuals: np.ndarray
    vector: np.ndarray
    calls: int
    complete: bool
    dimension: int


def lowest_curvatures(gradient: Callable[[np.ndarray], np.ndarray], x: np.ndarray, g0: np.ndarray,
                      mode: np.ndarray, rigid: Optional[np.ndarray] = None, max_calls: int = 30,
                      step_A: float = 0.005, residual_tolerance: float = 0.05, seed: int = 0,
                      failures: tuple = ()) -> Curvatures:
    """Davidson estimate of the two lowest curvatures at ``x`` (``g0 = ∇E(x)``), starting from ``mode``.

    ``gradient(y)`` is the true gradient (eV/Å) at ``y``; ``rigid`` the rows
    of :func:`rigid_basis` to project out (None: none). When ``gradient``
    raises one of ``failures`` at ``x + h v``, the product is taken from the
    other side (a backward difference at ``x - h v``).
    """
    n = len(x)
    rigid = np.zeros((0, n)) if rigid is None else np.asarray(rigid)
    dimension = n - len(rigid)

    def project(v):
        return v - rigid.T @ (rigid @ v)

    basis: List[np.ndarray] = []
    products: List[np.ndarray] = []

    def add(v) -> bool:
        v = project(np.asarray(v, dtype=float))
        for _ in range(2):  # twice is enough for orthogonality in floating point
            for b in basis:
                v = v - (v @ b) * b
        norm = np.linalg.norm(v)
        if norm < INDEPENDENT or len(basis) >= dimension:
            return False
        v = v / norm
        basis.append(v)
        try:
            products.append(project((gradient(x + step_A * v) - g0) / step_A))
        except failures:  # the other side: a backward difference
            products.append(project((g0 - gradient(x - step_A * v)) / step_A))
        return True

    add(mode)
    add(np.random.default_rng(seed).normal(size=n))
    while True:
        V, W = np.array(basis).T, np.array(products).T
        T = V.T @ W
        theta, Y = np.linalg.eigh(0.5 * (T + T.T))
        lowest = min(2, len(theta))
        residual_vectors = [W @ Y[:, i] - theta[i] * (V @ Y[:, i]) for i in range(lowest)]
        residuals = np.array([np.linalg.norm(r) for r in residual_vectors])
        if len(basis) >= min(dimension, max_calls) or residuals.max() < residual_tolerance:
            break
        order = np.argsort(-residuals)
        if not any(add(residual_vectors[i]) for i in order):
            break
    return Curvatures(values=theta[:lowest], residuals=residuals, vector=V @ Y[:, 0], calls=len(basis),
                      complete=len(basis) >= dimension, dimension=dimension)

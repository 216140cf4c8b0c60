"""Kernel derivative blocks against finite differences; GP reproduces a known gradient."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import fcc100, add_adsorbate

from mlmd.saddle.gp import GaussianProcess
from mlmd.saddle.kernel import DTYPE, Hyperparameters, covariance, make_features


def _molecule():
    return Atoms("CNHH", positions=[[0, 0, 0], [1.2, 0.1, 0], [-1.0, 0.3, 0.2], [0.5, 1.1, -0.4]])


def _slab():
    slab = fcc100("Al", size=(2, 2, 2), vacuum=6.0)
    add_adsorbate(slab, "Al", 2.0, "hollow")
    return slab


def _hyper(features):
    lengths = torch.linspace(0.15, 0.4, features.n_types, dtype=DTYPE)
    return Hyperparameters(torch.tensor(0.3, dtype=DTYPE), torch.tensor(1.7, dtype=DTYPE), lengths)


def _k(features, hyper, x1, x2):
    f1, J1 = features(torch.as_tensor(x1[None], dtype=DTYPE))
    f2, J2 = features(torch.as_tensor(x2[None], dtype=DTYPE))
    return covariance(f1, J1, f2, J2, hyper, features.pair_type).numpy()


@pytest.mark.parametrize("make, moving", [(_molecule, [0, 1, 2, 3]), (_slab, [8, 4, 5]), (_molecule, [0])])
def test_derivative_blocks_match_finite_differences(make, moving):
    atoms = make()
    features = make_features(atoms, np.array(moving))
    hyper = _hyper(features)
    rng = np.random.default_rng(0)
    x1 = atoms.positions[moving].ravel() + 0.1 * rng.normal(size=3 * len(moving))
    x2 = atoms.positions[moving].ravel() + 0.1 * rng.normal(size=3 * len(moving))
    D = len(x1)
    K = _k(features, hyper, x1, x2)
    h = 1e-5

    def energy_energy(a, b):
        return _k(features, hyper, a, b)[0, 0]

    eg = np.empty(D)
    ge = np.empty(D)
    gg = np.empty((D, D))
    for d in range(D):
        e = np.zeros(D)
        e[d] = h
        eg[d] = (energy_energy(x1, x2 + e) - energy_energy(x1, x2 - e)) / (2 * h)
        ge[d] = (energy_energy(x1 + e, x2) - energy_energy(x1 - e, x2)) / (2 * h)
        # d/dx1_d of cov(E(x1), G(x2)) = cov(G_d(x1), G(x2))
        gg[d] = (_k(features, hyper, x1 + e, x2)[0, 1:] - _k(features, hyper, x1 - e, x2)[0, 1:]) / (2 * h)
    np.testing.assert_allclose(K[0, 1:], eg, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(K[1:, 0], ge, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(K[1:, 1:], gg, rtol=1e-5, atol=1e-7)


def test_batched_covariance_is_symmetric_positive_definite():
    atoms = _molecule()
    features = make_features(atoms, np.arange(4))
    hyper = _hyper(features)
    rng = np.random.default_rng(1)
    X = atoms.positions.ravel() + 0.1 * rng.normal(size=(5, 12))
    f, J = features(torch.as_tensor(X, dtype=DTYPE))
    K = covariance(f, J, f, J, hyper, features.pair_type)
    assert K.shape == (5 * 13, 5 * 13)
    np.testing.assert_allclose(K.numpy(), K.numpy().T, atol=1e-12)
    # block of configuration pair (1, 3) agrees with the one-by-one assembly
    single = _k(features, hyper, X[1], X[3])
    assert np.isclose(K[1, 3].item(), single[0, 0])
    np.testing.assert_allclose(K[5 + 12 * 1: 5 + 12 * 2, 5 + 12 * 3: 5 + 12 * 4].numpy(), single[1:, 1:], atol=1e-12)
    assert torch.linalg.eigvalsh(K + 1e-10 * torch.eye(len(K), dtype=DTYPE)).min() > -1e-8


def test_gp_reproduces_known_gradient():
    """A pair potential sampled at a few points: the GP mean's gradient matches the true one nearby."""
    atoms = Atoms("H3", positions=[[0, 0, 0], [0.9, 0, 0], [1.9, 0.2, 0]])

    def energy_gradient(x):
        p = x.reshape(-1, 3)
        E, G = 0.0, np.zeros_like(p)
        for i in range(3):
            for j in range(i + 1, 3):
                v = p[j] - p[i]
                r = np.linalg.norm(v)
                E += (1 - np.exp(-1.5 * (r - 1.0))) ** 2
                dE = 2 * (1 - np.exp(-1.5 * (r - 1.0))) * 1.5 * np.exp(-1.5 * (r - 1.0))
                G[j] += dE * v / r
                G[i] -= dE * v / r
        return E, G.ravel()

    features = make_features(atoms, np.arange(3))
    gp = GaussianProcess(features)
    rng = np.random.default_rng(2)
    x0 = atoms.positions.ravel()
    for k in range(12):
        x = x0 + 0.08 * rng.normal(size=9)
        E, G = energy_gradient(x)
        gp.add(x, E, G)
    gp.fit()
    x_test = x0 + 0.03 * rng.normal(size=9)
    E_pred, G_pred = gp.predict(x_test)
    E_true, G_true = energy_gradient(x_test)
    assert abs(E_pred[0] - E_true) < 5e-3
    assert np.linalg.norm(G_pred[0] - G_true) < 0.05 * np.linalg.norm(G_true) + 1e-2
    # training gradients are reproduced almost exactly (small noise)
    E_train, G_train = gp.predict(gp.X[3])
    np.testing.assert_allclose(G_train[0], gp.G[3], atol=1e-3)


def test_covariance_cache_matches_direct_assembly():
    from mlmd.saddle.kernel import CovarianceCache

    atoms = _slab()
    atoms.numbers[-1] = 29
    features = make_features(atoms, np.array([8, 4, 5]))
    X = atoms.positions[[8, 4, 5]].ravel() + 0.1 * np.random.default_rng(0).normal(size=(4, 9))
    f, J = features(torch.as_tensor(X, dtype=DTYPE))
    hyper = _hyper(features)
    cache = CovarianceCache(f, J, f[:3], J[:3], features.pair_type, features.n_types)
    np.testing.assert_allclose(cache.matrix(hyper).numpy(),
                               covariance(f, J, f[:3], J[:3], hyper, features.pair_type).numpy(), atol=1e-12)

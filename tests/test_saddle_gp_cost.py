"""The GP's cost controls (issue 17): block Cholesky updates, the closed-form mean, the refit policy."""

import numpy as np
import pytest
import torch
from ase.build import fcc111

from mlmd.saddle import search
from mlmd.saddle.gp import GaussianProcess
from mlmd.saddle.kernel import make_features
from mlmd.saddle.surfaces import LEPS, MB_SADDLES, MullerBrown, ase_dimer_search, leps_atoms, muller_brown_atoms


def _morse(x):
    """Energy (eV) and gradient (eV/Å) of a Morse cluster (independent of the GP code)."""
    p = x.reshape(-1, 3)
    E, G = 0.0, np.zeros_like(p)
    for i in range(len(p)):
        for j in range(i + 1, len(p)):
            v = p[j] - p[i]
            r = np.linalg.norm(v)
            e = np.exp(-1.5 * (r - 2.5))
            E += (1 - e) ** 2
            dE = 2 * (1 - e) * 1.5 * e
            G[j] += dE * v / r
            G[i] -= dE * v / r
    return E, G.ravel()


def _gp(n_points, seed=0):
    atoms = fcc111("Cu", size=(2, 2, 2), vacuum=5.0)
    moving = np.array([4, 5, 6, 7])
    gp = GaussianProcess(make_features(atoms, moving))
    rng = np.random.default_rng(seed)
    x0 = atoms.positions[moving].ravel()
    for _ in range(n_points):
        x = x0 + 0.05 * rng.normal(size=x0.size)
        E, G = _morse(np.vstack([atoms.positions[:4], x.reshape(-1, 3)]).ravel())
        gp.add(x, E, G.reshape(-1, 3)[4:].ravel())
    return gp, x0, rng


def test_block_cholesky_update_equals_a_fresh_factorisation():
    gp, x0, rng = _gp(4)
    gp.fit()
    gp.track_errors = False  # no predictions between the additions: the three points arrive as one block
    for k in (1, 3):  # one point, then a block of three
        for _ in range(k):
            x = x0 + 0.05 * rng.normal(size=x0.size)
            gp.add(x, float(rng.normal()), rng.normal(size=x0.size))
        gp.refresh()
    assert gp.updates == 2 and gp.factorisations == 1
    n = len(gp)
    K = gp._block(0, n, 0, n) + torch.diag(gp._noise_pm(n))
    fresh = torch.linalg.cholesky(K)
    assert torch.allclose(gp._L, fresh, rtol=0, atol=1e-10 * float(fresh.abs().max()))
    np.testing.assert_allclose((gp._L @ gp._L.T).numpy(), K.numpy(), atol=1e-10 * float(K.abs().max()))


def test_closed_form_mean_equals_the_covariance_rows():
    gp, x0, rng = _gp(6)
    gp.fit()
    x = x0 + 0.04 * rng.normal(size=(3, x0.size))
    E, G = gp.predict(x)
    E_ref, G_ref = gp.predict_by_covariance(x)
    np.testing.assert_allclose(E, E_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(G, G_ref, rtol=0, atol=1e-9)
    # and the mean gradient is the derivative of the mean energy (central differences)
    h = 1e-5
    numeric = [(gp.predict(x[0] + h * e)[0][0] - gp.predict(x[0] - h * e)[0][0]) / (2 * h)
               for e in np.eye(x0.size)]
    np.testing.assert_allclose(G[0], numeric, atol=1e-6)


def test_refit_policy_follows_the_prediction_error():
    gp, x0, rng = _gp(5)
    gp.fit()
    assert not gp.needs_refit(every=5, error_factor=3.0)
    # points on the same surface, near the data: small errors, no refit before 5 new points
    for _ in range(3):
        x = x0 + 0.03 * rng.normal(size=x0.size)
        gp.add(x, gp.predict(x)[0][0] + 1e-4 * rng.normal(), gp.predict(x)[1][0])
        assert not gp.needs_refit(every=5, error_factor=3.0)
    # an observation 1 eV off the prediction is a jump
    x = x0 + 0.03 * rng.normal(size=x0.size)
    gp.add(x, gp.predict(x)[0][0] + 1.0, gp.predict(x)[1][0])
    assert gp.errors[-1] == pytest.approx(1.0, abs=1e-6)
    assert gp.needs_refit(every=5, error_factor=3.0)
    assert not gp.needs_refit(every=5, error_factor=0.0)  # error trigger off: 4 points < 5
    gp.add(x0 + 0.03 * rng.normal(size=x0.size), 0.0, np.zeros(x0.size))
    assert gp.needs_refit(every=5, error_factor=0.0)  # every 5 new points
    gp.fit(max_iterations=3)
    assert gp.points_since_fit == 0 and not gp.needs_refit(every=5, error_factor=3.0)


@pytest.mark.parametrize("method", ["gp-dimer", "ot-gp-dimer"])
def test_searches_with_the_cheap_policy_find_the_known_saddles(method):
    # defaults are the cheap policy (refit every 5 points or on an error jump, block updates)
    result = search(muller_brown_atoms(-0.7, 0.9), calculator=MullerBrown(), method=method,
                    mode=np.array([[1.0, -1.0, 0.0]]), fmax=0.01, device="cpu", verify=False)
    assert result.converged, result.message
    found = result.atoms.positions[0, :2]
    assert min(np.linalg.norm(found - np.array(known)) for known in MB_SADDLES) < 3e-3
    assert result.force_calls <= 15
    mode = np.array([[1.0, 0, 0], [-1.0, 0, 0], [1.0, 0, 0]])
    atoms = leps_atoms(1.05, 0.95)
    result = search(atoms, calculator=LEPS(), method=method, mode=mode, fmax=0.01, device="cpu", verify=False)
    converged, ase_calls, ase_energy, _ = ase_dimer_search(atoms, LEPS(), mode, fmax=0.01)
    assert result.converged and converged
    assert result.energy == pytest.approx(ase_energy, abs=1e-4)
    assert result.force_calls < ase_calls


def test_closed_form_likelihood_gradient_equals_autograd_through_cholesky():
    from mlmd.saddle.gp import NegativeLogLikelihood

    rng = np.random.default_rng(3)
    A = torch.as_tensor(rng.normal(size=(8, 8)))
    y = torch.as_tensor(rng.normal(size=8))
    theta = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)

    def K(t):
        return torch.exp(t[0]) * (A @ A.T) + torch.exp(t[1]) * torch.eye(8, dtype=torch.float64)

    value = NegativeLogLikelihood.apply(K(theta), y)
    (ours,) = torch.autograd.grad(value, theta)
    L = torch.linalg.cholesky(K(theta))
    reference = 0.5 * y @ torch.cholesky_solve(y.unsqueeze(1), L).squeeze(1) + torch.log(L.diagonal()).sum()
    (expected,) = torch.autograd.grad(reference, theta)
    assert float(value) == pytest.approx(float(reference), rel=1e-12)
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-10)


def test_cost_settings_are_validated_and_reach_the_command_line(capsys):
    from mlmd.cli import main
    from mlmd.saddle.settings import SaddleSettings, SettingsError

    for bad in ({"gp_refit_every": 0}, {"gp_refit_iterations": 0}, {"gp_refit_error_factor": -1.0}):
        with pytest.raises(SettingsError, match=next(iter(bad))):
            SaddleSettings(**bad).validate()
    # each option reaches the settings: a bad value is refused in one line, exit status 2, before any work
    for option, setting in (("--refit-every", "gp_refit_every"), ("--refit-iterations", "gp_refit_iterations"),
                            ("--refit-error-factor", "gp_refit_error_factor")):
        assert main(["saddle", "missing.xyz", "--calculator", "emt", option, "-1"]) == 2
        err = capsys.readouterr().err.strip()
        assert setting in err and len(err.splitlines()) == 1

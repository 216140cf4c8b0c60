"""P-RFO (registered as 'p-rfo') against the known Müller-Brown saddles and the LEPS saddle."""

import numpy as np
import pytest

from mlmd.saddle import METHODS, search
from mlmd.saddle.prfo import bofill_update
from mlmd.saddle.surfaces import LEPS, MB_MINIMA, MB_SADDLES, leps_atoms, muller_brown_atoms, numerical_hessian

LEPS_MODE = np.array([[1.0, 0, 0], [-1.0, 0, 0], [1.0, 0, 0]])


@pytest.mark.parametrize("start, mode, saddle", [((-0.7, 0.9), (1.0, -1.0), 0), ((0.5, 0.2), (1.0, -1.0), 1),
                                                 ((0.55, 0.1), (-1.0, 0.5), 1)])
def test_muller_brown(start, mode, saddle):
    assert "p-rfo" in METHODS
    result = search(muller_brown_atoms(*start), method="p-rfo", mode=np.array([[*mode, 0.0]]))
    assert result.status == "verified", result.message
    np.testing.assert_allclose(result.atoms.positions[0, :2], MB_SADDLES[saddle], atol=2e-3)
    assert result.force_calls <= 15


def test_muller_brown_from_next_to_the_minimum():
    start = np.array(MB_MINIMA[1]) + [-0.07, 0.07]
    assert np.linalg.norm(start - MB_MINIMA[1]) < 0.1
    result = search(muller_brown_atoms(*start), method="p-rfo", mode=np.array([[-1.0, 0.5, 0.0]]))
    assert result.status == "verified"
    np.testing.assert_allclose(result.atoms.positions[0, :2], MB_SADDLES[1], atol=2e-3)


def test_leps_from_near_the_reactant():
    atoms = leps_atoms(0.85, 1.6)  # H2 (r0 = 0.742 Å) with the third H 1.6 Å away
    atoms.rattle(0.05, seed=0)
    result = search(atoms, method="p-rfo", mode=LEPS_MODE)
    assert result.status == "verified", result.message
    d = result.atoms.get_all_distances()
    np.testing.assert_allclose([d[0, 1], d[1, 2]], [1.149, 0.862], atol=3e-3)  # the test_saddle_search reference
    eigenvalues = np.linalg.eigvalsh(numerical_hessian(result.atoms, LEPS()))
    assert eigenvalues[0] < -1 and (eigenvalues[1:] > -0.05).all()
    assert result.force_calls <= 20


def test_bofill_update_satisfies_the_secant_condition():
    rng = np.random.default_rng(0)
    H = np.diag([-1.0, 2.0, 3.0])
    s, y = rng.normal(size=3), rng.normal(size=3)
    updated = bofill_update(H, s, y)
    np.testing.assert_allclose(updated @ s, y, atol=1e-12)
    np.testing.assert_allclose(updated, updated.T, atol=1e-12)

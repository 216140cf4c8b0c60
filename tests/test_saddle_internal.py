"""Redundant internal coordinates (mlmd.saddle.internal) and P-RFO in them (HCN -> HNC with GFN2-xTB)."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import fcc111, molecule
from ase.calculators.morse import MorsePotential

from mlmd.errors import MLMDError
from mlmd.saddle import SettingsError, search
from mlmd.saddle.internal import CartesianCoordinates, InternalCoordinates
from mlmd.saddle.prfo import make_coordinates
from mlmd.saddle.surfaces import muller_brown_atoms, numerical_hessian


def rattled(name, amplitude=0.02, seed=1):
    atoms = molecule(name)
    atoms.rattle(amplitude, seed=seed)
    return atoms


def coordinates(atoms):
    return InternalCoordinates.from_atoms(atoms.numbers, atoms.positions)


def test_values_match_ase_geometry():
    atoms = rattled("CH3CH2OH")
    ic = coordinates(atoms)
    pr = ic.primitives
    q = ic.values(atoms.positions.ravel())
    nb, na = len(pr.bonds), len(pr.angles)
    assert nb == 8 and na == 13 and len(pr.dihedrals) == 12 and len(pr.linear) == 0
    np.testing.assert_allclose(q[:nb], [atoms.get_distance(i, j) for i, j in pr.bonds], atol=1e-12)
    np.testing.assert_allclose(q[nb:nb + na], np.radians([atoms.get_angle(*t) for t in pr.angles]), atol=1e-10)
    reference = np.radians([atoms.get_dihedral(*t) for t in pr.dihedrals])
    np.testing.assert_allclose(np.cos(q[-12:]), np.cos(reference), atol=1e-10)
    np.testing.assert_allclose(np.sin(q[-12:]), np.sin(reference), atol=1e-10)


@pytest.mark.parametrize("name, linear", [("CH3CH2OH", 0), ("H2O2", 0), ("HCN", 2), ("CO2", 2)])
def test_wilson_matrix_matches_finite_differences(name, linear):
    atoms = rattled(name, amplitude=0.002)
    ic = coordinates(atoms)
    assert len(ic.primitives.linear) == linear
    x = atoms.positions.ravel()
    h = 1e-6
    numerical = np.array([ic.difference(ic.values(x + h * e), ic.values(x - h * e)) / (2 * h)
                          for e in np.eye(len(x))]).T
    B = ic.wilson(x)
    np.testing.assert_allclose(B, numerical, atol=1e-7)
    # the primitives span every internal motion (3N-6, or 3N-5 for a straight molecule)
    assert np.linalg.matrix_rank(B, tol=1e-6) == 3 * len(atoms) - (5 if linear else 6)


def test_fragments_are_linked_into_one_graph():
    a, b = molecule("H2O"), molecule("H2O")
    b.positions += [0.0, 0.0, 3.2]
    pair = a + b
    ic = coordinates(pair)
    assert len(ic.primitives.bonds) == 5  # four O-H bonds and one inter-fragment link
    assert np.linalg.matrix_rank(ic.wilson(pair.positions.ravel()), tol=1e-6) == 3 * len(pair) - 6


def test_back_transformation_reproduces_a_requested_step():
    atoms = rattled("CH3CH2OH")
    ic = coordinates(atoms)
    x = atoms.positions.ravel()
    rng = np.random.default_rng(3)
    moved = x + 0.03 * rng.normal(size=len(x))
    target = ic.difference(ic.values(moved), ic.values(x))  # a consistent redundant step
    x_new, exact = ic.to_cartesian(x, target)
    assert exact
    np.testing.assert_allclose(ic.difference(ic.values(x_new), ic.values(x)), target, atol=1e-9)
    distances = Atoms(atoms.numbers, x_new.reshape(-1, 3)).get_all_distances()
    np.testing.assert_allclose(distances, Atoms(atoms.numbers, moved.reshape(-1, 3)).get_all_distances(), atol=1e-8)
    # first order alone would miss by far more
    first = x + ic.frame(x).Binv @ target
    assert np.abs(ic.difference(ic.values(first), ic.values(x)) - target).max() > 1e-4

    water = rattled("H2O")
    ic = coordinates(water)
    x = water.positions.ravel()
    x_new = ic.to_cartesian(x, np.array([0.0, 0.0, 0.1]))[0]  # open the angle by 0.1 rad, keep the bonds
    after = Atoms(water.numbers, x_new.reshape(-1, 3))
    np.testing.assert_allclose([after.get_distance(0, 1), after.get_distance(0, 2)],
                               [water.get_distance(0, 1), water.get_distance(0, 2)], atol=1e-10)
    assert after.get_angle(1, 0, 2) == pytest.approx(water.get_angle(1, 0, 2) + np.degrees(0.1), abs=1e-8)


def test_gradient_and_hessian_transforms_against_internal_finite_differences():
    water = rattled("H2O", amplitude=0.15, seed=4)  # away from the minimum: the K term matters
    calc = MorsePotential(epsilon=4.0, r0=1.0, rho0=5.0, rcut1=5.0, rcut2=6.0)
    ic = coordinates(water)
    x = water.positions.ravel()

    def energy_gradient(y):
        probe = Atoms(water.numbers, y.reshape(-1, 3), calculator=calc)
        return probe.get_potential_energy(), -probe.get_forces().ravel()

    energy, g_x = energy_gradient(x)
    g_q = ic.gradient(x, g_x)
    H_q = ic.hessian(x, numerical_hessian(water, calc), g_x)
    h = 1e-4
    numerical_g, numerical_H = [], []
    for e in np.eye(3):
        plus, minus = ic.to_cartesian(x, h * e)[0], ic.to_cartesian(x, -h * e)[0]
        (e_plus, g_plus), (e_minus, g_minus) = energy_gradient(plus), energy_gradient(minus)
        numerical_g.append((e_plus - e_minus) / (2 * h))
        numerical_H.append((ic.gradient(plus, g_plus) - ic.gradient(minus, g_minus)) / (2 * h))
    np.testing.assert_allclose(g_q, numerical_g, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(H_q, np.array(numerical_H).T, rtol=1e-3, atol=2e-3)
    without_k = ic.frame(x).Binv.T @ numerical_hessian(water, calc) @ ic.frame(x).Binv
    assert np.abs(without_k - np.array(numerical_H).T).max() > 0.05  # the K term is not negligible here
    np.testing.assert_allclose(ic.cartesian_hessian(x, H_q, g_x), numerical_hessian(water, calc), atol=2e-3)


def test_coordinates_follow_the_system():
    ethanol = molecule("CH3CH2OH")
    x = ethanol.positions.ravel()
    everyone = np.arange(len(ethanol))
    assert isinstance(make_coordinates("auto", ethanol, everyone, x), InternalCoordinates)
    assert isinstance(make_coordinates("cartesian", ethanol, everyone, x), CartesianCoordinates)
    assert isinstance(make_coordinates("auto", ethanol, everyone[1:], x[3:]), CartesianCoordinates)
    mb = muller_brown_atoms()
    assert isinstance(make_coordinates("auto", mb, np.arange(1), mb.positions.ravel()), CartesianCoordinates)
    slab = fcc111("Pt", (2, 2, 2), vacuum=5.0)
    with pytest.raises(MLMDError, match="--coordinates cartesian"):
        make_coordinates("internal", slab, np.arange(len(slab)), slab.positions.ravel())
    with pytest.raises(SettingsError, match="coordinates"):
        search(ethanol, calculator=MorsePotential(), method="p-rfo", coordinates="polar")


def hcn_start(angle_deg=15.0):
    """HCN with H rotated ``angle_deg`` about C from linear; the mode moves H tangentially."""
    a = np.radians(angle_deg)
    atoms = Atoms("CNH", positions=[[0, 0, 0], [1.16, 0, 0], [-1.07 * np.cos(a), 1.07 * np.sin(a), 0]])
    mode = np.zeros((3, 3))
    mode[2] = [np.sin(a), np.cos(a), 0.0]
    return atoms, mode


def test_hcn_isomerisation_saddle_in_internal_coordinates():
    pytest.importorskip("tblite")
    from ase.optimize import BFGS

    from mlmd.calculators import get_calculator

    atoms, mode = hcn_start(15.0)
    internal = search(atoms, calculator="gfn2", method="p-rfo", mode=mode, coordinates="internal")
    assert internal.status == "verified", internal.message
    saddle = internal.atoms
    d = saddle.get_all_distances()
    assert 1.10 < d[0, 2] < 1.25 and 1.20 < d[1, 2] < 1.45 and 1.15 < d[0, 1] < 1.25  # H bridges C and N
    calc = get_calculator("gfn2")
    hessian = numerical_hessian(saddle, calc, step_A=1e-3)
    from mlmd.saddle.curvature import rigid_basis

    rigid = rigid_basis(saddle.positions, True)
    inner = np.linalg.eigh(np.eye(9) - rigid.T @ rigid)[1][:, 6:]
    eigenvalues = np.linalg.eigvalsh(inner.T @ hessian @ inner)
    assert eigenvalues[0] < -1.0 and eigenvalues[1] > 0.1  # index one
    minimum = Atoms("CNH", positions=[[0, 0, 0], [1.16, 0, 0], [-1.07, 0, 0]], calculator=calc)
    BFGS(minimum, logfile=None).run(fmax=1e-3)
    assert internal.energy - minimum.get_potential_energy() == pytest.approx(3.18, abs=0.05)  # Sella's barrier
    assert internal.force_calls <= 20
    cartesian = search(atoms, calculator="gfn2", method="p-rfo", mode=mode, coordinates="cartesian", max_calls=60)
    assert cartesian.status != "verified" or cartesian.force_calls > internal.force_calls

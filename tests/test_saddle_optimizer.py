"""The GP-dimer as an ASE optimizer: same saddle as search(), ASE observers and trajectories work."""

import numpy as np
import pytest
from ase.io import read
from ase.optimize import BFGS

from mlmd.errors import MLMDError
from mlmd.saddle import GPDimerOptimizer, SaddleSettings, search
from mlmd.saddle.surfaces import LEPS, MB_SADDLES, MullerBrown, leps_atoms, muller_brown_atoms, numerical_hessian

MB_MODE = np.array([[1.0, -1.0, 0.0]])
LEPS_MODE = np.array([[1.0, 0, 0], [-1.0, 0, 0], [1.0, 0, 0]])


def _first_order(atoms, calculator):
    """Exactly one clearly negative eigenvalue of the central-difference Hessian (eV/Å²)."""
    eigenvalues = np.linalg.eigvalsh(numerical_hessian(atoms, calculator))
    return int((eigenvalues < -1e-2).sum()) == 1 and eigenvalues[0] < -0.1


@pytest.mark.parametrize("method", ["gp-dimer", "ot-gp-dimer"])
def test_optimizer_reaches_the_saddle_that_search_finds(method, tmp_path):
    atoms = muller_brown_atoms(-0.7, 0.9)
    settings = SaddleSettings(method=method, mode=MB_MODE)
    seen = []
    optimizer = GPDimerOptimizer(atoms, settings, logfile=tmp_path / "opt.log", trajectory=tmp_path / "opt.traj")
    optimizer.attach(lambda: seen.append((optimizer.nsteps, atoms.positions[0].copy())))
    assert optimizer.run(fmax=0.01, steps=30)
    assert optimizer.converged() and optimizer.curvature < 0
    reference = search(muller_brown_atoms(-0.7, 0.9), method=method, mode=MB_MODE, fmax=0.01)
    assert reference.converged
    # the same saddle, by the same iteration code
    np.testing.assert_allclose(atoms.positions, reference.atoms.positions, atol=1e-6)
    assert optimizer.force_calls == reference.force_calls
    # independent checks on a fresh calculator: a first-order saddle with forces below fmax
    assert np.linalg.norm(_forces(atoms), axis=1).max() < 0.01
    assert _first_order(atoms, MullerBrown())
    assert min(np.linalg.norm(atoms.positions[0, :2] - np.array(s)) for s in MB_SADDLES) < 3e-3
    # the observer ran after the initial evaluation and after every step, at the optimizer's positions
    assert [n for n, _ in seen] == list(range(optimizer.nsteps + 1))
    np.testing.assert_array_equal(seen[-1][1], atoms.positions[0])
    # one trajectory frame per observer call, carrying the true energy and forces of each midpoint
    frames = read(tmp_path / "opt.traj", index=":")
    assert len(frames) == optimizer.nsteps + 1
    np.testing.assert_allclose(frames[-1].positions, atoms.positions)
    fresh = frames[-1].copy()
    fresh.calc = MullerBrown()
    assert frames[-1].get_potential_energy() == pytest.approx(fresh.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(frames[-1].get_forces(), fresh.get_forces(), atol=1e-12)
    assert "outer" in (tmp_path / "opt.log").read_text()


def _forces(atoms):
    work = atoms.copy()
    work.calc = MullerBrown()
    return work.get_forces()


def test_irun_yields_until_the_saddle_on_leps():
    atoms = leps_atoms(1.05, 0.95)
    atoms.rattle(0.05, seed=0)
    reference = search(atoms.copy(), calculator=LEPS(), method="gp-dimer", mode=LEPS_MODE, fmax=0.01)
    atoms.calc = LEPS()
    optimizer = GPDimerOptimizer(atoms, SaddleSettings(mode=LEPS_MODE), logfile=None)
    flags = list(optimizer.irun(fmax=0.01, steps=50))
    assert flags[-1] and not any(flags[:-1])
    assert len(flags) == optimizer.nsteps + 1
    assert reference.converged
    np.testing.assert_allclose(atoms.positions, reference.atoms.positions, atol=1e-6)
    d = atoms.get_all_distances()
    np.testing.assert_allclose([d[0, 1], d[1, 2]], [1.149, 0.862], atol=3e-3)  # the known LEPS saddle
    assert optimizer.curvature < 0


def test_small_forces_at_a_minimum_are_not_a_saddle():
    atoms = muller_brown_atoms(-0.55, 1.44)
    BFGS(atoms, logfile=None).run(fmax=1e-4)
    optimizer = GPDimerOptimizer(atoms, SaddleSettings(mode=MB_MODE), logfile=None)
    assert not optimizer.run(fmax=0.01, steps=0)  # ASE's force test alone would call this converged


def test_optimizer_rejects_a_method_without_steps_and_spends_no_more_than_its_budget():
    with pytest.raises(MLMDError, match="one outer iteration per step"):
        GPDimerOptimizer(muller_brown_atoms(), SaddleSettings(method="dimer", mode=MB_MODE), logfile=None)
    atoms = muller_brown_atoms(-0.3, 0.6)
    optimizer = GPDimerOptimizer(atoms, SaddleSettings(mode=MB_MODE), max_calls=4, logfile=None)
    with pytest.raises(MLMDError, match="budget of 4"):
        optimizer.run(fmax=1e-6, steps=20)
    assert optimizer.force_calls <= 5


def test_the_dimer_does_not_turn_onto_rigid_motions_of_a_free_molecule():
    """At a free molecule's minimum every vibration has positive curvature and the six rigid motions zero, so an
    unconstrained dimer rotation settles on a rigid motion (the stall seen on ethanol); with the rigid rows
    removed it finds the softest vibration, the lowest eigenvalue of the projected finite-difference Hessian (a Cu5
    cluster with EMT)."""
    from ase import Atoms
    from ase.calculators.emt import EMT

    from mlmd.saddle.curvature import rigid_basis
    from mlmd.saddle.dimer import rotate

    atoms = Atoms("Cu5", positions=[[0, 0, 0], [2.5, 0, 0], [1.25, 2.17, 0], [1.25, 0.72, 2.04],
                                    [1.25, 0.72, -2.04]])  # a trigonal bipyramid
    atoms.calc = EMT()
    BFGS(atoms, logfile=None).run(fmax=1e-6)

    def surface(x):
        work = atoms.copy()
        work.calc = atoms.calc
        work.positions = np.reshape(x, (-1, 3))
        return work.get_potential_energy(), -work.get_forces().ravel()

    x = atoms.positions.ravel().copy()
    rigid = rigid_basis(atoms.positions, True)
    hessian = numerical_hessian(atoms, atoms.calc)
    inside = np.eye(len(x)) - rigid.T @ rigid
    vibrations = np.linalg.eigvalsh(inside @ hessian @ inside)
    softest = vibrations[np.abs(vibrations) > 1e-3].min()
    assert softest > 0.1
    mode = np.random.default_rng(0).normal(size=len(x))
    free_turn = rotate(surface, x, surface(x)[1], mode, 0.005, max_rotations=50, angle_tolerance_rad=1e-3)[1]
    kept_out = rotate(surface, x, surface(x)[1], mode, 0.005, max_rotations=50, angle_tolerance_rad=1e-3,
                      rigid=rigid)[1]
    assert abs(free_turn) < 0.2 * softest  # settled near a rigid motion
    assert kept_out == pytest.approx(softest, rel=0.05)

"""The shared run layer (mlmd.dynamics): a new engine is cheap, observers and irun, the append-only log,
the guards of mlmd md, and the replica set-up shared by mlmd md and mlmd forecast."""

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.lj import LennardJones
from ase.constraints import FixAtoms
from ase.optimize import FIRE

import mlmd.md as md
from mlmd.dynamics import Driver, Guards, RunOutputs, Snapshot, UnstableRunError, replicate, starting_velocities

SIGMA, EPSILON = 3.405, 0.0103  # argon


def lj_cluster():
    atoms = Atoms("Ar4", positions=[[0, 0, 0], [3.9, 0, 0], [0, 3.7, 0.3], [0.2, 0.1, 4.1]])
    atoms.calc = LennardJones(sigma=SIGMA, epsilon=EPSILON, rc=10.0)
    return atoms


# --- a third front-end: steepest descent through the shared driver (the engine is the 30 lines below) ---
class SteepestDescent:
    """x <- x + alpha F, one step per call; energies from any ASE calculator."""

    def __init__(self, atoms, alpha_A2_per_eV: float):
        self.atoms, self.alpha, self.step = atoms, alpha_A2_per_eV, 0

    def advance(self, n_steps, on_step):
        for _ in range(n_steps):
            self.atoms.positions = self.atoms.positions + self.alpha * self.atoms.get_forces()
            self.step += 1
            on_step(1)

    def snapshot(self):
        zero = np.zeros(1)
        return Snapshot(step=self.step, ekin_eV=zero, temperature_K=zero, positions_A=self.atoms.positions.copy(),
                        velocities_A_per_fs=np.zeros((len(self.atoms), 3)), cell_A=self.atoms.cell.array,
                        pbc=self.atoms.pbc, epot_eV=np.array([self.atoms.get_potential_energy()]))

    def save_point(self):
        return self.step, self.atoms.positions.copy()

    def restore(self, point):
        self.step, self.atoms.positions = point[0], point[1].copy()

    def payload(self, point):
        return {"step": point[0], "positions": point[1]}


def test_a_steepest_descent_engine_runs_through_the_shared_driver(tmp_path):
    atoms = lj_cluster()
    engine = SteepestDescent(atoms, alpha_A2_per_eV=2.0)
    outputs = RunOutputs(atoms, 1, ("step", "time_fs", "epot_eV"), "relaxation", log=tmp_path / "relax.csv",
                         restart_file=tmp_path / "relax.restart")
    driver = Driver(engine, outputs, Guards(min_distance_A=2.0), total_steps=400, stride=50, restart_every=100,
                    timestep_fs=1.0)
    seen = []
    driver.attach(lambda: seen.append(driver.snapshot.step), 100)
    result = driver.run()
    assert seen == [0, 100, 200, 300, 400]
    energies = np.loadtxt(tmp_path / "relax.csv", delimiter=",", skiprows=1)[:, 2]
    assert len(energies) == 9 and np.all(np.diff(energies) <= 1e-12) and energies[-1] < energies[0] - 0.02
    # the end point is the minimum ASE's FIRE finds from the same start (independent optimiser)
    reference = lj_cluster()
    FIRE(reference, logfile=None).run(fmax=1e-5, steps=5000)
    assert energies[-1] == pytest.approx(reference.get_potential_energy(), abs=1e-6)
    assert result.step == 400 and (tmp_path / "relax.restart").exists()


def test_the_guards_stop_the_new_engine_and_keep_the_last_good_state(tmp_path):
    atoms = Atoms("Ar2", positions=[[0, 0, 0], [3.2, 0, 0]])  # inside the repulsive wall
    atoms.calc = LennardJones(sigma=SIGMA, epsilon=EPSILON, rc=10.0)
    engine = SteepestDescent(atoms, alpha_A2_per_eV=-0.05)  # uphill: the two atoms are pushed together
    outputs = RunOutputs(atoms, 1, ("step", "time_fs", "epot_eV"), "relaxation", log=tmp_path / "up.csv",
                         state_file=tmp_path / "up.xyz")
    driver = Driver(engine, outputs, Guards(min_distance_A=2.9), total_steps=500, stride=1, restart_every=100,
                    timestep_fs=1.0, label="relaxation")
    with pytest.raises(UnstableRunError, match="closer than 2.9 Å") as caught:
        driver.run()
    last = caught.value.result.step
    rows = np.loadtxt(tmp_path / "up.csv", delimiter=",", skiprows=1, ndmin=2)
    assert rows[-1, 0] == last and engine.step == last  # the engine was put back on the last good state
    assert np.linalg.norm(np.diff(caught.value.result.positions[0], axis=0)) >= 2.9
    assert (tmp_path / "up.xyz").exists() and str(tmp_path / "up.xyz") in str(caught.value)


def test_irun_yields_every_checked_snapshot():
    engine = SteepestDescent(lj_cluster(), 1.0)
    outputs = RunOutputs(lj_cluster(), 1, ("step", "time_fs", "epot_eV"), "relaxation")
    driver = Driver(engine, outputs, Guards(), total_steps=30, stride=10, restart_every=1000, timestep_fs=1.0)
    assert [snapshot.step for snapshot in driver.irun()] == [0, 10, 20, 30]


def argon():
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    return atoms


def test_a_continued_run_truncates_rows_a_killed_run_appended(tmp_path):
    """A run killed after its last restart point leaves extra rows; continuing drops them."""
    settings = dict(calculator="lj", temperature_K=90.0, timestep_fs=4.0, stride=5, restart_every=10, seed=3)
    md.run(argon(), steps=30, log=tmp_path / "a.csv", **settings)
    md.run(argon(), steps=20, log=tmp_path / "b.csv", restart_file=tmp_path / "b.restart", **settings)
    with open(tmp_path / "b.csv", "a") as stream:  # what the killed continuation had written past step 20
        stream.write("25,100,-1,1,1\n")
    md.run(argon(), steps=30, log=tmp_path / "b.csv", restart=tmp_path / "b.restart", **settings)
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_md_temperature_guard_names_the_temperature(tmp_path):
    with pytest.raises(md.UnstableSimulationError, match="above the bound"):
        md.run(argon(), calculator="lj", temperature_K=90.0, timestep_fs=100.0, steps=200, stride=1,
               log=tmp_path / "hot.csv", max_energy_jump_eV_per_atom=None)
    assert (tmp_path / "hot.last_good.xyz").exists()


def test_replicas_start_from_the_structures_velocities_with_fixed_atoms():
    """The structure's own velocities go to every replica; fixed atoms start at rest (K > 1 used to crash)."""
    atoms = argon()
    atoms.set_velocities(np.random.default_rng(0).normal(size=(len(atoms), 3)) * 0.01)
    atoms.set_constraint(FixAtoms(indices=[0, 3]))
    velocities = starting_velocities(atoms, 300.0, [0, 1, 2]).reshape(3, len(atoms), 3)
    expected = atoms.get_velocities() * units.fs
    expected[[0, 3]] = 0.0
    for replica in velocities:
        np.testing.assert_array_equal(replica, expected)
    system = replicate(atoms, 3, seed=5)
    assert system.seeds.tolist() == [5, 6, 7] and int(system.fixed.sum()) == 6
    np.testing.assert_array_equal(system.positions.numpy()[len(atoms):2 * len(atoms)], atoms.positions)


def test_maxwell_boltzmann_start_has_the_canonical_mean_kinetic_energy():
    """<E_kin> = 3/2 N k_B T over many seeds (independent reference: equipartition)."""
    atoms = argon()
    velocities = starting_velocities(atoms, 120.0, list(range(200))).reshape(200, len(atoms), 3)
    kinetic = 0.5 * np.sum(atoms.get_masses()[None, :, None] * (velocities / units.fs) ** 2, axis=(1, 2))
    expected = 1.5 * len(atoms) * units.kB * 120.0
    standard_error = expected * np.sqrt(2 / (3 * len(atoms))) / np.sqrt(200)
    assert abs(kinetic.mean() - expected) < 4 * standard_error

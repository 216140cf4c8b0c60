"""Trajectory formats of `mlmd md` / `mlmd forecast`, read back by other programs' readers: DCD timing
(MDAnalysis; mdtraj through dcd_frame_times_ps), H5MD (MDAnalysis, h5py), extended XYZ and ASE .traj
(ase.io.read), checked against ASE's own Lennard-Jones calculator, the log and the run's final state."""

import h5py
import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.lj import LennardJones
from ase.io import read, write

import mlmd.md as md
from mlmd.cli import main
from mlmd.dynamics.trajectory import AKMA_FS, dcd_frame_times_ps, read_dcd_timing
from mlmd.forecast import run as forecast
from reference_forecasters import HarmonicForecaster
from test_md import CUTOFF, EPSILON, SIGMA, argon, model_file, one_thread  # noqa: F401  (argon LJ model fixtures)

EV_KJ_PER_MOL = 96.48533212  # CODATA: 1 eV per particle in kJ/mol (independent of mlmd.constants)


def lennard_jones(positions_A):
    """Energy (eV) and forces (eV/Å) of ASE's own Lennard-Jones, the function the model implements."""
    atoms = argon()
    atoms.positions = positions_A
    atoms.calc = LennardJones(sigma=SIGMA, epsilon=EPSILON, rc=CUTOFF, smooth=False)
    return atoms.get_potential_energy(), atoms.get_forces()


def log_rows(path):
    return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)


def run(tmp_path, model_file, name, steps=20, **kwargs):
    settings = dict(model=model_file, temperature_K=80.0, timestep_fs=2.0, stride=5, replicas=2, seed=3)
    settings.update(kwargs)
    return md.run(argon(), steps=steps, log=tmp_path / f"{name}.csv", **settings)


def test_dcd_from_mlmd_md_carries_the_time_step(tmp_path, model_file, capsys):
    """`mlmd md --timestep 0.5 --stride 10`: MDAnalysis reads dt = 0.005 ps; mdtraj numbers the frames,
    and dcd_frame_times_ps gives it the same times."""
    import MDAnalysis
    import mdtraj

    write(tmp_path / "ar.xyz", argon())
    assert main(["md", str(tmp_path / "ar.xyz"), "--model", str(model_file), "--timestep", "0.5", "--stride", "10",
                 "--steps", "40", "--temperature", "80", "--trajectory", str(tmp_path / "md.dcd"),
                 "--log", str(tmp_path / "md.csv"), "--quiet"]) == 0
    universe = MDAnalysis.Universe(str(tmp_path / "md_topology.pdb"), str(tmp_path / "md.dcd"))
    assert universe.trajectory.dt == pytest.approx(0.005, rel=1e-6)  # DELTA is a float32 in AKMA units
    np.testing.assert_allclose([ts.time for ts in universe.trajectory], [0.0, 0.005, 0.01, 0.015, 0.02],
                               rtol=1e-6, atol=1e-12)
    trajectory = mdtraj.load(str(tmp_path / "md.dcd"), top=str(tmp_path / "md_topology.pdb"))
    np.testing.assert_array_equal(trajectory.time, np.arange(5))  # mdtraj ignores the DCD header's timing
    np.testing.assert_allclose(dcd_frame_times_ps(tmp_path / "md.dcd"), log_rows(tmp_path / "md.csv")[:, 1] / 1000,
                               rtol=1e-6)
    assert read_dcd_timing(tmp_path / "md.dcd")[:2] == (0, 10)
    assert AKMA_FS == pytest.approx(48.88821, rel=1e-6)  # MDAnalysis' AKMA time unit, 4.888821e-2 ps


def test_dcd_timing_survives_a_restart(tmp_path, model_file):
    import MDAnalysis

    common = dict(stride=4, replicas=1, timestep_fs=1.5, restart_every=8)
    run(tmp_path, model_file, "a", steps=24, trajectory=tmp_path / "a.dcd", **common)
    run(tmp_path, model_file, "b", steps=12, trajectory=tmp_path / "b.dcd", restart_file=tmp_path / "b.restart",
        **common)
    run(tmp_path, model_file, "b", steps=24, trajectory=tmp_path / "b.dcd", restart=tmp_path / "b.restart",
        restart_file=tmp_path / "b.restart", **common)
    times = {}
    for name in "ab":
        universe = MDAnalysis.Universe(str(tmp_path / f"{name}_topology.pdb"), str(tmp_path / f"{name}.dcd"))
        times[name] = [ts.time for ts in universe.trajectory]
    np.testing.assert_allclose(times["b"], np.arange(7) * 4 * 1.5e-3, rtol=1e-6, atol=1e-12)
    assert times["a"] == times["b"]


def test_h5md_reads_in_mdanalysis_with_times_forces_and_energies(tmp_path, model_file):
    import MDAnalysis

    result = run(tmp_path, model_file, "md", trajectory=tmp_path / "md.h5md")
    rows = log_rows(tmp_path / "md.csv")
    universe = MDAnalysis.Universe(str(tmp_path / "md.h5md"))  # H5MD needs no separate topology
    assert len(universe.trajectory) == len(rows) == 5 and len(universe.atoms) == 64
    with h5py.File(tmp_path / "md.h5md", "r") as stored:
        assert list(stored["h5md"].attrs["version"]) == [1, 1]
        assert stored["h5md/creator"].attrs["name"] == "mlmd" and stored["h5md/author"].attrs["name"]
        assert list(stored["particles/trajectory/box"].attrs["boundary"]) == ["periodic"] * 3
        assert list(stored["particles/trajectory/species"]) == [18] * 64
        positions = stored["particles/trajectory/position/value"][()]
        epot = stored["observables/potential_energy/value"][()]
    for frame, ts in enumerate(universe.trajectory):
        assert ts.time == pytest.approx(rows[frame, 1] / 1000) and ts.data["step"] == rows[frame, 0]
        np.testing.assert_allclose(ts.positions, positions[frame], atol=1e-4)
        np.testing.assert_allclose(ts.dimensions, [10.52] * 3 + [90.0] * 3, rtol=1e-6)
        for replica in range(2):
            atoms = slice(32 * replica, 32 * replica + 32)
            energy, forces = lennard_jones(positions[frame, atoms])
            assert epot[frame, replica] == pytest.approx(energy, abs=1e-10)
            np.testing.assert_allclose(ts.forces[atoms] / EV_KJ_PER_MOL, forces, rtol=0,
                                       atol=1e-5 * np.abs(forces).max())
        assert epot[frame].mean() == pytest.approx(rows[frame, 2], rel=1e-9)
    np.testing.assert_allclose(positions[-1], result.positions.reshape(-1, 3), atol=1e-12)
    last = universe.trajectory[-1]  # MDAnalysis rewinds to frame 0 after a loop
    np.testing.assert_allclose(last.velocities / 1000, result.velocities.reshape(-1, 3), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("extension", [".h5md", ".xyz", ".traj"])
def test_a_continued_run_writes_the_same_trajectory(tmp_path, model_file, extension):
    common = dict(restart_every=10)
    run(tmp_path, model_file, "a", trajectory=tmp_path / f"a{extension}", **common)
    run(tmp_path, model_file, "b", steps=10, trajectory=tmp_path / f"b{extension}",
        restart_file=tmp_path / "b.restart", **common)
    run(tmp_path, model_file, "b", trajectory=tmp_path / f"b{extension}", restart=tmp_path / "b.restart",
        restart_file=tmp_path / "b.restart", **common)
    assert not (tmp_path / f"b.partial{extension}").exists()
    if extension == ".h5md":
        with h5py.File(tmp_path / "a.h5md", "r") as a, h5py.File(tmp_path / "b.h5md", "r") as b:
            for name in ("particles/trajectory/position/value", "particles/trajectory/position/time",
                         "particles/trajectory/force/value", "observables/potential_energy/value"):
                np.testing.assert_array_equal(a[name][()], b[name][()])
            assert a["particles/trajectory/position/step"].shape == (5,)
    else:
        whole, continued = read(tmp_path / f"a{extension}", ":"), read(tmp_path / f"b{extension}", ":")
        assert len(whole) == len(continued) == 10
        for first, second in zip(whole, continued):
            np.testing.assert_array_equal(first.positions, second.positions)
            np.testing.assert_array_equal(first.get_forces(), second.get_forces())
            assert first.get_potential_energy() == second.get_potential_energy()
            assert first.info == second.info


@pytest.mark.parametrize("extension", [".xyz", ".extxyz", ".traj"])
def test_ase_formats_hold_each_replicas_energy_forces_and_velocities(tmp_path, model_file, extension):
    result = run(tmp_path, model_file, "md", trajectory=tmp_path / f"md{extension}")
    rows = log_rows(tmp_path / "md.csv")
    images = read(tmp_path / f"md{extension}", index=":")
    assert len(images) == 2 * len(rows) == 10
    for index, image in enumerate(images):
        frame, replica = divmod(index, 2)
        assert image.info["step"] == rows[frame, 0] and image.info["replica"] == replica
        assert image.info["time_fs"] == pytest.approx(rows[frame, 1])
        energy, forces = lennard_jones(image.positions)
        assert image.get_potential_energy() == pytest.approx(energy, abs=1e-7)
        np.testing.assert_allclose(image.get_forces(), forces, rtol=0, atol=1e-6)
    for frame, row in enumerate(rows):
        assert np.mean([image.get_potential_energy() for image in images[2 * frame:2 * frame + 2]]) == \
            pytest.approx(row[2], rel=1e-8)
    for replica, image in enumerate(images[-2:]):
        np.testing.assert_allclose(image.positions, result.positions[replica], atol=1e-7)
        np.testing.assert_allclose(image.get_velocities() * units.fs, result.velocities[replica], atol=1e-9)


def test_forecaster_runs_write_no_forces(tmp_path):
    """A forecaster has no forces; its energy monitor (EMT here) gives energies at the recorded frames."""
    atoms = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    forecaster = HarmonicForecaster(torch.tensor(atoms.positions), torch.tensor([0.2, 0.3, 0.4]), 10.0, [1, 8])
    common = dict(steps=20, temperature_K=300, stride=5, seed=2)
    forecast(atoms, forecaster, trajectory=tmp_path / "f.h5md", calculator="emt", **common)
    with h5py.File(tmp_path / "f.h5md", "r") as stored:
        assert "force" not in stored["particles/trajectory"] and "edges" not in stored["particles/trajectory/box"]
        assert stored["observables/potential_energy/value"].shape == (5, 1)
        positions = stored["particles/trajectory/position/value"][()]
        epot = stored["observables/potential_energy/value"][()]
    from ase.calculators.emt import EMT

    for frame in range(5):
        reference = atoms.copy()
        reference.positions = positions[frame]
        reference.calc = EMT()
        assert epot[frame, 0] == pytest.approx(reference.get_potential_energy(), abs=1e-9)
    forecast(atoms, forecaster, trajectory=tmp_path / "f.xyz", **common)
    images = read(tmp_path / "f.xyz", ":")
    assert len(images) == 5 and all(image.calc is None for image in images)
    np.testing.assert_allclose(images[-1].positions, positions[-1], atol=1e-7)

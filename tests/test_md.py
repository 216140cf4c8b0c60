"""mlmd md (Python and command line): logs, trajectories, restarts, the instability guard, the OpenMM
engine and bad input, against ASE's own calculators and dynamics as independent references."""

import subprocess
import sys

import mdtraj
import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.calculators.lj import LennardJones
from ase.constraints import FixAtoms
from ase.md.verlet import VelocityVerlet

import mlmd.md as md
from mlmd.calculators import get_calculator
from mlmd.cli import main
from mlmd.model import export_model
from reference_potentials import LennardJonesPotential

SIGMA, EPSILON, CUTOFF = 3.405, 0.0103, 6.0  # argon
HEADER = "step,time_fs,epot_eV,ekin_eV,temperature_K"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The machines running the suite are small and shared: one torch thread is fastest."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "lj.pt"
    export_model(LennardJonesPotential([18], SIGMA, EPSILON, CUTOFF).double(), path)
    return path


def argon(seed=1):
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(2)  # 32 atoms
    atoms.rattle(0.05, seed=seed)
    return atoms


def reference_lj(atoms):
    """ASE's own Lennard-Jones, the function the exported model implements."""
    atoms = atoms.copy()
    atoms.calc = LennardJones(sigma=SIGMA, epsilon=EPSILON, rc=CUTOFF, smooth=False)
    return atoms.get_potential_energy()


def kinetic_eV(atoms, velocities_A_per_fs):
    """½ Σ m v² with ASE's own unit system (independent of mlmd.constants)."""
    v_ase = velocities_A_per_fs / units.fs
    return 0.5 * float(np.sum(atoms.get_masses()[:, None] * v_ase**2))


def read_log(path):
    lines = path.read_text().splitlines()
    return lines[0], np.loadtxt(lines[1:], delimiter=",", ndmin=2)


def test_log_matches_ase_energies_and_the_plot_is_written(tmp_path, model_file):
    atoms = argon()
    result = md.run(atoms, model=model_file, temperature_K=80.0, timestep_fs=4.0, steps=30, stride=10,
                    log=tmp_path / "md.csv", seed=3)
    header, rows = read_log(tmp_path / "md.csv")
    assert header == HEADER
    np.testing.assert_array_equal(rows[:, 0], [0, 10, 20, 30])
    np.testing.assert_allclose(rows[:, 1], [0.0, 40.0, 80.0, 120.0])
    assert rows[0, 2] == pytest.approx(reference_lj(atoms), rel=1e-9)
    final = atoms.copy()
    final.positions = result.positions[0]
    assert rows[-1, 2] == pytest.approx(reference_lj(final), rel=1e-9)
    assert rows[-1, 3] == pytest.approx(kinetic_eV(atoms, result.velocities[0]), rel=1e-6)
    np.testing.assert_allclose(rows[:, 4], 2 * rows[:, 3] / (3 * len(atoms) * units.kB), rtol=1e-6)
    # Maxwell-Boltzmann start at 80 K: within the spread of 32 atoms (sqrt(2/96) ~ 14 %)
    assert 40.0 < rows[0, 4] < 120.0
    np.testing.assert_allclose(result.log, rows, rtol=1e-9)
    assert (tmp_path / "md.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_velocity_verlet_with_an_ase_calculator_follows_ase_dynamics():
    """The same NVE trajectory as ASE's VelocityVerlet: masses, units, time step and forces all agree."""
    atoms = argon()
    sigma = np.sqrt(60.0 * units.kB / atoms.get_masses())[:, None]  # Å per ASE time unit
    atoms.set_velocities(sigma * np.random.default_rng(0).normal(size=(len(atoms), 3)))
    result = md.run(atoms, calculator="lj", integrator="verlet", timestep_fs=5.0, steps=20, stride=20)
    reference = atoms.copy()
    reference.calc = get_calculator("lj")
    VelocityVerlet(reference, timestep=5.0 * units.fs).run(20)
    np.testing.assert_allclose(result.positions[0], reference.positions, atol=1e-7)
    np.testing.assert_allclose(result.velocities[0], reference.get_velocities() * units.fs, atol=1e-9)


@pytest.mark.parametrize("extension", [".dcd", ".xtc", ".h5"])
def test_trajectory_is_readable_by_mdtraj(tmp_path, model_file, extension):
    atoms = argon()
    path = tmp_path / f"md{extension}"
    result = md.run(atoms, model=model_file, temperature_K=80.0, timestep_fs=4.0, steps=25, stride=5,
                    trajectory=path)
    assert not (tmp_path / f"md.partial{extension}").exists()
    topology = {} if extension == ".h5" else {"top": str(tmp_path / "md_topology.pdb")}
    trajectory = mdtraj.load(str(path), **topology)
    assert trajectory.n_frames == 6 and trajectory.n_atoms == len(atoms)
    assert [a.element.symbol for a in trajectory.topology.atoms] == ["Ar"] * len(atoms)
    precision = 2e-3 if extension == ".xtc" else 1e-5  # nm
    np.testing.assert_allclose(trajectory.xyz[-1], result.positions[0] / 10.0, atol=precision)
    np.testing.assert_allclose(trajectory.xyz[0], atoms.positions / 10.0, atol=precision)
    np.testing.assert_allclose(trajectory.unitcell_lengths[0], np.diag(atoms.cell) / 10.0, rtol=1e-5)


@pytest.mark.parametrize("engine", ["torch", "openmm"])
def test_restart_continues_bit_for_bit(tmp_path, model_file, engine):
    """2N steps in one go equal N steps, a restart, and N more: state, log and trajectory."""
    settings = dict(model=model_file, engine=engine, temperature_K=100.0, timestep_fs=4.0, stride=5,
                    restart_every=10, seed=5, replicas=2 if engine == "torch" else 1)
    whole = md.run(argon(), steps=40, log=tmp_path / "a.csv", trajectory=tmp_path / "a.h5",
                   restart_file=tmp_path / "a.restart", **settings)
    md.run(argon(), steps=20, log=tmp_path / "b.csv", trajectory=tmp_path / "b.h5",
           restart_file=tmp_path / "b.restart", **settings)
    continued = md.run(argon(), steps=40, log=tmp_path / "b.csv", trajectory=tmp_path / "b.h5",
                       restart=tmp_path / "b.restart", restart_file=tmp_path / "b.restart", **settings)
    assert continued.step == whole.step == 40
    np.testing.assert_array_equal(continued.positions, whole.positions)
    np.testing.assert_array_equal(continued.velocities, whole.velocities)
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    first, second = mdtraj.load(str(tmp_path / "a.h5")), mdtraj.load(str(tmp_path / "b.h5"))
    assert first.n_frames == second.n_frames == 9
    np.testing.assert_array_equal(first.xyz, second.xyz)
    np.testing.assert_array_equal(first.time, second.time)


def test_replicas_are_single_runs_with_consecutive_seeds_and_fixed_atoms_stay(tmp_path):
    """Replica k of --seed S is the run with --seed S+k; the log holds the mean over replicas."""
    atoms = argon()
    atoms.set_constraint(FixAtoms(indices=[0, 5]))
    settings = dict(calculator="lj", temperature_K=90.0, timestep_fs=4.0, steps=12, stride=6)
    batch = md.run(atoms, replicas=2, seed=7, log=tmp_path / "batch.csv", **settings)
    singles = [md.run(atoms, seed=seed, log=tmp_path / f"{seed}.csv", **settings) for seed in (7, 8)]
    for k, single in enumerate(singles):
        np.testing.assert_array_equal(batch.positions[k], single.positions[0])
        np.testing.assert_array_equal(batch.positions[k][[0, 5]], atoms.positions[[0, 5]])
    assert not np.array_equal(singles[0].positions, singles[1].positions)
    np.testing.assert_allclose(batch.log, (singles[0].log + singles[1].log) / 2, rtol=1e-9)
    # 30 free atoms: T = 2 E_kin / (3 * 30 k_B)
    np.testing.assert_allclose(singles[0].log[:, 4], 2 * singles[0].log[:, 3] / (90 * units.kB), rtol=1e-6)


def test_openmm_engine_matches_the_torch_engine_at_step_0(tmp_path, model_file):
    settings = dict(model=model_file, temperature_K=100.0, timestep_fs=4.0, steps=10, stride=5, seed=2)
    torch_run = md.run(argon(), log=tmp_path / "t.csv", **settings)
    for integrator in ("baoab", "gjf", "langevin-middle"):
        openmm_run = md.run(argon(), engine="openmm", integrator=integrator, log=tmp_path / "o.csv",
                            trajectory=tmp_path / "o.dcd", overwrite=True, **settings)
        assert openmm_run.log.shape == (3, 5)
        np.testing.assert_allclose(openmm_run.log[0], torch_run.log[0], rtol=1e-6)
        assert np.all(np.isfinite(openmm_run.log))
        assert mdtraj.load(str(tmp_path / "o.dcd"), top=str(tmp_path / "o_topology.pdb")).n_frames == 3
    assert torch_run.log[0, 2] == pytest.approx(reference_lj(argon()), rel=1e-9)


def test_an_exploding_run_stops_with_the_last_good_state_on_disk(tmp_path, model_file):
    """A 60 fs step is far beyond argon's stability limit: energies jump, then the model sees
    overlapping atoms. The error says so, and the log, trajectory and restart file hold the last good step."""
    with pytest.raises(md.UnstableSimulationError) as caught:
        md.run(argon(), model=model_file, temperature_K=300.0, timestep_fs=60.0, steps=200, stride=2,
               log=tmp_path / "md.csv", trajectory=tmp_path / "md.h5", restart_file=tmp_path / "md.restart")
    message = str(caught.value)
    assert "unstable" in message and "md.restart" in message and "--timestep" in message
    last_good = caught.value.result.step
    _, rows = read_log(tmp_path / "md.csv")
    assert rows[-1, 0] == last_good and np.all(np.isfinite(rows))
    assert mdtraj.load(str(tmp_path / "md.h5")).n_frames == len(rows)
    saved = torch.load(tmp_path / "md.restart", weights_only=True)
    assert saved["step"] == last_good
    np.testing.assert_array_equal(saved["positions"].numpy(), caught.value.result.positions[0])
    # and the run continues from there with a sensible time step
    result = md.run(argon(), model=model_file, temperature_K=300.0, timestep_fs=2.0, steps=last_good + 4,
                    stride=2, log=tmp_path / "md.csv", restart=tmp_path / "md.restart")
    assert result.step == last_good + 4


def cli(capsys, *args):
    status = main(["md", *map(str, args), "--quiet"])
    captured = capsys.readouterr()
    return status, captured.err.strip()


def test_command_line_runs_and_continues(tmp_path, capsys, model_file):
    argon().write(tmp_path / "ar.xyz")
    common = (tmp_path / "ar.xyz", "--model", model_file, "--temperature", 90, "--timestep", 4, "--stride", 5,
              "--log", tmp_path / "md.csv", "--trajectory", tmp_path / "md.xtc")
    assert cli(capsys, *common, "--steps", 10) == (0, "")
    assert (tmp_path / "md.restart").exists() and (tmp_path / "md.png").exists()
    assert cli(capsys, *common, "--steps", 20, "--restart", tmp_path / "md.restart")[0] == 0
    _, rows = read_log(tmp_path / "md.csv")
    np.testing.assert_array_equal(rows[:, 0], [0, 5, 10, 15, 20])
    assert mdtraj.load(str(tmp_path / "md.xtc"), top=str(tmp_path / "md_topology.pdb")).n_frames == 5


@pytest.mark.parametrize("arguments, expected", [
    (("missing.xyz", "--calculator", "lj"), "does not exist"),
    (("{ar}", "--calculator", "no-such-calculator"), "unknown calculator"),
    (("{ar}",), "give exactly one of --model"),
    (("{ar}", "--calculator", "lj", "--model", "{model}"), "give exactly one of --model"),
    (("{ar}", "--calculator", "lj", "--trajectory", "md.txt"), "use one of .dcd, .xtc, .h5"),
    (("{ar}", "--calculator", "lj", "--engine", "openmm"), "needs --model"),
    (("{ar}", "--model", "{model}", "--integrator", "leapfrog"), "not available with the torch engine"),
    (("{ar}", "--model", "{model}", "--timestep", "-1"), "--timestep must be positive"),
    (("{ar}", "--model", "{model}", "--restart", "{ar}"), "not an mlmd md restart file"),
    (("{cu}", "--model", "{model}"), "not known to the model"),
])
def test_bad_input_gives_one_line_errors(tmp_path, capsys, model_file, arguments, expected):
    argon().write(tmp_path / "ar.xyz")
    bulk("Cu", cubic=True).write(tmp_path / "cu.xyz")
    names = dict(ar=tmp_path / "ar.xyz", cu=tmp_path / "cu.xyz", model=model_file)
    status, error = cli(capsys, *(a.format(**names) for a in arguments))
    assert status == 2
    assert error.startswith("mlmd md: error:") and expected in error and "\n" not in error


def test_command_line_error_has_no_traceback(tmp_path):
    argon().write(tmp_path / "ar.xyz")
    done = subprocess.run([sys.executable, "-m", "mlmd", "md", str(tmp_path / "ar.xyz"), "--steps", "5"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("mlmd md: error: give exactly one of --model")
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1

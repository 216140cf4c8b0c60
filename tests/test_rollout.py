"""The forecaster rollout engine (integrators.rollout), mlmd.forecast.run and its ASE/OpenMM drivers,
checked against analytic forecasters (tests/reference_forecasters.py)."""

import math

import numpy as np
import pytest
import torch
from ase import Atoms, units
from scipy import stats

from integrators import rollout
from mlmd.constants import AMU_A2_PER_FS2_EV, KB_EV_PER_K
from mlmd.errors import MLMDError
from mlmd.forecast import ForecastUnstableError, load_forecaster, parse_time_fs, run
from reference_forecasters import BrokenForecaster, FreeFlightForecaster, HarmonicForecaster

torch.set_num_threads(1)
DTYPE = torch.float64


def batch_of(n_replicas, n_atoms):
    return torch.arange(n_replicas).repeat_interleave(n_atoms)


def harmonic_setup(n_replicas=3, n_atoms=4, interval=7.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(n_atoms, 3, generator=g, dtype=DTYPE)
    omega = 0.02 + 0.1 * torch.rand(n_atoms, generator=g, dtype=DTYPE)
    forecaster = HarmonicForecaster(centres, omega, interval, [1])
    x0 = centres.repeat(n_replicas, 1) + 0.3 * torch.randn(n_replicas * n_atoms, 3, generator=g, dtype=DTYPE)
    v0 = 0.01 * torch.randn(n_replicas * n_atoms, 3, generator=g, dtype=DTYPE)
    return forecaster, centres, omega, x0, v0


def open_state(x0, v0, n_replicas, kT=0.0, friction=0.0, seeds=0, masses=1.0):
    n = x0.shape[0]
    return rollout.init(x0, v0, torch.full((n,), masses * AMU_A2_PER_FS2_EV, dtype=DTYPE),
                        torch.ones(n, dtype=torch.int64), torch.zeros(n_replicas, 3, 3, dtype=DTYPE),
                        torch.zeros(n_replicas, 3, dtype=torch.bool), batch_of(n_replicas, n // n_replicas),
                        kT=kT, friction=friction, seeds=seeds)


def test_exact_harmonic_rollout_equals_the_analytic_trajectory():
    n_replicas, n_atoms, interval = 3, 4, 7.0
    forecaster, centres, omega, x0, v0 = harmonic_setup(n_replicas, n_atoms, interval)
    state = open_state(x0, v0, n_replicas)
    scripted = torch.jit.script(forecaster)
    c, w = centres.repeat(n_replicas, 1), omega.repeat(n_replicas).unsqueeze(1)
    for n in range(1, 301):
        state = rollout.step(state, scripted, interval)
        if n % 50 == 0:
            t = n * interval
            x = c + (x0 - c) * torch.cos(w * t) + v0 / w * torch.sin(w * t)
            v = -(x0 - c) * w * torch.sin(w * t) + v0 * torch.cos(w * t)
            assert torch.allclose(state.positions, x, rtol=0, atol=1e-11)
            assert torch.allclose(state.velocities, v, rtol=0, atol=1e-13)
    assert state.step == 300


def test_wrap_around_in_a_triclinic_periodic_cell():
    cell = torch.tensor([[5.0, 0.0, 0.0], [1.5, 4.0, 0.0], [0.7, -0.9, 6.0]], dtype=DTYPE)
    g = torch.Generator().manual_seed(1)
    n = 6
    x0 = torch.rand(n, 3, generator=g, dtype=DTYPE) @ cell
    v0 = 0.05 * torch.randn(n, 3, generator=g, dtype=DTYPE)
    state = rollout.init(x0, v0, torch.ones(n, dtype=DTYPE), torch.ones(n, dtype=torch.int64), cell[None],
                         torch.ones(1, 3, dtype=torch.bool), torch.zeros(n, dtype=torch.int64), 0.0, 0.0, 0)
    forecaster, interval = FreeFlightForecaster(10.0, [1]), 10.0
    for _ in range(200):
        state = rollout.step(state, forecaster, interval)
    expected = x0 + v0 * interval * 200  # 100 Å of flight: many boundary crossings
    assert torch.allclose(state.unwrapped_positions(), expected, atol=1e-10)
    fractional = state.positions @ torch.linalg.inv(cell)
    assert bool(((fractional >= 0) & (fractional < 1)).all())
    assert int(state.images.abs().max()) >= 3
    lattice = (expected - state.positions) @ torch.linalg.inv(cell)
    assert torch.allclose(lattice, lattice.round(), atol=1e-9)


def test_wrap_only_along_periodic_directions_with_a_zero_vacuum_row():
    cell = torch.tensor([[[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 0.0]]], dtype=DTYPE)
    pbc = torch.tensor([[True, True, False]])
    x = torch.tensor([[9.0, -1.0, 25.0]], dtype=DTYPE)
    wrapped, shift = rollout.wrap(x, cell[0][None], pbc, torch.zeros(1, dtype=torch.int64),
                                  rollout.wrapping_basis(cell, pbc))
    assert torch.allclose(wrapped, torch.tensor([[1.0, 3.0, 25.0]], dtype=DTYPE))
    assert shift.tolist() == [[2, -1, 0]]


def test_replicas_in_a_batch_repeat_single_runs_with_seeds_s_plus_k():
    n_replicas, n_atoms, interval, seed = 4, 3, 10.0, 11
    forecaster, _, _, x0, v0 = harmonic_setup(n_replicas, n_atoms, interval)
    kT = torch.tensor([0.01, 0.02, 0.03, 0.05], dtype=DTYPE)
    batched = open_state(x0, v0, n_replicas, kT=0.0, friction=1 / 50.0, seeds=torch.arange(4) + seed)
    batched = batched.replace(kT=kT)
    for _ in range(60):
        batched = rollout.step(batched, forecaster, interval)
    for k in range(n_replicas):
        rows = slice(k * n_atoms, (k + 1) * n_atoms)
        alone = open_state(x0[rows], v0[rows], 1, kT=float(kT[k]), friction=1 / 50.0, seeds=seed + k)
        for _ in range(60):
            alone = rollout.step(alone, forecaster, interval)
        assert torch.allclose(alone.positions, batched.positions[rows], rtol=0, atol=1e-12)
        assert torch.allclose(alone.velocities, batched.velocities[rows], rtol=0, atol=1e-14)


def test_no_thermostat_keeps_the_forecaster_velocities_and_fixed_atoms_stay():
    forecaster, _, _, x0, v0 = harmonic_setup(1, 4)
    n = x0.shape[0]
    fixed = torch.tensor([True, False, False, False])
    state = rollout.init(x0, v0, torch.ones(n, dtype=DTYPE), torch.ones(n, dtype=torch.int64),
                         torch.zeros(1, 3, 3, dtype=DTYPE), torch.zeros(1, 3, dtype=torch.bool),
                         torch.zeros(n, dtype=torch.int64), 0.02, 0.0, 0, fixed=fixed)
    out = forecaster(state.positions, state.atomic_numbers, state.cell, state.pbc, state.batch, state.velocities)
    new = rollout.step(state, forecaster, 7.0)
    assert torch.equal(new.velocities[1:], out["velocities"][1:])
    assert torch.equal(new.positions[0], x0[0]) and bool((new.velocities[0] == 0).all())


def kinetic_samples(forecaster, x0, n_replicas, kT, tau, interval, steps, burn_in, every, masses=1.0):
    v0 = torch.zeros_like(x0)  # far from equilibrium: everything at rest
    v0[:, 0] = 0.001
    state = open_state(x0, v0, n_replicas, kT=kT, friction=1.0 / tau, seeds=torch.arange(n_replicas) + 5,
                       masses=masses)
    samples = []
    for n in range(1, steps + 1):
        state = rollout.step(state, forecaster, interval)
        if n > burn_in and n % every == 0:
            samples.append(rollout.kinetic_energy(state))
    return torch.stack(samples).reshape(-1).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("system", ["free", "harmonic"])
def test_csvr_rollout_gives_the_canonical_kinetic_energy_distribution(system):
    """K/kT ~ Gamma(a = N_f/2): mean a, variance a. 200 replicas x 180 samples one interval x 10 apart
    with τ = 10 intervals: CSVR's K decorrelates as exp(-t/τ), so neighbouring samples correlate by ρ ≈ e^-1
    and n_eff ≈ n (1-ρ)/(1+ρ) ≈ 0.46 n ≈ 16,500. Standard errors: mean sqrt(a/n_eff) ≈ 0.3 % of a,
    variance sqrt((2a² + 6a)/n_eff) ≈ 1.4 % of a. Tolerances: 5 standard errors (1.5 %, 7 %)."""
    n_replicas, n_atoms, kT, interval = 200, 4, 0.03, 10.0
    g = torch.Generator().manual_seed(2)
    if system == "free":
        forecaster = FreeFlightForecaster(interval, [1])
        x0 = 20.0 * torch.rand(n_replicas * n_atoms, 3, generator=g, dtype=DTYPE)
    else:  # incommensurate frequencies, started at rest at the centres plus an offset
        forecaster = HarmonicForecaster(torch.zeros(n_atoms, 3, dtype=DTYPE),
                                        torch.tensor([0.031, 0.047, 0.059, 0.083], dtype=DTYPE), interval, [1])
        x0 = 0.01 * torch.randn(n_replicas * n_atoms, 3, generator=g, dtype=DTYPE)
    kinetic = kinetic_samples(forecaster, x0, n_replicas, kT, tau=100.0, interval=interval, steps=2000,
                              burn_in=200, every=10)
    a = 3 * n_atoms / 2
    reduced = kinetic / kT
    assert len(reduced) == 200 * 180
    n_eff = len(reduced) * (1 - math.exp(-1)) / (1 + math.exp(-1))
    assert abs(reduced.mean() - a) < 5 * math.sqrt(a / n_eff)
    assert abs(reduced.var() - a) < 5 * math.sqrt((2 * a * a + 6 * a) / n_eff)
    # Samples 50 intervals (5 τ) apart are nearly independent: a KS test on those.
    thinned = reduced.reshape(-1, n_replicas)[::5].reshape(-1)
    assert stats.kstest(thinned, stats.gamma(a).cdf).pvalue > 1e-3


def test_csvr_rollout_heats_a_system_at_rest_to_the_target_on_average():
    """Short version of the statistical test (not slow): the mean of K over 64 replicas after 10 τ
    is N_f kT/2 within 5 standard errors sqrt(a/n) kT."""
    n_replicas, n_atoms, kT, interval = 64, 4, 0.03, 10.0
    x0 = 20.0 * torch.rand(n_replicas * n_atoms, 3, generator=torch.Generator().manual_seed(4), dtype=DTYPE)
    kinetic = kinetic_samples(FreeFlightForecaster(interval, [1]), x0, n_replicas, kT, tau=50.0,
                              interval=interval, steps=100, burn_in=99, every=1)
    a = 3 * n_atoms / 2
    assert abs(kinetic.mean() / kT - a) < 5 * math.sqrt(a / n_replicas)


# --------------------------------------------------------------------------- mlmd.forecast.run


def water(spacing=1.0):
    atoms = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    atoms.positions *= spacing
    return atoms


def test_run_with_the_harmonic_forecaster_matches_the_rollout(tmp_path):
    atoms = water()
    forecaster = HarmonicForecaster(torch.tensor(atoms.positions), torch.tensor([0.2, 0.3, 0.4]), 10.0, [1, 8])
    result = run(atoms, forecaster, time="1ps", temperature_K=300, replicas=2, seed=3, tau_fs=200.0,
                 log=tmp_path / "f.csv", trajectory=tmp_path / "f.h5", stride=10)
    assert result.step == 100 and result.time_fs == pytest.approx(1000.0)
    import mdtraj

    frames = mdtraj.load(str(tmp_path / "f.h5"))
    assert frames.n_frames == 11 and frames.n_atoms == 6
    assert np.allclose(frames.xyz[-1] * 10, result.positions.reshape(-1, 3), atol=1e-4)
    log = np.loadtxt(tmp_path / "f.csv", delimiter=",", skiprows=1)
    assert open(tmp_path / "f.csv").readline().strip() == "step,time_fs,ekin_eV,temperature_K"
    assert log.shape == (11, 4) and log[-1, 0] == 100 and log[-1, 1] == pytest.approx(1000.0)
    # Replica 1 of the batch repeats a single run with seed 4.
    alone = run(atoms, forecaster, steps=100, temperature_K=300, seed=4, tau_fs=200.0)
    assert np.allclose(alone.positions[0], result.positions[1], atol=1e-12)


def test_run_logs_the_energy_of_a_monitor_calculator(tmp_path):
    atoms = water()
    forecaster = HarmonicForecaster(torch.tensor(atoms.positions), torch.tensor([0.2, 0.3, 0.4]), 10.0, [1, 8])
    run(atoms, forecaster, steps=20, temperature_K=300, calculator="emt", log=tmp_path / "f.csv", stride=5)
    lines = open(tmp_path / "f.csv").read().split()
    assert lines[0] == "step,time_fs,ekin_eV,temperature_K,epot_eV" and len(lines) == 6
    assert all(math.isfinite(float(line.split(",")[-1])) for line in lines[1:])


def test_restart_continues_bit_for_bit(tmp_path):
    atoms = water()
    forecaster = HarmonicForecaster(torch.tensor(atoms.positions), torch.tensor([0.2, 0.3, 0.4]), 10.0, [1, 8])
    common = dict(temperature_K=300, replicas=2, seed=1, tau_fs=100.0, stride=5)
    full = run(atoms, forecaster, steps=40, log=tmp_path / "a.csv", **common)
    run(atoms, forecaster, steps=20, log=tmp_path / "b.csv", trajectory=tmp_path / "b.h5",
        restart_file=tmp_path / "b.restart", **common)
    continued = run(atoms, forecaster, steps=40, log=tmp_path / "b.csv", trajectory=tmp_path / "b.h5",
                    restart=tmp_path / "b.restart", restart_file=tmp_path / "b.restart", **common)
    assert np.array_equal(full.positions, continued.positions)
    assert np.array_equal(full.velocities, continued.velocities)
    assert open(tmp_path / "a.csv").read() == open(tmp_path / "b.csv").read()
    import mdtraj

    assert mdtraj.load(str(tmp_path / "b.h5")).n_frames == 9


@pytest.mark.parametrize("mode, expected", [("nan", "NaN or infinite coordinates"),
                                            ("collapse", "closer than 0.5 Å"),
                                            ("heat", "above the bound")])
def test_guards_stop_and_save_the_last_good_state(tmp_path, mode, expected):
    from ase.io import read

    atoms = water(spacing=1.5)
    broken = BrokenForecaster(mode, after=7, interval_fs=10.0, species=[1, 8])
    with pytest.raises(ForecastUnstableError) as caught:
        run(atoms, broken, steps=50, temperature_K=300, thermostat="none", log=tmp_path / "f.csv",
            restart_file=tmp_path / "f.restart", stride=1)
    message = str(caught.value)
    assert expected in message and "at step 8" in message and "last good state (step 7)" in message
    state_file = tmp_path / "f.last_good.xyz"
    assert str(state_file) in message and str(tmp_path / "f.restart") in message
    saved = read(state_file, index=":")
    assert len(saved) == 1 and saved[0].info["step"] == 7
    assert np.allclose(saved[0].positions, caught.value.result.positions[0])
    assert np.allclose(saved[0].get_velocities() * units.fs, caught.value.result.velocities[0])
    assert torch.load(tmp_path / "f.restart", weights_only=True)["step"] == 7
    assert np.loadtxt(tmp_path / "f.csv", delimiter=",", skiprows=1)[-1, 0] == 7


def test_bad_settings_give_clear_errors():
    atoms = water()
    forecaster = FreeFlightForecaster(10.0, [1, 8])
    with pytest.raises(MLMDError, match="exactly one of --time"):
        run(atoms, forecaster)
    with pytest.raises(MLMDError, match="cannot read the time"):
        run(atoms, forecaster, time="ten ps")
    with pytest.raises(MLMDError, match="unknown thermostat"):
        run(atoms, forecaster, steps=1, thermostat="langevin")
    with pytest.raises(MLMDError, match="not known to the model"):
        run(Atoms("Cu", positions=[[0, 0, 0]]), forecaster, steps=1)
    assert parse_time_fs("100ps") == 1e5 and parse_time_fs("2 ns") == 2e6 and parse_time_fs("250") == 250.0


def test_exported_forecaster_loads_through_load_model(tmp_path):
    from mlmd.model import export_model, load_model

    atoms = water()
    forecaster = HarmonicForecaster(torch.tensor(atoms.positions), torch.tensor([0.2, 0.3, 0.4]), 10.0, [1, 8])
    export_model(forecaster, tmp_path / "h.pt")
    loaded = load_forecaster(tmp_path / "h.pt")
    assert loaded.interval_fs == 10.0 and loaded.species == [1, 8]
    from_file = run(atoms, load_model(tmp_path / "h.pt"), steps=30, seed=2)
    in_memory = run(atoms, forecaster, steps=30, seed=2)
    assert np.allclose(from_file.positions, in_memory.positions, atol=1e-12)


# --------------------------------------------------------------------------- ASE and OpenMM drivers


def reference_rollout(atoms, forecaster, steps, temperature_K, tau_fs, seed):
    """The torch rollout of one replica from the atoms' own velocities: positions [steps+1, N, 3] Å."""
    n = len(atoms)
    state = rollout.init(torch.tensor(atoms.positions), torch.tensor(atoms.get_velocities() * units.fs),
                         torch.tensor(atoms.get_masses() * AMU_A2_PER_FS2_EV), torch.tensor(atoms.numbers),
                         torch.zeros(1, 3, 3, dtype=DTYPE), torch.zeros(1, 3, dtype=torch.bool),
                         torch.zeros(n, dtype=torch.int64), KB_EV_PER_K * temperature_K, 1.0 / tau_fs, seed)
    frames = [state.positions.numpy().copy()]
    for _ in range(steps):
        state = rollout.step(state, forecaster, forecaster.interval_fs)
        frames.append(state.positions.numpy().copy())
    return np.array(frames)


def test_ase_dynamics_with_observer_and_trajectory_writer(tmp_path):
    from ase.io import Trajectory, read

    from mlmd.ase import ForecastDynamics

    atoms = water()
    atoms.set_velocities(0.005 * np.random.default_rng(0).standard_normal((3, 3)) / units.fs)
    forecaster = HarmonicForecaster(torch.tensor(atoms.positions), torch.tensor([0.2, 0.3, 0.4]), 10.0, [1, 8])
    expected = reference_rollout(atoms, forecaster, 12, 300.0, 200.0, 7)
    dyn = ForecastDynamics(atoms, forecaster, temperature_K=300, taut=200 * units.fs, seed=7)
    assert dyn.dt == pytest.approx(10.0 * units.fs)
    seen = []
    dyn.attach(lambda: seen.append(atoms.positions.copy()), interval=1)
    with Trajectory(tmp_path / "f.traj", "w", atoms) as trajectory:
        dyn.attach(trajectory.write, interval=3)
        dyn.run(12)
    assert len(seen) == 13
    assert np.allclose(np.array(seen), expected, atol=1e-12)
    frames = read(tmp_path / "f.traj", index=":")
    assert len(frames) == 5 and np.allclose(frames[-1].positions, expected[-1], atol=1e-12)


def test_openmm_driver_with_state_data_and_dcd_reporters(tmp_path):
    import mdtraj
    import openmm
    from openmm import app, unit

    from mlmd.constants import A_PER_FS_NM_PER_PS
    from mlmd.openmm import OpenMMForecastDriver, forecast_integrator
    from mlmd.openmm import topology_from_atoms

    atoms = water()
    velocities = 0.005 * np.random.default_rng(1).standard_normal((3, 3))
    atoms.set_velocities(velocities / units.fs)
    forecaster = HarmonicForecaster(torch.tensor(atoms.positions), torch.tensor([0.2, 0.3, 0.4]), 10.0, [1, 8])
    expected = reference_rollout(atoms, forecaster, 10, 300.0, 200.0, 3)

    topology, positions = topology_from_atoms(atoms)
    system = openmm.System()
    for mass in atoms.get_masses():
        system.addParticle(float(mass))
    simulation = app.Simulation(topology, system, forecast_integrator(10.0), openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(positions)
    simulation.context.setVelocities(velocities * A_PER_FS_NM_PER_PS)
    simulation.reporters.append(app.StateDataReporter(str(tmp_path / "s.csv"), 2, step=True, time=True,
                                                      kineticEnergy=True, temperature=True))
    simulation.reporters.append(app.DCDReporter(str(tmp_path / "f.dcd"), 5))
    driver = OpenMMForecastDriver(simulation, forecaster, temperature_K=300, tau_fs=200.0, seed=3)
    driver.step(10)
    assert simulation.currentStep == 10
    state = simulation.context.getState(getPositions=True)
    assert state.getTime().value_in_unit(unit.picosecond) == pytest.approx(0.1)
    assert np.allclose(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * 10, expected[-1], atol=1e-10)
    rows = np.loadtxt(tmp_path / "s.csv", delimiter=",")
    assert rows.shape == (5, 4) and rows[:, 0].tolist() == [2, 4, 6, 8, 10]
    assert np.allclose(rows[:, 1], [0.02, 0.04, 0.06, 0.08, 0.1])
    frames = mdtraj.load_dcd(str(tmp_path / "f.dcd"), top=mdtraj.Topology.from_openmm(topology))
    assert frames.n_frames == 2
    assert np.allclose(frames.xyz * 10, expected[[5, 10]], atol=1e-4)
    # The logged kinetic energy is ½ m v² of the forecast velocities (kJ/mol), temperature from it.
    from mlmd.constants import EV_KJ_PER_MOL

    ekin_eV = rows[-1, 2] / EV_KJ_PER_MOL
    v = simulation.context.getState(getVelocities=True).getVelocities(asNumpy=True)._value / A_PER_FS_NM_PER_PS
    assert ekin_eV == pytest.approx(0.5 * float(np.sum(atoms.get_masses()[:, None] * v**2)) * AMU_A2_PER_FS2_EV,
                                    rel=1e-6)

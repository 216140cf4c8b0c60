"""The stochastic forecaster (issue 14): a Gaussian over each residual component, trained by its negative
log-likelihood, sampled with counter-based seeded noise; and the energy-aware rollout step.

References: torch's own bivariate normal density (the loss), sample moments against the predicted
spreads (the sampler), a potential evaluated independently (the energy-aware step)."""

import math

import numpy as np
import pytest
import torch

from integrators import rollout
from potentials.testing import ForecasterConformance
from test_forecaster import SPECIES, make_model

torch.set_num_threads(1)


class TestStochasticForecasterConformance(ForecasterConformance):
    """The mean of a stochastic forecaster obeys the forecaster contract, and its spreads are invariant
    (rotation, translation, permutation, batching, dtypes, TorchScript)."""

    species = SPECIES

    def make_model(self):
        return make_model(stochastic=True)


def copper(repeat=2):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=2)
    return atoms


def inputs(atoms, copies=1, seed=0):
    """One batch of ``copies`` of ``atoms`` with the same random velocities (float64 tensors)."""
    n = len(atoms)
    velocities = np.random.default_rng(seed).normal(0.0, 0.005, size=(n, 3))
    return (torch.tensor(np.tile(atoms.positions, (copies, 1))), torch.tensor(np.tile(atoms.numbers, copies)),
            torch.tensor(np.stack([atoms.cell.array] * copies)), torch.ones(copies, 3, dtype=torch.bool),
            torch.arange(copies).repeat_interleave(n), torch.tensor(np.tile(velocities, (copies, 1))))


@pytest.mark.parametrize("sample_displacement", [True, False])
def test_samples_have_the_predicted_spreads_and_correlation(sample_displacement):
    """Many copies of one system, each with its own noise: per atom, the sample mean is the mean output, the
    sample standard deviations are the predicted spreads and the d-v correlation is the predicted rho
    (up to the conservation projection, which removes 1/N of the variance in a periodic cell). Sampling
    velocities only (the default) leaves the displacement at its mean and gives v' its marginal spread."""
    model = make_model(stochastic=True, sample_displacement=sample_displacement).double().eval()
    atoms, copies = copper(), 400
    args = inputs(atoms, copies)
    mean = model(*args)
    noise = torch.randn(len(args[0]), 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sample = model(*args, noise=noise)
    n = len(atoms)
    d = (sample["displacement"] - mean["displacement"]).reshape(copies, n, 3)
    v = (sample["velocities"] - mean["velocities"]).reshape(copies, n, 3)
    spread_d, spread_v = mean["displacement_spread"][:n], mean["velocity_spread"][:n]
    rho = mean["correlation"][:n]
    shrink = math.sqrt(1 - 1 / n)  # the momentum projection removes the mean over atoms
    tolerance = 4 / math.sqrt(3 * copies)  # ~4 standard errors of a standard deviation
    np.testing.assert_allclose(v.std(dim=(0, 2)).numpy(), (shrink * spread_v).numpy(), rtol=tolerance)
    if not sample_displacement:
        assert float(d.abs().max()) < 1e-12
        return
    assert float(rho.abs().max()) > 0.05, "an untrained model should have some correlation to check"
    np.testing.assert_allclose(d.std(dim=(0, 2)).numpy(), (shrink * spread_d).numpy(), rtol=tolerance)
    correlation = (d * v).mean(dim=(0, 2)) / (d.std(dim=(0, 2)) * v.std(dim=(0, 2)))
    np.testing.assert_allclose(correlation.numpy(), rho.numpy(), atol=4 / math.sqrt(3 * copies))
    assert float(d.mean(dim=0).abs().max()) < 4 * float(spread_d.max()) / math.sqrt(copies)


def test_negative_log_likelihood_is_the_bivariate_normal_density():
    """The training loss equals -log N((r_d, r_v); 0, Sigma) per component, averaged, less the constant
    log(2 pi s_d s_v) (torch.distributions as the reference)."""
    from mlmd.training.objectives.trajectory import TrajectoryObjective

    objective = TrajectoryObjective.__new__(TrajectoryObjective)
    objective.scales = (0.05, 0.008)
    objective.weights = {"displacement": 1.0, "velocity": 1.0, "rollout": 1.0}
    generator = torch.Generator().manual_seed(3)
    n = 7
    x, v = torch.randn(n, 3, generator=generator, dtype=torch.float64), torch.randn(n, 3, generator=generator,
                                                                                   dtype=torch.float64)
    target_x = x + 0.05 * torch.randn(n, 3, generator=generator, dtype=torch.float64)
    target_v = v + 0.01 * torch.randn(n, 3, generator=generator, dtype=torch.float64)
    out = {"displacement_spread": 0.03 + 0.05 * torch.rand(n, generator=generator, dtype=torch.float64),
           "velocity_spread": 0.004 + 0.01 * torch.rand(n, generator=generator, dtype=torch.float64),
           "correlation": 1.6 * torch.rand(n, generator=generator, dtype=torch.float64) - 0.8}
    batch = {"target_positions": target_x[None], "target_velocities": target_v[None]}
    loss = objective.step_loss(x, v, out, batch, 0)
    sd, sv, rho = out["displacement_spread"], out["velocity_spread"], out["correlation"]
    covariance = torch.stack([torch.stack([sd * sd, rho * sd * sv], -1), torch.stack([rho * sd * sv, sv * sv], -1)], -2)
    density = torch.distributions.MultivariateNormal(torch.zeros(n, 2, dtype=torch.float64), covariance)
    residuals = torch.stack([x - target_x, v - target_v], -1)  # [n, 3, 2]
    reference = -density.log_prob(residuals.transpose(0, 1)).mean() - math.log(2 * math.pi * 0.05 * 0.008)
    assert float(loss) == pytest.approx(float(reference), rel=1e-12)
    # An unrolled second call is scored on the mean path's squared error, not on the one-call spread.
    two = {"target_positions": torch.stack([target_x, target_x]), "target_velocities": torch.stack([target_v, target_v])}
    later = objective.step_loss(x, v, out, two, 1)
    squared = (((x - target_x) / 0.05) ** 2).mean() + (((v - target_v) / 0.008) ** 2).mean()
    assert float(later) == pytest.approx(float(squared), rel=1e-12)


class HarmonicWells:
    """U = Σ k |x - x0|² / 2 per replica (eV, Å): an independent potential energy for the energy-aware step."""

    def __init__(self, rest, stiffness=0.05):
        self.rest, self.k = rest, stiffness

    def __call__(self, positions, atomic_numbers, cell, pbc, batch):
        per_atom = 0.5 * self.k * ((positions - self.rest) ** 2).sum(1)
        return torch.zeros(int(batch.max()) + 1, dtype=positions.dtype).index_add(0, batch, per_atom)


def wobbly(x, z, cell, pbc, batch, v, noise=None):
    """A forecaster double: moves along v with a twist and returns velocities that heat by 20 %."""
    kick = 0.0 if noise is None else 0.002 * noise[:, :3]
    return {"displacement": 2.0 * v + 0.001 * torch.sin(x), "velocities": 1.2 * v + kick}


def molecule_state(replicas=2, seed=0, friction=0.0, fixed=None):
    """``replicas`` copies of one 6-atom molecule with the same velocities; replica k has noise seed seed + k;
    ``fixed`` [replicas * 6] bool: atoms that never move."""
    from integrators.state import conserved_components

    rng = np.random.default_rng(0)
    n = 6
    positions = torch.tensor(np.tile(rng.normal(0, 1.5, (n, 3)), (replicas, 1)))
    velocities = torch.tensor(np.tile(rng.normal(0, 0.01, (n, 3)), (replicas, 1)))
    state = rollout.init(positions, velocities, torch.full((replicas * n,), 10.0, dtype=torch.float64),
                         torch.ones(replicas * n, dtype=torch.int64), torch.zeros(replicas, 3, 3, dtype=torch.float64),
                         torch.zeros(replicas, 3, dtype=torch.bool), torch.arange(replicas).repeat_interleave(n),
                         kT=0.025, friction=friction, seeds=torch.tensor([seed + k for k in range(replicas)]),
                         fixed=fixed)
    return state.replace(constrained_dof=conserved_components(state))


@pytest.mark.parametrize("stochastic", [False, True])
def test_energy_aware_step_conserves_the_potentials_total_energy(stochastic):
    state = molecule_state()
    wells = HarmonicWells(state.positions.clone())
    energy = lambda s: wells(s.positions, s.atomic_numbers, s.cell, s.pbc, s.batch) + rollout.kinetic_energy(s)
    start = energy(state)
    corrected, plain = state, state
    for _ in range(5):
        corrected = rollout.step(corrected, wobbly, 10.0, stochastic, potential_energy=wells)
        plain = rollout.step(plain, wobbly, 10.0, stochastic)
    torch.testing.assert_close(energy(corrected), start, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(corrected.potential_energy, wells(corrected.positions, None, None, None,
                                                                 corrected.batch), rtol=1e-12, atol=0)
    assert float((energy(plain) - start).abs().min()) > 1e-3  # without it the double heats the molecule


def test_sampling_repeats_per_seed_and_step_and_is_batch_invariant():
    pair = molecule_state(replicas=2, seed=5)
    alone = molecule_state(replicas=1, seed=6)  # replica 1 of the pair has seed 6
    n = 6
    a = rollout.step(pair, wobbly, 10.0, stochastic=True)
    b = rollout.step(pair, wobbly, 10.0, stochastic=True)
    c = rollout.step(alone, wobbly, 10.0, stochastic=True)
    assert torch.equal(a.velocities, b.velocities)
    assert torch.equal(a.velocities[n:], c.velocities)
    later = rollout.step(pair.replace(step=1), wobbly, 10.0, stochastic=True)
    assert not torch.allclose(later.velocities, a.velocities)


@pytest.fixture(scope="module")
def stochastic_forecaster(tmp_path_factory):
    """A stochastic forecaster trained for two epochs by `mlmd train` on short EMT copper runs, exported."""
    from mlmd.cli import main as mlmd_main
    from mlmd.generate import generate_trajectories
    from mlmd.train import train

    folder = tmp_path_factory.mktemp("stochastic")
    generate_trajectories("cu", folder / "runs", runs=3, steps=60, stride=2, equilibration_steps=10,
                          temperature_K=600, progress=False)
    config = {
        "data": {"path": str(folder / "runs"), "interval_steps": 10, "pair_stride": 4, "validation_runs": 1,
                 "batch_size": 4},
        "model": {"family": "forecaster", "cutoff": 3.0, "channels": 4, "lmax": 1, "num_layers": 1,
                  "num_basis": 4, "radial_hidden": 8, "stochastic": True},
        "training": {"epochs": 2, "lr": 0.01, "seed": 3, "dtype": "float64", "device": "cpu", "num_threads": 1},
        "output": {"directory": str(folder / "train")},
    }
    result = train(config, verbose=False, progress=False)
    assert all(math.isfinite(row["val_loss"]) for row in result.history)
    assert mlmd_main(["export", str(result.checkpoint), "-o", str(folder / "cu.pt")]) == 0
    return folder / "cu.pt"


def test_trained_stochastic_forecaster_runs_restarts_bit_for_bit_and_keeps_a_mean_mode(stochastic_forecaster,
                                                                                        tmp_path):
    import mlmd
    from mlmd import forecast

    model = mlmd.load_model(stochastic_forecaster)
    assert model.metadata["stochastic"] is True
    atoms = copper(2)
    common = dict(temperature_K=600.0, seed=4, calculator="emt", energy_correction=True)
    straight = forecast.run(atoms, stochastic_forecaster, steps=6, log=tmp_path / "straight.csv", **common)
    forecast.run(atoms, stochastic_forecaster, steps=3, restart_file=tmp_path / "half.restart", **common)
    resumed = forecast.run(atoms, stochastic_forecaster, steps=6, restart=tmp_path / "half.restart",
                           log=tmp_path / "resumed.csv", **common)
    np.testing.assert_array_equal(resumed.positions, straight.positions)
    np.testing.assert_array_equal(resumed.velocities, straight.velocities)
    np.testing.assert_array_equal(resumed.log[-1], straight.log[-1])  # epot_eV included
    assert "epot_eV" in straight.header
    mean = forecast.run(atoms, stochastic_forecaster, steps=6, mean_only=True, **common)
    assert not np.allclose(mean.positions, straight.positions)


def test_energy_correction_needs_a_potential(stochastic_forecaster):
    from mlmd import forecast
    from mlmd.errors import MLMDError

    with pytest.raises(MLMDError, match="needs a potential"):
        forecast.run(copper(2), stochastic_forecaster, steps=2, energy_correction=True)


def test_ase_forecast_dynamics_samples_a_stochastic_forecaster(stochastic_forecaster):
    """Through mlmd's ASE dynamics: the same seed gives the same run, another seed another."""
    from ase import units

    from mlmd.ase import ForecastDynamics

    finals = []
    for seed in (1, 1, 2):
        atoms = copper(2)
        atoms.set_velocities(np.random.default_rng(0).normal(0, 0.005, (len(atoms), 3)) / units.fs)
        dynamics = ForecastDynamics(atoms, stochastic_forecaster, temperature_K=600.0, taut=1000 * units.fs, seed=seed)
        dynamics.run(3)
        finals.append(atoms.positions.copy())
    np.testing.assert_array_equal(finals[0], finals[1])
    assert not np.allclose(finals[0], finals[2])


class HeatingFreeFlight(torch.nn.Module):
    """A forecaster double over 2 fs: free flight, and new velocities 10 % faster (it heats, so only the
    energy-aware step keeps U + K)."""

    family, interval_fs, species, cutoff, stochastic = "forecaster", 2.0, [29], 3.0, False

    def forward(self, x, z, cell, pbc, batch, v, noise=None):
        return {"displacement": 2.0 * v, "velocities": 1.1 * v}


def total_energy_eV(atoms):
    """U of the attached calculator + ½ Σ m v² (eV), computed by ASE."""
    return atoms.get_potential_energy() + atoms.get_kinetic_energy()


def test_ase_forecast_dynamics_energy_aware_conserves_the_calculators_energy():
    """Without a thermostat, EMT's U + K stays where it started with energy_correction; without it the
    (barely trained) forecaster moves it."""
    from ase import units
    from ase.calculators.emt import EMT

    from mlmd.ase import ForecastDynamics
    from mlmd.errors import MLMDError

    drifts = {}
    for correct in (True, False):
        atoms = copper(2)
        atoms.set_velocities(np.random.default_rng(0).normal(0, 0.002, (len(atoms), 3)) / units.fs)
        atoms.calc = EMT()
        start = total_energy_eV(atoms)
        dynamics = ForecastDynamics(atoms, HeatingFreeFlight(), seed=3, energy_correction=correct)
        dynamics.run(4)
        drifts[correct] = abs(total_energy_eV(atoms) - start)
    assert drifts[True] < 1e-8 and drifts[False] > 1e-4  # float64 unit round trips: ~1e-10 relative
    atoms = copper(2)
    with pytest.raises(MLMDError, match="needs a calculator"):
        ForecastDynamics(atoms, HeatingFreeFlight(), energy_correction=True)


def test_openmm_forecast_driver_energy_aware_uses_the_systems_energy():
    """The Simulation's own System (a Lennard-Jones copper here) is the potential: its U + K is conserved."""
    import openmm
    from openmm import app, unit

    from mlmd.constants import A_PER_FS_NM_PER_PS, EV_KJ_PER_MOL
    from mlmd.openmm import OpenMMForecastDriver, forecast_integrator, topology_from_atoms

    atoms = copper(2)
    topology, positions = topology_from_atoms(atoms)
    velocities = np.random.default_rng(0).normal(0, 0.002, (len(atoms), 3))
    _, rotation = atoms.cell.standard_form()
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*topology.getPeriodicBoxVectors())
    lennard_jones = openmm.NonbondedForce()
    lennard_jones.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    lennard_jones.setCutoffDistance(0.35)
    for mass in atoms.get_masses():
        system.addParticle(float(mass))
        lennard_jones.addParticle(0.0, 0.23, 4.0)
    system.addForce(lennard_jones)

    def total(simulation):
        state = simulation.context.getState(getEnergy=True)
        return (state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole) / EV_KJ_PER_MOL

    drifts = {}
    for correct in (True, False):
        simulation = app.Simulation(topology, system, forecast_integrator(2.0),
                                    openmm.Platform.getPlatformByName("Reference"))
        simulation.context.setPositions(positions)
        simulation.context.setVelocities(velocities @ np.asarray(rotation).T * A_PER_FS_NM_PER_PS)
        start = total(simulation)
        OpenMMForecastDriver(simulation, HeatingFreeFlight(), seed=2, energy_correction=correct).step(4)
        drifts[correct] = abs(total(simulation) - start)
    assert drifts[True] < 1e-8 and drifts[False] > 1e-4


def uphill_for_replica_0(x, z, cell, pbc, batch, v, noise=None):
    """A forecaster double: replica 0's atoms jump 0.3 Å along (1, 1, 1) whatever their velocities (far up the
    stiff wells), replica 1 drifts 1e-3 Å; velocities unchanged."""
    step = torch.where((batch == 0).unsqueeze(1), torch.full_like(x, 0.3), torch.full_like(x, 1e-3))
    return {"displacement": step, "velocities": v}


def test_energy_aware_step_rejects_a_forecast_it_cannot_conserve():
    """Positions pushed uphill past the total energy: no velocity scaling can conserve U + K, so that replica's
    forecast is rejected (positions kept, velocities reversed) and U + K still equals its start; the other
    replica is scaled as usual."""
    state = molecule_state()
    wells = HarmonicWells(state.positions.clone() + 0.01, stiffness=50.0)
    energy = lambda s: wells(s.positions, s.atomic_numbers, s.cell, s.pbc, s.batch) + rollout.kinetic_energy(s)
    start = energy(state)
    assert float(wells(state.positions + 0.3, None, None, None, state.batch)[0]) > float(start[0])  # the premise
    with pytest.warns(RuntimeWarning, match="rejected"):
        moved = rollout.step(state, uphill_for_replica_0, 10.0, potential_energy=wells)
    first, second = state.batch == 0, state.batch == 1
    torch.testing.assert_close(moved.positions[first], state.positions[first], rtol=0, atol=0)
    torch.testing.assert_close(moved.velocities[first], -state.velocities[first], rtol=0, atol=0)
    torch.testing.assert_close(moved.positions[second], state.positions[second] + 1e-3, rtol=0, atol=1e-12)
    torch.testing.assert_close(energy(moved), start, rtol=1e-12, atol=1e-12)
    assert moved.rejected_streak.tolist() == [1, 0]
    again = rollout.step(moved, uphill_for_replica_0, 10.0, potential_energy=wells)
    assert again.rejected_streak.tolist() == [2, 0]
    torch.testing.assert_close(again.velocities[first], state.velocities[first], rtol=0, atol=0)


def test_a_replica_whose_forecasts_are_all_rejected_stops_the_run():
    """rollout_step (every engine's interval) runs through MAX_REJECTED_IN_A_ROW - 1 rejections and stops at the
    next with a sentence naming the replica, instead of leaving it frozen in place at the right temperature."""
    from types import SimpleNamespace

    from mlmd.dynamics.engine import ForceCallFailed
    from mlmd.dynamics.rollout_engine import MAX_REJECTED_IN_A_ROW, rollout_step

    state = molecule_state()
    wells = HarmonicWells(state.positions.clone() + 0.01, stiffness=50.0)
    forecaster = SimpleNamespace(call=uphill_for_replica_0, interval_fs=10.0, stochastic=False)
    with pytest.warns(RuntimeWarning, match="rejected"):
        for _ in range(MAX_REJECTED_IN_A_ROW - 1):
            state = rollout_step(state, forecaster, potential_energy=wells)
        with pytest.raises(ForceCallFailed, match=rf"replica 0: .*rejected {MAX_REJECTED_IN_A_ROW} forecasts in a row"):
            rollout_step(state, forecaster, potential_energy=wells)


def test_a_replica_that_cannot_move_is_not_rejected():
    """Every atom of replica 1 fixed: it keeps U and K = 0, so its energy is conserved as it stands. Nothing is
    rejected and the run goes past MAX_REJECTED_IN_A_ROW intervals (replica 0 moves and is scaled)."""
    from types import SimpleNamespace

    from mlmd.dynamics.rollout_engine import MAX_REJECTED_IN_A_ROW, rollout_step

    state = molecule_state(fixed=torch.arange(12) >= 6)
    wells = HarmonicWells(state.positions.clone())
    forecaster = SimpleNamespace(call=wobbly, interval_fs=10.0, stochastic=False)
    start = wells(state.positions, None, None, None, state.batch) + rollout.kinetic_energy(state)
    for _ in range(MAX_REJECTED_IN_A_ROW + 5):
        state = rollout_step(state, forecaster, potential_energy=wells)
    assert state.rejected_streak.tolist() == [0, 0]
    torch.testing.assert_close(wells(state.positions, None, None, None, state.batch) + rollout.kinetic_energy(state),
                               start, rtol=1e-12, atol=1e-12)


class PushAtomZero(torch.nn.Module):
    """A forecaster double over 2 fs: atom 0 moves 1 Å along x whatever the velocities, new velocities unchanged."""

    family, interval_fs, species, cutoff, stochastic = "forecaster", 2.0, [29], 3.0, False

    def forward(self, x, z, cell, pbc, batch, v, noise=None):
        displacement = torch.zeros_like(x)
        displacement[0, 0] = 1.0
        return {"displacement": displacement, "velocities": v}


def test_ase_forecast_dynamics_counts_rejections_across_steps_and_stops_a_stuck_run():
    """ForecastDynamics rebuilds its state from the atoms every step, so the rejection count must survive between
    steps: an atom pushed 1 Å into its neighbours (EMT) at every interval is rejected each time, the atoms stay
    where they started, and the run stops after MAX_REJECTED_IN_A_ROW intervals with the reason."""
    from ase import units
    from ase.calculators.emt import EMT

    from mlmd.ase import ForecastDynamics
    from mlmd.dynamics.guards import UnstableRunError
    from mlmd.dynamics.rollout_engine import MAX_REJECTED_IN_A_ROW

    atoms = copper(2)
    atoms.set_velocities(np.random.default_rng(0).normal(0, 0.002, (len(atoms), 3)) / units.fs)
    atoms.calc = EMT()
    start = atoms.get_positions()
    dynamics = ForecastDynamics(atoms, PushAtomZero(), seed=3, energy_correction=True)
    with pytest.warns(RuntimeWarning, match="rejected"):
        dynamics.run(MAX_REJECTED_IN_A_ROW - 1)
        np.testing.assert_allclose(atoms.get_positions(), start, rtol=0, atol=1e-12)
        with pytest.raises(UnstableRunError, match="forecasts in a row"):
            dynamics.run(1)


def test_training_calibrates_the_spreads_on_the_validation_pairs(stochastic_forecaster):
    """After `mlmd train`, the variance the exported model's samples add equals the variance its mean lacks on
    the validation run: sum |r_d|^2 = 3 sum sigma_d^2 and sum m |r_v|^2 = 3 sum m sigma_v^2 (recomputed here
    from the files, not from the trainer's sums)."""
    import mlmd
    from mlmd.cli import main as mlmd_main
    from mlmd.trajectories import TrajectoryDataset

    best = stochastic_forecaster.parent / "best.pt"
    assert mlmd_main(["export", str(stochastic_forecaster.parent / "train" / "best.pt"), "-o", str(best)]) == 0
    model = mlmd.load_model(best)
    factors = model.metadata["spread_calibration"]
    assert len(factors) == 2 and all(f > 0 for f in factors)
    assert any(abs(f - 1.0) > 1e-3 for f in factors)  # two epochs do not calibrate the NLL by themselves
    runs = sorted((stochastic_forecaster.parent / "runs").glob("run-*.h5"))
    dataset = TrajectoryDataset.from_files([str(run) for run in runs], 10, 1, 4)
    validation = dataset.split_by_run(1, 0).validation
    masses = dict(zip(model.metadata["config"]["species"], model.metadata["config"]["masses"]))
    sums = np.zeros(4)
    for batch in dataset.batches(validation.tolist(), 4, torch.float64):
        out = model.module(batch["positions"], batch["atomic_numbers"], batch["cell"], batch["pbc"], batch["batch"],
                           batch["velocities"])
        m = torch.tensor([masses[int(z)] for z in batch["atomic_numbers"]], dtype=torch.float64)
        r_d = batch["positions"] + out["displacement"] - batch["target_positions"][0]
        r_v = out["velocities"] - batch["target_velocities"][0]
        sums += [float((r_d ** 2).sum()), 3 * float((out["displacement_spread"] ** 2).sum()),
                 float((m[:, None] * r_v ** 2).sum()), 3 * float((m * out["velocity_spread"] ** 2).sum())]
    assert sums[0] / sums[1] == pytest.approx(1.0, rel=1e-6)
    assert sums[2] / sums[3] == pytest.approx(1.0, rel=1e-6)

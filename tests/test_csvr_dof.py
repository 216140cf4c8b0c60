"""CSVR degrees of freedom (issue 14): components that start at zero and are conserved carry no kinetic
energy, so N_f = 3N - 3 (zero total momentum) or 3N - 6 (an isolated molecule also without angular
momentum), and the thermostat must target N_f kT / 2, not 3N kT / 2."""

import math

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

from integrators import rollout
from integrators.state import angular_momentum, conserved_components, degrees_of_freedom, init_state
from mlmd.constants import AMU_A2_PER_FS2_EV, KB_EV_PER_K
from mlmd.dynamics.engine import MDSettings
from mlmd.dynamics.torch_engine import TorchEngine

torch.set_num_threads(1)


def water():
    return Atoms("OH2", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])


def methane():
    a = 0.63
    return Atoms("CH4", positions=[[0, 0, 0], [a, a, a], [-a, -a, a], [-a, a, -a], [a, -a, -a]])


class MorseNetwork:
    """Morse springs D (1 - exp(-a (r - r0)))² between every pair of atoms of each replica, r0 the pair's
    distance in ``atoms``: invariant under translation and rotation, anharmonic, no fixed point but the
    molecule's shape. The model contract with forces by autograd."""

    def __init__(self, atoms, depth_eV=5.0, width_per_A=1.0):
        self.n = len(atoms)
        self.rest = torch.as_tensor(atoms.get_all_distances(), dtype=torch.float64)
        self.depth, self.width = depth_eV, width_per_A
        self.pairs = torch.triu_indices(self.n, self.n, 1)

    def __call__(self, positions, atomic_numbers, cell, pbc, batch):
        x = positions.detach().requires_grad_(True)
        r = x.reshape(-1, self.n, 3)
        i, j = self.pairs
        distance = (r[:, i] - r[:, j]).norm(dim=2)
        stretch = 1.0 - torch.exp(-self.width * (distance - self.rest[i, j]))
        energy = (self.depth * stretch * stretch).sum(dim=1)
        (gradient,) = torch.autograd.grad(energy.sum(), x)
        return {"energy": energy.detach(), "forces": -gradient}


def at_rest_overall(atoms, temperature_K, seed):
    """``atoms`` with ASE's Maxwell-Boltzmann velocities, then zero momentum and zero angular momentum."""
    atoms = atoms.copy()
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed),
                                 force_temp=False)
    Stationary(atoms)
    ZeroRotation(atoms)
    return atoms


def internal_temperatures(engine, atoms, steps, burn_in, every):
    """Per-replica time averages ``[K]`` of 2 K / ((3N - 6) k_B) with K = ½ Σ m v² computed here."""
    masses = torch.as_tensor(np.tile(atoms.get_masses(), engine.state.n_replicas) * AMU_A2_PER_FS2_EV)
    dof = 3 * len(atoms) - 6
    engine.advance(burn_in, lambda k: None)
    samples = []
    for _ in range(steps // every):
        engine.advance(every, lambda k: None)
        state = engine.state
        kinetic = torch.zeros(state.n_replicas, dtype=torch.float64).index_add(
            0, state.batch, 0.5 * masses * (state.velocities ** 2).sum(1))
        samples.append(2.0 * kinetic / (dof * KB_EV_PER_K))
    return torch.stack(samples).mean(0).numpy()


@pytest.mark.parametrize("make", [water, methane])
def test_csvr_holds_the_internal_temperature_of_a_molecule_without_momentum(make):
    """2R replicas of a molecule started with zero total and angular momentum, CSVR at T with τ = 50 fs;
    replicas R..2R-1 use the old count (every component, 3N, as if nothing were conserved).

    Reference (independent of the code): at stationarity the thermostat's mean pull (K̄ - ⟨K⟩)/τ must
    vanish, since the Hamiltonian part only moves energy between K and U; so ⟨K⟩ = K̄ for any potential,
    and the canonical value with the 3N - 6 components that carry kinetic energy is (3N - 6) kT / 2,
    i.e. the internal temperature 2⟨K⟩/((3N - 6) k_B) is T. The old count makes it T · 3N/(3N - 6).

    Tolerance: K of N_f components fluctuates by sqrt(2/N_f) of its mean; CSVR decorrelates the total
    energy in about 2τ, so a run of length L averages n ≈ L/(4τ) independent values per replica and the
    mean over R replicas has a relative standard error ≈ sqrt(2/N_f) / sqrt(R L/(4τ)) (2.6 % for water,
    1.5 % for methane, here). The test uses the measured spread across replicas (checked against twice
    that estimate) and allows 5 standard errors."""
    atoms, temperature, replicas, steps, tau = make(), 300.0, 64, 3000, 50.0
    n_f = 3 * len(atoms) - 6
    settings = MDSettings(integrator="csvr", temperature_K=temperature, friction_per_ps=1000.0 / tau,
                          timestep_fs=1.0, seed=7, replicas=2 * replicas)
    engine = TorchEngine(at_rest_overall(atoms, temperature, seed=1), MorseNetwork(atoms), settings)
    assert engine.state.constrained_dof.tolist() == [6] * (2 * replicas)
    assert degrees_of_freedom(engine.state).tolist() == [float(n_f)] * (2 * replicas)
    old_count = torch.arange(2 * replicas) >= replicas
    engine.state = engine.state.replace(constrained_dof=torch.where(old_count, 0, engine.state.constrained_dof))
    measured = internal_temperatures(engine, atoms, steps, burn_in=500, every=4)
    estimate = temperature * math.sqrt(2 / n_f) / math.sqrt(replicas * steps / (4 * tau))
    for name, values, expected in (("3N - 6", measured[:replicas], temperature),
                                   ("3N (old)", measured[replicas:], temperature * 3 * len(atoms) / n_f)):
        error = values.std(ddof=1) / math.sqrt(replicas)
        print(f"{atoms.get_chemical_formula()} counting {name}: internal T {values.mean():.1f} ± {error:.1f} K "
              f"(expected {expected:.1f}, a priori error {estimate * expected / temperature:.1f})")
        assert error < 2 * estimate * expected / temperature
        assert abs(values.mean() - expected) < 5 * error
        if expected != temperature:  # the two counts are told apart by far more than the noise
            assert abs(values.mean() - temperature) > 10 * error
    # Momentum and angular momentum stayed at zero, and the engine reports the same temperature.
    state = engine.state
    assert float(angular_momentum(state)[:replicas].abs().max()) < 1e-12
    snapshot = engine.snapshot()
    kinetic = torch.as_tensor(snapshot.ekin_eV[:replicas])
    np.testing.assert_allclose(snapshot.temperature_K[:replicas], 2 * kinetic / (n_f * KB_EV_PER_K), rtol=1e-12)


def engine_for(atoms, integrator="csvr", replicas=2):
    settings = MDSettings(integrator=integrator, temperature_K=300.0, friction_per_ps=5.0, timestep_fs=0.5,
                          seed=3, replicas=replicas)
    return TorchEngine(atoms, MorseNetwork(atoms), settings)


def test_only_what_is_conserved_is_counted():
    still = at_rest_overall(water(), 300.0, seed=2)
    assert engine_for(still).state.constrained_dof.tolist() == [6, 6]
    assert engine_for(still, "verlet").state.constrained_dof.tolist() == [6, 6]
    assert engine_for(still, "baoab").state.constrained_dof.tolist() == [0, 0]  # Langevin noise moves P and L
    assert engine_for(water()).state.constrained_dof.tolist() == [0, 0]  # the sampler's draws carry momentum
    periodic = still.copy()
    periodic.cell, periodic.pbc = [8.0, 8.0, 8.0], True
    assert engine_for(periodic).state.constrained_dof.tolist() == [3, 3]  # images: no angular momentum
    from ase.constraints import FixAtoms

    pinned = still.copy()
    pinned.set_constraint(FixAtoms(indices=[0]))
    assert engine_for(pinned).state.constrained_dof.tolist() == [0, 0]
    dimer = Atoms("N2", positions=[[0, 0, 0], [1.1, 0, 0]], velocities=[[0.0, 0.0, 0.01], [0.0, 0.0, -0.01]])
    assert engine_for(dimer).state.constrained_dof.tolist() == [3, 3]  # a tumbling dimer: L ≠ 0
    dimer.set_velocities([[0.01, 0.0, 0.0], [-0.01, 0.0, 0.0]])
    engine = engine_for(dimer)
    assert engine.state.constrained_dof.tolist() == [5, 5]
    assert degrees_of_freedom(engine.state).tolist() == [1.0, 1.0]


def test_a_potential_that_pushes_the_whole_molecule_counts_nothing():
    atoms = at_rest_overall(water(), 300.0, seed=2)
    network = MorseNetwork(atoms)

    def field(*inputs):
        out = network(*inputs)
        return {"energy": out["energy"], "forces": out["forces"] + torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64)}

    settings = MDSettings(integrator="csvr", temperature_K=300.0, friction_per_ps=5.0, timestep_fs=0.5, seed=3)
    assert TorchEngine(atoms, field, settings).state.constrained_dof.tolist() == [0]


def test_rollout_keeps_a_momentum_free_molecule_momentum_free():
    """A forecaster that adds a drift and a spin to every velocity: the rollout removes both for a replica
    started without momentum, and counts 3N - 6; a replica counted as unconstrained keeps them."""
    atoms = at_rest_overall(water(), 300.0, seed=4)
    n = len(atoms)
    positions = torch.as_tensor(np.tile(atoms.positions, (2, 1)))
    velocities = torch.as_tensor(np.tile(atoms.get_velocities() * units.fs, (2, 1)))
    masses = torch.as_tensor(np.tile(atoms.get_masses(), 2) * AMU_A2_PER_FS2_EV)
    state = rollout.init(positions, velocities, masses, torch.as_tensor(np.tile(atoms.numbers, 2)),
                         torch.zeros(2, 3, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.bool),
                         torch.arange(2).repeat_interleave(n), kT=0.025, friction=0.01, seeds=0)
    state = state.replace(constrained_dof=torch.where(torch.arange(2) == 0, conserved_components(state), 0))
    assert state.constrained_dof.tolist() == [6, 0]

    def pushy(x, z, cell, pbc, batch, v):
        spin = torch.cross(torch.tensor([[0.0, 0.0, 0.01]], dtype=x.dtype).expand_as(x), x, dim=1)
        return {"displacement": 0.5 * v, "velocities": v + 0.003 + spin}

    for _ in range(20):
        state = rollout.step(state, pushy, 0.5)
    momentum = torch.zeros(2, 3, dtype=torch.float64).index_add(0, state.batch, masses.unsqueeze(1) * state.velocities)
    assert float(momentum[0].norm()) < 1e-12 and float(angular_momentum(state)[0].norm()) < 1e-12
    assert float(momentum[1].norm()) > 1e-3 and float(angular_momentum(state)[1].norm()) > 1e-3
    assert degrees_of_freedom(state).tolist() == [3.0, 9.0]


def test_restart_keeps_the_count(tmp_path):
    engine = engine_for(at_rest_overall(water(), 300.0, seed=2))
    engine.advance(5, lambda k: None)
    payload = engine.payload(engine.save_point())
    assert payload["constrained_dof"].tolist() == [6, 6]
    settings = MDSettings(integrator="csvr", temperature_K=300.0, friction_per_ps=5.0, timestep_fs=0.5, seed=3,
                          replicas=2)
    moved = water()
    moved.set_velocities(np.full((3, 3), 0.01))  # what the fresh start would see is irrelevant on restart
    resumed = TorchEngine(moved, MorseNetwork(water()), settings, restart=payload)
    assert resumed.state.constrained_dof.tolist() == [6, 6]


def test_single_replica_drivers_count_what_the_forecaster_conserves():
    """The ASE and OpenMM forecast drivers rebuild a one-replica state every call: it must count N_f as the
    rollout engine does (3N - 6 for a molecule at rest overall, 3N - 3 for a periodic cell without momentum,
    3N when momentum is not zero), else their CSVR heats a molecule by 3N / (3N - 6)."""
    from mlmd.dynamics.rollout_engine import single_replica_state

    def state_of(atoms, velocities, pbc):
        cell = np.eye(3) * 10.0 if pbc else np.zeros((3, 3))
        return single_replica_state(atoms.positions, velocities, atoms.get_masses(), atoms.numbers, cell,
                                    [pbc] * 3, np.zeros(len(atoms), dtype=bool), 300.0, 0.001, 0, 0)

    atoms = at_rest_overall(methane(), 300.0, seed=5)
    velocities = atoms.get_velocities() * units.fs
    assert degrees_of_freedom(state_of(atoms, velocities, False)).tolist() == [9.0]
    assert degrees_of_freedom(state_of(atoms, velocities, True)).tolist() == [12.0]
    assert degrees_of_freedom(state_of(atoms, velocities + 0.001, False)).tolist() == [15.0]

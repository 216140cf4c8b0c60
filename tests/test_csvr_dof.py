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
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
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
    """R replicas of a molecule started with zero total and angular momentum, CSVR at T with τ = 50 fs.

    Reference (independent of the code): at stationarity the thermostat's mean pull (K̄ - ⟨K⟩)/τ must
    vanish, since the Hamiltonian part only moves energy between K and U; so ⟨K⟩ = K̄ for any potential,
    and the canonical value with the 3N - 6 components that carry kinetic energy is (3N - 6) kT / 2,
    i.e. the internal temperature 2⟨K⟩/((3N - 6) k_B) is T. The old count (3N) makes it T · 3N/(3N - 6).

    Tolerance: K of N_f components fluctuates by sqrt(2/N_f) of its mean; CSVR decorrelates the total
    energy in about 2τ, so a run of length L averages n ≈ L/(4τ) independent values per replica and the
    mean over R replicas has a relative standard error ≈ sqrt(2/N_f) / sqrt(R L/(4τ)) (3.1 % for water,
    1.8 % for methane, here). The test uses the measured spread across replicas (checked against twice
    that estimate) and allows 5 standard errors."""
    atoms, temperature, replicas, steps = make(), 300.0, 64, 4000
    n_f = 3 * len(atoms) - 6
    settings = MDSettings(integrator="csvr", temperature_K=temperature, friction_per_ps=20.0, timestep_fs=1.0,
                          seed=7, replicas=replicas)
    engine = TorchEngine(at_rest_overall(atoms, temperature, seed=1), MorseNetwork(atoms), settings)
    assert engine.state.constrained_dof.tolist() == [6] * replicas
    assert degrees_of_freedom(engine.state).tolist() == [float(n_f)] * replicas
    measured = internal_temperatures(engine, atoms, steps, burn_in=500, every=4)
    error = measured.std(ddof=1) / math.sqrt(replicas)
    estimate = temperature * math.sqrt(2 / n_f) / math.sqrt(replicas * steps / (4 * 50.0))
    print(f"{atoms.get_chemical_formula()}: internal T {measured.mean():.1f} ± {error:.1f} K "
          f"(estimate ± {estimate:.1f}), target {temperature}")
    assert error < 2 * estimate
    assert abs(measured.mean() - temperature) < 5 * error
    # Momentum and angular momentum stayed at zero, and the engine reports the same temperature.
    state = engine.state
    assert float(angular_momentum(state).abs().max()) < 1e-10
    snapshot = engine.snapshot()
    kinetic = torch.as_tensor(snapshot.ekin_eV)
    np.testing.assert_allclose(snapshot.temperature_K, 2 * kinetic / (n_f * KB_EV_PER_K), rtol=1e-12)

    # The old count: every component, 3N, as if nothing were conserved.
    old = TorchEngine(at_rest_overall(atoms, temperature, seed=1), MorseNetwork(atoms), settings)
    old.state = old.state.replace(constrained_dof=torch.zeros_like(old.state.constrained_dof))
    hot = internal_temperatures(old, atoms, steps, burn_in=500, every=4)
    hot_error = hot.std(ddof=1) / math.sqrt(replicas)
    predicted = temperature * 3 * len(atoms) / n_f
    print(f"  old count: {hot.mean():.1f} ± {hot_error:.1f} K, predicted {predicted:.1f} K")
    assert abs(hot.mean() - predicted) < 5 * hot_error
    assert abs(hot.mean() - temperature) > 10 * hot_error

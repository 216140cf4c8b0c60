"""Integrators against analytic results: Boltzmann statistics, known discretisation bias,
energy drift order, canonical kinetic energy, and batch invariance."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from integrators import INTEGRATORS
from integrators.csvr import counted_components, csvr_factors
from integrators.splitting import drift, kick, ornstein_uhlenbeck
from integrators.state import degrees_of_freedom, init_state, kinetic_energy, maxwell_boltzmann_velocities

SPRING = 1.0  # energy/length², with unit masses: omega = 1, stability limit h < 2


def harmonic(positions, atomic_numbers, cell, pbc, batch):
    energy = torch.zeros(cell.shape[0], dtype=positions.dtype).index_add(
        0, batch, 0.5 * SPRING * (positions**2).sum(1))
    return {"energy": energy, "forces": -SPRING * positions}


def double_well(positions, atomic_numbers, cell, pbc, batch):
    """V = (x² - 1)² + y² / 2 + z² / 2, a 2D double well with a harmonic third axis."""
    x, y, z = positions.unbind(1)
    energy = (x * x - 1) ** 2 + 0.5 * y * y + 0.5 * z * z
    forces = torch.stack([-4 * x * (x * x - 1), -y, -z], dim=1)
    return {"energy": torch.zeros(cell.shape[0], dtype=positions.dtype).index_add(0, batch, energy),
            "forces": forces}


def replicas(energy_forces, n_replicas, atoms_per_replica=1, kT=1.0, friction=1.0, seed=0, positions=None,
             fixed=None):
    n = n_replicas * atoms_per_replica
    positions = torch.zeros(n, 3, dtype=torch.float64) if positions is None else positions
    state = init_state(
        energy_forces, positions, torch.ones(n, dtype=torch.float64), torch.ones(n, dtype=torch.int64),
        torch.zeros(n_replicas, 3, 3, dtype=torch.float64), torch.zeros(n_replicas, 3, dtype=torch.bool),
        torch.arange(n_replicas).repeat_interleave(atoms_per_replica), kT=kT, friction=friction,
        seeds=torch.arange(n_replicas) + 1000 * seed, fixed=fixed)
    return state.replace(velocities=maxwell_boltzmann_velocities(state))


def sample(scheme, energy_forces, state, timestep, steps, burn_in):
    step = INTEGRATORS[scheme]
    positions, velocities = [], []
    for n in range(steps):
        state = step(state, energy_forces, timestep)
        if n >= burn_in and n % 5 == 0:
            positions.append(state.positions.clone())
            velocities.append(state.velocities.clone())
    return state, torch.stack(positions), torch.stack(velocities)


@pytest.mark.slow
@pytest.mark.parametrize("timestep", [0.5, 1.5])
def test_baoab_and_gjf_configurations_are_exact_on_the_harmonic_oscillator(timestep):
    """Leimkuhler & Matthews: BAOAB's <x²> = kT/k for every stable step; GJF shares this.
    OBABO instead gives kT/k / (1 - h²/4) and exact velocities, a known bias that the
    same run must reproduce (so the test can tell the schemes apart)."""
    expected = {"baoab": 1.0, "gjf": 1.0, "obabo": 1.0 / (1.0 - timestep**2 / 4)}
    for scheme, x2_exact in expected.items():
        _, x, v = sample(scheme, harmonic, replicas(harmonic, 1000), timestep, steps=1000, burn_in=100)
        x2 = float((x**2).mean())
        assert x2 == pytest.approx(x2_exact, rel=0.015), scheme
        if scheme == "obabo":
            assert float((v**2).mean()) == pytest.approx(1.0, rel=0.015)


@pytest.mark.slow
def test_double_well_samples_the_boltzmann_distribution():
    """Histogram of x against exp(-V(x)/kT) normalised by quadrature; y against a Gaussian."""
    kT = 0.5
    start = torch.zeros(2000, 3, dtype=torch.float64)
    start[:, 0] = torch.where(torch.arange(2000) % 2 == 0, 1.0, -1.0)
    state = replicas(double_well, 2000, kT=kT, positions=start)
    _, x, _ = sample("baoab", double_well, state, 0.05, steps=3000, burn_in=500)
    xs = x[:, :, 0].reshape(-1).numpy()
    edges = np.linspace(-2.0, 2.0, 21)
    weight = lambda q: math.exp(-((q * q - 1) ** 2) / kT)
    norm = integrate.quad(weight, -4, 4)[0]
    expected = np.array([integrate.quad(weight, a, b)[0] / norm for a, b in zip(edges[:-1], edges[1:])])
    observed = np.histogram(xs, bins=edges)[0] / len(xs)
    np.testing.assert_allclose(observed, expected, atol=0.006)
    ys = x[:, :, 1].reshape(-1).numpy()
    assert np.var(ys) == pytest.approx(kT, rel=0.03)


@pytest.mark.slow
def test_velocities_are_maxwell_boltzmann():
    """OBABO velocities are exact: a KS test against N(0, kT/m) on a thinned sample."""
    state = replicas(harmonic, 400, kT=2.0)
    _, _, v = sample("obabo", harmonic, state, 0.5, steps=400, burn_in=50)
    thinned = v[::8].reshape(-1).numpy()
    assert stats.kstest(thinned, "norm", args=(0.0, math.sqrt(2.0))).pvalue > 1e-3


@pytest.mark.slow
def test_csvr_kinetic_energy_is_canonical():
    """For N_f degrees of freedom K is Gamma(N_f/2, kT) distributed: mean N_f kT/2, variance N_f kT²/2.
    Harmonic oscillators started from the canonical distribution, which CSVR must preserve."""
    canonical = math.sqrt(0.7) * torch.randn(2000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    state = replicas(harmonic, 500, atoms_per_replica=4, kT=0.7, friction=0.2, positions=canonical)
    step = INTEGRATORS["csvr"]
    kinetic = []
    for n in range(1200):
        state = step(state, harmonic, 0.05)
        if n >= 200 and n % 10 == 0:
            kinetic.append(kinetic_energy(state))
    kinetic = torch.stack(kinetic).reshape(-1).numpy()
    dof = 12.0
    assert kinetic.mean() == pytest.approx(dof * 0.7 / 2, rel=0.02)
    assert kinetic.var() == pytest.approx(dof * 0.7**2 / 2, rel=0.08)
    assert stats.kstest(kinetic[::7], stats.gamma(dof / 2, scale=0.7).cdf).pvalue > 1e-3


def test_velocity_verlet_energy_error_shrinks_as_timestep_squared():
    """Max |E(t) - E(0)| over a fixed time, at h and h/2, should differ by a factor ≈ 4."""
    errors = []
    for timestep in (0.04, 0.02):
        start = torch.tensor([[1.3, 0.4, -0.2]], dtype=torch.float64)
        state = replicas(double_well, 1, positions=start)
        total0 = float(state.energy[0] + kinetic_energy(state)[0])
        worst = 0.0
        for _ in range(int(20 / timestep)):
            state = INTEGRATORS["verlet"](state, double_well, timestep)
            worst = max(worst, abs(float(state.energy[0] + kinetic_energy(state)[0]) - total0))
        errors.append(worst)
    assert 3.5 < errors[0] / errors[1] < 4.5
    assert errors[1] < 1e-3


@pytest.mark.parametrize("scheme", sorted(INTEGRATORS))
def test_batched_replicas_equal_replicas_run_alone(scheme):
    batched = replicas(double_well, 4, atoms_per_replica=3, kT=0.8, friction=0.5)
    batched = batched.replace(kT=torch.tensor([0.3, 0.8, 1.2, 2.0], dtype=torch.float64))
    alone = []
    for b in range(4):
        rows = batched.batch == b
        single = init_state(double_well, batched.positions[rows], batched.masses[rows],
                            batched.atomic_numbers[rows], batched.cell[b:b + 1], batched.pbc[b:b + 1],
                            torch.zeros(3, dtype=torch.int64), kT=float(batched.kT[b]), friction=0.5,
                            seeds=int(batched.seeds[b]), velocities=batched.velocities[rows])
        alone.append(single)
    for _ in range(50):
        batched = INTEGRATORS[scheme](batched, double_well, 0.05)
        alone = [INTEGRATORS[scheme](s, double_well, 0.05) for s in alone]
    torch.testing.assert_close(batched.positions, torch.cat([s.positions for s in alone]), rtol=0, atol=0)
    torch.testing.assert_close(batched.velocities, torch.cat([s.velocities for s in alone]), rtol=0, atol=0)


@pytest.mark.parametrize("scheme", sorted(INTEGRATORS))
def test_fixed_atoms_stay_put_and_seeds_reproduce(scheme):
    def run(seed):
        fixed = torch.tensor([True, False, False, False, True, False])
        state = replicas(double_well, 2, atoms_per_replica=3, seed=seed, fixed=fixed,
                         positions=torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
        start = state.positions.clone()
        for _ in range(20):
            state = INTEGRATORS[scheme](state, double_well, 0.05)
        assert torch.equal(state.positions[fixed], start[fixed])
        assert not torch.equal(state.positions[~fixed], start[~fixed])
        return state.positions

    assert torch.equal(run(0), run(0))
    if scheme != "verlet":
        assert not torch.equal(run(0), run(1))


def test_degrees_of_freedom_exclude_fixed_atoms():
    state = replicas(harmonic, 2, atoms_per_replica=3)
    state = state.replace(fixed=torch.tensor([True, False, False, False, False, False]))
    assert degrees_of_freedom(state).tolist() == [6.0, 9.0]


def test_kick_and_drift_pieces():
    """B: v + h F/m in both roundings; A: x + h v (numbers worked by hand)."""
    state = replicas(harmonic, 1, atoms_per_replica=2, positions=torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 4.0]],
                                                                              dtype=torch.float64))
    state = state.replace(masses=torch.tensor([4.0, 0.5], dtype=torch.float64),
                          velocities=torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64))
    expected_v = torch.tensor([[1.0 - 0.125, 0.25, -0.0625], [0.0, 2.0, -4.0]], dtype=torch.float64)  # F = -x
    assert torch.equal(kick(state, 0.5).velocities, expected_v)
    assert torch.equal(kick(state, 0.5, 1.0 / state.masses.unsqueeze(1)).velocities, expected_v)
    moved = drift(state, 0.25)
    assert torch.equal(moved.positions, torch.tensor([[1.25, -2.0, 0.5], [0.0, 0.5, 4.0]], dtype=torch.float64))
    assert torch.equal(moved.velocities, state.velocities) and moved.step == state.step


def test_ornstein_uhlenbeck_piece_has_the_exact_transition_density():
    """From v0, v' ~ N(c v0, (1 - c²) kT/m) with c = exp(-γ h): mean and variance within 5 standard errors."""
    n, kT, gamma, h = 20000, 0.6, 0.3, 2.0
    state = replicas(harmonic, n, kT=kT, friction=gamma)
    state = state.replace(masses=torch.full((n,), 2.0, dtype=torch.float64),
                          velocities=torch.tensor([[1.5, -0.5, 0.0]], dtype=torch.float64).expand(n, 3).clone())
    v = ornstein_uhlenbeck(state, h, stream=0).velocities
    c = math.exp(-gamma * h)
    variance = (1 - c * c) * kT / 2.0
    np.testing.assert_allclose(v.mean(0).numpy(), c * np.array([1.5, -0.5, 0.0]), atol=5 * math.sqrt(variance / n))
    np.testing.assert_allclose(v.var(0).numpy(), variance, rtol=5 * math.sqrt(2 / n))
    assert not torch.equal(v, ornstein_uhlenbeck(state, h, stream=1).velocities)


def test_csvr_counts_the_first_dof_components_of_the_free_atoms():
    batch = torch.tensor([0, 0, 0, 1, 1])
    fixed = torch.tensor([False, True, False, False, False])
    counted = counted_components(torch.tensor([4.0, 6.0], dtype=torch.float64), batch, fixed)
    assert counted.tolist() == [[True] * 3, [False] * 3, [True, False, False], [True] * 3, [True] * 3]


def test_csvr_with_instant_relaxation_draws_the_canonical_kinetic_energy_of_dof_components():
    """c = 0: K' = α² K = (kT/2) Σ_{i≤N_f} R_i², a Gamma(N_f/2, kT) variable. With N_f = 9 < 12 components
    (3N - 3, as for a run at zero momentum), the mean must be 4.5 kT, not 6 kT."""
    n_replicas, atoms, kT = 4000, 4, 0.7
    batch = torch.arange(n_replicas).repeat_interleave(atoms)
    xi = torch.randn(n_replicas * atoms, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    kinetic = torch.rand(n_replicas, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) + 0.1
    dof = torch.full((n_replicas,), 9.0, dtype=torch.float64)
    alpha = csvr_factors(kinetic, dof, torch.full_like(dof, kT), torch.full_like(dof, 1e3), 1.0, xi, batch,
                         torch.zeros(n_replicas * atoms, dtype=torch.bool))
    new_kinetic = (alpha * alpha * kinetic).numpy()
    assert new_kinetic.mean() == pytest.approx(4.5 * kT, rel=0.04)  # standard error 0.75 %
    assert stats.kstest(new_kinetic, stats.gamma(4.5, scale=kT).cdf).pvalue > 1e-3

"""OpenMM BAOAB and GJF CustomIntegrators: exact deterministic limits against NumPy, and sampling
statistics against analytic values and OpenMM's own LangevinMiddleIntegrator."""

import math

import numpy as np
import openmm
import pytest
from openmm import unit

from mlmd.constants import EV_KJ_PER_MOL, FS_PS, KB_EV_PER_K
from mlmd.errors import MLMDError
from mlmd.openmm import OPENMM_INTEGRATORS, baoab_integrator, gjf_integrator, kt_kj_per_mol

MASS_AMU = 10.0
TEMPERATURE_K = 300.0


def oscillators(n, spring_kj_per_mol_nm2, masses=None):
    """``n`` independent 3D harmonic oscillators, V = k/2 |x|², as an OpenMM System."""
    system = openmm.System()
    force = openmm.CustomExternalForce("0.5*k*(x^2 + y^2 + z^2)")
    force.addGlobalParameter("k", spring_kj_per_mol_nm2)
    for i in range(n):
        system.addParticle(MASS_AMU if masses is None else masses[i])
        force.addParticle(i, [])
    system.addForce(force)
    return system


def context(system, integrator, platform="Reference"):
    return openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))


def numpy_langevin(scheme, x, v, spring, mass, h, gamma, steps):
    """BAOAB or GJF with zero temperature (no noise), written out in NumPy (nm, ps, kJ/mol)."""
    force = lambda q: -spring * q
    c = math.exp(-gamma * h)
    b = 1.0 / (1.0 + 0.5 * gamma * h)
    a = (1.0 - 0.5 * gamma * h) * b
    for _ in range(steps):
        if scheme == "baoab":
            v = v + 0.5 * h * force(x) / mass
            x = x + 0.5 * h * v
            v = c * v
            x = x + 0.5 * h * v
            v = v + 0.5 * h * force(x) / mass
        else:
            f = force(x)
            x = x + b * h * v + 0.5 * b * h * h * f / mass
            v = a * v + 0.5 * h * (a * f + force(x)) / mass
    return x, v


def test_units_at_the_boundary():
    integrator = baoab_integrator(300.0, 2.0, 1.5, seed=3)
    assert integrator.getStepSize().value_in_unit(unit.picosecond) == pytest.approx(1.5e-3)
    # k_B T at 300 K is 2.494 kJ/mol (R = 8.314462618 J/mol/K)
    assert integrator.getGlobalVariableByName("kT") == pytest.approx(8.314462618e-3 * 300.0, rel=1e-9)
    assert integrator.getGlobalVariableByName("kT") == pytest.approx(KB_EV_PER_K * EV_KJ_PER_MOL * 300.0)
    assert integrator.getGlobalVariableByName("gamma") == 2.0
    assert integrator.getRandomNumberSeed() == 3
    middle = OPENMM_INTEGRATORS["langevin-middle"](300.0, 2.0, 1.5)
    assert middle.getFriction().value_in_unit(unit.picosecond**-1) == pytest.approx(2.0)
    assert middle.getTemperature().value_in_unit(unit.kelvin) == pytest.approx(300.0)


@pytest.mark.parametrize("bad", [dict(timestep_fs=0.0), dict(temperature_K=-1.0), dict(friction_per_ps=-0.1)])
def test_bad_arguments_are_refused(bad):
    arguments = dict(temperature_K=300.0, friction_per_ps=1.0, timestep_fs=1.0) | bad
    with pytest.raises(MLMDError):
        gjf_integrator(**arguments)


@pytest.mark.parametrize("scheme", ["baoab", "gjf"])
@pytest.mark.parametrize("gamma", [0.0, 20.0])
def test_noise_free_limit_matches_numpy(scheme, gamma):
    """At T = 0 both schemes are deterministic: friction 0 is velocity Verlet, friction > 0 damps."""
    spring, h, steps = 4.0e4, 0.004, 25  # omega h = 0.25
    rng = np.random.default_rng(0)
    x0, v0 = rng.normal(scale=0.05, size=(3, 3)), rng.normal(scale=0.5, size=(3, 3))
    integrator = OPENMM_INTEGRATORS[scheme](0.0, gamma, h / FS_PS)
    ctx = context(oscillators(3, spring), integrator)
    ctx.setPositions(x0)
    ctx.setVelocities(v0)
    integrator.step(steps)
    state = ctx.getState(getPositions=True, getVelocities=True)
    x, v = numpy_langevin(scheme, x0, v0, spring, MASS_AMU, h, gamma, steps)
    np.testing.assert_allclose(state.getPositions(asNumpy=True)._value, x, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(state.getVelocities(asNumpy=True)._value, v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scheme", ["baoab", "gjf"])
def test_seeded_runs_repeat_and_massless_particles_stay_put(scheme):
    def run(seed):
        integrator = OPENMM_INTEGRATORS[scheme](300.0, 5.0, 2.0, seed=seed)
        ctx = context(oscillators(4, 1.0e4, masses=[0.0, MASS_AMU, MASS_AMU, MASS_AMU]), integrator)
        ctx.setPositions(np.full((4, 3), 0.1))
        integrator.step(20)
        return ctx.getState(getPositions=True).getPositions(asNumpy=True)._value

    first = run(11)
    np.testing.assert_array_equal(first, run(11))
    assert not np.array_equal(first, run(12))
    np.testing.assert_array_equal(first[0], [0.1, 0.1, 0.1])
    assert np.all(first[1:] != 0.1)


def sample_oscillators(scheme, omega_h, n=1000, timestep_fs=2.0, friction_per_ps=100.0, steps=1000, every=10):
    """<x²>/(kT/k) and <v²>/(kT/m) over the second half of a run started at rest at the origin."""
    omega = omega_h / (timestep_fs * FS_PS)
    spring = MASS_AMU * omega**2
    integrator = OPENMM_INTEGRATORS[scheme](TEMPERATURE_K, friction_per_ps, timestep_fs, seed=1234)
    ctx = context(oscillators(n, spring), integrator, platform="CPU")
    ctx.setPositions(np.zeros((n, 3)))
    ctx.setVelocities(np.zeros((n, 3)))
    integrator.step(steps // 2)
    x2, v2 = [], []
    for _ in range(steps // (2 * every)):
        integrator.step(every)
        state = ctx.getState(getPositions=True, getVelocities=True)
        x2.append(np.mean(state.getPositions(asNumpy=True)._value ** 2))
        v2.append(np.mean(state.getVelocities(asNumpy=True)._value ** 2))
    kT = kt_kj_per_mol(TEMPERATURE_K)
    return np.mean(x2) / (kT / spring), np.mean(v2) / (kT / MASS_AMU)


@pytest.fixture(scope="module")
def langevin_middle():
    return {omega_h: sample_oscillators("langevin-middle", omega_h) for omega_h in (1.0, 0.1)}


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["baoab", "gjf"])
def test_configurational_sampling_is_exact_at_large_steps(scheme, langevin_middle):
    """At omega h = 1, <x²> = kT/k exactly for BAOAB, GJF and LangevinMiddle alike; the
    on-site velocities of BAOAB and GJF are cooled by the known factor 1 - (omega h)²/4,
    while LangevinMiddle's half-step velocities are exact. Standard errors are ~0.3 %."""
    x2, v2 = sample_oscillators(scheme, 1.0)
    middle_x2, middle_v2 = langevin_middle[1.0]
    assert x2 == pytest.approx(1.0, rel=0.012)
    assert x2 == pytest.approx(middle_x2, rel=0.015)
    assert v2 == pytest.approx(1.0 - 1.0 / 4.0, rel=0.012)
    assert middle_v2 == pytest.approx(1.0, rel=0.012)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["baoab", "gjf"])
def test_kinetic_temperature_at_small_steps(scheme, langevin_middle):
    """At omega h = 0.1 the kinetic temperature is the target within 0.25 % (bias) plus noise."""
    x2, v2 = sample_oscillators(scheme, 0.1)
    middle_x2, middle_v2 = langevin_middle[0.1]
    assert v2 == pytest.approx(1.0, rel=0.012)
    assert v2 == pytest.approx(middle_v2, rel=0.015)
    assert x2 == pytest.approx(1.0, rel=0.012)

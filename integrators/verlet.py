"""Velocity Verlet (NVE) and the CSVR thermostat of Bussi, Donadio and Parrinello (2007).

Velocity Verlet: v ← v + (h/2) F/m;  x ← x + h v;  v ← v + (h/2) F'/m.

CSVR rescales the velocities of each replica by α before and after a
velocity-Verlet step (half the relaxation each time). With kinetic energy K,
target K̄ = N_f kT/2, c = exp(-Δt/τ) and standard normals R_1..R_{N_f}:

    α² = c + (1-c) K̄/(N_f K) (R_1² + Σ_{i≥2} R_i²) + 2 R_1 sqrt(c (1-c) K̄/(N_f K))

which makes K follow the canonical distribution. The state's ``friction``
holds 1/τ.
"""

import torch
from torch import Tensor

from . import register_integrator
from .noise import gaussian_noise
from .state import EnergyForces, MDState, degrees_of_freedom, evaluate, kinetic_energy


@register_integrator("verlet")
def velocity_verlet_step(state: MDState, energy_forces: EnergyForces, timestep: float) -> MDState:
    """One velocity-Verlet step (energy-conserving, no thermostat)."""
    inverse_mass = 1.0 / state.masses.unsqueeze(1)
    v = state.velocities + 0.5 * timestep * inverse_mass * state.forces
    x = state.positions + timestep * v
    energy, forces = evaluate(state, energy_forces, x)
    v = v + 0.5 * timestep * inverse_mass * forces
    return state.replace(positions=x, velocities=v, energy=energy, forces=forces, step=state.step + 1)


def csvr_factors(kinetic: Tensor, dof: Tensor, kT: Tensor, rate: Tensor, duration: float, xi: Tensor,
                 batch: Tensor, fixed: Tensor) -> Tensor:
    """CSVR velocity scale factors α ``[B]`` for a rescaling over ``duration``.

    ``kinetic`` and ``dof`` are K and N_f per replica, ``rate`` is 1/τ, ``xi`` the ``[N,3]``
    standard normals (rows of fixed atoms are ignored). Shared by :func:`csvr_step` and
    :mod:`integrators.rollout`.
    """
    target = 0.5 * dof * kT
    c = torch.exp(-rate * duration)
    # One normal per degree of freedom: R_1 is the first free component of each replica.
    xi = torch.where(fixed.unsqueeze(1), torch.zeros_like(xi), xi)
    sum_squares = torch.zeros_like(kinetic).index_add(0, batch, (xi * xi).sum(dim=1))
    n_rows = xi.shape[0]
    first_row = torch.full((kinetic.shape[0],), n_rows, dtype=torch.int64, device=xi.device).scatter_reduce(
        0, batch[~fixed], torch.nonzero(~fixed).squeeze(1), reduce="amin"
    )
    r1 = xi[first_row.clamp(max=n_rows - 1), 0]
    safe_kinetic = torch.clamp(kinetic, min=torch.finfo(kinetic.dtype).tiny)
    ratio = target / (dof * safe_kinetic)
    alpha2 = c + (1.0 - c) * ratio * sum_squares + 2.0 * r1 * torch.sqrt(c * (1.0 - c) * ratio)
    # Sign convention of Bussi et al.: α has the sign of R_1 + sqrt(c N_f K / ((1-c) K̄)).
    sign = torch.sign(r1 + torch.sqrt(c / ((1.0 - c) * ratio)))
    alpha = sign * torch.sqrt(torch.clamp(alpha2, min=0.0))
    return torch.where(kinetic > 0, alpha, torch.ones_like(alpha))


def _csvr_rescale(state: MDState, duration: float, stream: int) -> MDState:
    xi = gaussian_noise(state.seeds, state.step, stream, state.batch, state.local_index,
                        dtype=state.positions.dtype)
    alpha = csvr_factors(kinetic_energy(state), degrees_of_freedom(state), state.kT, state.friction, duration, xi,
                         state.batch, state.fixed)
    return state.replace(velocities=state.velocities * alpha[state.batch].unsqueeze(1))


@register_integrator("csvr")
def csvr_step(state: MDState, energy_forces: EnergyForces, timestep: float) -> MDState:
    """Half CSVR rescale, velocity Verlet, half CSVR rescale."""
    state = _csvr_rescale(state, 0.5 * timestep, stream=0)
    state = velocity_verlet_step(state, energy_forces, timestep)
    return _csvr_rescale(state, 0.5 * timestep, stream=1)

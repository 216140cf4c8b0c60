"""Langevin splitting schemes: BAOAB, OBABO (Leimkuhler & Matthews) and GJF (Grønbech-Jensen & Farago).

With friction γ, time step h and ``c = exp(-γ h)`` the pieces are

    B:  v ← v + (h/2) F/m
    A:  x ← x + (h/2) v
    O:  v ← c v + sqrt((1 - c²) kT/m) ξ        (exact Ornstein-Uhlenbeck update)

BAOAB samples the configurational distribution of a harmonic oscillator
exactly for any stable step; OBABO is its velocity-Verlet-centred twin. GJF:

    b = 1/(1 + γh/2),  a = (1 - γh/2) b,  β = sqrt(2 γ kT h / m) ξ
    x' = x + b h v + b h²/(2m) F + (b h/2) β
    v' = a v + (h/2m)(a F + F') + b β

which gives exact configurational averages for harmonic systems and
time-step-independent diffusion. All noise comes from :mod:`integrators.noise`.
"""

import torch

from . import register_integrator
from .noise import gaussian_noise
from .state import EnergyForces, MDState, evaluate


def _per_atom(state: MDState, values: torch.Tensor) -> torch.Tensor:
    return values[state.batch].unsqueeze(1)


def _noise(state: MDState, stream: int) -> torch.Tensor:
    xi = gaussian_noise(state.seeds, state.step, stream, state.batch, state.local_index,
                        dtype=state.positions.dtype)
    return torch.where(state.fixed.unsqueeze(1), torch.zeros_like(xi), xi)


def _ornstein_uhlenbeck(state: MDState, velocities, duration: float, stream: int):
    c = torch.exp(-_per_atom(state, state.friction) * duration)
    sigma = torch.sqrt(_per_atom(state, state.kT) / state.masses.unsqueeze(1))
    return c * velocities + torch.sqrt(1.0 - c * c) * sigma * _noise(state, stream)


def _kick(state: MDState, velocities, forces, duration: float):
    return velocities + duration * forces / state.masses.unsqueeze(1)


@register_integrator("baoab")
def baoab_step(state: MDState, energy_forces: EnergyForces, timestep: float) -> MDState:
    """One BAOAB step of length ``timestep``."""
    half = 0.5 * timestep
    v = _kick(state, state.velocities, state.forces, half)
    x = state.positions + half * v
    v = _ornstein_uhlenbeck(state, v, timestep, stream=0)
    x = x + half * v
    energy, forces = evaluate(state, energy_forces, x)
    v = _kick(state, v, forces, half)
    return state.replace(positions=x, velocities=v, energy=energy, forces=forces, step=state.step + 1)


@register_integrator("obabo")
def obabo_step(state: MDState, energy_forces: EnergyForces, timestep: float) -> MDState:
    """One OBABO step: O(h/2) B(h/2) A(h) B(h/2) O(h/2)."""
    half = 0.5 * timestep
    v = _ornstein_uhlenbeck(state, state.velocities, half, stream=0)
    v = _kick(state, v, state.forces, half)
    x = state.positions + timestep * v
    energy, forces = evaluate(state, energy_forces, x)
    v = _kick(state, v, forces, half)
    v = _ornstein_uhlenbeck(state, v, half, stream=1)
    return state.replace(positions=x, velocities=v, energy=energy, forces=forces, step=state.step + 1)


@register_integrator("gjf")
def gjf_step(state: MDState, energy_forces: EnergyForces, timestep: float) -> MDState:
    """One Grønbech-Jensen-Farago step."""
    gamma_h = _per_atom(state, state.friction) * timestep
    b = 1.0 / (1.0 + 0.5 * gamma_h)
    a = (1.0 - 0.5 * gamma_h) * b
    inverse_mass = 1.0 / state.masses.unsqueeze(1)
    beta = torch.sqrt(2.0 * gamma_h * _per_atom(state, state.kT) * inverse_mass) * _noise(state, stream=0)
    x = (state.positions + b * timestep * state.velocities
         + b * timestep * timestep * 0.5 * inverse_mass * state.forces + 0.5 * b * timestep * beta)
    energy, forces = evaluate(state, energy_forces, x)
    v = a * state.velocities + 0.5 * timestep * inverse_mass * (a * state.forces + forces) + b * beta
    return state.replace(positions=x, velocities=v, energy=energy, forces=forces, step=state.step + 1)

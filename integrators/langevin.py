"""Langevin schemes: BAOAB, OBABO (Leimkuhler & Matthews) and GJF (Grønbech-Jensen & Farago).

Built from the pieces of :mod:`integrators.splitting` (B kick, A drift, O Ornstein-Uhlenbeck with
c₁ = exp(-γ h)); units Å, fs, eV, masses in eV·fs²/Å², γ (``friction``) in 1/fs, kT in eV.

    BAOAB:  B(h/2) A(h/2) O(h) A(h/2) [forces] B(h/2)
    OBABO:  O(h/2) B(h/2) A(h) [forces] B(h/2) O(h/2)     (noise streams 0 and 1)

BAOAB samples the configurational distribution of a harmonic oscillator exactly for any stable
step; OBABO is its velocity-Verlet-centred twin, exact in the velocities instead. GJF is not a
splitting; with b = 1/(1 + γh/2), a = (1 - γh/2) b and β = sqrt(2 γ kT h / m) ξ:

    x' = x + b h v + b h²/(2m) F + (b h/2) β
    v' = a v + (h/2m)(a F + F') + b β

which gives exact configurational averages for harmonic systems and time-step-independent
diffusion.
"""

import torch

from . import register_integrator
from .splitting import drift, kick, next_step, ornstein_uhlenbeck, per_atom, step_noise
from .state import EnergyForces, MDState, compute_forces


@register_integrator("baoab")
def baoab_step(state: MDState, energy_forces: EnergyForces, timestep: float) -> MDState:
    """One BAOAB step of length ``timestep``."""
    half = 0.5 * timestep
    state = drift(kick(state, half), half)
    state = drift(ornstein_uhlenbeck(state, timestep, stream=0), half)
    return next_step(kick(compute_forces(state, energy_forces), half))


@register_integrator("obabo")
def obabo_step(state: MDState, energy_forces: EnergyForces, timestep: float) -> MDState:
    """One OBABO step: O(h/2) B(h/2) A(h) B(h/2) O(h/2)."""
    half = 0.5 * timestep
    state = drift(kick(ornstein_uhlenbeck(state, half, stream=0), half), timestep)
    state = kick(compute_forces(state, energy_forces), half)
    return next_step(ornstein_uhlenbeck(state, half, stream=1))


@register_integrator("gjf")
def gjf_step(state: MDState, energy_forces: EnergyForces, timestep: float) -> MDState:
    """One Grønbech-Jensen-Farago step."""
    gamma_h = per_atom(state, state.friction) * timestep
    b = 1.0 / (1.0 + 0.5 * gamma_h)
    a = (1.0 - 0.5 * gamma_h) * b
    inverse_mass = 1.0 / state.masses.unsqueeze(1)
    beta = torch.sqrt(2.0 * gamma_h * per_atom(state, state.kT) * inverse_mass) * step_noise(state, stream=0)
    x = (state.positions + b * timestep * state.velocities
         + b * timestep * timestep * 0.5 * inverse_mass * state.forces + 0.5 * b * timestep * beta)
    moved = compute_forces(state.replace(positions=x), energy_forces)
    v = a * state.velocities + 0.5 * timestep * inverse_mass * (a * state.forces + moved.forces) + b * beta
    return next_step(moved.replace(velocities=v))

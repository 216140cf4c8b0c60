"""The pieces every scheme is assembled from: plain functions from a state to a new state.

With time step h, friction γ (1/fs), kT (eV) and masses m (eV·fs²/Å²):

    B (kick):   v ← v + h F/m                         (F in eV/Å, so F/m in Å/fs²)
    A (drift):  x ← x + h v                           (Å)
    O (Ornstein-Uhlenbeck, exact over h):
                v ← c₁ v + c₂ sqrt(kT/m) ξ,   c₁ = exp(-γ h),  c₂ = sqrt(1 - c₁²)

ξ is standard normal noise from :mod:`integrators.noise`, a pure function of (seed, step, stream,
atom, component): :func:`step_noise` draws it for the state's current step, zero on fixed atoms.
A scheme is a word in these letters (BAOAB, OBABO, velocity Verlet = BAB) with a force evaluation
(:func:`integrators.state.compute_forces`) after the last A and :func:`next_step` at the end.
"""

import torch
from torch import Tensor

from .noise import gaussian_noise
from .state import MDState, SystemState


def per_atom(state: SystemState, values: Tensor) -> Tensor:
    """A per-replica ``[B]`` quantity as an ``[N,1]`` column for each atom."""
    return values[state.batch].unsqueeze(1)


def step_noise(state: SystemState, stream: int) -> Tensor:
    """Standard normals ``[N,3]`` of the state's step and ``stream``, zero on fixed atoms."""
    xi = gaussian_noise(state.seeds, state.step, stream, state.batch, state.local_index,
                        dtype=state.positions.dtype)
    return torch.where(state.fixed.unsqueeze(1), torch.zeros_like(xi), xi)


def kick(state: MDState, duration: float, inverse_mass: Tensor = None) -> MDState:
    """B: v ← v + duration · F/m with the state's forces.

    Given ``inverse_mass`` (``[N,1]``, 1/m) the increment is rounded as (duration · 1/m) · F instead of
    (duration · F) / m: equal in exact arithmetic, not in the last bit. Velocity Verlet (and so CSVR)
    passes it, the Langevin schemes do not, which keeps every scheme's trajectories bit for bit what
    they were before the pieces were shared."""
    if inverse_mass is None:
        return state.replace(velocities=state.velocities + duration * state.forces / state.masses.unsqueeze(1))
    return state.replace(velocities=state.velocities + duration * inverse_mass * state.forces)


def drift(state: SystemState, duration: float) -> SystemState:
    """A: x ← x + duration · v."""
    return state.replace(positions=state.positions + duration * state.velocities)


def ornstein_uhlenbeck(state: SystemState, duration: float, stream: int) -> SystemState:
    """O: the exact Ornstein-Uhlenbeck update of the velocities over ``duration`` at each replica's
    ``kT`` and ``friction``, with the noise of ``stream``."""
    c = torch.exp(-per_atom(state, state.friction) * duration)
    sigma = torch.sqrt(per_atom(state, state.kT) / state.masses.unsqueeze(1))
    noise = step_noise(state, stream)
    return state.replace(velocities=c * state.velocities + torch.sqrt(1.0 - c * c) * sigma * noise)


def next_step(state: SystemState) -> SystemState:
    """The step counter advanced by one (the noise of the next step)."""
    return state.replace(step=state.step + 1)

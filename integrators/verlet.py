"""Velocity Verlet (NVE): B(h/2) A(h) [forces] B(h/2) from :mod:`integrators.splitting`.

    v ← v + (h/2) F/m;   x ← x + h v;   F' = F(x);   v ← v + (h/2) F'/m

Units Å, fs, eV, masses in eV·fs²/Å². The CSVR thermostat wraps this step in :mod:`integrators.csvr`.
"""

from . import register_integrator
from .splitting import drift, kick, next_step
from .state import EnergyForces, MDState, compute_forces


@register_integrator("verlet", conserves_momentum=True)
def velocity_verlet_step(state: MDState, energy_forces: EnergyForces, timestep: float) -> MDState:
    """One velocity-Verlet step (energy-conserving, no thermostat)."""
    half = 0.5 * timestep
    inverse_mass = 1.0 / state.masses.unsqueeze(1)
    state = drift(kick(state, half, inverse_mass), timestep)
    return next_step(kick(compute_forces(state, energy_forces), half, inverse_mass))

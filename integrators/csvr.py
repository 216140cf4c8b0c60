"""The CSVR thermostat of Bussi, Donadio and Parrinello (2007): stochastic velocity rescaling.

Each replica's velocities are scaled by one factor α so that its kinetic energy K (eV) follows the
canonical distribution. With N_f degrees of freedom, target K̄ = N_f kT/2, relaxation rate
1/τ (the state's ``friction``, 1/fs) applied over a duration Δt (fs), c = exp(-Δt/τ) and standard
normals R_1..R_{N_f}, the new kinetic energy is K' = α² K with

    α² = c + (1-c) K̄/(N_f K) (R_1² + Σ_{i≥2} R_i²) + 2 R_1 sqrt(c (1-c) K̄/(N_f K))

and α takes the sign of R_1 + sqrt(c N_f K / ((1-c) K̄)). A replica with 1/τ = 0, K = 0 or N_f = 0 is
left alone (α = 1). The R_i are the first N_f components of the step's noise
(:func:`integrators.splitting.step_noise`) on the free atoms, R_1 the first of them.

N_f is an explicit argument (``dof``) of every piece here; callers pass
:func:`integrators.state.degrees_of_freedom`: 3 × free atoms less the state's ``constrained_dof``
(total momentum, and angular momentum of an isolated molecule, when they start at zero). One scalar
α per replica turns Σ m v into α Σ m v and L into α L, so components that start at zero stay at zero; rounding would not (a residual is multiplied by every α, a
product that wanders over orders of magnitude), so a step ends with
:func:`integrators.state.remove_conserved_motion` on replicas with ``constrained_dof > 0``.

Registered scheme ``csvr``: half a rescale (Δt = h/2, noise stream 0), a velocity-Verlet step, half a
rescale (stream 1, noise of the next step). The forecast rollout (:mod:`integrators.rollout`) rescales
once per forecast interval.
"""

import torch
from torch import Tensor

from . import register_integrator
from .splitting import per_atom, step_noise
from .state import (EnergyForces, MDState, SystemState, degrees_of_freedom, kinetic_energy,
                    remove_conserved_motion)
from .verlet import velocity_verlet_step


def counted_components(dof: Tensor, batch: Tensor, fixed: Tensor) -> Tensor:
    """``[N,3]`` bool: the first ``dof[b]`` components (atom by atom, x y z) of the free atoms of each
    replica b, the ones whose normals are R_1..R_{N_f}. Rows of a replica must be contiguous."""
    free = (~fixed).to(torch.int64)
    per_replica = torch.zeros(dof.shape[0], dtype=torch.int64, device=batch.device).index_add(0, batch, free)
    rank = (torch.cumsum(free, 0) - free) - (torch.cumsum(per_replica, 0) - per_replica)[batch]
    component = 3 * rank.unsqueeze(1) + torch.arange(3, device=batch.device)
    return (~fixed).unsqueeze(1) & (component < dof[batch].unsqueeze(1))


def csvr_factors(kinetic: Tensor, dof: Tensor, kT: Tensor, rate: Tensor, duration: float, xi: Tensor,
                 batch: Tensor, fixed: Tensor) -> Tensor:
    """CSVR velocity scale factors α ``[B]`` for a rescaling over ``duration`` (fs).

    ``kinetic`` is K (eV) and ``dof`` the number of degrees of freedom N_f per replica (it sets both
    the target K̄ and how many normals enter, see :func:`counted_components`), ``kT`` the target (eV),
    ``rate`` 1/τ (1/fs), ``xi`` the ``[N,3]`` standard normals (rows of fixed atoms are ignored).
    α = 1 where K = 0, N_f = 0 or 1/τ = 0.
    """
    target = 0.5 * dof * kT
    c = torch.exp(-rate * duration)
    # One normal per degree of freedom: R_1 is the first free component of each replica.
    xi = torch.where(counted_components(dof, batch, fixed), xi, torch.zeros_like(xi))
    sum_squares = torch.zeros_like(kinetic).index_add(0, batch, (xi * xi).sum(dim=1))
    n_rows = xi.shape[0]
    first_row = torch.full((kinetic.shape[0],), n_rows, dtype=torch.int64, device=xi.device).scatter_reduce(
        0, batch[~fixed], torch.nonzero(~fixed).squeeze(1), reduce="amin"
    )
    r1 = xi[first_row.clamp(max=n_rows - 1), 0]
    safe_kinetic = torch.clamp(kinetic, min=torch.finfo(kinetic.dtype).tiny)
    ratio = target / (dof * safe_kinetic)
    alpha2 = c + (1.0 - c) * ratio * sum_squares + 2.0 * r1 * torch.sqrt(c * (1.0 - c) * ratio)
    sign = torch.sign(r1 + torch.sqrt(c / ((1.0 - c) * ratio)))
    alpha = sign * torch.sqrt(torch.clamp(alpha2, min=0.0))
    return torch.where((kinetic > 0) & (rate > 0) & (dof > 0), alpha, torch.ones_like(alpha))


def csvr_rescale(state: SystemState, duration: float, stream: int, dof: Tensor) -> SystemState:
    """The state with each replica's velocities rescaled by CSVR over ``duration`` (fs), with the noise
    of the state's step and ``stream`` and ``dof`` ``[B]`` degrees of freedom per replica."""
    alpha = csvr_factors(kinetic_energy(state), dof, state.kT, state.friction, duration,
                         step_noise(state, stream), state.batch, state.fixed)
    return state.replace(velocities=state.velocities * per_atom(state, alpha))


@register_integrator("csvr", conserves_momentum=True)
def csvr_step(state: MDState, energy_forces: EnergyForces, timestep: float) -> MDState:
    """Half CSVR rescale, velocity Verlet, half CSVR rescale (then the conserved components set to zero)."""
    state = csvr_rescale(state, 0.5 * timestep, stream=0, dof=degrees_of_freedom(state))
    state = velocity_verlet_step(state, energy_forces, timestep)
    state = csvr_rescale(state, 0.5 * timestep, stream=1, dof=degrees_of_freedom(state))
    if bool((state.constrained_dof > 0).any()):
        state = remove_conserved_motion(state)
    return state

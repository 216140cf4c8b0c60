"""The state every integrator advances, and the pieces they share.

Integrators are unit-agnostic: they need one consistent unit system. mlmd uses
positions in Å, time in fs, energies in eV, and therefore masses in
eV·fs²/Å² (the caller converts from amu), so that F/m is in Å/fs² and
½ m v² is in eV. Temperatures enter as ``kT`` in the energy unit.

Many independent replicas run in one batch: ``batch[i]`` is the replica of
atom ``i``; thermostat settings are per replica.
"""

from dataclasses import dataclass, replace
from typing import Callable, Dict, Tuple

import torch
from torch import Tensor

# The model contract: (positions, atomic_numbers, cell, pbc, batch) -> {"energy": [B], "forces": [N,3], ...}
EnergyForces = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Dict[str, Tensor]]


@dataclass
class MDState:
    positions: Tensor  # [N,3]
    velocities: Tensor  # [N,3]
    masses: Tensor  # [N], energy·time²/length²
    atomic_numbers: Tensor  # [N]
    cell: Tensor  # [B,3,3]
    pbc: Tensor  # [B,3]
    batch: Tensor  # [N]
    energy: Tensor  # [B] potential energy at `positions`
    forces: Tensor  # [N,3] at `positions`
    kT: Tensor  # [B] target temperature in energy units
    friction: Tensor  # [B] Langevin friction in 1/time (or CSVR relaxation rate)
    fixed: Tensor  # [N] bool, atoms that never move
    seeds: Tensor  # [B] int64, per-replica noise seed
    local_index: Tensor  # [N] index of each atom inside its replica
    step: int = 0

    @property
    def n_replicas(self) -> int:
        return int(self.cell.shape[0])

    def replace(self, **changes) -> "MDState":
        return replace(self, **changes)


def evaluate(state: MDState, energy_forces: EnergyForces, positions: Tensor) -> Tuple[Tensor, Tensor]:
    """Energy ``[B]`` and forces ``[N,3]`` at ``positions``; fixed atoms feel no force."""
    out = energy_forces(positions, state.atomic_numbers, state.cell, state.pbc, state.batch)
    forces = out["forces"].to(positions.dtype)
    forces = torch.where(state.fixed.unsqueeze(1), torch.zeros_like(forces), forces)
    return out["energy"].to(positions.dtype), forces


def kinetic_energy(state: MDState) -> Tensor:
    """½ Σ m v² per replica ``[B]``."""
    per_atom = 0.5 * state.masses * (state.velocities * state.velocities).sum(dim=1)
    return torch.zeros(state.n_replicas, dtype=per_atom.dtype, device=per_atom.device).index_add(
        0, state.batch, per_atom
    )


def degrees_of_freedom(state: MDState) -> Tensor:
    """3 × free atoms per replica ``[B]`` (the centre of mass is not constrained)."""
    free = (~state.fixed).to(state.positions.dtype) * 3.0
    return torch.zeros(state.n_replicas, dtype=free.dtype, device=free.device).index_add(0, state.batch, free)


def init_state(
    energy_forces: EnergyForces,
    positions: Tensor,
    masses: Tensor,
    atomic_numbers: Tensor,
    cell: Tensor,
    pbc: Tensor,
    batch: Tensor,
    kT,
    friction,
    seeds,
    velocities: Tensor = None,
    fixed: Tensor = None,
) -> MDState:
    """Build a state and evaluate the first forces. Scalars ``kT``, ``friction``, ``seeds``
    are broadcast to every replica. Velocities default to zero."""
    n_replicas = cell.shape[0]
    dtype, device = positions.dtype, positions.device
    as_replica = lambda value, kind: torch.as_tensor(value, dtype=kind, device=device).expand(n_replicas).clone()
    counts = torch.bincount(batch, minlength=n_replicas)
    first = torch.cumsum(counts, 0) - counts
    fixed = torch.zeros(positions.shape[0], dtype=torch.bool, device=device) if fixed is None else fixed.to(device)
    velocities = torch.zeros_like(positions) if velocities is None else velocities.to(dtype)
    velocities = torch.where(fixed.unsqueeze(1), torch.zeros_like(velocities), velocities)
    state = MDState(
        positions=positions,
        velocities=velocities,
        masses=masses.to(dtype),
        atomic_numbers=atomic_numbers,
        cell=cell.to(dtype),
        pbc=pbc,
        batch=batch,
        energy=torch.zeros(n_replicas, dtype=dtype, device=device),
        forces=torch.zeros_like(positions),
        kT=as_replica(kT, dtype),
        friction=as_replica(friction, dtype),
        fixed=fixed,
        seeds=as_replica(seeds, torch.int64),
        local_index=torch.arange(positions.shape[0], device=device) - first[batch],
    )
    energy, forces = evaluate(state, energy_forces, positions)
    return state.replace(energy=energy, forces=forces)


def maxwell_boltzmann_velocities(state: MDState, stream: int = 999) -> Tensor:
    """Velocities drawn from the Maxwell-Boltzmann distribution at each replica's ``kT``."""
    from .noise import gaussian_noise

    xi = gaussian_noise(state.seeds, -1, stream, state.batch, state.local_index, dtype=state.positions.dtype)
    sigma = torch.sqrt(state.kT[state.batch] / state.masses).unsqueeze(1)
    return torch.where(state.fixed.unsqueeze(1), torch.zeros_like(xi), sigma * xi)

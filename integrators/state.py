"""The states that integrators advance, their one constructor, and what is measured on them.

One hierarchy:

- :class:`SystemState`: what every scheme shares: positions, velocities, masses, atomic numbers,
  cell, pbc, the replica index ``batch``, the fixed-atom mask, the thermostat settings (``kT``,
  ``friction``, noise ``seeds``) and the step counter. :meth:`SystemState.create` is the one
  constructor path (broadcasts per-replica scalars, zeroes the velocities of fixed atoms, numbers
  the atoms inside each replica).
- :class:`MDState`: driven by a potential, adds the potential ``energy`` and ``forces`` at
  ``positions``; built by :func:`init_state`, advanced by every scheme in ``integrators.INTEGRATORS``.
- :class:`integrators.rollout.RolloutState`: driven by a trajectory forecaster, adds the
  lattice ``images`` removed by wrapping.

A scheme with variables of its own (a Nosé-Hoover ξ, a barostat strain) subclasses
:class:`MDState`, builds it with ``create(..., energy=..., forces=..., xi=...)`` and
:func:`compute_forces`.

Units: integrators need one consistent unit system. mlmd uses positions in Å, time in fs, energies
in eV, and therefore masses in eV·fs²/Å² (the caller converts from amu: 1 amu = 103.6427 eV·fs²/Å²),
so that F/m is in Å/fs² and ½ m v² is in eV. Temperatures enter as ``kT`` in eV (k_B T, T in K).

Many independent replicas run in one batch: ``batch[i]`` is the replica of atom ``i``; thermostat
settings are per replica.
"""

from dataclasses import dataclass, field, replace
from typing import Callable, Dict

import torch
from torch import Tensor

from .noise import gaussian_noise

# The model contract: (positions, atomic_numbers, cell, pbc, batch) -> {"energy": [B], "forces": [N,3], ...}
EnergyForces = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Dict[str, Tensor]]

# Noise coordinates of the Maxwell-Boltzmann draw: a step and stream no integrator step uses.
MAXWELL_BOLTZMANN_STEP = -1
MAXWELL_BOLTZMANN_STREAM = 999


@dataclass
class SystemState:
    """A batch of replicas: what every integrator and the forecast rollout share."""

    positions: Tensor  # [N,3] Å
    velocities: Tensor  # [N,3] Å/fs
    masses: Tensor  # [N] eV·fs²/Å²
    atomic_numbers: Tensor  # [N] int64
    cell: Tensor  # [B,3,3] Å, rows are lattice vectors
    pbc: Tensor  # [B,3] bool
    batch: Tensor  # [N] replica of each atom
    kT: Tensor  # [B] eV, thermostat target
    friction: Tensor  # [B] 1/fs: Langevin friction γ, or the CSVR rate 1/τ (0: no thermostat)
    fixed: Tensor  # [N] bool, atoms that never move
    seeds: Tensor  # [B] int64, per-replica noise seed
    local_index: Tensor  # [N] index of each atom inside its replica
    step: int = field(default=0, kw_only=True)  # steps taken; with the seed it fixes the noise of the next step

    @property
    def n_replicas(self) -> int:
        return int(self.cell.shape[0])

    def replace(self, **changes) -> "SystemState":
        """A copy with ``changes`` (the same class, so subclasses keep their own fields)."""
        return replace(self, **changes)

    @classmethod
    def create(cls, positions: Tensor, masses: Tensor, atomic_numbers: Tensor, cell: Tensor, pbc: Tensor,
               batch: Tensor, kT, friction, seeds, velocities: Tensor = None, fixed: Tensor = None, **fields):
        """A state of class ``cls``. Scalars ``kT`` (eV), ``friction`` (1/fs) and ``seeds`` are broadcast
        to every replica; velocities default to zero and are zeroed on fixed atoms; masses, cell and
        velocities take the dtype of ``positions``. ``fields`` are the subclass's own fields."""
        n_replicas = cell.shape[0]
        dtype, device = positions.dtype, positions.device

        def per_replica(value, kind):
            return torch.as_tensor(value, dtype=kind, device=device).expand(n_replicas).clone()

        counts = torch.bincount(batch, minlength=n_replicas)
        first = torch.cumsum(counts, 0) - counts
        fixed = torch.zeros(positions.shape[0], dtype=torch.bool, device=device) if fixed is None else fixed.to(device)
        velocities = torch.zeros_like(positions) if velocities is None else velocities.to(dtype)
        velocities = torch.where(fixed.unsqueeze(1), torch.zeros_like(velocities), velocities)
        return cls(
            positions=positions,
            velocities=velocities,
            masses=masses.to(dtype),
            atomic_numbers=atomic_numbers,
            cell=cell.to(dtype),
            pbc=pbc,
            batch=batch,
            kT=per_replica(kT, dtype),
            friction=per_replica(friction, dtype),
            fixed=fixed,
            seeds=per_replica(seeds, torch.int64),
            local_index=torch.arange(positions.shape[0], device=device) - first[batch],
            **fields,
        )


@dataclass
class MDState(SystemState):
    """A state driven by a potential: adds the energy and forces at ``positions``."""

    energy: Tensor  # [B] eV, potential energy at `positions`
    forces: Tensor  # [N,3] eV/Å at `positions`, zero on fixed atoms


def compute_forces(state: MDState, energy_forces: EnergyForces) -> MDState:
    """The state with ``energy`` ``[B]`` and ``forces`` ``[N,3]`` evaluated at its positions; fixed atoms
    feel no force."""
    positions = state.positions
    out = energy_forces(positions, state.atomic_numbers, state.cell, state.pbc, state.batch)
    forces = out["forces"].to(positions.dtype)
    forces = torch.where(state.fixed.unsqueeze(1), torch.zeros_like(forces), forces)
    return state.replace(energy=out["energy"].to(positions.dtype), forces=forces)


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
    """An :class:`MDState` (see :meth:`SystemState.create`) with its first forces evaluated."""
    state = MDState.create(positions, masses, atomic_numbers, cell, pbc, batch, kT, friction, seeds,
                           velocities=velocities, fixed=fixed,
                           energy=torch.zeros(cell.shape[0], dtype=positions.dtype, device=positions.device),
                           forces=torch.zeros_like(positions))
    return compute_forces(state, energy_forces)


def kinetic_energy(state: SystemState) -> Tensor:
    """K = ½ Σ m v² per replica ``[B]`` (eV)."""
    per_atom = 0.5 * state.masses * (state.velocities * state.velocities).sum(dim=1)
    return torch.zeros(state.n_replicas, dtype=per_atom.dtype, device=per_atom.device).index_add(
        0, state.batch, per_atom
    )


def degrees_of_freedom(state: SystemState) -> Tensor:
    """N_f = 3 × free atoms per replica ``[B]``.

    Known bug (issue 14): a run started with zero total momentum (and, for an isolated molecule, zero
    angular momentum) keeps those 3 (or 6) components at zero, so the true N_f is 3N - 3 (or 3N - 6);
    the temperatures and the CSVR target computed from this count then run hot by up to 3N/(3N-6)."""
    free = (~state.fixed).to(state.positions.dtype) * 3.0
    return torch.zeros(state.n_replicas, dtype=free.dtype, device=free.device).index_add(0, state.batch, free)


def kinetic_kT(state: SystemState) -> Tensor:
    """k_B T = 2 K / N_f per replica ``[B]`` in eV (divide by k_B for kelvin)."""
    return 2.0 * kinetic_energy(state) / degrees_of_freedom(state).clamp(min=1.0)


def maxwell_boltzmann_velocities(state: SystemState, stream: int = MAXWELL_BOLTZMANN_STREAM) -> Tensor:
    """Velocities ``[N,3]`` (Å/fs) drawn from the Maxwell-Boltzmann distribution at each replica's ``kT``:
    v = sqrt(kT/m) ξ, zero on fixed atoms."""
    xi = gaussian_noise(state.seeds, MAXWELL_BOLTZMANN_STEP, stream, state.batch, state.local_index,
                        dtype=state.positions.dtype)
    sigma = torch.sqrt(state.kT[state.batch] / state.masses).unsqueeze(1)
    return torch.where(state.fixed.unsqueeze(1), torch.zeros_like(xi), sigma * xi)

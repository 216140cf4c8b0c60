"""The states that integrators advance, their one constructor, and what is measured on them.

One hierarchy:

- :class:`SystemState`: what every scheme shares: positions, velocities, masses, atomic numbers,
  cell, pbc, the replica index ``batch``, the fixed-atom mask, the thermostat settings (``kT``,
  ``friction``, noise ``seeds``) and the step counter. :meth:`SystemState.create` is the one
  constructor path (broadcasts per-replica scalars, zeroes the velocities of fixed atoms, numbers
  the atoms inside each replica) and ``constrained_dof``, the components of the velocities each
  replica keeps at zero (see :func:`degrees_of_freedom`).
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
    constrained_dof: Tensor  # [B] int64, velocity components kept at zero (total / angular momentum)
    step: int = field(default=0, kw_only=True)  # steps taken; with the seed it fixes the noise of the next step

    @property
    def n_replicas(self) -> int:
        return int(self.cell.shape[0])

    def replace(self, **changes) -> "SystemState":
        """A copy with ``changes`` (the same class, so subclasses keep their own fields)."""
        return replace(self, **changes)

    @classmethod
    def create(cls, positions: Tensor, masses: Tensor, atomic_numbers: Tensor, cell: Tensor, pbc: Tensor,
               batch: Tensor, kT, friction, seeds, velocities: Tensor = None, fixed: Tensor = None,
               constrained_dof=0, **fields):
        """A state of class ``cls``. Scalars ``kT`` (eV), ``friction`` (1/fs), ``seeds`` and
        ``constrained_dof`` are broadcast to every replica; velocities default to zero and are zeroed on
        fixed atoms; masses, cell and velocities take the dtype of ``positions``. ``fields`` are the
        subclass's own fields."""
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
            constrained_dof=per_replica(constrained_dof, torch.int64),
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
    """N_f = 3 × free atoms - ``constrained_dof`` per replica ``[B]`` (never below 0).

    A run that starts with zero total momentum under a momentum-conserving scheme keeps those 3
    components at zero, and an isolated molecule started with zero angular momentum 3 more (2 for a
    diatomic): they carry no kinetic energy, so they must not count (issue 14). Whoever builds the
    state sets ``constrained_dof`` (:func:`conserved_components` finds it)."""
    free = (~state.fixed).to(state.positions.dtype) * 3.0
    total = torch.zeros(state.n_replicas, dtype=free.dtype, device=free.device).index_add(0, state.batch, free)
    return (total - state.constrained_dof.to(free.dtype)).clamp(min=0.0)


def replica_sum(state: SystemState, values: Tensor) -> Tensor:
    """Σ over the atoms of each replica of per-atom ``values`` (``[N]`` or ``[N,k]`` -> ``[B]`` or ``[B,k]``)."""
    return torch.zeros((state.n_replicas,) + values.shape[1:], dtype=values.dtype,
                       device=values.device).index_add(0, state.batch, values)


def centre_of_mass_offsets(state: SystemState) -> Tensor:
    """r_i - R_com of each replica ``[N,3]`` (Å), from ``positions`` as held (unwrapped for isolated replicas)."""
    mass = replica_sum(state, state.masses)
    centre = replica_sum(state, state.masses.unsqueeze(1) * state.positions) / mass.unsqueeze(1)
    return state.positions - centre[state.batch]


def angular_momentum(state: SystemState, velocities: Tensor = None) -> Tensor:
    """L = Σ m (r - R_com) × v per replica ``[B,3]`` (eV·fs), of ``velocities`` (default the state's)."""
    velocities = state.velocities if velocities is None else velocities
    offsets = centre_of_mass_offsets(state)
    return replica_sum(state, state.masses.unsqueeze(1) * torch.cross(offsets, velocities, dim=1))


def inertia_tensor(state: SystemState) -> Tensor:
    """I = Σ m (|r|² 1 - r rᵀ) about each replica's centre of mass ``[B,3,3]`` (eV·fs²)."""
    r = centre_of_mass_offsets(state)
    eye = torch.eye(3, dtype=r.dtype, device=r.device)
    per_atom = (r * r).sum(1)[:, None, None] * eye - r.unsqueeze(2) * r.unsqueeze(1)
    return replica_sum(state, state.masses[:, None, None] * per_atom)


def rotations(n_atoms: Tensor) -> Tensor:
    """Rotational components of an isolated replica of ``n_atoms``: 0 for one atom, 2 for two (a diatomic
    stays on its line), 3 otherwise (a chain of three or more atoms bends, even if it starts straight)."""
    return torch.where(n_atoms >= 3, 3, torch.where(n_atoms == 2, 2, 0))


def conserved_components(state: SystemState, forces: Tensor = None) -> Tensor:
    """``[B]`` int64: how many velocity components a momentum-conserving scheme keeps at zero from this
    state on (the ``constrained_dof`` to set when the scheme conserves momentum).

    3 (total momentum) when the replica has no fixed atom and Σ m v = 0; plus, for an isolated replica
    (no periodic direction), :func:`rotations` when also L = 0. With ``forces`` (the potential's at
    ``positions``) the potential must also be invariant there: Σ F = 0 (and Σ r × F = 0 for L), else
    nothing counts. "Zero" is relative: |Σ m v| ≤ ε sqrt(M · 2K), |L| ≤ ε sqrt(Σ m r² · 2K) with
    ε = sqrt(machine epsilon) (so a state at rest counts), |Σ F| ≤ 1e-5 Σ |F| (float32 models)."""
    dtype = state.positions.dtype
    epsilon = torch.finfo(dtype).eps ** 0.5
    free = (~state.fixed).to(torch.int64)
    n_atoms = replica_sum(state, free)
    no_fixed = replica_sum(state, state.fixed.to(torch.int64)) == 0
    mass_v = state.masses.unsqueeze(1) * state.velocities
    twice_kinetic = replica_sum(state, (mass_v * state.velocities).sum(1))
    momentum = replica_sum(state, mass_v).norm(dim=1)
    still = momentum <= epsilon * torch.sqrt(replica_sum(state, state.masses) * twice_kinetic)
    offsets = centre_of_mass_offsets(state)
    spread = replica_sum(state, state.masses * (offsets * offsets).sum(1))
    not_turning = angular_momentum(state).norm(dim=1) <= epsilon * torch.sqrt(spread * twice_kinetic)
    if forces is not None:
        forces = forces.to(dtype)
        size = replica_sum(state, forces.norm(dim=1))
        still = still & (replica_sum(state, forces).norm(dim=1) <= 1e-5 * size)
        torque = replica_sum(state, torch.cross(offsets, forces, dim=1)).norm(dim=1)
        not_turning = not_turning & (torque <= 1e-5 * replica_sum(state, offsets.norm(dim=1) * forces.norm(dim=1)))
    translation = torch.where(no_fixed & still, 3, 0)
    isolated = ~state.pbc.any(dim=1)
    rotation = torch.where((translation > 0) & isolated & not_turning, rotations(n_atoms), 0)
    return (translation + rotation).to(torch.int64)


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


def remove_conserved_motion(state: SystemState) -> SystemState:
    """The state with the total momentum (replicas with ``constrained_dof >= 3``) and then the rigid
    rotation (``constrained_dof > 3``, isolated replicas) removed from the velocities:
    v ← v - V_com (the mass-weighted mean), then v ← v - ω × (r - R_com) with ω = I⁺ L.

    Schemes that conserve these only up to rounding apply it so that rounding cannot grow: CSVR
    multiplies a residual L by every step's α, a product that wanders over orders of magnitude."""
    translate = (state.constrained_dof >= 3)[state.batch].unsqueeze(1)
    rotate = (state.constrained_dof > 3)[state.batch].unsqueeze(1)
    masses = state.masses.unsqueeze(1)
    drift_velocity = replica_sum(state, masses * state.velocities) / replica_sum(state, state.masses).unsqueeze(1)
    velocities = torch.where(translate, state.velocities - drift_velocity[state.batch], state.velocities)
    inverse_inertia = torch.linalg.pinv(inertia_tensor(state), rtol=1e-10, hermitian=True)
    spin = inverse_inertia @ angular_momentum(state, velocities).unsqueeze(2)
    rigid = torch.cross(spin.squeeze(2)[state.batch], centre_of_mass_offsets(state), dim=1)
    return state.replace(velocities=torch.where(rotate, velocities - rigid, velocities))

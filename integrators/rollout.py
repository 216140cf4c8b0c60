"""Autoregressive rollout of a trajectory forecaster on a batch of replicas (torch only).

A forecaster maps the state at time t to the state one interval τ_f later
(10-30 MD steps), applied step after step:

    out = forecaster(x, Z, cell, pbc, batch, v)        # Å, Å/fs
    x ← wrap(x + out["displacement"]),   v ← out["velocities"]

``wrap`` maps positions back into the cell along periodic lattice vectors only
(``images`` counts the lattice translations taken, so ``x + images @ cell`` is
the unwrapped trajectory). The forecaster rebuilds its neighbour list from the
wrapped positions inside every call; nothing here keeps one.

Thermostat: CSVR (Bussi, Donadio, Parrinello 2007) once per interval, after the
forecast, with relaxation rate ``friction = 1/τ`` per replica
(:func:`integrators.verlet.csvr_factors`, c = exp(-τ_f/τ)); a replica with
``friction = 0`` is left alone (NVE-like). The noise of step n is
``gaussian_noise(seed, n, stream 0)`` (:mod:`integrators.noise`), so replica k
with seed s repeats a single run with seed s. Units as in
:mod:`integrators.state`: Å, fs, eV, masses in eV·fs²/Å².

Fixed atoms (``fixed``) neither move nor carry velocity, whatever the
forecaster says.
"""

from dataclasses import dataclass, replace
from typing import Callable, Dict

import torch
from torch import Tensor

from .noise import gaussian_noise
from .state import degrees_of_freedom, kinetic_energy
from .verlet import csvr_factors

# The forecaster contract: (positions, atomic_numbers, cell, pbc, batch, velocities)
#   -> {"displacement": [N,3], "velocities": [N,3]}
Forecaster = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor], Dict[str, Tensor]]

THERMOSTAT_STREAM = 0


@dataclass
class RolloutState:
    positions: Tensor  # [N,3] Å, wrapped along periodic directions
    velocities: Tensor  # [N,3] Å/fs
    masses: Tensor  # [N] eV·fs²/Å²
    atomic_numbers: Tensor  # [N] int64
    cell: Tensor  # [B,3,3] Å, rows are lattice vectors
    pbc: Tensor  # [B,3] bool
    batch: Tensor  # [N] replica of each atom
    kT: Tensor  # [B] eV, thermostat target
    friction: Tensor  # [B] 1/fs, CSVR rate 1/τ (0: no thermostat)
    fixed: Tensor  # [N] bool
    seeds: Tensor  # [B] int64
    local_index: Tensor  # [N] index of each atom inside its replica
    images: Tensor  # [N,3] int64 lattice translations removed by wrapping
    inverse_basis: Tensor  # [B,3,3] inverse of the cell completed to a basis (for fractional coordinates)
    step: int = 0

    @property
    def n_replicas(self) -> int:
        return int(self.cell.shape[0])

    def replace(self, **changes) -> "RolloutState":
        return replace(self, **changes)

    def unwrapped_positions(self) -> Tensor:
        """x + images @ cell ``[N,3]``: the continuous trajectory (for displacements and MSD)."""
        return self.positions + torch.einsum("ni,nij->nj", self.images.to(self.positions.dtype), self.cell[self.batch])


def wrapping_basis(cell: Tensor, pbc: Tensor) -> Tensor:
    """Inverse ``[B,3,3]`` of each cell with its non-periodic rows replaced by unit vectors orthogonal to
    the periodic ones, so fractional coordinates exist along periodic directions even when a
    non-periodic cell row is zero. Replicas without periodic directions get zeros (never wrapped)."""
    inverse = torch.zeros_like(cell)
    for b in range(cell.shape[0]):
        periodic = pbc[b]
        if not bool(periodic.any()):
            continue
        basis = cell[b].clone()
        rows = torch.where(periodic.unsqueeze(1), basis, torch.zeros_like(basis))
        _, singular, vh = torch.linalg.svd(rows)
        rank = int(periodic.sum())
        complement = vh[rank:]  # orthonormal, spans the directions no periodic row reaches
        for k, i in enumerate(torch.nonzero(~periodic).squeeze(1).tolist()):
            basis[i] = complement[k]
        if float(singular[rank - 1]) <= 1e-12 * float(singular[0]):
            raise ValueError(f"replica {b}: the periodic cell rows are linearly dependent")
        inverse[b] = torch.linalg.inv(basis)
    return inverse


def wrap(positions: Tensor, cell: Tensor, pbc: Tensor, batch: Tensor, inverse_basis: Tensor):
    """Positions mapped into the cell along periodic directions, and the integer lattice shifts removed:
    s = x B⁻¹, n = floor(s) on periodic axes (0 elsewhere), x' = x - n · cell."""
    fractional = torch.einsum("ni,nij->nj", positions, inverse_basis[batch])
    shift = torch.where(pbc[batch], torch.floor(fractional), torch.zeros_like(fractional))
    wrapped = positions - torch.einsum("ni,nij->nj", shift, cell[batch])
    return wrapped, shift.to(torch.int64)


def init(positions: Tensor, velocities: Tensor, masses: Tensor, atomic_numbers: Tensor, cell: Tensor, pbc: Tensor,
         batch: Tensor, kT, friction, seeds, fixed: Tensor = None) -> RolloutState:
    """Build a rollout state; scalars ``kT`` (eV), ``friction`` (1/fs) and ``seeds`` are broadcast to every
    replica. Positions are wrapped into the cell."""
    n_replicas = cell.shape[0]
    dtype, device = positions.dtype, positions.device
    as_replica = lambda value, kind: torch.as_tensor(value, dtype=kind, device=device).expand(n_replicas).clone()
    counts = torch.bincount(batch, minlength=n_replicas)
    first = torch.cumsum(counts, 0) - counts
    fixed = torch.zeros(positions.shape[0], dtype=torch.bool, device=device) if fixed is None else fixed.to(device)
    velocities = torch.where(fixed.unsqueeze(1), torch.zeros_like(positions), velocities.to(dtype))
    cell = cell.to(dtype)
    inverse_basis = wrapping_basis(cell, pbc)
    wrapped, images = wrap(positions, cell, pbc, batch, inverse_basis)
    return RolloutState(
        positions=wrapped, velocities=velocities, masses=masses.to(dtype), atomic_numbers=atomic_numbers,
        cell=cell, pbc=pbc, batch=batch, kT=as_replica(kT, dtype), friction=as_replica(friction, dtype),
        fixed=fixed, seeds=as_replica(seeds, torch.int64),
        local_index=torch.arange(positions.shape[0], device=device) - first[batch], images=images,
        inverse_basis=inverse_basis)


def thermostat(state: RolloutState, duration: float) -> RolloutState:
    """CSVR rescaling of every replica with ``friction > 0`` over ``duration`` fs (noise of ``state.step``)."""
    xi = gaussian_noise(state.seeds, state.step, THERMOSTAT_STREAM, state.batch, state.local_index,
                        dtype=state.positions.dtype)
    alpha = csvr_factors(kinetic_energy(state), degrees_of_freedom(state), state.kT, state.friction, duration, xi,
                         state.batch, state.fixed)
    alpha = torch.where(state.friction > 0, alpha, torch.ones_like(alpha))
    return state.replace(velocities=state.velocities * alpha[state.batch].unsqueeze(1))


def step(state: RolloutState, forecaster: Forecaster, interval: float) -> RolloutState:
    """One forecast interval of ``interval`` fs: forecast, wrap, then CSVR on thermostatted replicas."""
    out = forecaster(state.positions, state.atomic_numbers, state.cell, state.pbc, state.batch, state.velocities)
    keep = state.fixed.unsqueeze(1)
    displacement = out["displacement"].to(state.positions.dtype)
    velocities = out["velocities"].to(state.positions.dtype)
    displacement = torch.where(keep, torch.zeros_like(displacement), displacement)
    velocities = torch.where(keep, torch.zeros_like(velocities), velocities)
    positions, shift = wrap(state.positions + displacement, state.cell, state.pbc, state.batch, state.inverse_basis)
    moved = state.replace(positions=positions, velocities=velocities, images=state.images + shift)
    if bool((state.friction > 0).any()):
        moved = thermostat(moved, interval)
    return moved.replace(step=state.step + 1)


def kinetic_kT(state: RolloutState) -> Tensor:
    """k_B T = 2 K / N_f per replica ``[B]`` in eV (divide by k_B for kelvin)."""
    return 2.0 * kinetic_energy(state) / degrees_of_freedom(state).clamp(min=1.0)


__all__ = ["Forecaster", "RolloutState", "init", "kinetic_energy", "degrees_of_freedom", "step", "kinetic_kT",
           "thermostat", "wrap", "wrapping_basis"]

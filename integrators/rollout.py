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
(:mod:`integrators.csvr`, c = exp(-τ_f/τ)); a replica with
``friction = 0`` is left alone (NVE-like). The noise of step n is
``gaussian_noise(seed, n, stream 0)`` (:mod:`integrators.noise`), so replica k
with seed s repeats a single run with seed s. Units as in
:mod:`integrators.state`: Å, fs, eV, masses in eV·fs²/Å².

Stochastic forecasters (``stochastic=True``) get standard normal
``noise [N,6] = gaussian_noise(seed, n, stream 1)`` as their last argument and
sample the new state from their predicted distribution (see
:mod:`potentials.forecaster`); the same seed and step give the same sample, so
restarts repeat bit for bit.

Energy-aware step (``potential_energy`` given, ``U(x, Z, cell, pbc, batch) -> [B]`` eV):
between thermostat actions the reference dynamics conserves ``E = U + K``, so the
forecast velocities of each replica are scaled by ``sqrt((E - U(x')) / K')`` (before
CSVR, which then adds or removes what the thermostat exchanges). A replica whose
forecast positions already carry more potential energy than ``E`` cannot be scaled: that
forecast is rejected, the replica keeps its positions and reverses its velocities
(x, v) → (x, -v), the move a rejected hybrid Monte Carlo step makes, so ``U + K = E``
holds after every interval and the forecaster, which also learned the time-reversed
path, heads back the way it came. ``rejected_streak [B]`` counts each replica's
rejections in a row (engines stop a replica stuck that way:
:func:`mlmd.dynamics.rollout_engine.rollout_step`). Leaving such a replica unscaled
instead added the energy of the forecast's position error at every such call
(ethanol, GFN2-xTB: 0.7 eV in two intervals, then 1400 K).
``U`` of the current positions is carried in ``potential_energy`` (None: not known yet).

Fixed atoms (``fixed``) neither move nor carry velocity, whatever the
forecaster says.

Conserved components: a forecaster conserves nothing exactly, so for a replica whose
``constrained_dof`` is set (a start at zero total momentum, 3; and zero angular momentum
of an isolated molecule, 3 more, 2 for a diatomic; see
:func:`integrators.state.conserved_components`) every interval removes them from the
forecast velocities before the thermostat
(:func:`integrators.state.remove_conserved_motion`). CSVR's one scale factor keeps them at zero, and
N_f = 3N - ``constrained_dof`` counts only the components that carry kinetic energy.
"""

import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

from .csvr import csvr_rescale
from .noise import gaussian_noise
from .splitting import next_step
from .state import (SystemState, degrees_of_freedom, kinetic_energy, kinetic_kT,  # the last two: re-exported
                    remove_conserved_motion)

# The forecaster contract: (positions, atomic_numbers, cell, pbc, batch, velocities)
#   -> {"displacement": [N,3], "velocities": [N,3]}
Forecaster = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor], Dict[str, Tensor]]

#: A potential energy ``U(positions, atomic_numbers, cell, pbc, batch) -> [B]`` eV.
PotentialEnergy = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]

THERMOSTAT_STREAM = 0
FORECAST_STREAM = 1


@dataclass
class RolloutState(SystemState):
    """A state driven by a forecaster: positions are wrapped along periodic directions (Å) and
    ``friction`` is the CSVR rate 1/τ (1/fs, 0: no thermostat)."""

    images: Tensor  # [N,3] int64 lattice translations removed by wrapping
    inverse_basis: Tensor  # [B,3,3] inverse of the cell completed to a basis (for fractional coordinates)
    potential_energy: Optional[Tensor] = None  # [B] eV at ``positions`` for the energy-aware step (None: unknown)
    rejected_streak: Optional[Tensor] = None  # [B] int64: forecasts the energy-aware step rejected in a row

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
         batch: Tensor, kT, friction, seeds, fixed: Tensor = None, constrained_dof=0) -> RolloutState:
    """Build a rollout state (:meth:`integrators.state.SystemState.create`); scalars ``kT`` (eV),
    ``friction`` (1/fs), ``seeds`` and ``constrained_dof`` are broadcast to every replica. Positions are
    wrapped into the cell."""
    cell = cell.to(positions.dtype)
    inverse_basis = wrapping_basis(cell, pbc)
    wrapped, images = wrap(positions, cell, pbc, batch, inverse_basis)
    return RolloutState.create(wrapped, masses, atomic_numbers, cell, pbc, batch, kT, friction, seeds,
                               velocities=velocities, fixed=fixed, constrained_dof=constrained_dof, images=images,
                               inverse_basis=inverse_basis)


def thermostat(state: RolloutState, duration: float) -> RolloutState:
    """CSVR rescaling of every replica with ``friction > 0`` over ``duration`` fs (noise of ``state.step``)."""
    return csvr_rescale(state, duration, THERMOSTAT_STREAM, dof=degrees_of_freedom(state))


def forecast_noise(state: RolloutState) -> Tensor:
    """The standard normal ``[N,6]`` a stochastic forecaster samples with at this state's step."""
    return gaussian_noise(state.seeds, state.step, FORECAST_STREAM, state.batch, state.local_index, columns=6,
                          dtype=state.positions.dtype)


def energy_conserving(moved: RolloutState, before: RolloutState, total_energy: Tensor,
                      potential_energy: PotentialEnergy) -> RolloutState:
    """``moved`` with each replica's velocities scaled so that ``U + K`` equals ``total_energy [B]`` (eV),
    ``potential_energy`` set to ``U`` of its positions. Replicas whose forecast positions alone carry
    ``U >= total_energy`` (or whose ``K = 0`` while energy is left to give) are rejected: they go back to
    ``before``'s positions with its velocities reversed (and its ``U``), which conserves the energy too;
    ``rejected_streak`` counts them in a row. A replica that neither moves nor owes energy (every atom fixed) is
    left as it is. Warns (once per place it is called from) that a rejection happened."""
    energy = potential_energy(moved.positions, moved.atomic_numbers, moved.cell, moved.pbc, moved.batch)
    energy = energy.detach().to(moved.positions.dtype)
    kinetic = kinetic_energy(moved)
    wanted = total_energy - energy
    possible = (wanted > 0) & (kinetic > 0)
    scale = torch.sqrt(torch.where(possible, wanted, kinetic) / torch.where(kinetic > 0, kinetic,
                                                                          torch.ones_like(kinetic)))
    scale = torch.where(possible, scale, torch.ones_like(scale))
    velocities = moved.velocities * scale[moved.batch].unsqueeze(1)
    at_rest = (kinetic == 0) & (wanted == 0)  # nothing moves and nothing is owed (every atom fixed): conserved
    rejected = ~possible & ~at_rest
    streak = torch.zeros_like(rejected, dtype=torch.int64)
    if before.rejected_streak is not None:
        streak = before.rejected_streak
    streak = torch.where(rejected, streak + 1, torch.zeros_like(streak))
    if bool(rejected.any()):
        warnings.warn("energy-aware forecast: a forecast moved a replica to a potential energy above its total "
                      "energy; that interval was rejected (positions kept, velocities reversed). Frequent "
                      "rejections mean the forecaster's position errors are too large for this interval: try a "
                      "shorter interval or a better-trained forecaster", RuntimeWarning, stacklevel=3)
        back = rejected[moved.batch].unsqueeze(1)
        known = before.potential_energy
        if known is None:
            known = total_energy - kinetic_energy(before)
        return moved.replace(positions=torch.where(back, before.positions, moved.positions),
                             images=torch.where(back, before.images, moved.images),
                             velocities=torch.where(back, -before.velocities, velocities),
                             potential_energy=torch.where(rejected, known, energy), rejected_streak=streak)
    return moved.replace(velocities=velocities, potential_energy=energy, rejected_streak=streak)


def step(state: RolloutState, forecaster: Forecaster, interval: float, stochastic: bool = False,
         potential_energy: Optional[PotentialEnergy] = None) -> RolloutState:
    """One forecast interval of ``interval`` fs: forecast (sampled when ``stochastic``), wrap, remove
    conserved motion, the energy-aware scaling when ``potential_energy`` is given, then CSVR."""
    inputs = (state.positions, state.atomic_numbers, state.cell, state.pbc, state.batch, state.velocities)
    total_energy = None
    if potential_energy is not None:
        if state.potential_energy is None:
            state = state.replace(potential_energy=potential_energy(*inputs[:5]).detach().to(state.positions.dtype))
        total_energy = state.potential_energy + kinetic_energy(state)
    out = forecaster(*inputs, noise=forecast_noise(state)) if stochastic else forecaster(*inputs)
    keep = state.fixed.unsqueeze(1)
    displacement = out["displacement"].to(state.positions.dtype)
    velocities = out["velocities"].to(state.positions.dtype)
    displacement = torch.where(keep, torch.zeros_like(displacement), displacement)
    velocities = torch.where(keep, torch.zeros_like(velocities), velocities)
    positions, shift = wrap(state.positions + displacement, state.cell, state.pbc, state.batch, state.inverse_basis)
    moved = state.replace(positions=positions, velocities=velocities, images=state.images + shift,
                          potential_energy=None)
    if bool((state.constrained_dof > 0).any()):
        moved = remove_conserved_motion(moved)
    if total_energy is not None:
        moved = energy_conserving(moved, state, total_energy, potential_energy)
    if bool((state.friction > 0).any()):
        moved = thermostat(moved, interval)
    return next_step(moved)


__all__ = ["FORECAST_STREAM", "Forecaster", "PotentialEnergy", "RolloutState", "energy_conserving", "forecast_noise",
           "init", "kinetic_energy", "degrees_of_freedom", "step", "kinetic_kT",
           "remove_conserved_motion", "thermostat", "wrap", "wrapping_basis"]

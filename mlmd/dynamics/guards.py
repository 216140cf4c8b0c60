"""Guards against wrong physics, shared by ``mlmd md``, ``mlmd forecast`` and the ASE/OpenMM forecast drivers.

Each guard returns a sentence saying what went wrong, or None:

- non-finite positions, velocities or potential energy (naming the first atom);
- a replica hotter than ``max_temperature_K`` (default :func:`default_max_temperature_K`:
  max(3 T, the temperature the canonical distribution of ``N_f = 3 N_free`` degrees of
  freedom exceeds with probability 1e-9));
- two atoms closer than ``min_distance_A`` (through the periodic images);
- a potential energy that moved by more than ``max_energy_jump_eV_per_atom`` per atom
  since the previous check.

A run that trips one stops with :class:`UnstableRunError`, after saving its last good state.
"""

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..errors import MLMDError
from .engine import Snapshot

DEFAULT_MIN_DISTANCE_A = 0.5
DEFAULT_TEMPERATURE_FACTOR = 3.0
DEFAULT_MAX_ENERGY_JUMP_EV_PER_ATOM = 1.0
# Probability per check with which the canonical kinetic energy may exceed the default temperature bound.
TEMPERATURE_TAIL_PROBABILITY = 1e-9


class UnstableRunError(MLMDError):
    """A guard tripped; ``result`` holds the last good state, which was saved."""

    def __init__(self, message: str, result):
        super().__init__(message)
        self.result = result


def default_max_temperature_K(temperature_K: float, free_atoms: int,
                              factor: float = DEFAULT_TEMPERATURE_FACTOR) -> Optional[float]:
    """max(factor·T, T·Γ⁻¹(1 - p; N_f/2)/(N_f/2)) with N_f = 3 N_free and p = 1e-9 (small systems
    fluctuate more); None at T = 0 (no bound)."""
    if temperature_K <= 0:
        return None
    from scipy.stats import gamma

    shape = 1.5 * max(free_atoms, 1)
    return temperature_K * max(factor, float(gamma.isf(TEMPERATURE_TAIL_PROBABILITY, shape)) / shape)


def non_finite(positions: torch.Tensor, velocities: torch.Tensor) -> Optional[str]:
    for what, tensor in (("coordinates", positions), ("velocities", velocities)):
        bad = ~torch.isfinite(tensor).all(dim=1)
        if bool(bad.any()):
            first = int(torch.nonzero(bad)[0])
            return f"{int(bad.sum())} atom(s) got NaN or infinite {what} (first is atom {first})"
    return None


def too_hot(temperature_K: torch.Tensor, max_temperature_K: Optional[float]) -> Optional[str]:
    if max_temperature_K is None:
        return None
    hot = temperature_K > max_temperature_K
    if not bool(hot.any()):
        return None
    worst = int(torch.argmax(temperature_K))
    where = f" of replica {worst}" if temperature_K.numel() > 1 else ""
    return (f"the temperature{where} reached {float(temperature_K[worst]):.4g} K, above the bound "
            f"{max_temperature_K:.4g} K (--max-temperature, max_temperature_K)")


def too_close(positions, cell, pbc, batch, min_distance_A: Optional[float]) -> Optional[str]:
    """The closest pair below ``min_distance_A`` (Å), with indices inside its replica, or None."""
    if min_distance_A is None or positions.shape[0] < 2:
        return None
    from potentials.neighbors import neighbor_list

    edge_index, shifts = neighbor_list(positions, cell, pbc, batch, float(min_distance_A))
    if not edge_index.shape[1]:
        return None
    i, j = edge_index
    vector = positions[j] - positions[i] + torch.einsum("ei,eij->ej", shifts.to(positions.dtype), cell[batch[i]])
    distance = vector.norm(dim=1)
    close = distance < min_distance_A
    if not bool(close.any()):
        return None
    k = int(torch.argmin(torch.where(close, distance, torch.full_like(distance, math.inf))))
    counts = torch.bincount(batch, minlength=cell.shape[0])
    first = torch.cumsum(counts, 0) - counts
    b = int(batch[i[k]])
    where = f" of replica {b}" if cell.shape[0] > 1 else ""
    return (f"atoms {int(i[k] - first[b])} and {int(j[k] - first[b])}{where} came "
            f"{float(distance[k]):.3f} Å apart, closer than {min_distance_A:g} Å (--min-distance, min_distance_A)")


def guard_problem(positions, velocities, cell, pbc, batch, temperature_K, min_distance_A: Optional[float],
                  max_temperature_K: Optional[float]) -> Optional[str]:
    """What is wrong with a state (torch tensors: Å, Å/fs, K per replica), or None."""
    return (non_finite(positions, velocities) or too_hot(temperature_K, max_temperature_K)
            or too_close(positions, cell, pbc, batch, min_distance_A))


def energy_jump(epot_eV: np.ndarray, previous_eV: np.ndarray, n_atoms: int, limit: Optional[float]) -> Optional[str]:
    """A replica whose potential energy moved by more than ``limit`` eV/atom (or became non-finite)."""
    if not np.isfinite(epot_eV).all():
        worst = int(np.flatnonzero(~np.isfinite(epot_eV))[0])
        where = f" of replica {worst}" if len(epot_eV) > 1 else ""
        return f"the potential energy{where} became NaN or infinite"
    if limit is None or previous_eV is None:
        return None
    jump = np.abs(epot_eV - previous_eV) / n_atoms
    worst = int(np.argmax(jump))
    if jump[worst] <= limit:
        return None
    where = f" of replica {worst}" if len(jump) > 1 else ""
    return (f"the potential energy{where} changed by {jump[worst]:.3g} eV/atom "
            f"(limit {limit:g} eV/atom: --max-energy-jump, max_energy_jump_eV_per_atom)")


@dataclass
class Guards:
    """The bounds one run checks at every check point (None switches a guard off)."""

    min_distance_A: Optional[float] = DEFAULT_MIN_DISTANCE_A
    max_temperature_K: Optional[float] = None
    max_energy_jump_eV_per_atom: Optional[float] = None

    def problem(self, snapshot: Snapshot, previous: Optional[Snapshot]) -> Optional[str]:
        """What is wrong with ``snapshot`` (compared with the last good ``previous``), or None."""
        replicas = snapshot.replicas
        n_atoms = len(snapshot.positions_A) // replicas
        positions = torch.from_numpy(np.ascontiguousarray(snapshot.positions_A, dtype=np.float64))
        cell = torch.from_numpy(np.array(np.broadcast_to(snapshot.cell_A, (replicas, 3, 3)), dtype=np.float64))
        pbc = torch.from_numpy(np.array(np.broadcast_to(snapshot.pbc, (replicas, 3)), dtype=bool))
        batch = torch.arange(replicas).repeat_interleave(n_atoms)
        found = guard_problem(positions, torch.from_numpy(np.ascontiguousarray(snapshot.velocities_A_per_fs)),
                              cell, pbc, batch, torch.from_numpy(np.asarray(snapshot.temperature_K, dtype=float)),
                              self.min_distance_A, self.max_temperature_K)
        if found or snapshot.epot_eV is None:
            return found
        before = None if previous is None else previous.epot_eV
        return energy_jump(snapshot.epot_eV, before, n_atoms, self.max_energy_jump_eV_per_atom)

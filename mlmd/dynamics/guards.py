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

For thermostatted runs whose forces are not exact (a forecaster), :class:`ThermostatCheck` also
catches a temperature that settles away from the target, which no instantaneous bound sees (a
forecaster that loses kinetic energy at every call freezes a liquid while every single value looks
plausible). Once the run has equilibrated (``window`` checks), it stops the run when

- a replica's temperature falls below the canonical lower tail, ``T Γ⁻¹(p; N_f/2) / (N_f/2)`` with
  p = 1e-9 and ``N_f = 3 N_free`` (the mirror of the upper bound; never below 0);
- the mean of a replica's temperature over the last ``window`` checks differs from the target by
  more than ``tolerance_K``. Canonical sampling gives that mean a standard deviation of about
  ``T sqrt(2/N_f) sqrt(2 τ_c / W)`` for ``W`` checks with correlation time ``τ_c`` (in checks);
  with ``τ_c`` the thermostat time and ``W = 10 τ_c`` the default tolerance is 5 of those
  standard deviations, and at least 5 % of T.
"""

import math
from collections import deque
from dataclasses import dataclass, field
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


def default_min_temperature_K(temperature_K: float, free_atoms: int) -> Optional[float]:
    """T Γ⁻¹(p; N_f/2)/(N_f/2): the canonical temperature of N_f = 3 N_free degrees of freedom falls below
    it with probability p = 1e-9; None at T = 0."""
    if temperature_K <= 0:
        return None
    from scipy.stats import gamma

    shape = 1.5 * max(free_atoms, 1)
    return temperature_K * float(gamma.ppf(TEMPERATURE_TAIL_PROBABILITY, shape)) / shape


@dataclass
class ThermostatCheck:
    """A thermostatted run keeps its temperature: a lower bound and the running mean over ``window`` checks
    (see the module docstring), both applied only once ``window`` checks have passed."""

    target_K: float
    min_temperature_K: Optional[float]
    tolerance_K: float
    window: int
    history: deque = field(default_factory=deque)
    checks: int = 0

    @classmethod
    def for_run(cls, temperature_K: float, free_atoms: int, correlation_checks: float,
                tolerance_K: Optional[float] = None) -> Optional["ThermostatCheck"]:
        """The default check of a run at ``temperature_K`` whose temperature decorrelates over
        ``correlation_checks`` checks (the thermostat time over the check interval); None at T = 0."""
        if temperature_K <= 0:
            return None
        correlation = max(float(correlation_checks), 1.0)
        window = max(int(math.ceil(10 * correlation)), 50)
        if tolerance_K is None:
            spread = temperature_K * math.sqrt(2.0 / (3.0 * max(free_atoms, 1))) * math.sqrt(2 * correlation / window)
            tolerance_K = max(5.0 * spread, 0.05 * temperature_K)
        return cls(temperature_K, default_min_temperature_K(temperature_K, free_atoms), float(tolerance_K), window)

    def problem(self, temperature_K: np.ndarray, step: int) -> Optional[str]:
        self.checks += 1
        self.history.append(np.asarray(temperature_K, dtype=float).copy())
        if len(self.history) > self.window:
            self.history.popleft()
        if self.checks <= self.window:
            return None
        replicas = len(temperature_K)
        lowest = int(np.argmin(temperature_K))
        where = (lambda k: f" of replica {k}" if replicas > 1 else "")
        if self.min_temperature_K is not None and temperature_K[lowest] < self.min_temperature_K:
            return (f"the temperature{where(lowest)} fell to {temperature_K[lowest]:.4g} K, below the canonical "
                    f"bound {self.min_temperature_K:.4g} K for a {self.target_K:g} K target (the dynamics loses "
                    "kinetic energy)")
        mean = np.mean(np.array(self.history), axis=0)
        worst = int(np.argmax(np.abs(mean - self.target_K)))
        if abs(mean[worst] - self.target_K) > self.tolerance_K:
            return (f"the mean temperature{where(worst)} over the last {self.window} checks is {mean[worst]:.4g} K, "
                    f"more than {self.tolerance_K:.3g} K from the {self.target_K:g} K target (--temperature-drift): "
                    "the thermostat cannot hold it")
        return None


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
    thermostat: Optional[ThermostatCheck] = None

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
        if found is None and self.thermostat is not None and previous is not None:
            found = self.thermostat.problem(np.asarray(snapshot.temperature_K, dtype=float), snapshot.step)
        if found or snapshot.epot_eV is None:
            return found
        before = None if previous is None else previous.epot_eV
        return energy_jump(snapshot.epot_eV, before, n_atoms, self.max_energy_jump_eV_per_atom)

"""ASE ``Atoms`` -> the batched tensors every torch engine starts from, and the starting velocities.

``K`` replicas of one structure of ``N`` atoms are stacked into one batch of
``K N`` atoms (replica ``k`` holds atoms ``k N .. (k+1) N - 1``). Units follow
:mod:`integrators.state`: Å, Å/fs, masses in eV·fs²/Å² (amu × ``AMU_A2_PER_FS2_EV``).
"""

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..checks import fixed_atoms_mask
from ..constants import AMU_A2_PER_FS2_EV, KB_EV_PER_K


@dataclass
class ReplicatedSystem:
    """``replicas`` copies of one structure as torch tensors (float64 unless ``dtype`` says otherwise)."""

    positions: Tensor  # [K N, 3] Å
    masses: Tensor  # [K N] eV fs²/Å²
    atomic_numbers: Tensor  # [K N] int64
    cell: Tensor  # [K, 3, 3] Å, rows are lattice vectors
    pbc: Tensor  # [K, 3] bool
    batch: Tensor  # [K N] replica of each atom
    fixed: Tensor  # [K N] bool, FixAtoms
    seeds: Tensor  # [K] int64, seed + k

    @property
    def replicas(self) -> int:
        return int(self.cell.shape[0])

    def arguments(self) -> Dict[str, Tensor]:
        """Keyword arguments shared by :func:`integrators.state.init_state` and :func:`integrators.rollout.init`."""
        return dict(masses=self.masses, atomic_numbers=self.atomic_numbers, cell=self.cell, pbc=self.pbc,
                    batch=self.batch, seeds=self.seeds, fixed=self.fixed)


def replicate(atoms, replicas: int = 1, seed: int = 0, device="cpu", source: str = "mlmd",
              positions_A: Optional[np.ndarray] = None, dtype: torch.dtype = torch.float64) -> ReplicatedSystem:
    """Stack ``replicas`` copies of ``atoms`` (positions from ``positions_A`` ``[N,3]`` when given)."""
    n = len(atoms)
    fixed = fixed_atoms_mask(atoms, source)
    positions = atoms.positions if positions_A is None else np.asarray(positions_A, dtype=float)

    def tensor(array, kind=dtype) -> Tensor:
        return torch.as_tensor(np.array(array), dtype=kind, device=device)

    return ReplicatedSystem(
        positions=tensor(np.tile(positions, (replicas, 1))),
        masses=tensor(np.tile(atoms.get_masses(), replicas) * AMU_A2_PER_FS2_EV),
        atomic_numbers=tensor(np.tile(atoms.numbers, replicas), torch.int64),
        cell=tensor(np.broadcast_to(atoms.cell.array, (replicas, 3, 3))),
        pbc=tensor(np.broadcast_to(atoms.pbc, (replicas, 3)), torch.bool),
        batch=torch.arange(replicas, device=device).repeat_interleave(n),
        fixed=tensor(np.tile(fixed, replicas), torch.bool),
        seeds=tensor([seed + k for k in range(replicas)], torch.int64),
    )


def start_or_continue(atoms, replicas: int, seed: int, temperature_K: float, device, source: str,
                      restart: Optional[dict] = None):
    """(system, positions, velocities): the replicas of ``atoms`` and where they start, either fresh
    (the structure's positions, :func:`starting_velocities`) or from a restart file's saved state."""
    system = replicate(atoms, replicas, seed, device, source=source)
    if restart is not None:
        return system, restart["positions"].to(device), restart["velocities"].to(device)
    velocities = starting_velocities(atoms, temperature_K, system.seeds.tolist(), source)
    return system, system.positions, torch.as_tensor(velocities, device=device)


def starting_velocities(atoms, temperature_K: float, seeds: Sequence[int], source: str = "mlmd") -> np.ndarray:
    """``[K N, 3]`` Å/fs: the structure's own velocities when it has any (the same for every replica),
    else Maxwell-Boltzmann at ``temperature_K`` from the counter-based noise of :mod:`integrators.noise`
    with replica ``k`` drawing from ``seeds[k]``. Fixed atoms start at rest."""
    from ase import units

    from integrators.state import init_state, maxwell_boltzmann_velocities

    replicas = len(seeds)
    fixed = np.tile(fixed_atoms_mask(atoms, source), replicas)
    own = atoms.get_velocities() * units.fs  # Å/(ASE time) -> Å/fs
    if np.any(own != 0):
        return np.where(fixed[:, None], 0.0, np.tile(own, (replicas, 1)))
    system = replicate(atoms, replicas, source=source)
    system.seeds = torch.tensor(list(seeds), dtype=torch.int64)
    system.positions = torch.zeros_like(system.positions)
    system.cell = torch.zeros_like(system.cell)
    system.pbc = torch.zeros_like(system.pbc)

    def no_forces(positions, atomic_numbers, cell, pbc, batch):
        return {"energy": torch.zeros(cell.shape[0], dtype=positions.dtype), "forces": torch.zeros_like(positions)}

    state = init_state(no_forces, system.positions, kT=KB_EV_PER_K * temperature_K, friction=0.0,
                       **system.arguments())
    return maxwell_boltzmann_velocities(state).numpy()

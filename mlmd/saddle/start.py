"""The starting point of a saddle search: calculator, free atoms, displaced start and initial mode.

:func:`prepare_start` turns a structure and :class:`~mlmd.saddle.settings.SaddleSettings`
into a :class:`SearchStart`: the checked start structure, the indices of the
free atoms, the flattened start coordinates ``x0`` (Å, after the optional
seeded Gaussian displacement) and the unit initial mode over the free
coordinates. The random generator is seeded with ``settings.seed`` and draws
the displacement first, then a random mode.
"""

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..errors import MLMDError


def resolve_calculator(calculator=None, model=None, device: str = "cpu", atoms=None):
    """An ASE calculator from a name (``--calculator``), an mlmd model (``--model``) or the atoms' own."""
    if calculator is not None and model is not None:
        raise MLMDError("give either a calculator or a model, not both")
    if model is not None:
        from .. import MLMDCalculator

        return MLMDCalculator(model, device=device)
    if isinstance(calculator, str):
        from ..calculators import get_calculator

        return get_calculator(calculator)
    if calculator is not None:
        return calculator
    if atoms is not None and atoms.calc is not None:
        return atoms.calc
    raise MLMDError("no potential: give --model MODEL.pt or --calculator NAME (emt, lj, morse, gfn2, ...)")


def free_atoms(atoms, fixed: Optional[Sequence[int]] = None) -> np.ndarray:
    """Indices of atoms free to move: not in a FixAtoms constraint nor in ``fixed``."""
    from ase.constraints import FixAtoms

    mask = np.ones(len(atoms), dtype=bool)
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            mask[constraint.index] = False
    if fixed is not None:
        fixed = np.asarray(list(fixed), dtype=int)
        if len(fixed) and (fixed.min() < -len(atoms) or fixed.max() >= len(atoms)):
            raise MLMDError(f"fixed atom indices must be in 0..{len(atoms) - 1}; got {fixed.tolist()}")
        mask[fixed] = False
    free = np.flatnonzero(mask)
    if len(free) == 0:
        raise MLMDError("no free atoms: every atom is fixed; free some atoms (check the file's constraints "
                        "and --fix)")
    return free


def initial_mode(mode, atoms, free, displacement: np.ndarray, rng) -> np.ndarray:
    """A unit vector over the free coordinates from an array, 'random' or 'displacement'."""
    if mode is None or (isinstance(mode, str) and mode == "random"):
        vector = rng.normal(size=3 * len(free))
    elif isinstance(mode, str):  # 'displacement'; SaddleSettings.validate rejects other names
        vector = displacement.ravel().copy()
    else:
        array = np.asarray(mode, dtype=float)
        if array.shape == (len(atoms), 3):
            array = array[free]
        elif array.shape != (len(free), 3):
            raise MLMDError(f"the mode has shape {array.shape}, but the structure has {len(atoms)} atoms "
                            f"({len(free)} free): give one row of 3 numbers per atom")
        if not np.isfinite(array).all():
            raise MLMDError("the mode contains NaN or infinite values; give finite numbers")
        vector = array.ravel().copy()
    norm = np.linalg.norm(vector)
    if norm == 0:
        raise MLMDError("the mode is zero on the free atoms; give a mode that moves at least one free atom")
    return vector / norm


@dataclass
class SearchStart:
    """A checked start: ``atoms`` (undisplaced copy), ``free`` indices, ``x0`` (Å, displaced) and unit ``mode``."""

    atoms: object
    free: np.ndarray
    x0: np.ndarray
    mode: np.ndarray


def prepare_start(atoms, settings) -> SearchStart:
    """Check ``atoms``, pick the free atoms, apply the seeded displacement and build the initial mode."""
    from ..checks import check_atoms

    check_atoms(atoms, source="start structure", min_distance=settings.min_distance_A)
    free = free_atoms(atoms, settings.fixed)
    rng = np.random.default_rng(settings.seed)
    start_atoms = atoms.copy()
    x0 = atoms.positions[free].ravel().copy()
    displacement = np.zeros_like(x0)
    if settings.displace_A > 0:
        chosen_atoms = settings.displace_atoms
        which = free if chosen_atoms is None else np.intersect1d(free, np.asarray(list(chosen_atoms), dtype=int))
        if len(which) == 0:
            raise MLMDError("displace_atoms names no free atom; list free atoms to displace")
        noise = rng.normal(scale=settings.displace_A, size=(len(atoms), 3))
        chosen = np.isin(free, which)
        displacement = (noise[free] * chosen[:, None]).ravel()
    mode = initial_mode(settings.mode, atoms, free, displacement, rng)
    x0 = x0 + displacement
    moved = start_atoms.copy()
    moved.positions[free] = x0.reshape(-1, 3)
    check_atoms(moved, source="displaced start structure", min_distance=settings.min_distance_A)
    return SearchStart(atoms=start_atoms, free=free, x0=x0, mode=mode)

"""Checks that turn bad structures into clear errors before any model sees them."""

from typing import Optional, Sequence

import numpy as np

from .errors import MLMDError, StructureError


def check_atoms(atoms, source: str = "structure", species: Optional[Sequence[int]] = None,
                min_distance: Optional[float] = None) -> None:
    """Raise :class:`StructureError` for NaN or infinite coordinates, a singular
    periodic cell, no atoms, elements outside ``species``, or atoms closer than
    ``min_distance`` Å."""
    if len(atoms) == 0:
        raise StructureError(f"{source}: the structure has no atoms")
    positions = atoms.get_positions()
    bad = ~np.isfinite(positions).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise StructureError(
            f"{source}: {int(bad.sum())} atom(s) have NaN or infinite coordinates "
            f"(first is atom {first}); fix the coordinates in the input file"
        )
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any():
        cell = np.asarray(atoms.cell.array, dtype=float)
        if not np.isfinite(cell).all():
            raise StructureError(f"{source}: the cell contains NaN or infinite values")
        periodic = cell[pbc]
        lengths = np.linalg.norm(periodic, axis=1)
        gram_det = np.linalg.det(periodic @ periodic.T) if len(periodic) else 1.0
        if (lengths == 0).any() or gram_det <= 1e-12 * np.prod(lengths) ** 2:
            raise StructureError(
                f"{source}: the cell is singular along its periodic axes (pbc={pbc.tolist()}, "
                f"cell lengths {np.linalg.norm(cell, axis=1).round(4).tolist()} Å); give lattice vectors "
                "that span a volume, or set pbc=False along axes without one"
            )
    if species is not None:
        unknown = sorted(set(atoms.numbers.tolist()) - set(int(z) for z in species))
        if unknown:
            from ase.data import chemical_symbols

            names = ", ".join(chemical_symbols[z] for z in unknown)
            known = ", ".join(chemical_symbols[int(z)] for z in species)
            raise StructureError(
                f"{source}: element(s) {names} are not known to the model (it was trained on {known}); "
                "use a model trained on these elements"
            )
    if min_distance is not None and len(atoms) > 1:
        from ase.neighborlist import neighbor_list

        i, j, d = neighbor_list("ijd", atoms, min_distance)
        if len(d):
            k = int(np.argmin(d))
            raise StructureError(
                f"{source}: atoms {int(i[k])} and {int(j[k])} are {d[k]:.3f} Å apart, closer than "
                f"{min_distance} Å; the structure is unphysical or in the wrong units (mlmd uses Å)"
            )


def fixed_atoms_mask(atoms, source: str) -> np.ndarray:
    """Boolean ``[N]`` mask of the atoms held by ``FixAtoms``; any other constraint is refused."""
    from ase.constraints import FixAtoms

    fixed = np.zeros(len(atoms), dtype=bool)
    for constraint in atoms.constraints:
        if not isinstance(constraint, FixAtoms):
            raise MLMDError(f"{source} supports FixAtoms constraints only, not {type(constraint).__name__}; "
                            "remove the other constraints from the structure")
        fixed[constraint.index] = True
    return fixed

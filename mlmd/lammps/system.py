"""An ASE ``Atoms`` as a LAMMPS data file, and LAMMPS's numbers back in ASE's frame.

LAMMPS keeps a triclinic cell lower-triangular (``a`` along x, ``b`` in the xy
plane). With ``cell.T = Q R`` (QR, ``diag(R) > 0``) the LAMMPS cell is
``L = cell Q = R^T``; positions go in as ``x Q`` and forces and the virial come
back as ``f Q^T`` and ``Q W Q^T``. Units are LAMMPS ``metal``: Å, eV, ps, amu,
velocities in Å/ps, pressure in bar.
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..constants import PS_FS
from ..errors import StructureError
from ..io import PathLike, atomic_write
from .library import LammpsError

# LAMMPS's own factor from pressure x volume to energy in metal units (force->nktv2p in update.cpp):
# virial (eV) = pressure (bar) * volume (Å^3) / NKTV2P_METAL. Undoing LAMMPS's conversion with its own number.
NKTV2P_METAL = 1.6021765e6

#: Margin (Å) around an isolated system's atoms in its (shrink-wrapped) LAMMPS box.
ISOLATED_MARGIN_A = 1.0


def lammps_frame(atoms) -> Tuple[np.ndarray, np.ndarray, str]:
    """``(L, Q, boundary)``: the lower-triangular LAMMPS cell (rows a, b, c; Å), the rotation ``Q`` with
    ``L = cell Q``, and the ``boundary`` setting. Isolated systems get a box around their atoms."""
    if atoms.pbc.all():
        cell = np.asarray(atoms.cell.array, dtype=float)
        volume = np.linalg.det(cell)
        if abs(volume) < 1e-9:
            raise StructureError("a periodic structure needs a cell of nonzero volume for LAMMPS; set atoms.cell")
        if volume < 0:
            raise StructureError("LAMMPS needs a right-handed cell, (a x b) . c > 0; swap two lattice vectors")
        q, r = np.linalg.qr(cell.T)
        signs = np.sign(np.diag(r))
        return np.tril((r * signs[:, None]).T), q * signs, "p p p"
    if atoms.pbc.any():
        raise StructureError("the LAMMPS runner takes systems periodic in all three directions or in none; "
                             f"this one has pbc={atoms.pbc.tolist()}")
    extent = np.ptp(atoms.positions, axis=0) + 2 * ISOLATED_MARGIN_A
    return np.diag(extent), np.eye(3), "s s s"


def types_of(atoms, species: Sequence[int]) -> np.ndarray:
    """LAMMPS atom types (1-based position in ``species``) of every atom."""
    index = {int(z): i + 1 for i, z in enumerate(species)}
    missing = sorted(set(int(z) for z in atoms.numbers) - set(index))
    if missing:
        raise StructureError(f"atomic numbers {missing} are not among the model's species {list(species)}; "
                             "use a structure of the model's elements")
    return np.array([index[int(z)] for z in atoms.numbers])


def write_data(atoms, species: Sequence[int], path: PathLike) -> Tuple[np.ndarray, str]:
    """Write ``atoms`` as a LAMMPS data file (atom style ``atomic``, types in ``species`` order, masses,
    velocities when the atoms have any); returns ``(Q, boundary)`` of :func:`lammps_frame`."""
    from ase import units
    from ase.data import atomic_masses

    lower, rotation, boundary = lammps_frame(atoms)
    lower = lower.tolist()
    types = types_of(atoms, species)
    origin = atoms.positions.min(axis=0) - ISOLATED_MARGIN_A if boundary == "s s s" else np.zeros(3)
    positions = (atoms.positions - origin) @ rotation
    masses = atoms.get_masses()
    lines: List[str] = ["LAMMPS data file written by mlmd", "", f"{len(atoms)} atoms", f"{len(species)} atom types",
                        f"0 {lower[0][0]!r} xlo xhi", f"0 {lower[1][1]!r} ylo yhi", f"0 {lower[2][2]!r} zlo zhi"]
    if boundary == "p p p" and any((lower[1][0], lower[2][0], lower[2][1])):
        lines.append(f"{lower[1][0]!r} {lower[2][0]!r} {lower[2][1]!r} xy xz yz")
    lines += ["", "Masses", ""]
    for t, z in enumerate(species, start=1):
        chosen = masses[types == t]
        lines.append(f"{t} {float(chosen[0]) if len(chosen) else float(atomic_masses[z])!r}")
    lines += ["", "Atoms # atomic", ""]
    lines += [f"{i} {t} {x!r} {y!r} {z!r}" for i, (t, (x, y, z)) in enumerate(zip(types.tolist(), positions.tolist()), start=1)]
    velocities = atoms.get_velocities()
    if velocities is not None and np.any(velocities):
        velocities = (velocities * units.fs * PS_FS) @ rotation  # Å/(ASE time) -> Å/fs -> Å/ps
        lines += ["", "Velocities", ""]
        lines += [f"{i} {x!r} {y!r} {z!r}" for i, (x, y, z) in enumerate(velocities.tolist(), start=1)]
    with atomic_write(path) as stream:
        stream.write("\n".join(lines) + "\n")
    return rotation, boundary


def read_dump(path: PathLike, n_atoms: int) -> np.ndarray:
    """The ``[n_atoms, 3]`` columns after ``id`` of the first frame of a LAMMPS custom dump sorted by id."""
    with open(path) as stream:
        lines = stream.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ITEM: ATOMS")) + 1
    rows = np.array([[float(v) for v in line.split()] for line in lines[start:start + n_atoms]])
    if rows.shape != (n_atoms, 4) or not np.array_equal(rows[:, 0], np.arange(1, n_atoms + 1)):
        raise LammpsError(f"LAMMPS dump {path} does not hold atoms 1..{n_atoms} in order; see its log")
    return rows[:, 1:]


def read_thermo(log_path: PathLike) -> Tuple[Dict[str, np.ndarray], Dict[str, float]]:
    """Thermo columns of the last run in a LAMMPS log, by header name, and the run's
    ``loop_seconds``, ``steps`` and ``procs`` from its "Loop time" line."""
    with open(log_path) as stream:
        lines = stream.read().splitlines()
    header = max(i for i, line in enumerate(lines) if line.split()[:1] == ["Step"])
    names = lines[header].split()
    rows = []
    for line in lines[header + 1:]:
        if line.startswith("Loop time"):
            words = line.split()
            loop = {"loop_seconds": float(words[3]), "procs": float(words[5]), "steps": float(words[8])}
            break
        words = line.split()
        if len(words) == len(names) and not line.lstrip().startswith(("WARNING", "ERROR")):
            rows.append([float(v) for v in words])
    else:
        raise LammpsError(f"LAMMPS log {log_path} ends inside a run (no 'Loop time' line); see the log")
    columns = np.array(rows).T
    return dict(zip(names, columns)), loop

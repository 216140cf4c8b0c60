"""Trajectory files of a run through mdtraj: the format follows the extension.

``.dcd`` and ``.xtc`` (with ``NAME_topology.pdb`` beside them for ``mdtraj.load(..., top=...)``)
or ``.h5`` (topology inside). Replica ``k`` is chain ``k`` of the topology
(``traj.atom_slice(traj.top.select("chainid k"))``). Frames are appended to
``NAME.partial.EXT`` and renamed onto ``NAME.EXT`` when the run ends, so the named
file is always complete; a continued run first copies the frames it keeps.
"""

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from ..constants import ANGSTROM_NM, FS_PS
from ..errors import InputFileError
from ..io import PathLike, atomic_path

TRAJECTORY_FORMATS = (".dcd", ".xtc", ".h5")


class TrajectoryWriter:
    """Frames of every replica (replica ``k`` = chain ``k``) through mdtraj; the format follows the extension.

    Frames go to ``NAME.partial.EXT`` and :meth:`close` renames it onto ``NAME.EXT``. With
    ``keep_frames`` the first frames of an earlier run (from its partial file if a killed
    run left one, else from ``NAME.EXT``) are copied first, to continue from a restart file.
    """

    def __init__(self, path: PathLike, atoms, replicas: int, keep_frames: int = 0):
        import mdtraj

        self.path = Path(path)
        self.kind = self.path.suffix.lower()
        self.partial = self.path.with_name(f"{self.path.stem}.partial{self.path.suffix}")
        # Slabs and wires keep their cell (vacuum included); molecules in open space have none.
        self.periodic = bool(np.any(atoms.pbc)) and atoms.cell.rank == 3
        topology = mdtraj.Topology()
        for _ in range(replicas):
            residue = topology.add_residue("MOL", topology.add_chain())
            for index, z in enumerate(atoms.numbers):
                element = mdtraj.element.Element.getByAtomicNumber(int(z))
                topology.add_atom(f"{element.symbol}{index + 1}", element, residue)
        self.topology = topology
        kept = self._read_frames(keep_frames) if keep_frames else None
        self.handle = self._open()
        if kept is not None:
            self.handle.write(**kept)
        self.frames = keep_frames
        self.topology_file = None  # .h5 holds its topology
        if self.kind != ".h5":
            self.topology_file = self.path.with_name(f"{self.path.stem}_topology.pdb")
            first = np.tile(atoms.positions, (replicas, 1))
            with atomic_path(self.topology_file) as temporary:
                mdtraj.Trajectory(first[None] * ANGSTROM_NM, topology).save_pdb(str(temporary))

    def _open(self):
        from mdtraj.formats import DCDTrajectoryFile, HDF5TrajectoryFile, XTCTrajectoryFile

        if self.kind == ".dcd":
            return DCDTrajectoryFile(str(self.partial), "w")
        if self.kind == ".xtc":
            return XTCTrajectoryFile(str(self.partial), "w")
        handle = HDF5TrajectoryFile(str(self.partial), "w")
        handle.topology = self.topology
        return handle

    def _read_frames(self, count: int) -> dict:
        from mdtraj.formats import DCDTrajectoryFile, HDF5TrajectoryFile, XTCTrajectoryFile

        source = self.partial if self.partial.exists() else self.path
        if not source.exists():
            raise InputFileError(f"cannot continue trajectory {self.path}: neither it nor {self.partial.name} "
                                 "exists; give the --trajectory of the run that wrote the restart file")
        if self.kind == ".dcd":
            with quiet_stdout(), DCDTrajectoryFile(str(source), "r") as handle:
                xyz, lengths, angles = handle.read()
            frames = dict(xyz=xyz, cell_lengths=lengths, cell_angles=angles)
        elif self.kind == ".xtc":
            with XTCTrajectoryFile(str(source), "r") as handle:
                xyz, time_ps, step, box = handle.read()
            frames = dict(xyz=xyz, time=time_ps, step=step, box=box)
        else:
            with HDF5TrajectoryFile(str(source), "r") as handle:
                data = handle.read()
            frames = dict(coordinates=data.coordinates, time=data.time, cell_lengths=data.cell_lengths,
                          cell_angles=data.cell_angles)
        first = next(iter(frames.values()))
        if len(first) < count:
            raise InputFileError(f"trajectory {source} has {len(first)} frames but the restart file expects "
                                 f"{count}; continue with the trajectory of the run that wrote the restart file")
        return {key: None if value is None else value[:count] for key, value in frames.items()}

    def write(self, positions_A: np.ndarray, step: int, time_fs: float, cell_A: np.ndarray) -> None:
        from ase.geometry import cell_to_cellpar

        cellpar = cell_to_cellpar(cell_A)[None] if self.periodic else None
        if self.kind == ".dcd":
            self.handle.write(positions_A[None].astype(np.float32),
                              None if cellpar is None else cellpar[:, :3], None if cellpar is None else cellpar[:, 3:])
        elif self.kind == ".xtc":
            box = (cell_A if self.periodic else np.zeros((3, 3))) * ANGSTROM_NM
            self.handle.write((positions_A * ANGSTROM_NM)[None].astype(np.float32), time=np.array([time_fs * FS_PS]),
                              step=np.array([step], dtype=np.int32), box=box[None].astype(np.float32))
        else:
            self.handle.write((positions_A * ANGSTROM_NM)[None], time=np.array([time_fs * FS_PS]),
                              cell_lengths=None if cellpar is None else cellpar[:, :3] * ANGSTROM_NM,
                              cell_angles=None if cellpar is None else cellpar[:, 3:])
        self.frames += 1

    def flush(self) -> None:
        if hasattr(self.handle, "flush"):
            self.handle.flush()

    def close(self) -> None:
        """Close the file and rename the partial file onto the trajectory's name."""
        self.handle.close()
        with open(self.partial, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(self.partial, self.path)


@contextlib.contextmanager
def quiet_stdout():
    """Silence what C code prints on file descriptor 1 (mdtraj's DCD reader announces every file)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)

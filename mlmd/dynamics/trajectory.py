"""Trajectory files of a run: the extension picks the writer from a registry.

Built in (``mlmd md`` / ``mlmd forecast`` ``--trajectory``, ``mlmd.md.run(trajectory=...)``):

- ``.dcd``, ``.xtc`` (with ``NAME_topology.pdb`` beside them for ``mdtraj.load(..., top=...)``)
  and ``.h5`` (mdtraj's HDF5, topology inside), written through mdtraj: :class:`TrajectoryWriter`.
  Replica ``k`` is chain ``k`` of the topology (``traj.atom_slice(traj.top.select("chainid k"))``).
  XTC and mdtraj's HDF5 store each frame's time. A DCD header stores a uniform frame interval:
  ``ISTART`` (step of the first frame), ``NSAVC`` (steps between frames) and ``DELTA`` (time
  step, AKMA units, 1 AKMA = 48.888 fs); mdtraj's writer cannot set them, so they are written
  into the header before the file takes its name. MDAnalysis reads them (``dt = NSAVC·DELTA``);
  mdtraj's DCD reader ignores them and numbers the frames 0, 1, 2, ...:
  ``traj.time = dcd_frame_times_ps(path)`` gives mdtraj the times.
- ``.h5md``: H5MD 1.1 with h5py (:mod:`mlmd.dynamics.h5md`), readable by MDAnalysis.
- ``.xyz`` / ``.extxyz`` and ``.traj``: ASE's extended XYZ and trajectory files
  (:mod:`mlmd.dynamics.ase_frames`), one image per replica with energy, forces and velocities.

Every writer appends to ``NAME.partial.EXT`` and :meth:`FrameWriter.close` renames it onto
``NAME.EXT``, so the named file is always complete; a continued run first copies the frames it
keeps (from the partial file a killed run left, else from ``NAME.EXT``). Another format plugs in
with :func:`register_trajectory_format`.
"""

import contextlib
import os
import struct
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..constants import AKMA_FS, ANGSTROM_NM, FS_PS
from ..errors import InputFileError, MLMDError
from ..registry import load_registered
from ..io import PathLike, atomic_path
from .engine import Snapshot

#: suffix -> writer class (``cls(path, atoms, replicas, keep_frames)``).
TRAJECTORY_WRITERS: Dict[str, Callable] = {}
# Built-in formats, in the order messages list them; each registers when its module is imported.
BUILTIN_TRAJECTORY_MODULES = {".dcd": __name__, ".xtc": __name__, ".h5": __name__, ".h5md": "mlmd.dynamics.h5md",
                              ".xyz": "mlmd.dynamics.ase_frames", ".extxyz": "mlmd.dynamics.ase_frames",
                              ".traj": "mlmd.dynamics.ase_frames"}

def register_trajectory_format(*suffixes: str):
    """Class decorator: make a writer the trajectory format of files ending in ``suffixes``."""

    def decorate(cls):
        for suffix in suffixes:
            TRAJECTORY_WRITERS[suffix] = cls
        return cls

    return decorate


def trajectory_suffixes() -> List[str]:
    """Every suffix a trajectory file may have (registered and built in)."""
    return list(dict.fromkeys([*BUILTIN_TRAJECTORY_MODULES, *TRAJECTORY_WRITERS]))


def trajectory_writer_class(path: PathLike):
    """The writer registered for ``path``'s suffix; one clear error for an unknown one."""
    writer = load_registered(Path(path).suffix.lower(), TRAJECTORY_WRITERS, BUILTIN_TRAJECTORY_MODULES)
    if writer is None:
        raise MLMDError(f"trajectory {path}: the extension picks the format; use one of "
                        f"{', '.join(trajectory_suffixes())}")
    return writer


def open_trajectory(path: PathLike, atoms, replicas: int, keep_frames: int = 0):
    """A writer for ``path`` (format from its suffix) holding ``replicas`` copies of ``atoms``."""
    return trajectory_writer_class(path)(path, atoms, replicas, keep_frames)


class FrameWriter:
    """Base of the writers: frames go to ``NAME.partial.EXT``, :meth:`close` renames it onto ``NAME.EXT``.

    ``frames`` counts the recorded frames (kept ones included), as restart files store it.
    Subclasses implement ``write(snapshot, time_fs)``, ``flush()`` and ``close_handle()``.
    """

    topology_file: Optional[Path] = None

    @staticmethod
    def topology_path(path: PathLike) -> Optional[Path]:
        """The topology file written beside ``path`` (None: the format holds its own)."""
        return None

    def __init__(self, path: PathLike, atoms, replicas: int, keep_frames: int = 0):
        self.path = Path(path)
        self.partial = self.path.with_name(f"{self.path.stem}.partial{self.path.suffix}")
        self.atoms, self.replicas, self.frames = atoms, replicas, keep_frames

    def source_to_continue(self) -> Path:
        """The file whose first frames a continued run keeps: the partial file of a killed run, else NAME.EXT."""
        source = self.partial if self.partial.exists() else self.path
        if not source.exists():
            raise InputFileError(f"cannot continue trajectory {self.path}: neither it nor {self.partial.name} "
                                 "exists; give the --trajectory of the run that wrote the restart file")
        return source

    def too_few_frames(self, source: Path, found: int, count: int) -> InputFileError:
        return InputFileError(f"trajectory {source} has {found} frames but the restart file expects {count}; "
                              "continue with the trajectory of the run that wrote the restart file")

    def flush(self) -> None:
        """Push written frames to the file (restart points call this)."""

    def close_handle(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Close the file and rename the partial file onto the trajectory's name."""
        self.close_handle()
        with open(self.partial, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(self.partial, self.path)


@register_trajectory_format(".dcd", ".xtc", ".h5")
class TrajectoryWriter(FrameWriter):
    """Frames of every replica (replica ``k`` = chain ``k``) through mdtraj: DCD, XTC or mdtraj's HDF5."""

    def __init__(self, path: PathLike, atoms, replicas: int, keep_frames: int = 0):
        import mdtraj

        super().__init__(path, atoms, replicas, keep_frames)
        self.kind = self.path.suffix.lower()
        # Slabs and wires keep their cell (vacuum included); molecules in open space have none.
        self.periodic = bool(np.any(atoms.pbc)) and atoms.cell.rank == 3
        # (frame index, step, time in fs) of two frames: the DCD header's timing.
        self.stamps: List[Tuple[int, int, float]] = []
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
        self.topology_file = self.topology_path(self.path)
        if self.topology_file is not None:
            first = np.tile(atoms.positions, (replicas, 1))
            with atomic_path(self.topology_file) as temporary:
                mdtraj.Trajectory(first[None] * ANGSTROM_NM, topology).save_pdb(str(temporary))

    @staticmethod
    def topology_path(path: PathLike) -> Optional[Path]:
        """``NAME_topology.pdb`` beside a DCD or XTC file; mdtraj's HDF5 holds its topology."""
        path = Path(path)
        return None if path.suffix.lower() == ".h5" else path.with_name(f"{path.stem}_topology.pdb")

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

        source = self.source_to_continue()
        if self.kind == ".dcd":
            with quiet_stdout(), DCDTrajectoryFile(str(source), "r") as handle:
                xyz, lengths, angles = handle.read()
            frames = dict(xyz=xyz, cell_lengths=lengths, cell_angles=angles)
            first_step, steps_per_frame, timestep_fs, written = read_dcd_timing(source)
            if written >= 2 and count >= 2:  # a header mlmd completed (a single frame's has no interval)
                self.stamps = [(k, first_step + k * steps_per_frame, (first_step + k * steps_per_frame) * timestep_fs)
                               for k in (0, 1)]
        elif self.kind == ".xtc":
            with XTCTrajectoryFile(str(source), "r") as handle:
                xyz, time_ps, step, box = handle.read()
            frames = dict(xyz=xyz, time=time_ps, step=step, box=box)
        else:
            with HDF5TrajectoryFile(str(source), "r") as handle:
                data = handle.read()
            frames = dict(coordinates=data.coordinates, time=data.time, cell_lengths=data.cell_lengths,
                          cell_angles=data.cell_angles)
        found = len(next(iter(frames.values())))
        if found < count:
            raise self.too_few_frames(source, found, count)
        return {key: None if value is None else value[:count] for key, value in frames.items()}

    def write(self, snapshot: Snapshot, time_fs: float) -> None:
        from ase.geometry import cell_to_cellpar

        positions_A, cell_A, step = snapshot.output_positions_A, snapshot.cell_A, snapshot.step
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
        if len(self.stamps) < 2:
            self.stamps.append((self.frames, int(step), float(time_fs)))
        self.frames += 1

    def flush(self) -> None:
        if hasattr(self.handle, "flush"):
            self.handle.flush()

    def close_handle(self) -> None:
        self.handle.close()
        if self.kind == ".dcd" and len(self.stamps) == 2 and self.stamps[1][1] > self.stamps[0][1]:
            (frame0, step0, time0), (frame1, step1, time1) = self.stamps
            steps_per_frame = (step1 - step0) // (frame1 - frame0)
            timestep_fs = (time1 - time0) / (step1 - step0)
            first_time_fs = time0 - frame0 * steps_per_frame * timestep_fs
            write_dcd_timing(self.partial, round(first_time_fs / timestep_fs), steps_per_frame, timestep_fs)


# The CHARMM DCD header: int32 84, "CORD", 20 int32 control words (NSET, ISTART, NSAVC, NSTEP, ...,
# DELTA as float32 in word 9, CHARMM version in word 19), int32 84.
_DCD_CONTROL = 8  # byte offset of the control words


def _dcd_byte_order(head: bytes, path: Path) -> str:
    for order in "<>":
        if len(head) >= 92 and struct.unpack(order + "i", head[:4])[0] == 84 and head[4:8] == b"CORD":
            if struct.unpack(order + "i", head[_DCD_CONTROL + 76:_DCD_CONTROL + 80])[0] == 0:
                raise InputFileError(f"{path} is an X-PLOR DCD file, not CHARMM's; mlmd reads the timing of "
                                     "the CHARMM DCD files it writes")
            return order
    raise InputFileError(f"{path} is not a DCD file (no CORD header); give the DCD file a run wrote")


def read_dcd_timing(path: PathLike) -> Tuple[int, int, float, int]:
    """``(ISTART, NSAVC, time step in fs, NSET)`` from a CHARMM DCD header."""
    path = Path(path)
    with open(path, "rb") as stream:
        head = stream.read(92)
    order = _dcd_byte_order(head, path)
    nset, istart, nsavc = struct.unpack(order + "3i", head[_DCD_CONTROL:_DCD_CONTROL + 12])
    (delta,) = struct.unpack(order + "f", head[_DCD_CONTROL + 36:_DCD_CONTROL + 40])
    return istart, nsavc, delta * AKMA_FS, nset


def write_dcd_timing(path: PathLike, first_step: int, steps_per_frame: int, timestep_fs: float) -> None:
    """Set ISTART, NSAVC, NSTEP (= ISTART + NSET·NSAVC, as CHARMM and VMD write it) and DELTA in place."""
    path = Path(path)
    with open(path, "r+b") as stream:
        order = _dcd_byte_order(stream.read(92), path)
        stream.seek(_DCD_CONTROL)
        (nset,) = struct.unpack(order + "i", stream.read(4))
        stream.write(struct.pack(order + "3i", first_step, steps_per_frame, first_step + nset * steps_per_frame))
        stream.seek(_DCD_CONTROL + 36)
        stream.write(struct.pack(order + "f", timestep_fs / AKMA_FS))


def dcd_frame_times_ps(path: PathLike) -> np.ndarray:
    """Time of every frame (ps) from the DCD header, for ``mdtraj_trajectory.time = ...``."""
    istart, nsavc, timestep_fs, nset = read_dcd_timing(path)
    return (istart + nsavc * np.arange(nset)) * timestep_fs * FS_PS


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

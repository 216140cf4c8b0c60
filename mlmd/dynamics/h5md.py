"""H5MD 1.1 trajectories (``.h5md``) written with h5py, readable by MDAnalysis and other H5MD readers.

Layout (every replica's atoms in one particle group, replica ``k`` = particles ``k·N .. k·N + N - 1``)::

    /h5md                      version [1, 1]; author (name), creator (name "mlmd", version)
    /particles/trajectory
        species                atomic numbers [K·N]
        box                    dimension 3, boundary periodic|none per axis;
          edges/               cell rows [T, 3, 3], Angstrom (only when the cell spans a volume)
        position/              step [T], time [T] fs, value [T, K·N, 3] Angstrom
        velocity/              value [T, K·N, 3] Angstrom fs-1
        force/                 value [T, K·N, 3] kJ mol-1 Angstrom-1 (when the engine has forces)
    /observables
        potential_energy/      value [T, K] eV (when the engine has an energy; NaN where a frame has none)
        kinetic_energy/        value [T, K] eV
        temperature/           value [T, K] K

Every time-dependent element shares the one ``step`` and ``time`` dataset (hard links, as
the specification allows). Forces are in kJ mol⁻¹ Å⁻¹ because MDAnalysis's H5MD reader knows
no eV-based force unit; the ``unit`` attribute says so. A continued run copies the file it
continues to the partial file and cuts every element to the frames it keeps.
"""

import getpass
import shutil

import numpy as np

from .. import __version__
from ..constants import EV_KJ_PER_MOL
from ..errors import InputFileError
from ..io import PathLike
from .engine import Snapshot
from .trajectory import FrameWriter, register_trajectory_format

GROUP = "particles/trajectory"  # the particle group name MDAnalysis also uses for its minimal topology
H5MD_VERSION = (1, 1)


def author_name() -> str:
    """The user running mlmd, for ``/h5md/author`` (``"unknown"`` where the system has no user name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no USER/LOGNAME variable
        return "unknown"


def open_h5(path, mode: str):
    """``h5py.File``; a file another process holds open (HDF5 file lock) is one clear error."""
    import h5py

    try:
        return h5py.File(path, mode)
    except OSError as exc:
        if "lock" not in str(exc).lower():
            raise
        raise InputFileError(f"cannot open the trajectory {path}: another process holds it open (HDF5 file lock); "
                             "wait for that run to end or stop it, then continue") from None


@register_trajectory_format(".h5md")
class H5MDWriter(FrameWriter):
    """Frames of every replica as H5MD 1.1 (layout in the module docstring)."""

    def __init__(self, path: PathLike, atoms, replicas: int, keep_frames: int = 0):
        super().__init__(path, atoms, replicas, keep_frames)
        self.has_volume = atoms.cell.volume > 0.0
        if keep_frames:
            source = self.source_to_continue()
            if source != self.partial:
                shutil.copyfile(source, self.partial)
            self.file = open_h5(self.partial, "r+")
            self._cut(keep_frames)
        else:
            self.file = open_h5(self.partial, "w")
            self._start(atoms, replicas)

    def _start(self, atoms, replicas: int) -> None:
        h5md = self.file.create_group("h5md")
        h5md.attrs["version"] = np.array(H5MD_VERSION, dtype=np.int32)
        h5md.create_group("author").attrs["name"] = author_name()
        creator = h5md.create_group("creator")
        creator.attrs["name"], creator.attrs["version"] = "mlmd", __version__
        particles = self.file.create_group(GROUP)
        particles.create_dataset("species", data=np.tile(atoms.numbers, replicas).astype(np.int32))
        box = particles.create_group("box")
        box.attrs["dimension"] = np.int32(3)
        box.attrs["boundary"] = ["periodic" if periodic else "none" for periodic in atoms.pbc]

    def _elements(self):
        """Every time-dependent element group (those holding a ``value`` dataset)."""
        found = []
        self.file.visititems(lambda name, item: found.append(item) if name.endswith("/value") else None)
        return [value.parent for value in found]

    def _cut(self, count: int) -> None:
        found = self.file[f"{GROUP}/position/value"].shape[0]
        if found < count:
            self.file.close()
            raise self.too_few_frames(self.partial, found, count)
        for element in self._elements():
            for name in ("step", "time", "value"):
                element[name].resize(count, axis=0)

    def _element(self, path: str, frame_shape, unit: str):
        """The element at ``path`` (created on first use, sharing the position group's step and time)."""
        if path in self.file:
            return self.file[path]
        group = self.file.create_group(path)
        position = f"{GROUP}/position"
        if path == position:
            group.create_dataset("step", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(256,))
            time = group.create_dataset("time", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(256,))
            time.attrs["unit"] = "fs"
        else:
            group["step"], group["time"] = self.file[f"{position}/step"], self.file[f"{position}/time"]
        value = group.create_dataset("value", shape=(0, *frame_shape), maxshape=(None, *frame_shape),
                                     dtype=np.float64, chunks=(1, *frame_shape))
        if unit:
            value.attrs["unit"] = unit
        return group

    def _append(self, path: str, values: np.ndarray, unit: str) -> None:
        value = self._element(path, values.shape, unit)["value"]
        value.resize(value.shape[0] + 1, axis=0)
        value[-1] = values

    def write(self, snapshot: Snapshot, time_fs: float) -> None:
        position = self._element(f"{GROUP}/position", snapshot.output_positions_A.shape, "Angstrom")
        for name, value in (("step", snapshot.step), ("time", time_fs)):
            position[name].resize(position[name].shape[0] + 1, axis=0)
            position[name][-1] = value
        position["value"].resize(position["value"].shape[0] + 1, axis=0)
        position["value"][-1] = snapshot.output_positions_A
        self._append(f"{GROUP}/velocity", snapshot.velocities_A_per_fs, "Angstrom fs-1")
        if snapshot.forces_eV_per_A is not None or f"{GROUP}/force" in self.file:
            forces = snapshot.forces_eV_per_A
            forces = np.full(snapshot.positions_A.shape, np.nan) if forces is None else forces * EV_KJ_PER_MOL
            self._append(f"{GROUP}/force", forces, "kJ mol-1 Angstrom-1")
        if self.has_volume:
            self._append(f"{GROUP}/box/edges", np.asarray(snapshot.cell_A, dtype=float), "Angstrom")
        if snapshot.epot_eV is not None or "observables/potential_energy" in self.file:
            epot = np.full(snapshot.replicas, np.nan) if snapshot.epot_eV is None else snapshot.epot_eV
            self._append("observables/potential_energy", np.asarray(epot, dtype=float), "eV")
        self._append("observables/kinetic_energy", np.asarray(snapshot.ekin_eV, dtype=float), "eV")
        self._append("observables/temperature", np.asarray(snapshot.temperature_K, dtype=float), "K")
        self.frames += 1

    def flush(self) -> None:
        self.file.flush()

    def close_handle(self) -> None:
        self.file.close()

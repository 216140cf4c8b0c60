"""Molecular dynamics with any mlmd model or ASE calculator: :func:`run` and ``mlmd md``.

Two engines run the same simulation:

- ``engine="torch"`` (default): the schemes of :mod:`integrators` (``baoab``,
  ``obabo``, ``gjf``, ``verlet``, ``csvr``) on a torch state, with the model
  contract on CPU or CUDA, or with an ASE calculator wrapped as the same
  energy/forces callable (:class:`CalculatorPotential`), so every scheme works
  with every calculator. ``replicas=K`` runs K independent copies in one batch.
- ``engine="openmm"``: the model as an openmm-torch ``TorchForce``
  (:func:`mlmd.openmm.create_system`) with the integrators of
  :mod:`mlmd.openmm_integrators` (``baoab``, ``gjf``, ``langevin-middle``, ``verlet``).

Conventions (the same in both engines):

- units eV, Å, fs, amu, K; ``friction_per_ps`` is γ in 1/ps (1/τ for ``csvr``),
  default 1/ps: weak enough to leave the dynamics nearly Newtonian, strong
  enough to thermalise a small molecule within a few ps;
- starting velocities are the structure's own when it has any, else drawn from
  Maxwell-Boltzmann at ``temperature_K`` with the counter-based seeded noise of
  :mod:`integrators.noise`; replica ``k`` uses seed ``seed + k``, so it repeats
  a single run with that seed exactly;
- ``T = 2 E_kin / (3 N_free k_B)`` (fixed atoms excluded, centre of mass not constrained);
- the CSV log (``step,time_fs,epot_eV,ekin_eV,temperature_K``) and the
  trajectory get a row/frame at step 0 and every ``stride`` steps; with
  replicas the log holds the mean over replicas (of the energy of each replica
  and of its temperature) and the trajectory holds every replica, replica ``k``
  being chain ``k`` of its topology (``traj.atom_slice(traj.top.select("chainid k"))``);
- trajectories go through mdtraj, by extension: ``.dcd`` and ``.xtc`` (with a
  ``NAME_topology.pdb`` beside them for ``mdtraj.load(..., top=...)``) or ``.h5``
  (topology inside). Frames are appended to ``NAME.partial.EXT`` during the
  run and renamed onto ``NAME.EXT`` at the end, so the named file is always
  complete; the log and the restart file are rewritten atomically at every
  restart point (every ``restart_every`` steps) and at the end;
- ``steps`` is the total length: with ``restart`` the run continues from the
  saved step up to ``steps``, truncating the log and trajectory to that step,
  and repeats bit for bit what an uninterrupted run would have done;
- at every log/restart point the run stops if the potential energy or any
  coordinate is not finite, the force call fails, or the potential energy of a
  replica moved by more than ``max_energy_jump_eV_per_atom`` per atom since the
  previous point; the last good state is then saved (restart file, log,
  trajectory, plot) and :class:`UnstableSimulationError` says what happened.

After the run a PNG of the energies and the temperature against time is
written next to the log (``md.csv`` -> ``md.png``).
"""

import contextlib
import csv
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .checks import fixed_atoms_mask
from .cli import Command
from .constants import (
    AMU_A2_PER_FS2_EV,
    A_PER_FS_NM_PER_PS,
    ANGSTROM_NM,
    FS_NS,
    FS_PS,
    KB_EV_PER_K,
    KJ_PER_MOL_EV,
    NM_ANGSTROM,
    SECONDS_PER_DAY,
)
from .errors import InputFileError, MLMDError
from .io import PathLike, atomic_path, atomic_write, load_restart, save_restart

ENGINES = ("torch", "openmm")
LOG_HEADER = ("step", "time_fs", "epot_eV", "ekin_eV", "temperature_K")
TRAJECTORY_FORMATS = (".dcd", ".xtc", ".h5")
RESTART_FORMAT = "mlmd md restart"
DEFAULT_FRICTION_PER_PS = 1.0
DEFAULT_MAX_ENERGY_JUMP_EV_PER_ATOM = 1.0
# Calls after which TorchScript's profiling executor runs a module's optimised graph.
WARM_UP_CALLS = 3


class UnstableSimulationError(MLMDError):
    """The dynamics blew up; ``result`` holds the last good state, which was saved."""

    def __init__(self, message: str, result: "MDResult"):
        super().__init__(message)
        self.result = result


@dataclass
class MDResult:
    """What a run leaves behind: the final (last good) state and the files written."""

    step: int
    time_fs: float
    positions: np.ndarray  # [replicas, atoms, 3] Å
    velocities: np.ndarray  # [replicas, atoms, 3] Å/fs
    log: np.ndarray  # [rows, 5] as LOG_HEADER
    files: Dict[str, Path] = field(default_factory=dict)
    ns_per_day: float = float("nan")


@dataclass
class _Snapshot:
    step: int
    epot_eV: np.ndarray  # [replicas]
    ekin_eV: np.ndarray  # [replicas]
    temperature_K: np.ndarray  # [replicas]
    positions_A: np.ndarray  # [replicas * atoms, 3]
    velocities_A_per_fs: np.ndarray  # [replicas * atoms, 3]
    cell_A: np.ndarray  # [3,3]


class _ForceCallFailed(Exception):
    """Internal: the energy/forces call raised during a stretch of steps."""


def _one_line(exc: BaseException) -> str:
    """The line of an exception's message that says what went wrong (TorchScript puts it last)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[-1] if len(lines) > 1 and "TorchScript" in lines[0] else f"{type(exc).__name__}: {lines[0]}"


# --------------------------------------------------------------------------- potentials


class CalculatorPotential:
    """An ASE calculator as the energy/forces callable of the model contract (CPU, float64).

    Each replica has its own copy of the atoms (and, for a calculator given by
    name, its own calculator); replicas are evaluated one after another.
    """

    def __init__(self, atoms, calculator, replicas: int = 1):
        from .calculators import get_calculator

        self.replica_atoms = []
        for _ in range(replicas):
            copy = atoms.copy()
            copy.set_constraint()
            copy.calc = get_calculator(calculator) if isinstance(calculator, str) else calculator
            self.replica_atoms.append(copy)

    def __call__(self, positions, atomic_numbers, cell, pbc, batch):
        import torch

        n_atoms = len(self.replica_atoms[0])
        coordinates = positions.detach().to("cpu", torch.float64).numpy().reshape(-1, n_atoms, 3)
        energy = np.zeros(len(self.replica_atoms))
        forces = np.zeros_like(coordinates)
        for r, atoms in enumerate(self.replica_atoms):
            atoms.set_positions(coordinates[r], apply_constraint=False)
            energy[r] = atoms.get_potential_energy()
            forces[r] = atoms.get_forces(apply_constraint=False)
        return {"energy": torch.from_numpy(energy).to(positions.device),
                "forces": torch.from_numpy(forces.reshape(-1, 3)).to(positions.device)}


def _starting_velocities(atoms, fixed: np.ndarray, temperature_K: float, seeds: Sequence[int]) -> np.ndarray:
    """[replicas * atoms, 3] Å/fs: the structure's velocities if it has any, else seeded Maxwell-Boltzmann."""
    import torch
    from ase import units

    from integrators.state import init_state, maxwell_boltzmann_velocities

    replicas = len(seeds)
    own = atoms.get_velocities() * units.fs  # Å/(ASE time) -> Å/fs
    if np.any(own != 0):
        return np.where(fixed[:, None], 0.0, np.tile(own, (replicas, 1)))
    n = len(atoms)

    def no_forces(positions, atomic_numbers, cell, pbc, batch):
        return {"energy": torch.zeros(cell.shape[0], dtype=positions.dtype), "forces": torch.zeros_like(positions)}

    state = init_state(
        no_forces, torch.zeros(replicas * n, 3, dtype=torch.float64),
        torch.from_numpy(np.tile(atoms.get_masses(), replicas) * AMU_A2_PER_FS2_EV),
        torch.from_numpy(np.tile(atoms.numbers, replicas)), torch.zeros(replicas, 3, 3, dtype=torch.float64),
        torch.zeros(replicas, 3, dtype=torch.bool), torch.arange(replicas).repeat_interleave(n),
        kT=KB_EV_PER_K * temperature_K, friction=0.0, seeds=torch.tensor(list(seeds)),
        fixed=torch.from_numpy(np.tile(fixed, replicas)))
    return maxwell_boltzmann_velocities(state).numpy()


# --------------------------------------------------------------------------- engines


class _TorchEngine:
    """The :mod:`integrators` schemes on a batch of replicas."""

    def __init__(self, atoms, energy_forces, integrator: str, temperature_K: float, friction_per_ps: float,
                 timestep_fs: float, seed: int, replicas: int, device: str, restart: Optional[dict]):
        import torch

        from integrators import INTEGRATORS
        from integrators.state import init_state

        self.step_function = INTEGRATORS[integrator]
        self.energy_forces = energy_forces
        self.timestep_fs = timestep_fs
        n = len(atoms)
        fixed = fixed_atoms_mask(atoms, "mlmd md")
        seeds = [seed + k for k in range(replicas)]
        as_tensor = lambda array, dtype=torch.float64: torch.as_tensor(np.array(array), dtype=dtype, device=device)
        if restart is None:
            positions = as_tensor(np.tile(atoms.positions, (replicas, 1)))
            velocities = as_tensor(_starting_velocities(atoms, fixed, temperature_K, seeds))
        else:
            positions = restart["positions"].to(device)
            velocities = restart["velocities"].to(device)
        state = init_state(
            energy_forces, positions, as_tensor(np.tile(atoms.get_masses(), replicas) * AMU_A2_PER_FS2_EV),
            as_tensor(np.tile(atoms.numbers, replicas), torch.int64),
            as_tensor(np.broadcast_to(atoms.cell.array, (replicas, 3, 3))),
            as_tensor(np.broadcast_to(atoms.pbc, (replicas, 3)), torch.bool),
            torch.arange(replicas, device=device).repeat_interleave(n),
            kT=KB_EV_PER_K * temperature_K, friction=friction_per_ps * FS_PS,
            seeds=as_tensor(seeds, torch.int64), velocities=velocities,
            fixed=as_tensor(np.tile(fixed, replicas), torch.bool))
        if restart is not None:
            # The saved forces, not re-evaluated ones, and a warmed-up model (see WARM_UP_CALLS), so that
            # the continuation is bit for bit.
            if not isinstance(energy_forces, CalculatorPotential):
                for _ in range(WARM_UP_CALLS - 1):
                    energy_forces(state.positions, state.atomic_numbers, state.cell, state.pbc, state.batch)
            state = state.replace(energy=restart["energy"].to(device), forces=restart["forces"].to(device),
                                  step=int(restart["step"]))
        self.state = state

    @property
    def step(self) -> int:
        return self.state.step

    def advance(self, n_steps: int, on_step: Callable[[int], object]) -> None:
        import torch

        state = self.state
        try:
            for _ in range(n_steps):
                state = self.step_function(state, self.energy_forces, self.timestep_fs)
                on_step(1)
        except (RuntimeError, ValueError, ArithmeticError, torch.jit.Error) as exc:  # what a failing model raises
            raise _ForceCallFailed(f"the force call failed at step {state.step + 1} ({_one_line(exc)})") from exc
        self.state = state

    def keep(self, snapshot: _Snapshot):
        return self.state

    def snapshot(self) -> _Snapshot:
        from integrators.state import degrees_of_freedom, kinetic_energy

        state = self.state
        kinetic = kinetic_energy(state)
        dof = degrees_of_freedom(state).clamp(min=1.0)
        return _Snapshot(
            step=state.step,
            epot_eV=state.energy.detach().cpu().numpy().astype(np.float64),
            ekin_eV=kinetic.detach().cpu().numpy(),
            temperature_K=(2.0 * kinetic / (dof * KB_EV_PER_K)).cpu().numpy(),
            positions_A=state.positions.detach().cpu().numpy(),
            velocities_A_per_fs=state.velocities.detach().cpu().numpy(),
            cell_A=state.cell[0].cpu().numpy(),
        )

    def payload(self, kept) -> dict:
        return {"engine": "torch", "step": kept.step,
                **{key: getattr(kept, key).detach().cpu() for key in ("positions", "velocities", "energy", "forces")}}


class _OpenMMEngine:
    """The model as a TorchForce in an OpenMM Context."""

    def __init__(self, atoms, model, integrator: str, temperature_K: float, friction_per_ps: float,
                 timestep_fs: float, seed: int, device: str, platform: Optional[str], restart: Optional[dict]):
        import openmm
        import torch

        from .openmm import create_system, topology_from_atoms
        from .openmm_integrators import OPENMM_INTEGRATORS, kt_kj_per_mol

        self.masses_amu = atoms.get_masses()
        self._loaded_epot_eV: Optional[np.ndarray] = None
        fixed = fixed_atoms_mask(atoms, "mlmd md")
        self.free_atoms = int(np.count_nonzero(~fixed))
        topology, positions_nm = topology_from_atoms(atoms)
        system = create_system(topology, model)
        for i, mass in enumerate(self.masses_amu):
            system.setParticleMass(i, 0.0 if fixed[i] else float(mass))  # OpenMM never moves massless particles
        # OpenMM reads a seed of 0 as "random"; map every mlmd seed to a fixed non-zero one.
        self.integrator = OPENMM_INTEGRATORS[integrator](temperature_K, friction_per_ps, timestep_fs,
                                                         seed=1 + seed % (2**31 - 2))
        name = platform or ("CUDA" if str(device).startswith("cuda") else "CPU")
        try:
            chosen = openmm.Platform.getPlatformByName(name)
        except openmm.OpenMMException:
            platforms = (openmm.Platform.getPlatform(i) for i in range(openmm.Platform.getNumPlatforms()))
            known = ", ".join(p.getName() for p in platforms)
            raise MLMDError(f"OpenMM platform {name!r} is not available here; available: {known}") from None
        self.context = openmm.Context(system, self.integrator, chosen)
        self.periodic = bool(np.all(atoms.pbc))
        if restart is None:
            velocities = _starting_velocities(atoms, fixed, temperature_K, [seed])
            if self.periodic:  # topology_from_atoms rotated the positions into OpenMM's reduced frame
                _, rotation = atoms.cell.standard_form()
                velocities = velocities @ np.asarray(rotation).T
            self.context.setPositions(positions_nm)
            self.context.setVelocities(velocities * A_PER_FS_NM_PER_PS)
            self._step = 0
        else:
            # TorchScript's first calls of a module run unoptimised graphs whose forces differ in the last bits;
            # warm the fresh module up so that the continuation is bit for bit.
            self.context.setPositions(positions_nm)
            for _ in range(WARM_UP_CALLS):
                self.context.getState(getForces=True)
            try:
                self.context.loadCheckpoint(restart["checkpoint"].numpy().tobytes())
            except openmm.OpenMMException as exc:
                raise MLMDError(f"the OpenMM checkpoint in the restart file does not fit this system or platform "
                                f"({exc}); OpenMM checkpoints only load on the platform that wrote them") from None
            if isinstance(self.integrator, openmm.CustomIntegrator):  # the checkpoint restored the saved values
                self.integrator.setGlobalVariableByName("kT", kt_kj_per_mol(temperature_K))
                self.integrator.setGlobalVariableByName("gamma", float(friction_per_ps))
            self._step = int(restart["step"])
            # Asking a freshly loaded Context for its energy before its first step changes the noise that
            # follows (OpenMM 8.6), so the first snapshot takes the saved energy instead.
            self._loaded_epot_eV = np.asarray(restart["epot_eV"], dtype=float)
        self._torch = torch

    @property
    def step(self) -> int:
        return self._step

    def advance(self, n_steps: int, on_step: Callable[[int], object]) -> None:
        import openmm

        try:
            self.integrator.step(n_steps)
        except openmm.OpenMMException as exc:
            raise _ForceCallFailed(f"OpenMM failed between steps {self._step} and {self._step + n_steps} "
                                   f"({_one_line(exc)})") from exc
        self._step += n_steps
        self._loaded_epot_eV = None
        on_step(n_steps)

    def keep(self, snapshot: _Snapshot):
        return self._step, self.context.createCheckpoint(), snapshot

    def snapshot(self) -> _Snapshot:
        from openmm import unit

        loaded = self._loaded_epot_eV is not None
        state = self.context.getState(getPositions=True, getVelocities=True, getEnergy=not loaded)
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * NM_ANGSTROM
        velocities = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        velocities = velocities / A_PER_FS_NM_PER_PS
        kinetic = 0.5 * float(np.sum(self.masses_amu[:, None] * velocities**2)) * AMU_A2_PER_FS2_EV
        cell = np.zeros((3, 3))
        if self.periodic:
            cell = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) * NM_ANGSTROM
        return _Snapshot(
            step=self._step,
            epot_eV=self._loaded_epot_eV if loaded else
            np.array([state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * KJ_PER_MOL_EV]),
            ekin_eV=np.array([kinetic]),
            temperature_K=np.array([2.0 * kinetic / (3.0 * max(self.free_atoms, 1) * KB_EV_PER_K)]),
            positions_A=np.asarray(positions), velocities_A_per_fs=np.asarray(velocities), cell_A=np.asarray(cell))

    def payload(self, kept) -> dict:
        step, checkpoint, snapshot = kept
        return {"engine": "openmm", "step": step, "epot_eV": snapshot.epot_eV.tolist(),
                "checkpoint": self._torch.frombuffer(bytearray(checkpoint), dtype=self._torch.uint8)}


# --------------------------------------------------------------------------- outputs


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
            with _quiet_stdout(), DCDTrajectoryFile(str(source), "r") as handle:
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
def _quiet_stdout():
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


class _Outputs:
    """Log rows, trajectory frames, restart files and the plot of one run."""

    def __init__(self, log: Optional[Path], trajectory: Optional[Path], restart_file: Optional[Path], atoms,
                 replicas: int, temperature_K: float, plot: bool, restart: Optional[dict]):
        self.log, self.restart_file, self.temperature_K = log, restart_file, temperature_K
        self.plot = plot and log is not None
        self.rows: List[tuple] = []
        if restart is not None and log is not None and log.exists():
            self.rows = [row for row in _read_log(log) if row[0] <= restart["step"]]
        keep = int(restart["trajectory_frames"]) if restart is not None else 0
        self.writer = TrajectoryWriter(trajectory, atoms, replicas, keep) if trajectory is not None else None
        self.extra: dict = {}

    def record(self, snapshot: _Snapshot, time_fs: float, stride_hit: bool) -> None:
        if not stride_hit:
            return
        self.rows.append((snapshot.step, time_fs, float(np.mean(snapshot.epot_eV)), float(np.mean(snapshot.ekin_eV)),
                          float(np.mean(snapshot.temperature_K))))
        if self.writer is not None:
            self.writer.write(snapshot.positions_A, snapshot.step, time_fs, snapshot.cell_A)

    def checkpoint(self, payload: dict) -> None:
        if self.writer is not None:
            self.writer.flush()
        if self.restart_file is not None:
            save_restart(self.restart_file, RESTART_FORMAT,
                         {"trajectory_frames": self.writer.frames if self.writer is not None else 0,
                          **self.extra, **payload})
        self._write_log()

    def _write_log(self) -> None:
        if self.log is None:
            return
        with atomic_write(self.log) as stream:
            stream.write(",".join(LOG_HEADER) + "\n")
            for step, time_fs, epot, ekin, temperature in self.rows:
                stream.write(f"{step},{time_fs:.10g},{epot:.10g},{ekin:.10g},{temperature:.10g}\n")

    def finish(self, payload: dict) -> Dict[str, Path]:
        self.checkpoint(payload)
        files: Dict[str, Path] = {}
        if self.log is not None:
            files["log"] = self.log
        if self.restart_file is not None:
            files["restart"] = self.restart_file
        if self.writer is not None:
            self.writer.close()
            files["trajectory"] = self.writer.path
            if hasattr(self.writer, "topology_file"):
                files["topology"] = self.writer.topology_file
        if self.plot and self.rows:
            files["plot"] = _plot(np.array(self.rows), self.log.with_suffix(".png"), self.temperature_K)
        return files


def _read_log(path: Path) -> List[tuple]:
    try:
        with open(path, newline="") as stream:
            reader = csv.reader(stream)
            header = next(reader, None)
            if tuple(header or ()) != LOG_HEADER:
                raise InputFileError(f"log {path} is not an mlmd md log (header {header}); give the --log of the run "
                                     "that wrote the restart file, or a new file name")
            return [(int(row[0]), *map(float, row[1:])) for row in reader if row]
    except (OSError, ValueError, IndexError) as exc:
        raise InputFileError(f"could not read log {path} to continue it ({exc}); give a new --log file") from exc


def _plot(rows: np.ndarray, path: Path, temperature_K: float) -> Path:
    """Energies (eV) and temperature (K) against time (ps), written atomically as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    time_ps = rows[:, 1] * FS_PS
    figure = Figure(figsize=(7, 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    energy, temperature = figure.subplots(2, 1, sharex=True)
    energy.plot(time_ps, rows[:, 2] - rows[0, 2], label="potential")
    energy.plot(time_ps, rows[:, 3], label="kinetic")
    energy.plot(time_ps, rows[:, 2] + rows[:, 3] - rows[0, 2], label="total")
    energy.set_ylabel(f"energy − E_pot(0) (eV)\nE_pot(0) = {rows[0, 2]:.6g} eV")
    energy.legend(loc="best", fontsize="small")
    temperature.plot(time_ps, rows[:, 4], color="C3", label="kinetic temperature")
    temperature.axhline(temperature_K, color="k", linestyle="--", linewidth=1, label="target")
    temperature.set_xlabel("time (ps)")
    temperature.set_ylabel("temperature (K)")
    temperature.legend(loc="best", fontsize="small")
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110)
    return path


# --------------------------------------------------------------------------- the run


def _instability(snapshot: _Snapshot, previous: Optional[_Snapshot], n_atoms: int, limit: float) -> Optional[str]:
    finite = (np.isfinite(snapshot.epot_eV).all() and np.isfinite(snapshot.positions_A).all()
              and np.isfinite(snapshot.velocities_A_per_fs).all())
    if not finite:
        return "the potential energy, coordinates or velocities became NaN or infinite"
    if previous is not None:
        jump = np.abs(snapshot.epot_eV - previous.epot_eV) / n_atoms
        worst = int(np.argmax(jump))
        if jump[worst] > limit:
            where = f" of replica {worst}" if len(jump) > 1 else ""
            return (f"the potential energy{where} changed by {jump[worst]:.3g} eV/atom "
                    f"(limit {limit:g} eV/atom, max_energy_jump_eV_per_atom)")
    return None


def _check_settings(engine, integrator, model, calculator, steps, timestep_fs, temperature_K, friction_per_ps,
                    replicas, stride, restart_every, log, trajectory, restart_file, device) -> None:
    if (model is None) == (calculator is None):
        raise MLMDError("give exactly one of --model MODEL.pt (an exported mlmd model) or --calculator NAME "
                        "(emt, lj, morse, gfn2 or an ASE calculator name)")
    if engine not in ENGINES:
        raise MLMDError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "openmm":
        from .openmm_integrators import OPENMM_INTEGRATORS as known
    else:
        from integrators import INTEGRATORS as known
    if integrator not in known:
        raise MLMDError(f"integrator {integrator!r} is not available with the {engine} engine; "
                        f"choose one of {', '.join(sorted(known))}")
    if engine == "openmm" and calculator is not None:
        raise MLMDError("--engine openmm runs an exported model as a TorchForce and needs --model; "
                        "run ASE calculators with the torch engine")
    if engine == "openmm" and replicas != 1:
        raise MLMDError("--replicas runs batched replicas in the torch engine only; drop --engine openmm")
    if calculator is not None and not str(device).startswith("cpu"):
        raise MLMDError("ASE calculators run on the CPU; drop --device or use --model")
    positive = (("--timestep", timestep_fs), ("--replicas", replicas), ("--stride", stride),
                ("--restart-every", restart_every))
    non_negative = (("--steps", steps), ("--temperature", temperature_K), ("--friction", friction_per_ps))
    for name, value in positive:
        if not (math.isfinite(value) and value > 0):
            raise MLMDError(f"{name} must be positive, got {value}")
    for name, value in non_negative:
        if not (math.isfinite(value) and value >= 0):
            raise MLMDError(f"{name} must be zero or positive, got {value}")
    for what, path in (("log", log), ("trajectory", trajectory), ("restart file", restart_file)):
        if path is not None and not Path(path).resolve().parent.is_dir():
            raise MLMDError(f"cannot write the {what} {path}: folder {Path(path).parent} does not exist; "
                            "create it first")
    if trajectory is not None and Path(trajectory).suffix.lower() not in TRAJECTORY_FORMATS:
        raise MLMDError(f"trajectory {trajectory}: the extension picks the format; use one of "
                        f"{', '.join(TRAJECTORY_FORMATS)} (DCD, XTC, mdtraj HDF5)")
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise MLMDError(f"device {device!r} asked for but torch sees no CUDA device; use --device cpu")


def ns_per_day(steps: int, timestep_fs: float, seconds: float) -> float:
    """Simulation speed: ``steps`` of ``timestep_fs`` simulated in ``seconds`` of wall time, in ns/day."""
    if seconds <= 0:
        return float("nan")
    simulated_ns = steps * timestep_fs * FS_NS
    return simulated_ns / seconds * SECONDS_PER_DAY


def run(structure, model=None, calculator=None, *, engine: str = "torch", integrator: str = "baoab",
        temperature_K: float = 300.0, timestep_fs: float = 0.5, steps: int = 1000,
        friction_per_ps: float = DEFAULT_FRICTION_PER_PS, seed: int = 0, replicas: int = 1, device: str = "cpu",
        platform: Optional[str] = None, log: Optional[PathLike] = None, trajectory: Optional[PathLike] = None,
        stride: int = 100, restart: Optional[PathLike] = None, restart_file: Optional[PathLike] = None,
        restart_every: int = 1000, max_energy_jump_eV_per_atom: float = DEFAULT_MAX_ENERGY_JUMP_EV_PER_ATOM,
        plot: bool = True, progress: bool = False) -> MDResult:
    """Run Langevin (or NVE) dynamics of ``structure`` (ASE Atoms or any file ASE reads).

    Args:
        model: an exported model file, :class:`mlmd.model.Model` or potential (the model contract).
        calculator: instead of ``model``: an ASE calculator or its name (``emt``, ``lj``, ``morse``, ``gfn2``, ...).
        engine: ``"torch"`` or ``"openmm"`` (model only, one replica).
        integrator: a scheme of the engine (see the module docstring).
        temperature_K, timestep_fs, friction_per_ps: thermostat target (K), step (fs), friction γ (1/ps).
        steps: total number of steps (a restarted run continues up to it).
        seed: noise seed; replica ``k`` uses ``seed + k``.
        replicas: independent copies run in one batch (torch engine).
        device: where the model runs (``cpu``, ``cuda``); with OpenMM it picks the platform unless
            ``platform`` (``Reference``, ``CPU``, ``CUDA``, ...) names one.
        log, trajectory, stride: CSV log and mdtraj trajectory (``.dcd``, ``.xtc``, ``.h5``), every ``stride`` steps.
        restart: a restart file to continue from; ``restart_file``: where to save one every
            ``restart_every`` steps and at the end (None: no restart file).
        max_energy_jump_eV_per_atom: stop when the potential energy moves more than this between checks.
        plot: write ``LOG.png`` (energies and temperature against time) when there is a log.
        progress: show a progress bar with ns/day.

    Returns the final :class:`MDResult`; raises :class:`UnstableSimulationError` after saving the last
    good state when the dynamics blow up.
    """
    from ase import Atoms

    from .checks import check_atoms
    from .io import read_structure

    _check_settings(engine, integrator, model, calculator, steps, timestep_fs, temperature_K, friction_per_ps,
                    replicas, stride, restart_every, log, trajectory, restart_file, device)
    if isinstance(structure, Atoms):
        atoms = structure.copy()
        check_atoms(atoms, source="mlmd md")
    else:
        atoms = read_structure(structure)
    restart_data = load_restart(restart, RESTART_FORMAT) if restart is not None else None
    if restart_data is not None:
        _check_restart(restart_data, restart, engine, replicas, atoms)

    engine_ = _make_engine(atoms, engine, model, calculator, integrator, temperature_K, friction_per_ps,
                           timestep_fs, seed, replicas, device, platform, restart_data)
    origin_step, origin_fs = _time_origin(restart_data, timestep_fs)
    outputs = _Outputs(None if log is None else Path(log), None if trajectory is None else Path(trajectory),
                       None if restart_file is None else Path(restart_file), atoms, replicas, temperature_K, plot,
                       restart_data)
    outputs.extra = {"replicas": replicas, "atomic_numbers": [int(z) for z in atoms.numbers],
                     "timestep_fs": float(timestep_fs), "time_origin_step": origin_step,
                     "time_origin_fs": origin_fs, "integrator": integrator, "temperature_K": float(temperature_K),
                     "friction_per_ps": float(friction_per_ps), "seed": int(seed)}
    return _drive(engine_, outputs, steps, stride, restart_every, max_energy_jump_eV_per_atom,
                  lambda step: origin_fs + (step - origin_step) * timestep_fs, len(atoms), replicas,
                  fresh=restart_data is None, progress=progress, timestep_fs=timestep_fs)


def _make_engine(atoms, engine, model, calculator, integrator, temperature_K, friction_per_ps, timestep_fs, seed,
                 replicas, device, platform, restart_data):
    from .checks import check_atoms
    from .model import load_model

    if model is not None:
        loaded = load_model(model, device="cpu" if engine == "openmm" else device)
        check_atoms(atoms, source="mlmd md", species=loaded.species)
    if engine == "openmm":
        return _OpenMMEngine(atoms, loaded, integrator, temperature_K, friction_per_ps, timestep_fs, seed, device,
                             platform, restart_data)
    if model is not None:
        def energy_forces(positions, atomic_numbers, cell, pbc, batch):
            return loaded(positions, atomic_numbers, cell, pbc, batch, True, False)
    else:
        energy_forces = CalculatorPotential(atoms, calculator, replicas)
    return _TorchEngine(atoms, energy_forces, integrator, temperature_K, friction_per_ps, timestep_fs, seed,
                        replicas, device, restart_data)


def _time_origin(restart_data: Optional[dict], timestep_fs: float):
    """(step, time in fs) from which times count: time = origin + (step - origin step) * timestep, so a
    continuation with the same time step repeats the times of an uninterrupted run exactly."""
    if restart_data is None:
        return 0, 0.0
    step, time_fs = int(restart_data["time_origin_step"]), float(restart_data["time_origin_fs"])
    if float(restart_data["timestep_fs"]) == timestep_fs:
        return step, time_fs
    restart_step = int(restart_data["step"])
    return restart_step, time_fs + (restart_step - step) * float(restart_data["timestep_fs"])


def _check_restart(data: dict, path, engine: str, replicas: int, atoms) -> None:
    if data.get("engine") != engine:
        raise MLMDError(f"restart file {path} was written by the {data.get('engine')} engine; "
                        f"continue it with --engine {data.get('engine')}")
    if int(data.get("replicas", 1)) != replicas:
        raise MLMDError(f"restart file {path} holds {data.get('replicas')} replicas; continue it with "
                        f"--replicas {data.get('replicas')}")
    if list(data.get("atomic_numbers", [])) != [int(z) for z in atoms.numbers]:
        raise MLMDError(f"restart file {path} belongs to another structure (different atoms); "
                        "give the structure the run started from")


def _drive(engine, outputs: _Outputs, steps: int, stride: int, restart_every: int, limit: float,
           time_of: Callable[[int], float], n_atoms: int, replicas: int, fresh: bool, progress: bool,
           timestep_fs: float) -> MDResult:
    """The loop both engines share: advance to the next log/restart point, check, record, save."""
    from tqdm import tqdm

    snapshot = engine.snapshot()
    problem = _instability(snapshot, None, n_atoms, limit)
    if problem:
        raise MLMDError(f"the starting state is unusable: {problem}; check the structure and the model")
    if fresh:
        outputs.record(snapshot, time_of(snapshot.step), True)
    good, good_snapshot = engine.keep(snapshot), snapshot
    first_step, started, failure = engine.step, time.perf_counter(), None
    bar = tqdm(total=steps, initial=min(first_step, steps), unit="step", disable=not progress, dynamic_ncols=True,
               desc="md")
    try:
        while engine.step < steps:
            next_log = (engine.step // stride + 1) * stride
            target = min(steps, next_log, (engine.step // restart_every + 1) * restart_every)
            before = engine.step
            try:
                engine.advance(target - engine.step, bar.update)
                snapshot = engine.snapshot()
                problem = _instability(snapshot, good_snapshot, n_atoms, limit)
            except _ForceCallFailed as exc:
                problem = str(exc)
            if problem:
                failure = (before, target, problem)
                break
            good, good_snapshot = engine.keep(snapshot), snapshot
            outputs.record(snapshot, time_of(snapshot.step), snapshot.step % stride == 0)
            if snapshot.step % restart_every == 0 and snapshot.step < steps:
                outputs.checkpoint(engine.payload(good))
            speed = ns_per_day(snapshot.step - first_step, timestep_fs, time.perf_counter() - started)
            bar.set_postfix_str(f"{speed:.3g} ns/day, T={np.mean(snapshot.temperature_K):.0f} K", refresh=False)
    finally:
        bar.close()
        elapsed = time.perf_counter() - started
        files = outputs.finish(engine.payload(good))
    n = n_atoms
    result = MDResult(step=good_snapshot.step, time_fs=time_of(good_snapshot.step),
                      positions=good_snapshot.positions_A.reshape(replicas, n, 3),
                      velocities=good_snapshot.velocities_A_per_fs.reshape(replicas, n, 3),
                      log=np.array(outputs.rows, dtype=float).reshape(-1, len(LOG_HEADER)), files=files,
                      ns_per_day=ns_per_day(good_snapshot.step - first_step, timestep_fs, elapsed))
    if failure is not None:
        before, target, problem = failure
        saved = ", ".join(f"{kind} {path}" for kind, path in files.items() if kind != "topology")
        raise UnstableSimulationError(
            f"the simulation became unstable between steps {before} and {target}: {problem}. Stopped with the last "
            f"good state (step {good_snapshot.step}) saved" + (f" ({saved})" if saved else "")
            + "; use a smaller --timestep, check the structure, or use a model trained on such configurations",
            result)
    return result


# --------------------------------------------------------------------------- command line


def _add_arguments(parser) -> None:
    add = parser.add_argument
    add("structure", help="starting structure (any file ASE reads; FixAtoms constraints are honoured)")
    add("--model", metavar="MODEL.pt", help="exported mlmd model")
    add("--calculator", metavar="NAME", help="instead of --model: emt, lj, morse, gfn2 or an ASE calculator name")
    add("--engine", metavar="{torch,openmm}", default="torch",
        help="torch (mlmd's batched integrators, default) or openmm (the model as an OpenMM TorchForce)")
    add("--integrator", metavar="NAME", default="baoab",
        help="torch: baoab, obabo, gjf, verlet, csvr; openmm: baoab, gjf, langevin-middle, verlet (default baoab)")
    add("--temperature", metavar="K", type=float, default=300.0, help="target temperature in K (default 300)")
    add("--timestep", metavar="FS", type=float, default=0.5, help="time step in fs (default 0.5)")
    add("--steps", metavar="N", type=int, default=1000,
        help="total number of steps; with --restart the run continues up to this step (default 1000)")
    add("--friction", metavar="PER_PS", type=float, default=DEFAULT_FRICTION_PER_PS,
        help=f"Langevin friction in 1/ps, 1/tau for csvr (default {DEFAULT_FRICTION_PER_PS:g})")
    add("--seed", type=int, default=0, help="noise and velocity seed; replica k uses seed+k (default 0)")
    add("--replicas", metavar="K", type=int, default=1,
        help="independent replicas in one batch (torch engine); the log holds their mean, the trajectory "
        "all of them (replica k = chain k)")
    add("--device", default="cpu", help="cpu or cuda (default cpu)")
    add("--platform", metavar="NAME", help="OpenMM platform (default CPU, or CUDA with --device cuda)")
    add("--log", metavar="FILE.csv",
        help="CSV log (step,time_fs,epot_eV,ekin_eV,temperature_K); a PNG plot goes beside it")
    add("--trajectory", metavar="FILE", help="trajectory: .dcd, .xtc (with FILE_topology.pdb beside it) or .h5")
    add("--stride", metavar="N", type=int, default=100, help="steps between log rows and frames (default 100)")
    add("--restart", metavar="FILE", help="continue from this restart file (bit for bit)")
    add("--restart-file", metavar="FILE",
        help="where to save restart files (default: the log's, trajectory's or structure's name with .restart)")
    add("--restart-every", metavar="N", type=int, default=1000, help="steps between restart files (default 1000)")
    add("--max-energy-jump", metavar="EV_PER_ATOM", type=float, default=DEFAULT_MAX_ENERGY_JUMP_EV_PER_ATOM,
        help="stop when the potential energy moves more than this many eV/atom between log points "
        f"(default {DEFAULT_MAX_ENERGY_JUMP_EV_PER_ATOM:g})")
    add("--no-plot", action="store_true", help="do not write the PNG plot")
    add("--quiet", action="store_true", help="no progress bar")


def default_restart_file(log: Optional[PathLike], trajectory: Optional[PathLike], structure: PathLike) -> Path:
    """``md.csv`` -> ``md.restart`` (else the trajectory's name, else the structure's, in the working folder)."""
    if log is not None or trajectory is not None:
        return Path(log if log is not None else trajectory).with_suffix(".restart")
    return Path(Path(structure).name).with_suffix(".restart")


def _run(args) -> int:
    restart_file = args.restart_file or default_restart_file(args.log, args.trajectory, args.structure)
    result = run(args.structure, model=args.model, calculator=args.calculator, engine=args.engine,
                 integrator=args.integrator, temperature_K=args.temperature, timestep_fs=args.timestep,
                 steps=args.steps, friction_per_ps=args.friction, seed=args.seed, replicas=args.replicas,
                 device=args.device, platform=args.platform, log=args.log, trajectory=args.trajectory,
                 stride=args.stride, restart=args.restart, restart_file=restart_file,
                 restart_every=args.restart_every, max_energy_jump_eV_per_atom=args.max_energy_jump,
                 plot=not args.no_plot, progress=not args.quiet)
    written = ", ".join(str(path) for path in result.files.values())
    print(f"mlmd md: step {result.step} ({result.time_fs * FS_PS:.4g} ps), {result.ns_per_day:.3g} ns/day; "
          f"wrote {written}")
    return 0


COMMAND = Command(
    name="md",
    help="run molecular dynamics with an mlmd model or an ASE calculator (torch or OpenMM engine)",
    add_arguments=_add_arguments,
    run=_run,
)

__all__ = ["CalculatorPotential", "COMMAND", "MDResult", "TrajectoryWriter", "UnstableSimulationError",
           "default_restart_file", "run"]

"""Force-free dynamics with a trajectory forecaster: :func:`run` and ``mlmd forecast``.

A forecaster (the ``forecaster`` family, TrajCast-style) maps positions and
velocities at time t to the displacement and the velocities at t + τ_f, its
``interval_fs`` (typically 10-30 MD steps). :mod:`integrators.rollout` applies
it step after step on a batch of replicas, wraps positions into the cell along
periodic directions (the forecaster rebuilds its neighbour list inside every
call) and couples the CSVR thermostat once per interval.

Conventions follow :mod:`mlmd.md`: units eV, Å, fs, amu, K; starting velocities
are the structure's own, else seeded Maxwell-Boltzmann (replica ``k`` uses seed
``seed + k`` and repeats a single run with that seed); ``T = 2 K/(3 N_free k_B)``;
trajectories through mdtraj (``.h5``, ``.dcd``/``.xtc`` with ``NAME_topology.pdb``)
holding unwrapped positions of every replica (replica ``k`` = chain ``k``) at step 0
and every ``stride`` intervals; a CSV log ``step,time_fs,ekin_eV,temperature_K``
(replica means) with ``epot_eV`` appended when an energy-monitor potential or
calculator is given; log and restart file written atomically.

Guards, checked after every interval: NaN or infinite coordinates/velocities, two
atoms closer than ``min_distance_A``, or a replica hotter than ``max_temperature_K``
(default: max(3 T, the temperature the canonical distribution at T exceeds with
probability 1e-9)). On a trip the run stops, saves the last good state (restart
file and an extended XYZ, both atomic) and raises :class:`ForecastUnstableError`.
"""

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from .cli import Command
from .constants import AMU_A2_PER_FS2_EV, FS_NS, FS_PS, KB_EV_PER_K, SECONDS_PER_DAY
from .errors import MLMDError
from .io import PathLike, atomic_write, load_restart, save_restart

LOG_HEADER = ("step", "time_fs", "ekin_eV", "temperature_K")
RESTART_FORMAT = "mlmd forecast restart"
THERMOSTATS = ("csvr", "none")
DEFAULT_TAU_FS = 1000.0
DEFAULT_MIN_DISTANCE_A = 0.5
DEFAULT_TEMPERATURE_FACTOR = 3.0
# Probability per check with which the canonical kinetic energy may exceed the default temperature bound.
TEMPERATURE_TAIL_PROBABILITY = 1e-9
_TIME_UNITS_FS = {"fs": 1.0, "ps": 1e3, "ns": 1e6}


class ForecastUnstableError(MLMDError):
    """A guard tripped; ``result`` holds the last good state, which was saved."""

    def __init__(self, message: str, result: "ForecastResult"):
        super().__init__(message)
        self.result = result


@dataclass
class ForecastResult:
    """What a run leaves behind: the final (last good) state and the files written."""

    step: int
    time_fs: float
    positions: np.ndarray  # [replicas, atoms, 3] Å, unwrapped
    velocities: np.ndarray  # [replicas, atoms, 3] Å/fs
    log: np.ndarray  # [rows, len(header)]
    header: tuple
    files: Dict[str, Path] = field(default_factory=dict)
    ps_per_second: float = float("nan")


def parse_time_fs(value: Union[str, float, int]) -> float:
    """``"100ps"``, ``"2.5 ns"``, ``"500fs"`` or a bare number of fs -> fs."""
    if isinstance(value, (int, float)):
        return float(value)
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(fs|ps|ns)?\s*", str(value))
    try:
        number = float(match.group(1)) if match else float("nan")
    except ValueError:
        number = float("nan")
    if not math.isfinite(number):
        raise MLMDError(f"cannot read the time {value!r}; write a number with a unit, e.g. 100ps, 2ns or 500fs")
    return number * _TIME_UNITS_FS[match.group(2) or "fs"]


# --------------------------------------------------------------------------- the forecaster


@dataclass
class LoadedForecaster:
    """A forecaster ready for :func:`integrators.rollout.step`: ``call`` runs the contract."""

    call: Callable
    interval_fs: float
    species: List[int]
    cutoff: float
    source: str = "forecaster"


def load_forecaster(model, device: str = "cpu") -> LoadedForecaster:
    """A forecaster from an exported file, a :class:`mlmd.model.Model` (its ``forecast``) or a raw module."""
    import torch

    from .model import Model, load_model

    if isinstance(model, LoadedForecaster):
        return model
    if isinstance(model, torch.nn.Module):  # a raw module with the forecaster contract: call it directly
        module, metadata, name = model.to(device), {}, type(model).__name__
        family = getattr(module, "family", "forecaster")
        is_forecaster = family == "forecaster"
        call = module
    else:
        module = model if isinstance(model, Model) else load_model(model, device=device)
        metadata, name = module.metadata, f"model {module.path}" if module.path else "this model"
        family = module.family
        is_forecaster = bool(getattr(module, "is_forecaster", False)) or family == "forecaster"
        # Model.forecast when the wrapper knows it is a forecaster, else the TorchScript module itself.
        call = module.forecast if getattr(module, "is_forecaster", False) else module.module
    if not is_forecaster:
        raise MLMDError(f"{name} is a {family or 'unknown'}-family potential, not a trajectory forecaster; run "
                        "potentials with `mlmd md`, and give `mlmd forecast` a model of the forecaster family")
    interval = metadata.get("interval_fs")
    for holder in (module, getattr(module, "module", None)):
        if interval is None and holder is not None:
            interval = getattr(holder, "interval_fs", None)
    if interval is None or not float(interval) > 0:
        raise MLMDError(f"{name} does not say its interval (interval_fs); re-export the forecaster")
    species = metadata.get("species", None) or list(getattr(module, "species", []))
    cutoff = float(metadata.get("cutoff", getattr(module, "cutoff", 0.0)))
    return LoadedForecaster(call, float(interval), [int(z) for z in species], cutoff, name)


# --------------------------------------------------------------------------- guards


def guard_problem(positions, velocities, cell, pbc, batch, temperature_K, min_distance_A: Optional[float],
                  max_temperature_K: Optional[float]) -> Optional[str]:
    """What is wrong with a forecast state (torch tensors, Å, Å/fs, K per replica), or None.

    Checks finite coordinates and velocities, the closest pair against ``min_distance_A`` (through the
    periodic images) and each replica's temperature against ``max_temperature_K``.
    """
    import torch

    for what, tensor in (("coordinates", positions), ("velocities", velocities)):
        bad = ~torch.isfinite(tensor).all(dim=1)
        if bool(bad.any()):
            first = int(torch.nonzero(bad)[0])
            return f"{int(bad.sum())} atom(s) got NaN or infinite {what} (first is atom {first})"
    if max_temperature_K is not None:
        hot = temperature_K > max_temperature_K
        if bool(hot.any()):
            worst = int(torch.argmax(temperature_K))
            where = f" of replica {worst}" if temperature_K.numel() > 1 else ""
            return (f"the temperature{where} reached {float(temperature_K[worst]):.4g} K, above the bound "
                    f"{max_temperature_K:.4g} K (max_temperature_K)")
    if min_distance_A is not None and positions.shape[0] > 1:
        from potentials.neighbors import neighbor_list

        edge_index, shifts = neighbor_list(positions, cell, pbc, batch, float(min_distance_A))
        if edge_index.shape[1]:
            i, j = edge_index
            vector = positions[j] - positions[i] + torch.einsum("ei,eij->ej", shifts.to(positions.dtype),
                                                                  cell[batch[i]])
            distance = vector.norm(dim=1)
            close = distance < min_distance_A
            if bool(close.any()):
                k = int(torch.argmin(torch.where(close, distance, torch.full_like(distance, math.inf))))
                counts = torch.bincount(batch, minlength=cell.shape[0])
                first = torch.cumsum(counts, 0) - counts
                b = int(batch[i[k]])
                where = f" of replica {b}" if cell.shape[0] > 1 else ""
                return (f"atoms {int(i[k] - first[b])} and {int(j[k] - first[b])}{where} came "
                        f"{float(distance[k]):.3f} Å apart, closer than {min_distance_A:g} Å (min_distance_A)")
    return None


def default_max_temperature_K(temperature_K: float, free_atoms: int,
                              factor: float = DEFAULT_TEMPERATURE_FACTOR) -> Optional[float]:
    """max(factor·T, T·Γ⁻¹(1 - p; N_f/2)/(N_f/2)): a bound the canonical temperature of N_f = 3 N_free
    degrees of freedom exceeds with probability below p = 1e-9 (small systems fluctuate more)."""
    if temperature_K <= 0:
        return None
    from scipy.stats import gamma

    shape = 1.5 * max(free_atoms, 1)
    return temperature_K * max(factor, float(gamma.isf(TEMPERATURE_TAIL_PROBABILITY, shape)) / shape)


# --------------------------------------------------------------------------- energy monitor


def energy_monitor(atoms, potential=None, calculator=None, replicas: int = 1, device: str = "cpu"):
    """``energy(positions, atomic_numbers, cell, pbc, batch) -> [B]`` eV from an mlmd potential or an ASE
    calculator (the same callables :mod:`mlmd.md` drives), or None when neither is given."""
    if potential is not None and calculator is not None:
        raise MLMDError("give at most one energy monitor: --potential MODEL.pt or --calculator NAME")
    if calculator is not None:
        from .md import CalculatorPotential

        monitor = CalculatorPotential(atoms, calculator, replicas)
        return lambda *inputs: monitor(*inputs)["energy"]
    if potential is not None:
        from .checks import check_atoms
        from .model import load_model

        loaded = load_model(potential, device=device)
        if loaded.family == "forecaster":
            raise MLMDError("the energy monitor (--potential) must be a potential, not a forecaster")
        check_atoms(atoms, source="mlmd forecast", species=loaded.species)
        return lambda *inputs: loaded(*inputs, False, False)["energy"].detach()
    return None


# --------------------------------------------------------------------------- outputs


class _Outputs:
    """Log rows, trajectory frames (mdtraj, via :class:`mlmd.md.TrajectoryWriter`) and restart files."""

    def __init__(self, atoms, header, log: Optional[Path], trajectory: Optional[Path], restart_file: Optional[Path],
                 replicas: int, restart: Optional[dict]):
        from .md import TrajectoryWriter

        self.atoms, self.header, self.log, self.restart_file = atoms, header, log, restart_file
        self.rows: List[tuple] = []
        if restart is not None:
            self.rows = [tuple(row) for row in restart["log_rows"]]
        keep = int(restart["trajectory_frames"]) if restart is not None else 0
        self.writer = TrajectoryWriter(trajectory, atoms, replicas, keep) if trajectory is not None else None
        self.extra: dict = {}

    def record(self, row: tuple, positions_A: np.ndarray, cell_A: np.ndarray) -> None:
        self.rows.append(row)
        if self.writer is not None:
            self.writer.write(positions_A, int(row[0]), float(row[1]), cell_A)

    def checkpoint(self, payload: dict) -> None:
        if self.writer is not None:
            self.writer.flush()
        if self.restart_file is not None:
            save_restart(self.restart_file, RESTART_FORMAT,
                         {"log_rows": list(self.rows),
                          "trajectory_frames": self.writer.frames if self.writer is not None else 0,
                          **self.extra, **payload})
        if self.log is not None:
            with atomic_write(self.log) as stream:
                stream.write(",".join(self.header) + "\n")
                for row in self.rows:
                    stream.write(f"{int(row[0])}," + ",".join(f"{value:.10g}" for value in row[1:]) + "\n")

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
        return files


def save_state_xyz(path: PathLike, atoms, positions_A: np.ndarray, velocities_A_per_fs: np.ndarray, step: int,
                   time_fs: float) -> Path:
    """Every replica's state as a frame of an extended XYZ (positions Å, velocities in ASE units), atomically."""
    from ase import units

    from .io import write_frames

    frames = []
    for replica, (x, v) in enumerate(zip(positions_A, velocities_A_per_fs)):
        frame = atoms.copy()
        frame.calc = None
        frame.set_positions(x, apply_constraint=False)
        frame.set_velocities(v / units.fs)  # Å/fs -> Å/(ASE time)
        frame.info.update({"step": int(step), "time_fs": float(time_fs), "replica": replica})
        frames.append(frame)
    write_frames(path, frames)
    return Path(path)


# --------------------------------------------------------------------------- the run


def run(structure, model, *, time: Union[str, float, None] = None, steps: Optional[int] = None,
        temperature_K: float = 300.0, thermostat: str = "csvr", tau_fs: float = DEFAULT_TAU_FS, seed: int = 0,
        replicas: int = 1, device: str = "cpu", potential=None, calculator=None,
        log: Optional[PathLike] = None, trajectory: Optional[PathLike] = None, stride: int = 1,
        restart: Optional[PathLike] = None, restart_file: Optional[PathLike] = None, restart_every: int = 1000,
        state_file: Optional[PathLike] = None, min_distance_A: Optional[float] = DEFAULT_MIN_DISTANCE_A,
        max_temperature_K: Optional[float] = None, progress: bool = False) -> ForecastResult:
    """Roll a forecaster out from ``structure`` (ASE Atoms or any file ASE reads).

    Args:
        model: exported forecaster file, :class:`mlmd.model.Model` or forecaster module.
        time, steps: the total length, as a time (``"100ps"``, or fs) or as a number of intervals.
        temperature_K: thermostat target and starting-velocity temperature (K).
        thermostat: ``"csvr"`` (once per interval, relaxation time ``tau_fs``) or ``"none"``.
        seed, replicas: replica ``k`` uses seed ``seed + k``.
        potential, calculator: optional energy monitor (mlmd potential, or ASE calculator/name), logged as epot_eV.
        log, trajectory, stride: CSV log and mdtraj trajectory, every ``stride`` intervals.
        restart: continue from this restart file; ``restart_file``: where to save one every ``restart_every``
            intervals and at the end; ``state_file``: extended XYZ of the last good state when a guard trips
            (default: beside the restart file, log, trajectory or structure, ``NAME.last_good.xyz``).
        min_distance_A, max_temperature_K: guard bounds (None switches a guard off; the temperature bound
            defaults to :func:`default_max_temperature_K`).
        progress: show a progress bar with simulated ps per wall-clock second.
    """
    import torch
    from ase import Atoms
    from tqdm import tqdm

    from integrators import rollout

    from .checks import check_atoms, fixed_atoms_mask
    from .io import read_structure
    from .md import WARM_UP_CALLS, _one_line, _starting_velocities

    if thermostat not in THERMOSTATS:
        raise MLMDError(f"unknown thermostat {thermostat!r}; choose one of {', '.join(THERMOSTATS)}")
    for name, value in (("replicas", replicas), ("stride", stride), ("restart_every", restart_every)):
        if not (isinstance(value, (int, np.integer)) and value > 0):
            raise MLMDError(f"{name} must be a positive integer, got {value!r}")
    for name, value in (("temperature_K", temperature_K), ("tau_fs", tau_fs)):
        if not (math.isfinite(value) and value >= (0 if name == "temperature_K" else 1e-300)):
            raise MLMDError(f"{name} must be {'zero or ' if name == 'temperature_K' else ''}positive, got {value}")
    if trajectory is not None and Path(trajectory).suffix.lower() not in (".dcd", ".xtc", ".h5"):
        raise MLMDError(f"trajectory {trajectory}: the extension picks the format; use .h5, .dcd or .xtc")
    for what, path in (("log", log), ("trajectory", trajectory), ("restart file", restart_file),
                       ("state file", state_file)):
        if path is not None and not Path(path).resolve().parent.is_dir():
            raise MLMDError(f"cannot write the {what} {path}: folder {Path(path).parent} does not exist; create it")
    if min_distance_A is not None and not min_distance_A > 0:
        min_distance_A = None  # 0 switches the overlap guard off
    if isinstance(structure, Atoms):
        atoms = structure.copy()
        check_atoms(atoms, source="mlmd forecast")
    else:
        atoms = read_structure(structure)
    forecaster = load_forecaster(model, device=device)
    interval = forecaster.interval_fs
    if forecaster.species:
        check_atoms(atoms, source="mlmd forecast", species=forecaster.species, min_distance=min_distance_A)
    total = _total_steps(time, steps, interval)
    monitor = energy_monitor(atoms, potential, calculator, replicas, device)
    header = LOG_HEADER + (("epot_eV",) if monitor is not None else ())

    n = len(atoms)
    fixed = fixed_atoms_mask(atoms, "mlmd forecast")
    if max_temperature_K is None:
        max_temperature_K = default_max_temperature_K(temperature_K, int(np.count_nonzero(~fixed)))
    restart_data = load_restart(restart, RESTART_FORMAT) if restart is not None else None
    seeds = [seed + k for k in range(replicas)]
    as_tensor = lambda array, dtype=torch.float64: torch.as_tensor(np.array(array), dtype=dtype, device=device)
    if restart_data is None:
        positions = as_tensor(np.tile(atoms.positions, (replicas, 1)))
        velocities = as_tensor(_starting_velocities(atoms, fixed, temperature_K, seeds))
    else:
        _check_restart(restart_data, restart, replicas, atoms, interval)
        positions = restart_data["positions"].to(device)
        velocities = restart_data["velocities"].to(device)
    state = rollout.init(
        positions, velocities, as_tensor(np.tile(atoms.get_masses(), replicas) * AMU_A2_PER_FS2_EV),
        as_tensor(np.tile(atoms.numbers, replicas), torch.int64),
        as_tensor(np.broadcast_to(atoms.cell.array, (replicas, 3, 3))),
        as_tensor(np.broadcast_to(atoms.pbc, (replicas, 3)), torch.bool),
        torch.arange(replicas, device=device).repeat_interleave(n), kT=KB_EV_PER_K * temperature_K,
        friction=(1.0 / tau_fs) if thermostat == "csvr" else 0.0, seeds=as_tensor(seeds, torch.int64),
        fixed=as_tensor(np.tile(fixed, replicas), torch.bool))
    if restart_data is not None:
        state = state.replace(images=restart_data["images"].to(device), step=int(restart_data["step"]))
        for _ in range(WARM_UP_CALLS):  # TorchScript's first calls run unoptimised graphs (see mlmd.md)
            forecaster.call(state.positions, state.atomic_numbers, state.cell, state.pbc, state.batch,
                            state.velocities)

    outputs = _Outputs(atoms, header, None if log is None else Path(log),
                       None if trajectory is None else Path(trajectory),
                       None if restart_file is None else Path(restart_file), replicas, restart_data)
    outputs.extra = {"replicas": replicas, "atomic_numbers": [int(z) for z in atoms.numbers],
                     "interval_fs": interval, "temperature_K": float(temperature_K), "thermostat": thermostat,
                     "tau_fs": float(tau_fs), "seed": int(seed), "header": list(header)}

    def temperatures(current) -> "torch.Tensor":
        return rollout.kinetic_kT(current) / KB_EV_PER_K

    def record(current) -> None:
        kinetic = rollout.kinetic_energy(current)
        row = (current.step, current.step * interval, float(kinetic.mean()), float(temperatures(current).mean()))
        if monitor is not None:
            row += (float(monitor(current.positions, current.atomic_numbers, current.cell, current.pbc,
                                  current.batch).mean()),)
        outputs.record(row, current.unwrapped_positions().cpu().numpy(), current.cell[0].cpu().numpy())

    def payload(current) -> dict:
        return {"step": current.step, "positions": current.positions.cpu(), "velocities": current.velocities.cpu(),
                "images": current.images.cpu()}

    if restart_data is None:
        problem = guard_problem(state.positions, state.velocities, state.cell, state.pbc, state.batch,
                                temperatures(state), None, max_temperature_K)
        if problem:
            raise MLMDError(f"the starting state is unusable: {problem}; check the structure and --temperature")
        record(state)
    first_step, started, failure = state.step, perf_counter(), None
    bar = tqdm(total=total, initial=min(first_step, total), unit="step", disable=not progress, dynamic_ncols=True,
               desc="forecast")
    good = state
    try:
        while good.step < total:
            try:
                state = rollout.step(good, forecaster.call, interval)
                problem = guard_problem(state.positions, state.velocities, state.cell, state.pbc, state.batch,
                                        temperatures(state), min_distance_A, max_temperature_K)
            except (RuntimeError, ValueError, ArithmeticError, KeyError, torch.jit.Error) as exc:
                problem = f"the forecaster call failed ({_one_line(exc)})"
            if problem:
                failure = problem
                break
            good = state
            bar.update(1)
            if good.step % stride == 0 or good.step == total:
                record(good)
            if good.step % restart_every == 0 and good.step < total:
                outputs.checkpoint(payload(good))
            if good.step % 50 == 0:
                speed = (good.step - first_step) * interval * FS_PS / max(perf_counter() - started, 1e-9)
                bar.set_postfix_str(f"{speed:.3g} ps/s, T={float(temperatures(good).mean()):.0f} K", refresh=False)
    finally:
        bar.close()
        elapsed = perf_counter() - started
        files = outputs.finish(payload(good))
    unwrapped = good.unwrapped_positions().cpu().numpy().reshape(replicas, n, 3)
    velocities_out = good.velocities.cpu().numpy().reshape(replicas, n, 3)
    result = ForecastResult(step=good.step, time_fs=good.step * interval, positions=unwrapped,
                            velocities=velocities_out, log=np.array(outputs.rows, dtype=float), header=header,
                            files=files,
                            ps_per_second=(good.step - first_step) * interval * FS_PS / elapsed if elapsed else math.nan)
    if failure is not None:
        state_path = Path(state_file) if state_file is not None else _default_state_file(
            restart_file, log, trajectory, structure)
        files["last_good_state"] = save_state_xyz(state_path, atoms, unwrapped, velocities_out, good.step,
                                                  good.step * interval)
        saved = ", ".join(f"{kind} {path}" for kind, path in files.items() if kind != "topology")
        raise ForecastUnstableError(
            f"the forecast became unstable at step {good.step + 1} (t = {(good.step + 1) * interval:g} fs): "
            f"{failure}. Stopped; the last good state (step {good.step}) is saved ({saved}). Use a forecaster "
            "trained on such configurations, a shorter interval, a stronger thermostat (--tau), or MD (mlmd md)",
            result)
    return result


def _total_steps(time_value, steps: Optional[int], interval_fs: float) -> int:
    """Number of intervals: ``steps``, or ``time`` / interval rounded to the nearest whole interval."""
    if (time_value is None) == (steps is None):
        raise MLMDError("give exactly one of --time (e.g. 100ps) or --steps (number of forecast intervals)")
    if steps is not None:
        if not (isinstance(steps, (int, np.integer)) and steps >= 0):
            raise MLMDError(f"--steps must be a whole number of intervals >= 0, got {steps!r}")
        return int(steps)
    total_fs = parse_time_fs(time_value)
    if total_fs < 0:
        raise MLMDError(f"--time must not be negative, got {time_value!r}")
    return int(round(total_fs / interval_fs))


def _check_restart(data: dict, path, replicas: int, atoms, interval_fs: float) -> None:
    if int(data.get("replicas", 1)) != replicas:
        raise MLMDError(f"restart file {path} holds {data.get('replicas')} replicas; continue it with "
                        f"--replicas {data.get('replicas')}")
    if list(data.get("atomic_numbers", [])) != [int(z) for z in atoms.numbers]:
        raise MLMDError(f"restart file {path} belongs to another structure; give the structure the run started from")
    if float(data.get("interval_fs", interval_fs)) != interval_fs:
        raise MLMDError(f"restart file {path} was written with a forecaster of interval {data.get('interval_fs')} fs, "
                        f"this one has {interval_fs} fs; continue with the same forecaster")


def _default_state_file(restart_file, log, trajectory, structure) -> Path:
    """``NAME.last_good.xyz`` beside the restart file, log or trajectory, else the structure's name here."""
    for candidate in (restart_file, log, trajectory):
        if candidate is not None:
            return Path(candidate).with_suffix(".last_good.xyz")
    name = Path(structure).stem if isinstance(structure, (str, Path)) else "forecast"
    return Path(f"{name}.last_good.xyz")


def ps_per_day(ps_per_second: float) -> float:
    """Simulated ps per wall-clock second -> ns/day."""
    return ps_per_second / FS_PS * FS_NS * SECONDS_PER_DAY


# --------------------------------------------------------------------------- command line


def _add_arguments(parser) -> None:
    add = parser.add_argument
    add("structure", help="starting structure (any file ASE reads; FixAtoms constraints are honoured)")
    add("--model", metavar="FORECASTER.pt", required=True, help="exported forecaster (forecaster family)")
    length = parser.add_mutually_exclusive_group(required=True)
    length.add_argument("--time", metavar="T", help="simulated time, e.g. 100ps, 2ns, 500fs (bare number: fs)")
    length.add_argument("--steps", metavar="N", type=int, help="number of forecast intervals instead of --time")
    add("--temperature", metavar="K", type=float, default=300.0, help="thermostat target in K (default 300)")
    add("--thermostat", choices=THERMOSTATS, default="csvr", help="csvr (default) or none (NVE-like)")
    add("--tau", metavar="T", default=f"{DEFAULT_TAU_FS:g}fs",
        help=f"CSVR relaxation time, e.g. 1ps or 200fs (default {DEFAULT_TAU_FS:g}fs)")
    add("--replicas", metavar="K", type=int, default=1, help="independent replicas in one batch (seed+k)")
    add("--seed", type=int, default=0, help="velocity and thermostat seed; replica k uses seed+k (default 0)")
    add("--device", default="cpu", help="cpu or cuda (default cpu)")
    monitor = parser.add_mutually_exclusive_group()
    monitor.add_argument("--potential", metavar="MODEL.pt", help="mlmd potential whose energy is logged (epot_eV)")
    monitor.add_argument("--calculator", metavar="NAME", help="ASE calculator whose energy is logged (emt, lj, ...)")
    add("-o", "--trajectory", metavar="FILE", help="trajectory: .h5, .dcd or .xtc (with FILE_topology.pdb)")
    add("--log", metavar="FILE.csv", help="CSV log: step,time_fs,ekin_eV,temperature_K[,epot_eV]")
    add("--stride", metavar="N", type=int, default=1, help="intervals between log rows and frames (default 1)")
    add("--restart", metavar="FILE", help="continue from this restart file")
    add("--restart-file", metavar="FILE", help="where to save restart files (default: NAME.restart beside the log)")
    add("--restart-every", metavar="N", type=int, default=1000, help="intervals between restart files (default 1000)")
    add("--min-distance", metavar="A", type=float, default=DEFAULT_MIN_DISTANCE_A,
        help=f"stop when two atoms come closer than this (Å, default {DEFAULT_MIN_DISTANCE_A:g}; 0: off)")
    add("--max-temperature", metavar="K", type=float,
        help="stop when a replica gets hotter than this (default: max(3 T, canonical 1e-9 tail))")
    add("--quiet", action="store_true", help="no progress bar")


def _run(args) -> int:
    from .md import default_restart_file

    restart_file = args.restart_file or default_restart_file(args.log, args.trajectory, args.structure)
    result = run(args.structure, args.model, time=args.time, steps=args.steps, temperature_K=args.temperature,
                 thermostat=args.thermostat, tau_fs=parse_time_fs(args.tau), seed=args.seed, replicas=args.replicas,
                 device=args.device, potential=args.potential, calculator=args.calculator, log=args.log,
                 trajectory=args.trajectory, stride=args.stride, restart=args.restart, restart_file=restart_file,
                 restart_every=args.restart_every, min_distance_A=args.min_distance,
                 max_temperature_K=args.max_temperature, progress=not args.quiet)
    written = ", ".join(str(path) for path in result.files.values())
    print(f"mlmd forecast: step {result.step} ({result.time_fs * FS_PS:.4g} ps), "
          f"{result.ps_per_second:.3g} ps/s ({ps_per_day(result.ps_per_second):.3g} ns/day); wrote {written}")
    return 0


COMMAND = Command(
    name="forecast",
    help="force-free dynamics: roll a trained trajectory forecaster out (CSVR thermostat, guards, restarts)",
    add_arguments=_add_arguments,
    run=_run,
)

__all__ = ["COMMAND", "ForecastResult", "ForecastUnstableError", "LoadedForecaster", "default_max_temperature_K",
           "energy_monitor", "guard_problem", "load_forecaster", "parse_time_fs", "ps_per_day", "run",
           "save_state_xyz"]

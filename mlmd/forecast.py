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
calculator is given. Outputs, guards and the loop are the shared run layer
(:mod:`mlmd.dynamics`, engine ``rollout``): the log is append-only, restart files
are written atomically.

Guards, checked after every interval: NaN or infinite coordinates/velocities, two
atoms closer than ``min_distance_A``, or a replica hotter than ``max_temperature_K``
(default: max(3 T, the temperature the canonical distribution at T exceeds with
probability 1e-9)); with CSVR, once equilibrated, a temperature below the canonical
lower tail or a running mean that settled away from the target
(:class:`~mlmd.dynamics.guards.ThermostatCheck`, ``temperature_drift_K``). On a trip the run stops, saves the last good state (restart
file and an extended XYZ, both atomic) and raises :class:`ForecastUnstableError`.
"""

import math
import os
import re
from typing import Optional, Union

import numpy as np

from .cli import Command
from .constants import FS_NS, FS_PS, SECONDS_PER_DAY
from .dynamics import (
    DEFAULT_MIN_DISTANCE_A,
    Driver,
    Guards,
    RunOutputs,
    RunResult,
    UnstableRunError,
    default_max_temperature_K,
    default_state_file,
    guard_problem,
    save_state_xyz,
    summary,
)
from .dynamics.options import add_run_options, run_options
from .dynamics.guards import ThermostatCheck
from .dynamics.potential import energy_monitor
from .dynamics.rollout_engine import THERMOSTATS, ForecastSettings, LoadedForecaster, RolloutEngine, load_forecaster
from .errors import MLMDError
from .io import PathLike, load_restart

LOG_HEADER = ("step", "time_fs", "ekin_eV", "temperature_K")
RESTART_FORMAT = "mlmd forecast restart"
DEFAULT_TAU_FS = 1000.0
HINT = ("use a forecaster trained on such configurations, a shorter interval, a stronger thermostat (--tau), "
        "or MD (mlmd md)")
_TIME_UNITS_FS = {"fs": 1.0, "ps": 1e3, "ns": 1e6}

# One result and one error class for every dynamics front-end; the names users know stay.
ForecastResult = RunResult
ForecastUnstableError = UnstableRunError


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


def run(structure, model, *, time: Union[str, float, None] = None, steps: Optional[int] = None,
        temperature_K: float = 300.0, thermostat: str = "csvr", tau_fs: float = DEFAULT_TAU_FS, seed: int = 0,
        replicas: int = 1, device: str = "cpu", potential=None, calculator=None,
        log: Optional[PathLike] = None, trajectory: Optional[PathLike] = None, stride: int = 1,
        restart: Optional[PathLike] = None, restart_file: Optional[PathLike] = None, restart_every: int = 1000,
        state_file: Optional[PathLike] = None, min_distance_A: Optional[float] = DEFAULT_MIN_DISTANCE_A,
        max_temperature_K: Optional[float] = None, progress: bool = False, observers=(), overwrite: bool = False,
        threads: Optional[int] = None, frame: Optional[int] = None, use_velocities: Optional[bool] = None,
        temperature_drift_K: Optional[float] = None, mean_only: bool = False,
        energy_correction: bool = False) -> RunResult:
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
        progress: show a progress bar.
        observers: ``(function, interval)`` pairs called every ``interval`` intervals (:class:`mlmd.dynamics.Driver`).
        overwrite, threads, frame, use_velocities: as in :func:`mlmd.md.run`.
        temperature_drift_K: with CSVR, stop when a replica's mean temperature over a window settles this far
            from the target, or its temperature falls below the canonical lower tail
            (:class:`mlmd.dynamics.guards.ThermostatCheck`; None: the default tolerance, 0: off).
        mean_only: run a stochastic forecaster on its mean (the deterministic mode, for comparison).
        energy_correction: scale the forecast velocities every interval so that ``U + K`` of the
            ``potential``/``calculator`` changes only by what the thermostat exchanges (one energy call
            per interval; :func:`integrators.rollout.energy_conserving`).
    """
    arguments = dict(locals())
    from .model import torch_threads

    with torch_threads(threads):
        return _run_forecast(**arguments)


def _run_forecast(structure, model, *, time, steps, temperature_K, thermostat, tau_fs, seed, replicas, device,
                  potential, calculator, log, trajectory, stride, restart, restart_file, restart_every, state_file,
                  min_distance_A, max_temperature_K, progress, observers, overwrite, threads, frame, mean_only,
                  energy_correction,
                  use_velocities, temperature_drift_K) -> RunResult:
    from .checks import check_atoms, fixed_atoms_mask
    from .io import load_structure
    from .model import check_device, load_model

    if thermostat not in THERMOSTATS:
        raise MLMDError(f"unknown thermostat {thermostat!r}; choose one of {', '.join(THERMOSTATS)}")
    for name, value in (("replicas", replicas), ("stride", stride), ("restart_every", restart_every)):
        if not (isinstance(value, (int, np.integer)) and value > 0):
            raise MLMDError(f"{name} must be a positive integer, got {value!r}")
    for name, value in (("temperature_K", temperature_K), ("tau_fs", tau_fs)):
        if not (math.isfinite(value) and value >= (0 if name == "temperature_K" else 1e-300)):
            raise MLMDError(f"{name} must be {'zero or ' if name == 'temperature_K' else ''}positive, got {value}")
    check_device(device)
    if min_distance_A is not None and not min_distance_A > 0:
        min_distance_A = None  # 0 switches the overlap guard off
    atoms = load_structure(structure, frame, use_velocities, source="the structure")
    if isinstance(model, (str, os.PathLike)):  # a file or a shipped model's name
        model = load_model(model, device=device)
        if not (model.is_forecaster or model.family == "forecaster"):
            family = model.family or "unknown"
            article = "an" if family[:1].lower() in "aeiou" else "a"
            raise MLMDError(f"model {model.path} is {article} {family}-family potential, not a trajectory "
                            "forecaster; run potentials with `mlmd md`, and give `mlmd forecast` a forecaster")
    forecaster = load_forecaster(model, device=device)
    interval = forecaster.interval_fs
    if forecaster.species:
        check_atoms(atoms, source="the structure", species=forecaster.species, min_distance=min_distance_A)
    total = _total_steps(time, steps, interval)
    monitor = energy_monitor(atoms, potential, calculator, replicas, device)
    header = LOG_HEADER + (("epot_eV",) if monitor is not None else ())
    free_atoms = int(np.count_nonzero(~fixed_atoms_mask(atoms, "the structure")))
    if max_temperature_K is None:
        max_temperature_K = default_max_temperature_K(temperature_K, free_atoms)
    guards = Guards(min_distance_A, max_temperature_K)
    if thermostat == "csvr" and temperature_drift_K != 0:  # NVE-like runs have no target to hold
        guards.thermostat = ThermostatCheck.for_run(temperature_K, free_atoms, tau_fs / interval, temperature_drift_K)
    restart_data = load_restart(restart, RESTART_FORMAT) if restart is not None else None
    if restart_data is not None:
        _check_restart(restart_data, restart, replicas, atoms, interval)
        if int(restart_data["step"]) >= total:
            raise MLMDError(f"restart file {restart} is at interval {int(restart_data['step'])}, and the run is "
                            f"{total} intervals long; give a longer --time or --steps to continue")

    settings = ForecastSettings(temperature_K=temperature_K, thermostat=thermostat, tau_fs=tau_fs, seed=seed,
                                replicas=replicas, device=device, mean_only=mean_only,
                                energy_correction=energy_correction)
    # The monitor's energy is only logged: evaluate it at the logged intervals (as the driver records them).
    engine = RolloutEngine(atoms, forecaster, settings, restart_data, monitor,
                           monitor_when=lambda step: step % stride == 0 or step == total)
    extra = {"replicas": replicas, "atomic_numbers": [int(z) for z in atoms.numbers], "interval_fs": interval,
             "temperature_K": float(temperature_K), "thermostat": thermostat, "tau_fs": float(tau_fs),
             "seed": int(seed), "header": list(header)}
    outputs = RunOutputs(atoms, replicas, header, RESTART_FORMAT, log=log, trajectory=trajectory,
                         restart_file=restart_file, restart=restart_data, extra=extra, overwrite=overwrite,
                         state_file=state_file or default_state_file(restart_file, log, trajectory, structure))
    # Forecasts are checked after every interval: one call moves atoms as far as tens of MD steps.
    driver = Driver(engine, outputs, guards, total_steps=total, stride=stride,
                    restart_every=restart_every, timestep_fs=interval, check_every=1, record_last=True,
                    label="forecast", hint=HINT, progress=progress)
    for function, every in observers:
        driver.attach(function, every)
    return driver.run()


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
    add("--energy-correction", action="store_true",
        help="energy-aware forecast: scale the forecast velocities every interval so that the --potential's (or "
        "--calculator's) U + K changes only by what the thermostat exchanges (one energy call per interval)")
    add("--mean", action="store_true",
        help="run a stochastic forecaster on its mean instead of sampling (the deterministic mode)")
    add("--temperature-drift", metavar="K", type=float,
        help="with csvr: stop when a replica's running mean temperature settles this far from the target, or it "
        "falls below the canonical lower tail (default: 5 standard errors of the mean, at least 5 %% of T; 0: off)")
    add_run_options(parser, "intervals", 1, ",".join(LOG_HEADER) + "[,epot_eV]", ("-o", "--trajectory"))


def _run(args) -> int:
    result = run(args.structure, args.model, time=args.time, steps=args.steps, temperature_K=args.temperature,
                 thermostat=args.thermostat, tau_fs=parse_time_fs(args.tau), seed=args.seed, replicas=args.replicas,
                 device=args.device, potential=args.potential, calculator=args.calculator,
                 temperature_drift_K=args.temperature_drift, mean_only=args.mean,
                 energy_correction=args.energy_correction, **run_options(args))
    print(summary("mlmd forecast", result))
    return 0


COMMAND = Command(name="forecast", add_arguments=_add_arguments, run=_run,
                  example="mlmd forecast ethanol.xyz --model ethanol-forecaster.pt --time 100ps -o forecast.h5 "
                  "--log forecast.csv",
                  help="force-free dynamics: roll a trained trajectory forecaster out "
                  "(CSVR thermostat, guards, restarts)")

__all__ = ["COMMAND", "ForecastResult", "ForecastUnstableError", "LoadedForecaster", "default_max_temperature_K",
           "energy_monitor", "guard_problem", "load_forecaster", "parse_time_fs", "ps_per_day", "run",
           "save_state_xyz"]

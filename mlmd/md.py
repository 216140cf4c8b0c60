"""Molecular dynamics with any mlmd model or ASE calculator: :func:`run` and ``mlmd md``.

Two engines run the same simulation:

- ``engine="torch"`` (default): the schemes of :mod:`integrators` (``baoab``,
  ``obabo``, ``gjf``, ``verlet``, ``csvr``) on a torch state, with the model
  contract on CPU or CUDA, or with an ASE calculator wrapped as the same
  energy/forces callable (:class:`CalculatorPotential`), so every scheme works
  with every calculator. ``replicas=K`` runs K independent copies in one batch.
- ``engine="openmm"``: the model as an OpenMM force (openmm-torch's ``TorchForce``
  where it works, else ``openmm.PythonForce``; :func:`mlmd.openmm.create_system`) with the integrators of
  :mod:`mlmd.openmm.integrators` (``baoab``, ``gjf``, ``langevin-middle``, ``verlet``).

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
- the trajectory format follows the extension (:mod:`mlmd.dynamics.trajectory`): ``.dcd`` and
  ``.xtc`` (with a ``NAME_topology.pdb`` beside them for ``mdtraj.load(..., top=...)``) or ``.h5``
  (topology inside) through mdtraj, ``.h5md`` (H5MD 1.1), ``.xyz``/``.extxyz``/``.traj`` (ASE). Frames are appended to ``NAME.partial.EXT`` during the
  run and renamed onto ``NAME.EXT`` at the end, so the named file is always
  complete; the log is appended to and the restart file rewritten atomically at
  every restart point (every ``restart_every`` steps) and at the end;
- ``steps`` is the total length: with ``restart`` the run continues from the
  saved step up to ``steps``, truncating the log and trajectory to that step,
  and repeats bit for bit what an uninterrupted run would have done;
- at every log/restart point the guards of :mod:`mlmd.dynamics.guards` run: the
  run stops if a coordinate, velocity or the potential energy is not finite, the
  force call fails, two atoms come closer than ``min_distance_A``, a replica gets
  hotter than ``max_temperature_K``, or its potential energy moved by more than
  ``max_energy_jump_eV_per_atom`` per atom since the previous point; the last good
  state is then saved (restart file, log, trajectory, plot, ``NAME.last_good.xyz``)
  and :class:`UnstableSimulationError` says what happened.

After the run a PNG of the energies and the temperature against time is
written next to the log (``md.csv`` -> ``md.png``).
"""

import math
from typing import Optional

from .cli import Command
from .dynamics import (
    DEFAULT_MAX_ENERGY_JUMP_EV_PER_ATOM,
    DEFAULT_MIN_DISTANCE_A,
    Driver,
    Guards,
    MDSettings,
    RunOutputs,
    RunResult,
    UnstableRunError,
    default_max_temperature_K,
    default_restart_file,
    default_state_file,
    engine_class,
    integrators_of,
    ns_per_day,
    summary,
)
from .dynamics.options import add_run_options, run_options
from .dynamics.outputs import check_run_files
from .dynamics.engine import one_line
from .dynamics.potential import CalculatorPotential
from .dynamics.trajectory import TrajectoryWriter
from .errors import MLMDError
from .io import PathLike, load_restart

LOG_HEADER = ("step", "time_fs", "epot_eV", "ekin_eV", "temperature_K")
RESTART_FORMAT = "mlmd md restart"
DEFAULT_FRICTION_PER_PS = 1.0
HINT = "use a smaller --timestep, check the structure, or use a model trained on such configurations"

# One result and one error class for every dynamics front-end; the names users know stay.
MDResult = RunResult
UnstableSimulationError = UnstableRunError


def _check_settings(engine, settings: MDSettings, model, calculator, steps, stride, restart_every) -> None:
    if (model is None) == (calculator is None):
        raise MLMDError("give exactly one of --model MODEL.pt (an exported mlmd model) or --calculator NAME "
                        "(emt, lj, morse, gfn2 or an ASE calculator name)")
    if getattr(engine, "drives", None) != "potential":
        raise MLMDError(f"engine {engine.engine_name!r} does not run potentials; use torch or openmm")
    known = integrators_of(engine)
    if settings.integrator not in known:
        raise MLMDError(f"integrator {settings.integrator!r} is not available with the {engine.engine_name} engine; "
                        f"choose one of {', '.join(sorted(known))}")
    engine.check(settings, model, calculator)
    positive = (("--timestep", settings.timestep_fs), ("--replicas", settings.replicas), ("--stride", stride),
                ("--restart-every", restart_every))
    non_negative = (("--steps", steps), ("--temperature", settings.temperature_K),
                    ("--friction", settings.friction_per_ps))
    for name, value in positive:
        if not (math.isfinite(value) and value > 0):
            raise MLMDError(f"{name} must be positive, got {value}")
    for name, value in non_negative:
        if not (math.isfinite(value) and value >= 0):
            raise MLMDError(f"{name} must be zero or positive, got {value}")
    from .model import check_device

    check_device(settings.device)


def run(structure, model=None, calculator=None, *, engine: str = "torch", integrator: str = "baoab",
        temperature_K: float = 300.0, timestep_fs: float = 0.5, steps: int = 1000,
        friction_per_ps: float = DEFAULT_FRICTION_PER_PS, seed: int = 0, replicas: int = 1, device: str = "cpu",
        platform: Optional[str] = None, log: Optional[PathLike] = None, trajectory: Optional[PathLike] = None,
        stride: int = 100, restart: Optional[PathLike] = None, restart_file: Optional[PathLike] = None,
        restart_every: int = 1000, max_energy_jump_eV_per_atom: float = DEFAULT_MAX_ENERGY_JUMP_EV_PER_ATOM,
        min_distance_A: Optional[float] = DEFAULT_MIN_DISTANCE_A, max_temperature_K: Optional[float] = None,
        state_file: Optional[PathLike] = None, plot: bool = True, progress: bool = False,
        observers=(), overwrite: bool = False, threads: Optional[int] = None, frame: Optional[int] = None,
        use_velocities: Optional[bool] = None) -> RunResult:
    """Run Langevin (or NVE) dynamics of ``structure`` (ASE Atoms or any file ASE reads).

    Args:
        model: an exported model file, :class:`mlmd.model.Model` or potential (the model contract).
        calculator: instead of ``model``: an ASE calculator or its name (``emt``, ``lj``, ``morse``, ``gfn2``, ...).
        engine: a registered engine that runs potentials: ``"torch"`` or ``"openmm"`` (model only, one replica).
        integrator: a scheme of the engine (see the module docstring).
        temperature_K, timestep_fs, friction_per_ps: thermostat target (K), step (fs), friction γ (1/ps).
        steps: total number of steps (a restarted run continues up to it).
        seed: noise seed; replica ``k`` uses ``seed + k``.
        replicas: independent copies run in one batch (torch engine).
        device: where the model runs (``cpu``, ``cuda``); with OpenMM it picks the platform unless
            ``platform`` (``Reference``, ``CPU``, ``CUDA``, ...) names one.
        log, trajectory, stride: CSV log and trajectory (``.dcd``, ``.xtc``, ``.h5``, ``.h5md``, ``.xyz``,
            ``.extxyz``, ``.traj``), every ``stride`` steps.
        restart: a restart file to continue from; ``restart_file``: where to save one every
            ``restart_every`` steps and at the end (None: no restart file).
        max_energy_jump_eV_per_atom, min_distance_A, max_temperature_K: guard bounds (None: off; the
            temperature bound defaults to :func:`mlmd.dynamics.guards.default_max_temperature_K`).
        state_file: extended XYZ of the last good state when a guard trips (default ``NAME.last_good.xyz``).
        plot: write ``LOG.png`` (energies and temperature against time) when there is a log.
        progress: show a progress bar with ns/day.
        observers: ``(function, interval)`` pairs called every ``interval`` steps (see :class:`mlmd.dynamics.Driver`).
        overwrite: replace existing output files (a continued run may always rewrite the files it continues).
        threads: torch CPU threads for the run (None: :data:`mlmd.model.DEFAULT_THREADS`).
        frame: which frame of a structure file with several frames to start from.
        use_velocities: start from the velocities stored in the structure (default: an Atoms object's own
            are used, a file's are not).

    Returns the final :class:`RunResult`; raises :class:`UnstableSimulationError` after saving the last
    good state when the dynamics blow up.
    """
    from .model import torch_threads

    with torch_threads(threads):
        return _run_md(structure, model, calculator, engine, steps, stride, restart, restart_every, frame,
                       use_velocities, observers, MDSettings(
                           integrator=integrator, temperature_K=temperature_K, friction_per_ps=friction_per_ps,
                           timestep_fs=timestep_fs, seed=seed, replicas=replicas, device=device, platform=platform),
                       dict(log=log, trajectory=trajectory, restart_file=restart_file, state_file=state_file,
                            plot=plot, overwrite=overwrite),
                       Guards(min_distance_A=min_distance_A or None, max_temperature_K=max_temperature_K,
                              max_energy_jump_eV_per_atom=max_energy_jump_eV_per_atom), progress)


def _run_md(structure, model, calculator, engine, steps, stride, restart, restart_every, frame, use_velocities,
            observers, settings: MDSettings, files: dict, guards: Guards, progress: bool) -> RunResult:
    from .checks import check_atoms
    from .io import load_structure
    from .model import load_model

    engine_type = engine_class(engine)
    _check_settings(engine_type, settings, model, calculator, steps, stride, restart_every)
    atoms = load_structure(structure, frame, use_velocities, source="the structure")
    restart_data = load_restart(restart, RESTART_FORMAT) if restart is not None else None
    if restart_data is not None:
        _check_restart(restart_data, restart, engine, settings.replicas, atoms)
        if int(restart_data["step"]) >= steps:
            raise MLMDError(f"restart file {restart} is at step {int(restart_data['step'])}, and --steps {steps} is "
                            "the total length; give a larger --steps to continue")
    loaded = None
    if model is not None:
        loaded = load_model(model, device="cpu" if engine == "openmm" else settings.device)
        if loaded.is_forecaster or loaded.family == "forecaster":
            raise MLMDError(f"{model} is a trajectory forecaster, not a potential: it gives no forces for MD; "
                            "run it with `mlmd forecast`, or give a potential model")
        check_atoms(atoms, source="the structure", species=loaded.species)
    temperature_K, timestep_fs = settings.temperature_K, settings.timestep_fs
    if guards.max_temperature_K is None:
        guards.max_temperature_K = default_max_temperature_K(temperature_K, _free_atoms(atoms))
    if guards.min_distance_A:
        check_atoms(atoms, source="the structure", min_distance=guards.min_distance_A)

    log, trajectory, restart_file = files["log"], files["trajectory"], files["restart_file"]
    origin_step, origin_fs = _time_origin(restart_data, timestep_fs)
    extra = {"replicas": settings.replicas, "atomic_numbers": [int(z) for z in atoms.numbers],
             "timestep_fs": float(timestep_fs), "time_origin_step": origin_step, "time_origin_fs": origin_fs,
             "integrator": settings.integrator, "temperature_K": float(temperature_K),
             "friction_per_ps": float(settings.friction_per_ps), "seed": int(settings.seed)}
    state_file = files["state_file"] or default_state_file(restart_file, log, trajectory, structure)
    check_run_files(log, trajectory, restart_file, state_file, files["plot"], files["overwrite"],
                    restart_data is not None)
    simulation = _create_engine(engine_type, atoms, loaded, calculator, settings, restart_data)
    outputs = RunOutputs(atoms, settings.replicas, LOG_HEADER, RESTART_FORMAT, log=log, trajectory=trajectory,
                         restart_file=restart_file, restart=restart_data, extra=extra, overwrite=files["overwrite"],
                         state_file=state_file, plot_temperature_K=float(temperature_K) if files["plot"] else None)
    driver = Driver(simulation, outputs, guards, total_steps=steps, stride=stride, restart_every=restart_every,
                    timestep_fs=timestep_fs, time_of=lambda step: origin_fs + (step - origin_step) * timestep_fs,
                    label="simulation", hint=HINT, progress=progress)
    for function, interval in observers:
        driver.attach(function, interval)
    return driver.run()


def _create_engine(engine_type, atoms, loaded, calculator, settings, restart_data):
    """The engine, its first force call included; a model or calculator failing there is a one-line error."""
    try:
        return engine_type.create(atoms, loaded, calculator, settings, restart_data)
    except MLMDError:
        raise
    except Exception as exc:  # whatever a user's calculator or model raises on its first call
        if calculator is not None:
            source = f"calculator {calculator if isinstance(calculator, str) else type(calculator).__name__}"
        else:
            source = f"model {loaded.path or ''}".strip()
        raise MLMDError(f"the {source} failed on the starting structure ({one_line(exc)}); nothing was simulated; "
                        "check that it supports these elements and this structure") from exc


def _free_atoms(atoms) -> int:
    from .checks import fixed_atoms_mask

    return int((~fixed_atoms_mask(atoms, "the structure")).sum())


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


# --------------------------------------------------------------------------- command line


def _add_arguments(parser) -> None:
    add = parser.add_argument
    add("structure", help="starting structure (any file ASE reads; FixAtoms constraints are honoured)")
    add("--model", metavar="MODEL.pt", help="exported mlmd model")
    add("--calculator", metavar="NAME", help="instead of --model: emt, lj, morse, gfn2 or an ASE calculator name")
    add("--engine", metavar="{torch,openmm}", default="torch",
        help="torch (mlmd's batched integrators, default) or openmm (the model as an OpenMM force)")
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
    add("--max-energy-jump", metavar="EV_PER_ATOM", type=float, default=DEFAULT_MAX_ENERGY_JUMP_EV_PER_ATOM,
        help="stop when the potential energy moves more than this many eV/atom between log points "
        f"(default {DEFAULT_MAX_ENERGY_JUMP_EV_PER_ATOM:g})")
    add("--no-plot", action="store_true", help="do not write the PNG plot")
    add_run_options(parser, "steps", 100, ",".join(LOG_HEADER) + " (a PNG plot goes beside it)")


def _run(args) -> int:
    result = run(args.structure, model=args.model, calculator=args.calculator, engine=args.engine,
                 integrator=args.integrator, temperature_K=args.temperature, timestep_fs=args.timestep,
                 steps=args.steps, friction_per_ps=args.friction, seed=args.seed, replicas=args.replicas,
                 device=args.device, platform=args.platform, max_energy_jump_eV_per_atom=args.max_energy_jump,
                 plot=not args.no_plot, **run_options(args))
    print(summary("mlmd md", result))
    return 0


COMMAND = Command(name="md", add_arguments=_add_arguments, run=_run,
                  example="mlmd md ethanol.xyz --model ethanol --steps 2000 --log md.csv --trajectory md.h5",
                  help="run molecular dynamics with an mlmd model or an ASE calculator (torch or OpenMM engine)")

__all__ = ["CalculatorPotential", "COMMAND", "MDResult", "TrajectoryWriter", "UnstableSimulationError",
           "default_restart_file", "ns_per_day", "run"]

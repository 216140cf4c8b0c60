"""Reference MD trajectories (``mlmd generate SYSTEM --trajectory``) for training forecasters.

``runs`` independent runs of one starting structure of a system, each from its own
seeded Maxwell-Boltzmann velocities (zero total momentum, and zero angular momentum
for molecules), driven by the reference calculator through :mod:`integrators` with
the CSVR thermostat (relaxation time ``tau_T = 1 / friction``; default 1 ps, so that
over the 10-30 fs a forecaster advances the dynamics is nearly Newtonian). Both schemes conserve
what the start removed, so CSVR thermostats N_f = 3N - 3 degrees of freedom (3N - 6 for an
isolated molecule of three or more atoms; a diatomic keeps its rotation)
(:func:`integrators.state.conserved_components`). After
``equilibration_steps`` every ``stride``-th step is recorded. The file format (one file
per run, written atomically) and the reader are in :mod:`mlmd.trajectories`.
"""

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..constants import FS_PS, KB_EV_PER_K
from ..dynamics.potential import CalculatorPotential
from ..dynamics.system import replicate, starting_velocities
from ..errors import MLMDError
from ..io import PathLike, atomic_path
from ..trajectories import SETTINGS_KEY, TRAJECTORY_FORMATS, TrajectorySettings
from .systems import SYSTEMS


def _start_structure(recipe, label: Optional[str]):
    configs = recipe.build()
    if label is None:
        return configs[0]
    for name, atoms in configs:
        if name == label:
            return name, atoms
    raise MLMDError(f"the system has no configuration {label!r}; choose one of {[n for n, _ in configs]}")


def _initial_velocities(atoms, temperature_K: float, seeds) -> np.ndarray:
    """``[runs N, 3]`` Å/fs: the shared Maxwell-Boltzmann sampler, then zero momentum (and zero angular
    momentum for an isolated system of more than two atoms), rescaled back to ``temperature_K`` by ASE."""
    from ase import units
    from ase.md.velocitydistribution import Stationary, ZeroRotation

    drawn = starting_velocities(atoms, temperature_K, seeds, "mlmd generate").reshape(len(seeds), len(atoms), 3)
    runs = []
    for velocities in drawn:
        copy = atoms.copy()
        copy.set_velocities(velocities / units.fs)
        Stationary(copy)
        if not copy.pbc.any() and len(copy) > 2:
            ZeroRotation(copy)
        runs.append(copy.get_velocities() * units.fs)
    return np.concatenate(runs)


class _Writer:
    """Appends frames of one run to a temporary file renamed into place by :meth:`close`."""

    def __init__(self, path: Path, fmt: str, atoms, settings: Dict[str, Any], expected_frames: int):
        self.path, self.fmt, self.atoms, self.settings = path, fmt, atoms, settings
        self._context = atomic_path(path)
        self.temporary = self._context.__enter__()
        self.frames: List = []
        if fmt == "h5":
            import tables

            self.file = tables.open_file(str(self.temporary), "w")
            n = len(atoms)
            for name, value in (("atomic_numbers", atoms.numbers.astype(np.int64)),
                                ("masses", atoms.get_masses().astype(np.float64)),
                                ("cell", np.asarray(atoms.cell.array, dtype=np.float64)),
                                ("pbc", np.asarray(atoms.pbc, dtype=bool))):
                self.file.create_array("/", name, value)
            self.arrays = {
                name: self.file.create_earray("/", name, tables.Float64Atom(), shape=shape,
                                              expectedrows=expected_frames)
                for name, shape in (("positions", (0, n, 3)), ("velocities", (0, n, 3)), ("time_fs", (0,)))
            }
            self.file.root._v_attrs[SETTINGS_KEY] = json.dumps(settings, sort_keys=True)

    def append(self, positions: np.ndarray, velocities: np.ndarray, time_fs: np.ndarray) -> None:
        """``positions``, ``velocities`` ``[k,N,3]``, ``time_fs`` ``[k]``."""
        if self.fmt == "h5":
            self.arrays["positions"].append(positions)
            self.arrays["velocities"].append(velocities)
            self.arrays["time_fs"].append(time_fs)
            return
        from ase import units

        for x, v, t in zip(positions, velocities, time_fs):
            frame = self.atoms.copy()
            frame.positions = x
            frame.set_velocities(v / units.fs)
            frame.info.update({"time_fs": float(t), SETTINGS_KEY: json.dumps(self.settings, sort_keys=True)})
            self.frames.append(frame)

    def close(self, ok: bool) -> None:
        if self.fmt == "h5":
            self.file.close()
        else:
            from ase.io import write

            write(self.temporary, self.frames, format="extxyz")
        if ok:
            self._context.__exit__(None, None, None)
        else:
            self._context.__exit__(RuntimeError, RuntimeError("aborted"), None)


def generate_trajectories(system: str, output: PathLike, runs: int = 4, steps: int = 20000,
                          timestep_fs: Optional[float] = None, temperature_K: float = 300.0, stride: int = 1,
                          equilibration_steps: int = 1000, friction_per_ps: float = 1.0,
                          calculator: Optional[str] = None, config: Optional[str] = None, seed: int = 0,
                          fmt: str = "h5", progress: bool = True) -> List[Path]:
    """Write ``runs`` reference trajectories of ``system`` into folder ``output``; returns their paths.

    Each run records ``steps // stride + 1`` frames (``steps`` MD steps of ``timestep_fs``
    fs after ``equilibration_steps``) at ``temperature_K`` with the CSVR thermostat of
    relaxation time ``1 / friction_per_ps`` ps (0: plain velocity Verlet, NVE).
    All runs advance together as replicas of one batch; run ``k`` uses seed ``seed + k``.
    """
    import torch
    from tqdm import tqdm

    from integrators import INTEGRATORS, MOMENTUM_CONSERVING
    from integrators.state import conserved_components, init_state

    from .. import __version__

    key = system.lower()
    if key not in SYSTEMS:
        raise MLMDError(f"unknown system {system!r}; run `mlmd generate --list` for the systems that can be generated")
    if fmt not in TRAJECTORY_FORMATS:
        raise MLMDError(f"--format must be one of {', '.join(TRAJECTORY_FORMATS)}, got {fmt!r}")
    if runs < 1 or steps < 1 or stride < 1 or equilibration_steps < 0:
        raise MLMDError("--runs, --steps and --stride must be at least 1 and --equilibration at least 0")
    if temperature_K <= 0 or friction_per_ps < 0:
        raise MLMDError("the temperature (K) must be positive and the friction (1/ps) not negative")
    recipe = SYSTEMS[key]
    timestep_fs = float(timestep_fs or recipe.timestep_fs)
    if timestep_fs <= 0:
        raise MLMDError(f"--timestep must be positive (fs), got {timestep_fs}")
    label, atoms = _start_structure(recipe, config)
    calculator_name = calculator or recipe.calculator
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    if recipe.relax:
        from ase.optimize import BFGS

        from ..calculators import get_calculator

        atoms = atoms.copy()
        atoms.calc = get_calculator(calculator_name)
        BFGS(atoms, logfile=None).run(fmax=0.05, steps=300)
        atoms.calc = None
    atoms.set_constraint()
    n = len(atoms)
    integrator = "csvr" if friction_per_ps > 0 else "verlet"
    settings = TrajectorySettings(system=key, config=label, calculator=calculator_name, runs=runs, steps=steps,
                                  timestep_fs=timestep_fs, temperature_K=float(temperature_K), stride=stride,
                                  equilibration_steps=equilibration_steps, thermostat=integrator,
                                  friction_per_ps=float(friction_per_ps), seed=seed, mlmd_version=__version__)
    velocities = _initial_velocities(atoms, temperature_K, [seed + k for k in range(runs)])
    energy_forces = CalculatorPotential(atoms, calculator_name, runs)
    system = replicate(atoms, runs, seed, source="mlmd generate")
    state = init_state(energy_forces, system.positions, kT=KB_EV_PER_K * temperature_K,
                       friction=friction_per_ps * FS_PS, velocities=torch.as_tensor(velocities), **system.arguments())
    if integrator in MOMENTUM_CONSERVING:
        state = state.replace(constrained_dof=conserved_components(state, state.forces))
    step_function = INTEGRATORS[integrator]
    paths = [output / f"run-{k:03d}.{fmt}" for k in range(runs)]
    n_frames = steps // stride + 1
    writers = [_Writer(path, fmt, atoms, {**asdict(settings), "run": k}, n_frames) for k, path in enumerate(paths)]
    bar = tqdm(total=equilibration_steps + steps, desc=f"trajectories {key}", unit="step", disable=not progress)
    ok = False
    buffer: List[Tuple[np.ndarray, np.ndarray, float]] = []

    def flush():
        if buffer:
            x = np.stack([b[0] for b in buffer]).reshape(len(buffer), runs, n, 3)
            v = np.stack([b[1] for b in buffer]).reshape(len(buffer), runs, n, 3)
            t = np.array([b[2] for b in buffer])
            for k, writer in enumerate(writers):
                writer.append(x[:, k], v[:, k], t)
            buffer.clear()

    try:
        for _ in range(equilibration_steps):
            state = step_function(state, energy_forces, timestep_fs)
            bar.update(1)
        origin = state.step
        for step in range(steps + 1):
            if step > 0:
                state = step_function(state, energy_forces, timestep_fs)
                bar.update(1)
            if step % stride == 0:
                x = state.positions.numpy().copy()
                if not np.isfinite(x).all():
                    raise MLMDError(f"the reference dynamics of {key} blew up at step {state.step}; "
                                    "lower --timestep or --temperature")
                buffer.append((x, state.velocities.numpy().copy(), (state.step - origin) * timestep_fs))
                if len(buffer) >= 1000:
                    flush()
        flush()
        ok = True
    finally:
        bar.close()
        for writer in writers:
            writer.close(ok)
    return paths



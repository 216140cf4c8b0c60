"""Reference MD trajectories and the forecaster's training pairs.

Generation (``mlmd generate SYSTEM --trajectory``): ``runs`` independent runs of one
starting structure of a :mod:`mlmd.generate` system, each from its own seeded
Maxwell-Boltzmann velocities (zero total momentum, and zero angular momentum for
molecules), driven by the reference calculator through :mod:`integrators` with the
CSVR thermostat (``csvr``: velocity Verlet between global rescalings, relaxation time
``tau_T = 1 / friction``; default 1 ps, so that over the 10-30 fs a forecaster
advances the dynamics is nearly Newtonian and total momentum, rescaled by a scalar,
stays zero). After ``equilibration_steps`` every ``stride``-th step is recorded.

File format, one file per run (``run-000.h5``, ...), written atomically:

* HDF5 (PyTables): arrays ``positions [T,N,3]`` Å (unwrapped: never folded into the
  cell), ``velocities [T,N,3]`` Å/fs, ``time_fs [T]``, ``atomic_numbers [N]``,
  ``masses [N]`` amu, ``cell [3,3]`` Å, ``pbc [3]``, and the settings as JSON in the
  root attribute ``mlmd_trajectory`` (``timestep_fs``, ``stride``, ``temperature_K``, ...);
* extended XYZ (``--format xyz``): the same frames with ASE momenta (``get_velocities()``
  in ASE units) and the settings in every frame's info.

Training pairs: :class:`TrajectoryDataset` reads several runs and yields, for start
frames ``t`` (every ``pair_stride``-th recorded frame), the state at ``t`` and the
states at ``t + k * interval`` for ``k = 1..rollout_steps``; whole runs go to the
validation and test splits, so that validation frames are not correlated with training
frames. The ``mlmd train`` objective of the ``forecaster`` family that trains on them
is :mod:`mlmd.training.objectives.trajectory`.
"""

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .errors import InputFileError, MLMDError
from .io import PathLike, atomic_path

TRAJECTORY_FORMATS = ("h5", "xyz")
SETTINGS_KEY = "mlmd_trajectory"


# --------------------------------------------------------------------------- generation


@dataclass
class TrajectorySettings:
    """Everything that determines a set of reference runs; stored in every file."""

    system: str
    config: str
    calculator: str
    runs: int
    steps: int
    timestep_fs: float
    temperature_K: float
    stride: int
    equilibration_steps: int
    thermostat: str
    friction_per_ps: float
    seed: int
    run: int = 0
    mlmd_version: str = field(default="")


@dataclass
class Trajectory:
    """One reference run: frames every ``stride`` MD steps of ``timestep_fs``."""

    positions: np.ndarray  # [T,N,3] Å, unwrapped
    velocities: np.ndarray  # [T,N,3] Å/fs
    atomic_numbers: np.ndarray  # [N]
    masses: np.ndarray  # [N] amu
    cell: np.ndarray  # [3,3] Å
    pbc: np.ndarray  # [3] bool
    timestep_fs: float
    stride: int
    settings: Dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def frame_interval_fs(self) -> float:
        return self.timestep_fs * self.stride

    def __len__(self) -> int:
        return int(self.positions.shape[0])


def _start_structure(recipe, label: Optional[str]):
    configs = recipe.build()
    if label is None:
        return configs[0]
    for name, atoms in configs:
        if name == label:
            return name, atoms
    raise MLMDError(f"the system has no configuration {label!r}; choose one of {[n for n, _ in configs]}")


def _initial_velocities(atoms, temperature_K: float, seed: int) -> np.ndarray:
    """Maxwell-Boltzmann velocities (Å/fs) with zero momentum (and zero angular momentum if isolated)."""
    from ase import units
    from ase.md import velocitydistribution
    from ase.md.velocitydistribution import Stationary, ZeroRotation

    atoms = atoms.copy()
    # ASE 3.29 renamed MaxwellBoltzmannDistribution; accept both.
    thermalize = getattr(velocitydistribution, "thermalize_momenta", None)
    thermalize = thermalize or velocitydistribution.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
    Stationary(atoms)
    if not atoms.pbc.any() and len(atoms) > 2:
        ZeroRotation(atoms)
    return atoms.get_velocities() * units.fs


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

    from integrators import INTEGRATORS
    from integrators.state import init_state

    from . import __version__
    from .constants import AMU_A2_PER_FS2_EV, FS_PS, KB_EV_PER_K
    from .generate import SYSTEMS
    from .md import CalculatorPotential

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

        from .calculators import get_calculator

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
    velocities = np.concatenate([_initial_velocities(atoms, temperature_K, seed + k) for k in range(runs)])
    tensor = lambda array, dtype=torch.float64: torch.as_tensor(np.array(array), dtype=dtype)
    energy_forces = CalculatorPotential(atoms, calculator_name, runs)
    state = init_state(
        energy_forces, tensor(np.tile(atoms.positions, (runs, 1))),
        tensor(np.tile(atoms.get_masses(), runs) * AMU_A2_PER_FS2_EV), tensor(np.tile(atoms.numbers, runs), torch.int64),
        tensor(np.broadcast_to(atoms.cell.array, (runs, 3, 3))), tensor(np.broadcast_to(atoms.pbc, (runs, 3)), torch.bool),
        torch.arange(runs).repeat_interleave(n), kT=KB_EV_PER_K * temperature_K, friction=friction_per_ps * FS_PS,
        seeds=tensor([seed + k for k in range(runs)], torch.int64), velocities=tensor(velocities))
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


# --------------------------------------------------------------------------- reading


def read_trajectory(path: PathLike) -> Trajectory:
    """Read one reference run written by :func:`generate_trajectories` (HDF5 or extended XYZ)."""
    from .io import require_file

    path = require_file(path, "trajectory")
    if path.suffix.lower() in (".h5", ".hdf5"):
        import tables

        try:
            with tables.open_file(str(path), "r") as f:
                data = {name: f.get_node("/", name).read() for name in
                        ("positions", "velocities", "atomic_numbers", "masses", "cell", "pbc")}
                settings = json.loads(f.root._v_attrs[SETTINGS_KEY])
        except (tables.NoSuchNodeError, KeyError, OSError, tables.HDF5ExtError) as exc:
            raise InputFileError(f"trajectory {path} is not an mlmd reference trajectory ({type(exc).__name__}: "
                                 f"{exc}); write one with `mlmd generate SYSTEM --trajectory`") from exc
        return Trajectory(positions=data["positions"], velocities=data["velocities"],
                          atomic_numbers=data["atomic_numbers"].astype(np.int64), masses=data["masses"],
                          cell=data["cell"], pbc=data["pbc"].astype(bool), timestep_fs=float(settings["timestep_fs"]),
                          stride=int(settings["stride"]), settings=settings, source=str(path))
    from ase import units

    from .io import read_frames

    frames = read_frames(path, index=":", what="trajectory")
    info = frames[0].info.get(SETTINGS_KEY)
    if info is None:
        raise InputFileError(f"trajectory {path} lacks the {SETTINGS_KEY} settings (time step, stride); "
                             "write it with `mlmd generate SYSTEM --trajectory`")
    settings = json.loads(info) if isinstance(info, str) else dict(info)
    return Trajectory(positions=np.stack([a.positions for a in frames]),
                      velocities=np.stack([a.get_velocities() * units.fs for a in frames]),
                      atomic_numbers=frames[0].numbers.astype(np.int64), masses=frames[0].get_masses(),
                      cell=np.asarray(frames[0].cell.array), pbc=np.asarray(frames[0].pbc, dtype=bool),
                      timestep_fs=float(settings["timestep_fs"]), stride=int(settings["stride"]), settings=settings,
                      source=str(path))


def trajectory_files(paths) -> List[Path]:
    """Expand a path, folder (its ``*.h5`` and ``*.xyz``), glob pattern or list of them into sorted files."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: List[Path] = []
    for entry in paths:
        entry = Path(entry)
        if entry.is_dir():
            matches = sorted(p for p in entry.iterdir() if p.suffix.lower() in (".h5", ".hdf5", ".xyz"))
        elif any(c in str(entry) for c in "*?["):
            matches = sorted(entry.parent.glob(entry.name))
        else:
            matches = [entry] if entry.is_file() else []
        if not matches:
            raise InputFileError(f"no trajectory files at {entry}; write them with `mlmd generate SYSTEM --trajectory`")
        found.extend(matches)
    return found


# --------------------------------------------------------------------------- training pairs


@dataclass
class Split:
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


class TrajectoryDataset:
    """(state at t, states at t + k tau for k = 1..rollout_steps) from several reference runs.

    ``interval_steps`` counts MD steps of the reference (a multiple of each file's
    ``stride``); start frames are every ``pair_stride``-th recorded frame. Pair ``p`` is
    ``pairs[p] = (run, frame)``. Batches hold, in the model contract plus velocities::

        positions [N,3] Å, velocities [N,3] Å/fs, atomic_numbers [N], cell [B,3,3], pbc [B,3], batch [N],
        target_positions [K,N,3] Å (unwrapped), target_velocities [K,N,3] Å/fs, n_atoms [B]

    A reversed sample (time-reversal augmentation) starts from ``(x(t+K tau), -v(t+K tau))``
    and its targets are the earlier frames with negated velocities: Newton's equations
    are invariant under ``t -> -t, v -> -v``, so it is an equally valid trajectory.
    """

    def __init__(self, runs: Sequence[Trajectory], interval_steps: int, rollout_steps: int = 1, pair_stride: int = 1,
                 content_hash: Optional[str] = None):
        if len(runs) == 0:
            raise InputFileError("no trajectories given; write them with `mlmd generate SYSTEM --trajectory`")
        timestep = runs[0].timestep_fs
        for run in runs:
            if not math.isclose(run.timestep_fs, timestep, rel_tol=1e-12):
                raise InputFileError(f"{run.source} has time step {run.timestep_fs} fs but {runs[0].source} has "
                                     f"{timestep} fs; train one forecaster on runs of one time step")
            if interval_steps % run.stride:
                raise InputFileError(f"data.interval_steps = {interval_steps} is not a multiple of the stride "
                                     f"{run.stride} of {run.source}; choose a multiple or record more often")
        self.runs = list(runs)
        self.timestep_fs = float(timestep)
        self.interval_steps = int(interval_steps)
        self.interval_fs = self.timestep_fs * self.interval_steps
        self.rollout_steps = int(rollout_steps)
        pairs = []
        for r, run in enumerate(self.runs):
            span = self.rollout_steps * (self.interval_steps // run.stride)
            starts = np.arange(0, len(run) - span, pair_stride)
            pairs.append(np.stack([np.full(len(starts), r), starts], axis=1))
        self.pairs = np.concatenate(pairs).astype(np.int64)
        if len(self.pairs) == 0:
            raise InputFileError(f"the runs are too short for one pair of frames {self.rollout_steps} x "
                                 f"{self.interval_steps} steps apart; record longer runs")
        self.species: List[int] = sorted({int(z) for run in self.runs for z in run.atomic_numbers})
        self.hash = content_hash or hashlib.sha256(b"".join(
            np.ascontiguousarray(a).tobytes() for run in self.runs for a in (run.positions, run.velocities))).hexdigest()

    @classmethod
    def from_files(cls, paths, interval_steps: int, rollout_steps: int = 1, pair_stride: int = 1):
        files = trajectory_files(paths)
        digest = hashlib.sha256()
        for path in files:
            digest.update(Path(path).read_bytes())
        return cls([read_trajectory(path) for path in files], interval_steps, rollout_steps, pair_stride,
                   content_hash=digest.hexdigest())

    def __len__(self) -> int:
        return len(self.pairs)

    def split_by_run(self, validation_runs: int, test_runs: int) -> Split:
        """The last ``test_runs`` runs are the test split, the ``validation_runs`` before them validation."""
        n = len(self.runs)
        if validation_runs + test_runs >= n:
            raise MLMDError(f"data.validation_runs + data.test_runs = {validation_runs + test_runs} leaves none of "
                            f"the {n} runs to train on; generate more runs (--runs) or lower them")
        run = self.pairs[:, 0]
        first_validation, first_test = n - test_runs - validation_runs, n - test_runs
        return Split(train=np.flatnonzero(run < first_validation),
                     validation=np.flatnonzero((run >= first_validation) & (run < first_test)),
                     test=np.flatnonzero(run >= first_test))

    def _frames(self, index: int, reverse: bool) -> Tuple[Trajectory, List[int], float]:
        r, start = (int(v) for v in self.pairs[index])
        run = self.runs[r]
        step = self.interval_steps // run.stride
        frames = [start + k * step for k in range(self.rollout_steps + 1)]
        return run, frames[::-1] if reverse else frames, -1.0 if reverse else 1.0

    def collate(self, indices: Sequence[int], dtype=None, reverse: Optional[Sequence[bool]] = None) -> Dict[str, Any]:
        import torch

        dtype = dtype or torch.get_default_dtype()
        reverse = [False] * len(indices) if reverse is None else list(reverse)
        parts = [self._frames(int(i), bool(flip)) for i, flip in zip(indices, reverse)]
        positions = [run.positions[frames] for run, frames, _ in parts]  # [K+1,n,3] each
        velocities = [sign * run.velocities[frames] for run, frames, sign in parts]
        sizes = [len(run.atomic_numbers) for run, _, _ in parts]
        as_tensor = lambda arrays, axis: torch.tensor(np.concatenate(arrays, axis=axis), dtype=dtype)
        return {
            "positions": as_tensor([x[0] for x in positions], 0),
            "velocities": as_tensor([v[0] for v in velocities], 0),
            "target_positions": as_tensor([x[1:] for x in positions], 1),
            "target_velocities": as_tensor([v[1:] for v in velocities], 1),
            "atomic_numbers": torch.tensor(np.concatenate([run.atomic_numbers for run, _, _ in parts]),
                                           dtype=torch.int64),
            "cell": torch.tensor(np.stack([run.cell for run, _, _ in parts]), dtype=dtype),
            "pbc": torch.tensor(np.stack([run.pbc for run, _, _ in parts]), dtype=torch.bool),
            "batch": torch.repeat_interleave(torch.arange(len(parts)), torch.tensor(sizes)),
            "n_atoms": torch.tensor(sizes, dtype=torch.int64),
        }

    def batches(self, indices: Sequence[int], batch_size: int, dtype=None,
                reverse: Optional[Sequence[bool]] = None) -> Iterator[Dict[str, Any]]:
        indices = list(indices)
        reverse = [False] * len(indices) if reverse is None else list(reverse)
        for start in range(0, len(indices), batch_size):
            yield self.collate(indices[start:start + batch_size], dtype, reverse[start:start + batch_size])

    def statistics(self, indices: Sequence[int], cutoff: float, max_frames: int = 200) -> Dict[str, Any]:
        """What the model takes from the training pairs: species and their masses (amu), the mean
        neighbour count within ``cutoff`` (on up to ``max_frames`` start frames), the RMS of the
        one-interval displacement ``d`` (Å) and velocity (Å/fs), and the RMS of the residuals of
        least-squares linear prior ``d - a_z v tau``, ``v' - b_z v`` and its per-species coefficients
        (see :mod:`potentials.forecaster`)."""
        import torch

        from potentials.neighbors import neighbor_list

        indices = np.asarray(indices)
        masses: Dict[int, float] = {}
        for run in self.runs:
            for z, m in zip(run.atomic_numbers, run.masses):
                masses.setdefault(int(z), float(m))
        column = {z: k for k, z in enumerate(self.species)}
        # Per species: sum d.v tau, |v tau|^2, v'.v, |v|^2, |d|^2, |v'|^2, number of atoms.
        moments = np.zeros((len(self.species), 7))
        targets = []
        for index in indices:
            r, start = self.pairs[index]
            run = self.runs[r]
            end = start + self.interval_steps // run.stride
            d = run.positions[end] - run.positions[start]
            v0, v1 = run.velocities[start], run.velocities[end]
            vt = v0 * self.interval_fs
            rows = np.array([column[int(z)] for z in run.atomic_numbers])
            per_atom = np.stack([(d * vt).sum(1), (vt * vt).sum(1), (v1 * v0).sum(1), (v0 * v0).sum(1),
                                 (d * d).sum(1), (v1 * v1).sum(1), np.ones(len(rows))], axis=1)
            np.add.at(moments, rows, per_atom)
        a = moments[:, 0] / np.maximum(moments[:, 1], 1e-300)
        b = moments[:, 2] / np.maximum(moments[:, 3], 1e-300)
        components = 3 * moments[:, 6].sum()
        # Residual sums of squares of the least-squares prior: |d|^2 - a d.v tau, |v'|^2 - b v'.v.
        d_residual = (moments[:, 4] - a * moments[:, 0]).sum()
        v_residual = (moments[:, 5] - b * moments[:, 2]).sum()
        sums = [components, moments[:, 4].sum(), moments[:, 3].sum(), max(d_residual, 0.0), max(v_residual, 0.0)]
        n_edges = n_atoms = 0
        for index in indices[np.linspace(0, len(indices) - 1, min(max_frames, len(indices))).astype(int)]:
            r, start = self.pairs[index]
            run = self.runs[r]
            edge_index, _ = neighbor_list(torch.tensor(run.positions[start]), torch.tensor(run.cell).unsqueeze(0),
                                          torch.tensor(run.pbc).unsqueeze(0),
                                          torch.zeros(len(run.atomic_numbers), dtype=torch.int64), cutoff)
            n_edges += edge_index.shape[1]
            n_atoms += len(run.atomic_numbers)
        rms = lambda k: float(np.sqrt(sums[k] / sums[0]))
        return {
            "species": list(self.species), "masses": [masses[z] for z in self.species],
            "avg_num_neighbors": max(n_edges / max(n_atoms, 1), 1.0),
            "timestep_fs": self.timestep_fs, "interval_steps": self.interval_steps,
            "displacement_rms": rms(1), "velocity_rms": rms(2), "displacement_scale": rms(3),
            "velocity_scale": rms(4), "prior_displacement": a.tolist(), "prior_velocity": b.tolist(),
            "n_pairs": int(len(indices)),
        }

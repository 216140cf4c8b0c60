"""Reference MD trajectories and the forecaster's training pairs.

Reference runs are made by :mod:`mlmd.generate.trajectories` (``mlmd generate SYSTEM
--trajectory``); this module defines their file format, reads them, and pairs their frames.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .errors import InputFileError, MLMDError
from .io import PathLike

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

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
frames. :class:`TrajectoryObjective` is the ``mlmd train`` objective of the
``forecaster`` family (see :mod:`mlmd.train`).
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


def _paths_check(value):
    if isinstance(value, str) and value:
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return None
    return f"must be a trajectory file, folder or glob pattern, or a list of them, got {value!r}"


# Constructor arguments of the forecaster that come from the data (see TrajectoryDataset.statistics).
FORECASTER_DERIVED = ("species", "masses", "avg_num_neighbors", "timestep_fs", "interval_steps", "displacement_rms",
                      "velocity_rms", "displacement_scale", "velocity_scale", "prior_displacement", "prior_velocity")

_METRIC_COLUMNS = ["epoch", "lr", "train_loss", "val_loss", "val_displacement_rmse_A", "val_velocity_rmse_A_per_fs",
                   "val_displacement_relative", "val_velocity_relative", "val_displacement_vs_ballistic",
                   "val_velocity_vs_ballistic", "time_s"]
# Order of the error sums of TrajectoryObjective.error_sums.
_SUMS = ("pairs", "loss", "components", "d_se", "v_se", "d_sq", "v_sq", "d_res_sq", "v_res_sq")


def _register_objective():
    from .train import SCHEMA, _number, register_objective

    data_schema = {
        "path": (SCHEMA["data"]["path"][0], _paths_check, '"trajectories/" or ["run-000.h5", "run-001.h5"]'),
        "interval_steps": (20, _number(1, integer=True), "20 (reference MD steps per forecaster call)"),
        "pair_stride": (1, _number(1, integer=True), "10 (every 10th recorded frame starts a pair)"),
        "validation_runs": (1, _number(0, integer=True), "1"),
        "test_runs": (0, _number(0, integer=True), "0"),
        "batch_size": SCHEMA["data"]["batch_size"],
        "validation_batch_size": SCHEMA["data"]["validation_batch_size"],
    }
    training_schema = {k: v for k, v in SCHEMA["training"].items()
                       if k not in ("energy_weight", "force_weight", "stress_weight")}
    training_schema.update({
        "displacement_weight": (1.0, _number(0), "1.0"),
        "velocity_weight": (1.0, _number(0), "1.0"),
        "rollout_steps": (1, _number(1, integer=True), "1 (k > 1 unrolls k calls and backpropagates through them)"),
        "rollout_weight": (1.0, _number(0), "1.0 (weight of steps 2..k against step 1)"),
        "time_reversal": (False, lambda v: None if isinstance(v, bool) else f"must be true or false, got {v!r}",
                          "true"),
    })

    @register_objective("trajectory")
    class TrajectoryObjective:
        """Forecaster loss on pairs of reference frames ``interval`` apart (see the module docstring).

        With ``s_d``, ``s_v`` the model's residual scales (Å, Å/fs), predicted states
        ``(x^k, v^k)`` after ``k`` calls from the reference state at ``t`` and the reference
        ``(X^k, V^k)`` at ``t + k tau``:

            L = sum_k w_k [ w_d <|x^k - X^k|^2> / s_d^2 + w_v <|v^k - V^k|^2> / s_v^2 ] / sum_k w_k

        ``w_1 = 1``, ``w_k = rollout_weight`` for ``k = 2..rollout_steps`` (one-step MSE on
        normalised targets when ``rollout_steps = 1``); ``<.>`` averages over components.
        With ``time_reversal`` each training sample is reversed with probability 1/2
        (seeded by ``(training.seed, epoch)``, so a resumed run draws the same).
        Metrics are one-step: RMSE of ``d`` (Å) and ``v'`` (Å/fs), relative to the RMS of
        the targets on the same pairs, and relative to the RMS of the free-flight residuals
        (``< 1`` beats ``x + v tau``, ``v' = v``).
        """

        name = "trajectory"
        metric_columns = _METRIC_COLUMNS
        curve = [("val_displacement_relative", "displacement RMSE / RMS"),
                 ("val_velocity_relative", "velocity RMSE / RMS")]
        resume_keys = (("data", "interval_steps"), ("data", "pair_stride"), ("data", "validation_runs"),
                       ("data", "test_runs"), ("training", "rollout_steps"))

        def __init__(self, config: Dict[str, Any], log=print):
            self.config = config
            self.log = log
            training = config["training"]
            self.weights = {"displacement": training["displacement_weight"], "velocity": training["velocity_weight"],
                            "rollout": training["rollout_weight"]}
            self.scales = (1.0, 1.0)

        @staticmethod
        def schema():
            return {"data": data_schema, "training": training_schema, "output": SCHEMA["output"]}

        @staticmethod
        def finish_config(result, base: Path, source: str) -> None:
            data = result["data"]
            paths = data["path"] if isinstance(data["path"], list) else [data["path"]]
            resolved = [str((base / p).resolve()) if not Path(p).is_absolute() else p for p in paths]
            data["path"] = resolved if isinstance(data["path"], list) else resolved[0]
            training = result["training"]
            if training["displacement_weight"] == training["velocity_weight"] == 0:
                raise MLMDError(f"{source}: training.displacement_weight and velocity_weight are both 0; "
                                "give at least one a positive weight")

        @staticmethod
        def check_data(config) -> None:
            trajectory_files(config["data"]["path"])

        def load(self) -> None:
            data, training = self.config["data"], self.config["training"]
            self.dataset = TrajectoryDataset.from_files(data["path"], data["interval_steps"],
                                                        training["rollout_steps"], data["pair_stride"])
            self.hash = self.dataset.hash
            self.split = self.dataset.split_by_run(data["validation_runs"], data["test_runs"])
            self.log(f"{len(self.dataset.runs)} runs, interval {self.dataset.interval_fs:g} fs "
                     f"({data['interval_steps']} steps of {self.dataset.timestep_fs:g} fs), "
                     f"{training['rollout_steps']} step(s) per sample")

        def build_model(self, model_section, indices):
            from .train import model_from_statistics

            ballistic = model_section.get("ballistic_prior", True)
            for key in ("timestep_fs", "interval_steps"):
                if key in model_section:
                    raise MLMDError(f"model.{key} comes from the trajectories (data.interval_steps and the files' "
                                    "time step); remove it from [model]")

            def statistics(cutoff):
                stats = self.dataset.statistics(indices, cutoff)
                if not ballistic:  # the network predicts the targets themselves
                    stats["displacement_scale"], stats["velocity_scale"] = (stats["displacement_rms"],
                                                                            stats["velocity_rms"])
                self.log(f"training pairs: displacement RMS {stats['displacement_rms']:.4g} Å, velocity RMS "
                         f"{stats['velocity_rms']:.4g} Å/fs; residuals of the prior {stats['displacement_scale']:.4g}"
                         f" Å, {stats['velocity_scale']:.4g} Å/fs (prior a {[round(x, 3) for x in stats['prior_displacement']]}"
                         f", b {[round(x, 3) for x in stats['prior_velocity']]} for species {stats['species']})")
                return stats

            return model_from_statistics(model_section, statistics, FORECASTER_DERIVED)

        def attach(self, model) -> None:
            if not hasattr(model, "interval_fs"):
                raise MLMDError(f"the trajectory objective needs a forecaster model (with interval_fs), not "
                                f"{type(model).__name__}")
            if not math.isclose(model.interval_fs, self.dataset.interval_fs, rel_tol=1e-9):
                raise MLMDError(f"the model advances {model.interval_fs} fs per call but the data pairs are "
                                f"{self.dataset.interval_fs} fs apart; keep data.interval_steps")
            self.scales = (float(model.displacement_scale), float(model.velocity_scale))

        def batches(self, indices, batch_size: int, dtype, epoch: Optional[int] = None):
            reverse = None
            if epoch is not None and self.config["training"]["time_reversal"]:
                rng = np.random.default_rng([self.config["training"]["seed"], epoch, 1])
                reverse = (rng.random(len(indices)) < 0.5).tolist()
            return self.dataset.batches(indices, batch_size, dtype, reverse)

        def _unroll(self, module, batch, steps: int):
            """Predicted (positions, velocities) after each of ``steps`` calls."""
            x, v = batch["positions"], batch["velocities"]
            states = []
            for _ in range(steps):
                out = module(x, batch["atomic_numbers"], batch["cell"], batch["pbc"], batch["batch"], v)
                x, v = x + out["displacement"], out["velocities"]
                states.append((x, v))
            return states

        def _step_loss(self, x, v, batch, k: int):
            s_d, s_v = self.scales
            return (self.weights["displacement"] * (((x - batch["target_positions"][k]) / s_d) ** 2).mean()
                    + self.weights["velocity"] * (((v - batch["target_velocities"][k]) / s_v) ** 2).mean())

        def loss(self, module, batch):
            return self._loss(self._unroll(module, batch, batch["target_positions"].shape[0]), batch)

        def _loss(self, states, batch):
            total, norm = 0.0, 0.0
            for k, (x, v) in enumerate(states):
                weight = 1.0 if k == 0 else self.weights["rollout"]
                total = total + weight * self._step_loss(x, v, batch, k)
                norm += weight
            return total / norm, len(batch["n_atoms"])

        def error_sums(self, module, indices, batch_size: int, dtype, device):
            import torch

            from .train import _to_device

            sums = torch.zeros(len(_SUMS), dtype=torch.float64, device=device)
            with torch.no_grad():
                for batch in self.dataset.batches(indices, batch_size, dtype):
                    batch = _to_device(batch, device)
                    states = self._unroll(module, batch, batch["target_positions"].shape[0])
                    loss, pairs = self._loss(states, batch)
                    x, v = states[0]
                    x0, v0 = batch["positions"], batch["velocities"]
                    d_true = batch["target_positions"][0] - x0
                    v_true = batch["target_velocities"][0]
                    values = [pairs, float(loss) * pairs, d_true.numel(),
                              ((x - batch["target_positions"][0]) ** 2).sum(), ((v - v_true) ** 2).sum(),
                              (d_true ** 2).sum(), (v_true ** 2).sum(),
                              ((d_true - v0 * self.dataset.interval_fs) ** 2).sum(), ((v_true - v0) ** 2).sum()]
                    sums += torch.stack([torch.as_tensor(float(value), dtype=torch.float64, device=device)
                                         for value in values])
            return sums

        def metrics(self, sums) -> Dict[str, float]:
            s = dict(zip(_SUMS, [float(v) for v in sums]))
            if s["pairs"] == 0:
                return {}
            d_rmse, v_rmse = math.sqrt(s["d_se"] / s["components"]), math.sqrt(s["v_se"] / s["components"])
            ratio = lambda a, b: math.sqrt(a / b) if b > 0 else float("nan")
            return {
                "loss": s["loss"] / s["pairs"],
                "displacement_rmse_A": d_rmse,
                "velocity_rmse_A_per_fs": v_rmse,
                "displacement_relative": ratio(s["d_se"], s["d_sq"]),
                "velocity_relative": ratio(s["v_se"], s["v_sq"]),
                "displacement_vs_ballistic": ratio(s["d_se"], s["d_res_sq"]),
                "velocity_vs_ballistic": ratio(s["v_se"], s["v_res_sq"]),
            }

        @staticmethod
        def describe(metrics) -> str:
            return (f"d {metrics['displacement_rmse_A']:.3g} Å ({metrics['displacement_relative']:.3g} of RMS, "
                    f"{metrics['displacement_vs_ballistic']:.3g} of free flight)  v' "
                    f"{metrics['velocity_rmse_A_per_fs']:.3g} Å/fs ({metrics['velocity_relative']:.3g} of RMS, "
                    f"{metrics['velocity_vs_ballistic']:.3g} of free flight)")

    return TrajectoryObjective


TrajectoryObjective = _register_objective()

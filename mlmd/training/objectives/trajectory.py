"""The ``trajectory`` objective: a forecaster trained on pairs of reference MD frames.

With ``s_d``, ``s_v`` the model's residual scales (Å, Å/fs), predicted states
``(x^k, v^k)`` after ``k`` calls from the reference state at ``t`` and the reference
``(X^k, V^k)`` at ``t + k tau``::

    L = sum_k w_k [ w_d <|x^k - X^k|^2> / s_d^2 + w_v <|v^k - V^k|^2> / s_v^2 ] / sum_k w_k

``w_1 = 1``, ``w_k = rollout_weight`` for ``k = 2..rollout_steps`` (one-step MSE on
normalised targets when ``rollout_steps = 1``); ``<.>`` averages over components.

A stochastic forecaster (``model.stochastic = true``, see :mod:`potentials.forecaster`) is
trained on the Gaussian negative log-likelihood of its one-call residuals instead (``k = 1``),
with its per-atom spreads ``sigma_d``, ``sigma_v`` and correlation ``rho``; with
``a = r_d / sigma_d`` and ``b = r_v / sigma_v`` per component (``r`` the residuals of the mean)::

    NLL = < log(sigma_d / s_d) + log(sigma_v / s_v) + log(1 - rho^2) / 2
            + (a^2 - 2 rho a b + b^2) / (2 (1 - rho^2)) >

(constants dropped; ``displacement_weight`` and ``velocity_weight`` do not apply). After
training, :meth:`TrajectoryObjective.calibrate` rescales the spreads of the best weights so that the
variance sampling adds equals the residual variance on the validation pairs (``model.spread_calibration``). The unrolled
calls ``k > 1`` keep the squared error of the mean path: a one-call spread does not describe
the error accumulated over k calls, and fitting it to that error inflates the spreads.
With ``time_reversal`` each training sample is reversed with probability 1/2
(seeded by ``(training.seed, epoch)``, so a resumed run draws the same).
Metrics are one-step: RMSE of ``d`` (Å) and ``v'`` (Å/fs), relative to the RMS of
the targets on the same pairs, and relative to the RMS of the free-flight residuals
(``< 1`` beats ``x + v tau``, ``v' = v``).

The data are :class:`mlmd.trajectories.TrajectoryDataset` pairs; the model is a
forecaster (``interval_fs``, ``displacement_scale``, ``velocity_scale``; see
:mod:`potentials.forecaster`).
"""

import math
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from ...errors import MLMDError
from ...trajectories import TrajectoryDataset, trajectory_files
from ..config import BATCH_SCHEMA, OUTPUT_SCHEMA, REQUIRED, TRAINING_SCHEMA, boolean, number
from ..models import model_from_statistics
from . import Objective, register_objective, to_device


def paths_check(value) -> Optional[str]:
    """Check of ``data.path``: a file, folder or glob pattern, or a non-empty list of them."""
    if isinstance(value, str) and value:
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return None
    return f"must be a trajectory file, folder or glob pattern, or a list of them, got {value!r}"


SCHEMA: Dict[str, Dict[str, tuple]] = {
    "data": {
        "path": (REQUIRED, paths_check, '"trajectories/" or ["run-000.h5", "run-001.h5"]'),
        "interval_steps": (20, number(1, integer=True), "20 (reference MD steps per forecaster call)"),
        "pair_stride": (1, number(1, integer=True), "10 (every 10th recorded frame starts a pair)"),
        "validation_runs": (1, number(0, integer=True), "1"),
        "test_runs": (0, number(0, integer=True), "0"),
        **BATCH_SCHEMA,
    },
    "training": {
        **TRAINING_SCHEMA,
        "displacement_weight": (1.0, number(0), "1.0"),
        "velocity_weight": (1.0, number(0), "1.0"),
        "rollout_steps": (1, number(1, integer=True), "1 (k > 1 unrolls k calls and backpropagates through them)"),
        "rollout_weight": (1.0, number(0), "1.0 (weight of steps 2..k against step 1)"),
        "time_reversal": (False, boolean, "true"),
    },
    "output": OUTPUT_SCHEMA,
}

# Constructor arguments of the forecaster that come from the data (see TrajectoryDataset.statistics).
FORECASTER_DERIVED = ("species", "masses", "avg_num_neighbors", "timestep_fs", "interval_steps", "displacement_rms",
                      "velocity_rms", "displacement_scale", "velocity_scale", "prior_displacement", "prior_velocity")

METRIC_COLUMNS = ["epoch", "lr", "train_loss", "val_loss", "val_displacement_rmse_A", "val_velocity_rmse_A_per_fs",
                  "val_displacement_relative", "val_velocity_relative", "val_displacement_vs_ballistic",
                  "val_velocity_vs_ballistic", "time_s"]

# Order of the error sums of TrajectoryObjective.error_sums.
SUMS = ("pairs", "loss", "components", "d_se", "v_se", "d_sq", "v_sq", "d_res_sq", "v_res_sq")


@register_objective("trajectory")
class TrajectoryObjective(Objective):
    """Forecaster loss on pairs of reference frames ``interval`` apart (see the module docstring)."""

    metric_columns = METRIC_COLUMNS
    curve = [("val_displacement_relative", "displacement RMSE / RMS"),
             ("val_velocity_relative", "velocity RMSE / RMS")]
    resume_keys = (("data", "interval_steps"), ("data", "pair_stride"), ("data", "validation_runs"),
                   ("data", "test_runs"), ("training", "rollout_steps"))
    weight_keys = {"displacement": "displacement_weight", "velocity": "velocity_weight",
                   "rollout": "rollout_weight"}
    scales = (1.0, 1.0)  # the model's residual scales (Å, Å/fs), taken by attach

    @staticmethod
    def schema() -> Dict[str, Dict[str, tuple]]:
        return SCHEMA

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
        ballistic = model_section.get("ballistic_prior", True)
        for key in ("timestep_fs", "interval_steps"):
            if key in model_section:
                raise MLMDError(f"model.{key} comes from the trajectories (data.interval_steps and the files' "
                                "time step); remove it from [model]")

        def statistics(cutoff):
            stats = self.dataset.statistics(indices, cutoff)
            if not ballistic:  # the network predicts the targets themselves
                stats["displacement_scale"], stats["velocity_scale"] = stats["displacement_rms"], stats["velocity_rms"]
            prior_a = [round(x, 3) for x in stats["prior_displacement"]]
            prior_b = [round(x, 3) for x in stats["prior_velocity"]]
            self.log(f"training pairs: displacement RMS {stats['displacement_rms']:.4g} Å, velocity RMS "
                     f"{stats['velocity_rms']:.4g} Å/fs; residuals of the prior {stats['displacement_scale']:.4g}"
                     f" Å, {stats['velocity_scale']:.4g} Å/fs (prior a {prior_a}, b {prior_b} for species "
                     f"{stats['species']})")
            return stats

        return model_from_statistics(model_section, statistics, FORECASTER_DERIVED)

    def attach(self, model) -> None:
        """Takes the model's residual scales; its interval must be the data's."""
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

    def unroll(self, module, batch, steps: int):
        """Predicted (positions, velocities, outputs) after each of ``steps`` calls (the mean path)."""
        x, v = batch["positions"], batch["velocities"]
        states = []
        for _ in range(steps):
            out = module(x, batch["atomic_numbers"], batch["cell"], batch["pbc"], batch["batch"], v)
            x, v = x + out["displacement"], out["velocities"]
            states.append((x, v, out))
        return states

    def step_loss(self, x, v, out, batch, k: int):
        """Normalised squared error (or, for a stochastic forecaster, the NLL) of the state after call ``k + 1``."""
        s_d, s_v = self.scales
        r_d, r_v = x - batch["target_positions"][k], v - batch["target_velocities"][k]
        if "displacement_spread" not in out or k > 0:
            return (self.weights["displacement"] * ((r_d / s_d) ** 2).mean()
                    + self.weights["velocity"] * ((r_v / s_v) ** 2).mean())
        from torch import log

        sigma_d, sigma_v = out["displacement_spread"].unsqueeze(1), out["velocity_spread"].unsqueeze(1)
        rho = out["correlation"].unsqueeze(1)
        a, b, one_minus = r_d / sigma_d, r_v / sigma_v, 1.0 - rho * rho
        nll = (log(sigma_d / s_d) + log(sigma_v / s_v) + 0.5 * log(one_minus)
               + (a * a - 2.0 * rho * a * b + b * b) / (2.0 * one_minus))
        return nll.mean()

    def rollout_loss(self, states, batch):
        """``(L, pairs)`` of unrolled ``states`` (see the module docstring)."""
        total, norm = 0.0, 0.0
        for k, (x, v, out) in enumerate(states):
            weight = 1.0 if k == 0 else self.weights["rollout"]
            total = total + weight * self.step_loss(x, v, out, batch, k)
            norm += weight
        return total / norm, len(batch["n_atoms"])

    def loss(self, module, batch):
        return self.rollout_loss(self.unroll(module, batch, batch["target_positions"].shape[0]), batch)

    def error_sums(self, module, indices, batch_size: int, dtype, device):
        import torch

        sums = torch.zeros(len(SUMS), dtype=torch.float64, device=device)
        with torch.no_grad():
            for batch in self.dataset.batches(indices, batch_size, dtype):
                batch = to_device(batch, device)
                states = self.unroll(module, batch, batch["target_positions"].shape[0])
                loss, pairs = self.rollout_loss(states, batch)
                x, v, _ = states[0]
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

    def calibration_sums(self, module, indices, batch_size: int, dtype, device):
        """``[sum |r_d|^2, 3 sum sigma_d^2, sum m |r_v|^2, 3 sum m sigma_v^2]`` over the atoms of one-call
        residuals of the mean (a stochastic forecaster only; ``m`` the masses, amu)."""
        import torch

        if not getattr(module, "stochastic", False):
            return None
        sums = torch.zeros(4, dtype=torch.float64, device=device)
        with torch.no_grad():
            for batch in self.dataset.batches(indices, batch_size, dtype):
                batch = to_device(batch, device)
                x, v, out = self.unroll(module, batch, 1)[0]
                mass = module.masses[module.species_index(batch["atomic_numbers"])].double()
                r_d = (x - batch["target_positions"][0]).double()
                r_v = (v - batch["target_velocities"][0]).double()
                sigma_d, sigma_v = out["displacement_spread"].double(), out["velocity_spread"].double()
                sums += torch.stack([(r_d ** 2).sum(), 3.0 * (sigma_d ** 2).sum(),
                                     (mass.unsqueeze(1) * r_v ** 2).sum(), 3.0 * (mass * sigma_v ** 2).sum()])
        return sums

    def calibrate(self, module, sums) -> Dict[str, Any]:
        """Spread factors (relative to the module's own) that make the variance the samples add equal, on
        average, to the variance the mean lacks: ``c_d^2 = sum |r_d|^2 / 3 sum sigma_d^2`` and, mass-weighted
        so that it holds for the kinetic energy, ``c_v^2 = sum m |r_v|^2 / 3 sum m sigma_v^2``. Not
        ``<r^2 / sigma^2> = 1``: with spreads that scatter per atom that adds ``E[sigma^2] E[sigma^-2] > 1``
        times the missing variance (liquid Al, calibrated so: 1900 K for a 1000 K target)."""
        r_d, s_d, r_v, s_v = (float(value) for value in sums)
        if min(s_d, s_v) <= 0:
            return {}
        old = list(module.spread_calibration)
        ratio = [math.sqrt(r_d / s_d), math.sqrt(r_v / s_v)]
        module.spread_calibration = [old[0] * ratio[0], old[1] * ratio[1]]
        self.log(f"spread calibration on the validation pairs: residual / spread RMS {ratio[0]:.3g} (d), "
                 f"{ratio[1]:.3g} (v', mass-weighted); spreads now scaled by {module.spread_calibration[0]:.3g}, "
                 f"{module.spread_calibration[1]:.3g}")
        return {"spread_calibration": list(module.spread_calibration)}

    def metrics(self, sums) -> Dict[str, float]:
        s = dict(zip(SUMS, [float(v) for v in sums]))
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

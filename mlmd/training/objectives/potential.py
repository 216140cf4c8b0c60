"""The ``potential`` objective: energies, forces and stress of labelled frames (extended XYZ).

Loss of a batch of ``B`` frames, weights from ``[training]`` (in stage two, ``stage_two_energy_weight``,
``stage_two_force_weight`` and ``stage_two_stress_weight`` where set; see :mod:`mlmd.training.schedules`)::

    L = w_E mean_frames((E_pred - E) / n_atoms)^2 + w_F mean_components(F_pred - F)^2
        + w_S mean_components(sigma_pred - sigma)^2     (frames with a stress label only)

Metrics (validation and test): MAE and RMSE of the energy per atom (meV/atom), of
the force components (meV/Å) and the MAE of the stress components (meV/Å³).
"""

import math
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

from ...errors import InputFileError, MLMDError
from ..config import BATCH_SCHEMA, OUTPUT_SCHEMA, REQUIRED, TRAINING_SCHEMA, number, string
from ..models import model_from_dataset
from . import Objective, register_objective, to_device

METRIC_COLUMNS = [
    "epoch", "lr", "train_loss", "val_loss",
    "val_energy_mae_meV_per_atom", "val_energy_rmse_meV_per_atom",
    "val_force_mae_meV_per_A", "val_force_rmse_meV_per_A",
    "val_stress_mae_meV_per_A3", "time_s", "stage", "energy_weight", "force_weight", "stress_weight",
]

SCHEMA: Dict[str, Dict[str, tuple]] = {
    "data": {
        "path": (REQUIRED, string(), '"data.xyz"'),
        "validation_fraction": (0.1, number(0, 1, strict_max=True), "0.1"),
        "test_fraction": (0.1, number(0, 1, strict_max=True), "0.1"),
        "seed": (0, number(0, integer=True), "0"),
        **BATCH_SCHEMA,
    },
    "training": {
        **TRAINING_SCHEMA,
        "energy_weight": (1.0, number(0), "1.0"),
        "force_weight": (10.0, number(0), "10.0"),
        "stress_weight": (1.0, number(0), "1.0"),
        # Stage two (training.stage_two_fraction, mlmd.training.schedules): null keeps the stage-one weight.
        "stage_two_energy_weight": (100.0, number(0, optional=True), "100.0 (null: keep energy_weight)"),
        "stage_two_force_weight": (None, number(0, optional=True), "10.0 (null: keep force_weight)"),
        "stage_two_stress_weight": (None, number(0, optional=True), "1.0 (null: keep stress_weight)"),
    },
    "output": OUTPUT_SCHEMA,
}

# Order of the error sums accumulated by sum_errors.
SUMS = ("frames", "e_se", "e_ae", "f_n", "f_se", "f_ae", "s_n", "s_se", "s_ae")


def wants_stress(batch, use_stress: bool) -> bool:
    """Whether to derive stress for ``batch``: only when some frame in it has a stress label.

    The contract divides by the cell volume, so frames without a volume (molecules,
    cells with zero rows on non-periodic axes) get their non-periodic rows completed
    by an orthonormal basis first: their energy and forces do not depend on those
    rows, and their (unlabelled) stress stays finite, so no NaN reaches the gradients.
    """
    import torch

    from potentials.neighbors import complete_cell

    if not use_stress or not bool(batch["has_stress"].any()):
        return False
    singular = torch.linalg.det(batch["cell"]).abs() < 1e-9
    if bool(singular.any()):
        completed = complete_cell(batch["cell"], batch["pbc"])
        batch["cell"] = torch.where(singular.view(-1, 1, 1), completed, batch["cell"])
    return True


def run_model(module, batch, compute_stress: bool):
    """The model contract on a collated batch, forces always."""
    return module(batch["positions"], batch["atomic_numbers"], batch["cell"], batch["pbc"], batch["batch"],
                  True, compute_stress)


def batch_loss(out, batch, weights, compute_stress: bool):
    """Weighted loss of one batch: w_E MSE(E/atom) + w_F MSE(F) + w_S MSE(stress)."""
    n_atoms = batch["n_atoms"].to(out["energy"].dtype)
    loss = weights["energy"] * (((out["energy"] - batch["energy"]) / n_atoms) ** 2).mean()
    loss = loss + weights["force"] * ((out["forces"] - batch["forces"]) ** 2).mean()
    if compute_stress:
        mask = batch["has_stress"]
        loss = loss + weights["stress"] * ((out["stress"][mask] - batch["stress"][mask]) ** 2).mean()
    return loss


def sum_errors(module, dataset, indices, batch_size: int, dtype, device, use_stress: bool):
    """Sums of squared and absolute errors of ``module`` (evaluation mode) on ``indices``, in :data:`SUMS` order."""
    import torch

    sums = torch.zeros(len(SUMS), dtype=torch.float64, device=device)
    if len(indices) == 0:
        return sums
    for batch in dataset.batches(indices, batch_size, dtype=dtype):
        batch = to_device(batch, device)
        compute_stress = wants_stress(batch, use_stress)
        out = run_model(module, batch, compute_stress)
        e = ((out["energy"] - batch["energy"]) / batch["n_atoms"]).double()
        f = (out["forces"] - batch["forces"]).double()
        values = [len(e), (e ** 2).sum(), e.abs().sum(), f.numel(), (f ** 2).sum(), f.abs().sum(), 0.0, 0.0, 0.0]
        if compute_stress:
            s = (out["stress"] - batch["stress"])[batch["has_stress"]].double()
            values[6:] = [s.numel(), (s ** 2).sum(), s.abs().sum()]
        sums += torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])
    return sums


def metrics_from_sums(sums, weights) -> Dict[str, float]:
    """Loss and errors (meV/atom, meV/Å, meV/Å³) from summed errors."""
    s = dict(zip(SUMS, [float(v) for v in sums]))
    if s["frames"] == 0:
        return {}
    loss = weights["energy"] * s["e_se"] / s["frames"] + weights["force"] * s["f_se"] / s["f_n"]
    if s["s_n"] > 0:
        loss += weights["stress"] * s["s_se"] / s["s_n"]
    return {
        "loss": loss,
        "energy_mae_meV_per_atom": 1000 * s["e_ae"] / s["frames"],
        "energy_rmse_meV_per_atom": 1000 * math.sqrt(s["e_se"] / s["frames"]),
        "force_mae_meV_per_A": 1000 * s["f_ae"] / s["f_n"],
        "force_rmse_meV_per_A": 1000 * math.sqrt(s["f_se"] / s["f_n"]),
        "stress_mae_meV_per_A3": 1000 * s["s_ae"] / s["s_n"] if s["s_n"] > 0 else float("nan"),
    }


@register_objective("potential")
class PotentialObjective(Objective):
    """Energies, forces and stress of labelled frames: the objective of every potential."""

    metric_columns = METRIC_COLUMNS
    curve = [("val_energy_mae_meV_per_atom", "energy MAE (meV/atom)"), ("val_force_mae_meV_per_A", "force MAE (meV/Å)")]
    resume_keys = (("data", "validation_fraction"), ("data", "test_fraction"), ("data", "seed"))
    weight_keys = {"energy": "energy_weight", "force": "force_weight", "stress": "stress_weight"}

    @staticmethod
    def schema() -> Dict[str, Dict[str, tuple]]:
        return SCHEMA

    @staticmethod
    def finish_config(result: Dict[str, Any], base: Path, source: str) -> None:
        data = result["data"]
        if data["validation_fraction"] + data["test_fraction"] >= 1:
            raise MLMDError(f"{source}: data.validation_fraction + data.test_fraction must be below 1 "
                            f"(got {data['validation_fraction']} + {data['test_fraction']}); leave frames to train on")
        data["path"] = str((base / data["path"]).resolve())
        training = result["training"]
        if training["energy_weight"] == training["force_weight"] == training["stress_weight"] == 0:
            raise MLMDError(f"{source}: training.energy_weight, force_weight and stress_weight are all 0; "
                            "give at least one a positive weight")

    @staticmethod
    def check_data(config: Dict[str, Any]) -> None:
        data_path = Path(config["data"]["path"])
        if not data_path.is_file():
            raise InputFileError(f"data.path {data_path} does not exist; point data.path at a labelled extended XYZ "
                                 "file (make one with `mlmd generate`)")

    def load(self) -> None:
        from ...data import load_dataset

        data = self.config["data"]
        self.dataset = load_dataset(data["path"])
        self.hash = self.dataset.hash
        self.split = self.dataset.split(data["validation_fraction"], data["test_fraction"], data["seed"])
        if len(self.split.train) == 0:
            raise MLMDError(f"the training split of {data['path']} ({len(self.dataset)} frames) is empty; "
                            "lower data.validation_fraction and data.test_fraction or add frames")
        stress_weights = (self.weights["stress"], self.config["training"]["stage_two_stress_weight"] or 0.0)
        self.use_stress = max(stress_weights) > 0 and any("stress" in lab for lab in self.dataset.labels)

    def build_model(self, model_section: Mapping[str, Any], indices: Sequence[int]):
        return model_from_dataset(model_section, self.dataset, indices)

    def batches(self, indices, batch_size: int, dtype, epoch: Optional[int] = None):
        return self.dataset.batches(indices, batch_size, dtype=dtype)

    def loss(self, module, batch):
        compute_stress = wants_stress(batch, self.use_stress)
        out = run_model(module, batch, compute_stress)
        return batch_loss(out, batch, self.weights, compute_stress), len(batch["energy"])

    def error_sums(self, module, indices, batch_size: int, dtype, device):
        return sum_errors(module, self.dataset, indices, batch_size, dtype, device, self.use_stress)

    def metrics(self, sums) -> Dict[str, float]:
        return metrics_from_sums(sums, self.weights)

    @staticmethod
    def describe(metrics: Mapping[str, float]) -> str:
        return (f"E {metrics['energy_mae_meV_per_atom']:.3g} meV/atom  "
                f"F {metrics['force_mae_meV_per_A']:.3g}/{metrics['force_rmse_meV_per_A']:.3g} meV/Å (MAE/RMSE)")

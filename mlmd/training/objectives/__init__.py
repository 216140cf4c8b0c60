"""Training objectives: what a family is trained on, registered by name.

A family names its objective in its ``training_objective`` declaration (see
:class:`potentials.base.TrainableFamily`; default ``"potential"``). The objective
owns the config schema of ``[data]`` and ``[training]``, the dataset and its
split, the model's construction from the data, the batches, the loss of one
batch and the validation metrics; everything else (optimizer, EMA, schedule,
early stopping, checkpoints, exact resume, time budget, threads, DDP, export)
is the trainer's and shared.

- ``potential`` (:mod:`.potential`): energies, forces and stress of labelled frames;
- ``symmetry`` (:mod:`.symmetry`, family ``transformer``): the same frames for a family whose
  rotational symmetry is learned: plain, rotation augmentation, or TransIP's learned equivariance;
- ``trajectory`` (:mod:`.trajectory`, family ``forecaster``): pairs of reference MD
  frames ``interval_steps`` apart.

An objective subclasses :class:`Objective`, which documents the interface the
trainer uses. Objectives shipped with mlmd are imported on first use.
"""

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from ...errors import MLMDError
from ...registry import load_registered
from ..registry import register_in

# Objective name -> class.
OBJECTIVES: Dict[str, Any] = {}

# Objectives shipped with mlmd: name -> module that registers it when imported.
BUILTIN_OBJECTIVES = {"potential": "mlmd.training.objectives.potential",
                      "symmetry": "mlmd.training.objectives.symmetry",
                      "trajectory": "mlmd.training.objectives.trajectory"}


def register_objective(name: str):
    """Class decorator: make a training objective available to families that name it."""
    return register_in(OBJECTIVES, name)


def objective_class(family: Optional[str]):
    """The objective class of model family ``family`` (the potential objective for unknown families)."""
    from potentials import FAMILIES
    from potentials.base import training_hooks

    name = training_hooks(FAMILIES[family]).objective if family in FAMILIES else "potential"
    objective = load_registered(name, OBJECTIVES, BUILTIN_OBJECTIVES)
    if objective is None:
        raise MLMDError(f"model family {family!r} asks for training objective {name!r}, which is not registered; "
                        f"known: {', '.join(sorted(OBJECTIVES))}")
    return objective


def to_device(batch: Dict[str, Any], device) -> Dict[str, Any]:
    """A batch (dict of tensors) moved to ``device``."""
    return {key: value.to(device) for key, value in batch.items()}


class Objective:
    """What the trainer asks of an objective; subclasses fill in the data, the loss and the metrics.

    - ``schema()``: the config schema (``section -> key -> (default, check, example)``,
      see :mod:`mlmd.training.config`); ``finish_config(result, base, source)``: checks
      across keys and paths made absolute; ``check_data(config)``: a clear error before
      anything starts when the data is missing;
    - ``load()``: read the data, setting ``hash`` and ``split`` (train/validation/test indices);
    - ``build_model(model_section, train_indices) -> (module, model_config)``;
      ``attach(model)``: called with the (new or restored) model before training;
    - ``batches(indices, batch_size, dtype, epoch=None)``: ``epoch`` is given for training batches;
    - ``loss(module, batch) -> (loss, weight)``, ``weight`` the number of samples the loss
      averages (for the epoch mean);
    - ``error_sums(module, indices, batch_size, dtype, device)``: a float64 tensor summed over
      batches and ranks, turned into metrics (always with a ``"loss"`` key) by ``metrics(sums)``;
      ``describe(metrics)``: one line for the log;
    - ``metric_columns`` (of ``metrics.csv``), ``curve`` (``(column, label)`` pairs of the
      learning-curve plot), ``resume_keys`` (``(section, key)`` pairs a resume must keep),
      ``weight_keys`` (loss-weight name -> its ``[training]`` key; the values are in ``weights``).
    """

    name = ""
    metric_columns: Sequence[str] = ()
    curve: Sequence[Tuple[str, str]] = ()
    resume_keys: Sequence[Tuple[str, str]] = ()
    weight_keys: Mapping[str, str] = {}

    def __init__(self, config: Dict[str, Any], log=print):
        self.config = config
        self.log = log
        self.weights = {name: config["training"][key] for name, key in self.weight_keys.items()}

    @staticmethod
    def schema() -> Dict[str, Dict[str, tuple]]:
        raise NotImplementedError

    @staticmethod
    def finish_config(result: Dict[str, Any], base: Path, source: str) -> None:
        raise NotImplementedError

    @staticmethod
    def check_data(config: Dict[str, Any]) -> None:
        raise NotImplementedError

    def load(self) -> None:
        raise NotImplementedError

    def build_model(self, model_section: Mapping[str, Any], indices: Sequence[int]):
        raise NotImplementedError

    def attach(self, model) -> None:
        """Nothing to take from the model by default."""

    def batches(self, indices, batch_size: int, dtype, epoch: Optional[int] = None):
        raise NotImplementedError

    def loss(self, module, batch):
        raise NotImplementedError

    def error_sums(self, module, indices, batch_size: int, dtype, device):
        raise NotImplementedError

    def metrics(self, sums) -> Dict[str, float]:
        raise NotImplementedError

    def calibration_sums(self, module, indices, batch_size: int, dtype, device):
        """Sums (a tensor, reduced over ranks by the caller) that :meth:`calibrate` turns into model settings,
        or None when the model has nothing to calibrate after training (the default)."""
        return None

    def calibrate(self, module, sums) -> Dict[str, Any]:
        """Model settings (``model_config`` keys, also set on ``module``) fitted from ``calibration_sums``."""
        return {}

    @staticmethod
    def describe(metrics: Mapping[str, float]) -> str:
        raise NotImplementedError

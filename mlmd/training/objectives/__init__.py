"""Training objectives: what a family is trained on, registered by name.

A family names its objective in its ``training_objective`` declaration (see
:class:`potentials.base.TrainableFamily`; default ``"potential"``). The objective
owns the config schema of ``[data]`` and ``[training]``, the dataset and its
split, the model's construction from the data, the batches, the loss of one
batch and the validation metrics; everything else (optimizer, EMA, schedule,
early stopping, checkpoints, exact resume, time budget, threads, DDP, export)
is the trainer's and shared.

- ``potential`` (:mod:`.potential`): energies, forces and stress of labelled frames;
- ``trajectory`` (:mod:`.trajectory`, family ``forecaster``): pairs of reference MD
  frames ``interval_steps`` apart.

An objective class has the interface :class:`.potential.PotentialObjective`
documents. Objectives shipped with mlmd are imported on first use.
"""

from importlib import import_module
from typing import Any, Dict, Optional

from ...errors import MLMDError

# Objective name -> class.
OBJECTIVES: Dict[str, Any] = {}

# Objectives shipped with mlmd: name -> module that registers it when imported.
BUILTIN_OBJECTIVES = {"potential": "mlmd.training.objectives.potential",
                      "trajectory": "mlmd.training.objectives.trajectory"}


def register_objective(name: str):
    """Class decorator: make a training objective available to families that name it."""

    def decorate(cls):
        OBJECTIVES[name] = cls
        cls.name = name
        return cls

    return decorate


def objective_class(family: Optional[str]):
    """The objective class of model family ``family`` (the potential objective for unknown families)."""
    from potentials import FAMILIES
    from potentials.base import training_hooks

    name = training_hooks(FAMILIES[family]).objective if family in FAMILIES else "potential"
    if name not in OBJECTIVES and name in BUILTIN_OBJECTIVES:
        import_module(BUILTIN_OBJECTIVES[name])
    if name not in OBJECTIVES:
        raise MLMDError(f"model family {family!r} asks for training objective {name!r}, which is not registered; "
                        f"known: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name]


def to_device(batch: Dict[str, Any], device) -> Dict[str, Any]:
    """A batch (dict of tensors) moved to ``device``."""
    return {key: value.to(device) for key, value in batch.items()}

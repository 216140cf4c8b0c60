"""Training (``mlmd train``) and exporting a training checkpoint (``mlmd export``).

One concept per module:

- :mod:`.config`: the config file (every key), reading and validation;
- :mod:`.models`: building a family's model from the data or a stored config;
- :mod:`.objectives`: what a family trains on (``potential``, ``trajectory``; registered);
- :mod:`.strategies`: how an epoch fits the parameters (``gradient``, ``closed_form``; registered);
- :mod:`.ema`: the moving average of the weights;
- :mod:`.distributed`: DDP under ``torchrun``;
- :mod:`.checkpoint`: the checkpoint format, its builder, reading and writing, RNG state;
- :mod:`.reports`: ``metrics.csv``, ``learning_curve.png``, ``summary.json``;
- :mod:`.trainer`: the training loop, :func:`train` and :class:`TrainResult`;
- :mod:`.export`: :func:`export_checkpoint`;
- :mod:`.cli`: the ``mlmd train`` and ``mlmd export`` commands.

A family meets the trainer through :class:`potentials.base.TrainableFamily`
(``config()``/``from_config``, and the declarations ``training_objective`` and
``training_strategy``).
"""

from .checkpoint import load_checkpoint
from .config import load_config, read_config, validate_config
from .ema import EMA
from .export import export_checkpoint
from .models import build_model
from .objectives import OBJECTIVES, objective_class, register_objective
from .objectives.potential import PotentialObjective
from .strategies import STRATEGIES, register_strategy
from .trainer import TrainResult, train

__all__ = ["EMA", "OBJECTIVES", "STRATEGIES", "PotentialObjective", "TrainResult", "build_model",
           "export_checkpoint", "load_checkpoint", "load_config", "objective_class", "read_config",
           "register_objective", "register_strategy", "train", "validate_config"]

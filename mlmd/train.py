"""Training (``mlmd train``) and exporting a checkpoint (``mlmd export``): kept for one release.

The code lives in the package :mod:`mlmd.training`; this module re-exports its
public names. The config reference (every key) follows, then how models are
built, what they are trained on, how, and how training runs on several processes.
"""

from .training import (EMA, OBJECTIVES, STRATEGIES, PotentialObjective, TrainResult, build_model,
                       export_checkpoint, load_checkpoint, load_config, objective_class, read_config,
                       register_objective, register_strategy, train, validate_config)
from .training import config, distributed, models, objectives, strategies, trainer
from .training.cli import COMMAND, EXPORT_COMMAND

__all__ = ["COMMAND", "EMA", "EXPORT_COMMAND", "OBJECTIVES", "STRATEGIES", "PotentialObjective", "TrainResult",
           "build_model", "export_checkpoint", "load_checkpoint", "load_config", "objective_class", "read_config",
           "register_objective", "register_strategy", "train", "validate_config"]

# `python -m pydoc mlmd.train` shows the user's documentation of training in one place.
__doc__ = "\n\n".join([__doc__] + [f"{module.__name__}\n{'-' * len(module.__name__)}\n{module.__doc__}"
                                   for module in (config, models, objectives, strategies, trainer, distributed)])

"""Training strategies: how one epoch fits a family's parameters, registered by name.

A family declares its strategy in ``training_strategy`` (see
:class:`potentials.base.TrainableFamily`; default ``"gradient"``). A strategy
gets the :class:`mlmd.training.trainer.Trainer` (model, EMA, optimizer,
objective, split) and has two methods: ``epochs(configured)``, the number of
epochs the run takes, and ``train_epoch(trainer, epoch)``, which fits and
returns the epoch's training loss. Validation, the schedule, early stopping,
checkpoints, ``summary.json`` and export are the trainer's, the same for all.

- ``gradient``: AdamW over the shuffled, sharded training batches; gradient
  clipping by total norm; the EMA is updated after every step. When the
  time budget (``training.max_time_min``) is spent, or a snapshot mark
  (``training.snapshot_minutes``) is passed, the epoch ends after the current
  batch; it is validated and checkpointed as a whole epoch, and ``--resume``
  continues with the next one.
- ``closed_form``: for a family whose energy is linear in its parameters (the
  ``spline`` family). Epoch 1 calls the model's
  ``fit_linear(batches, energy_weight=, force_weight=)`` once on every training frame
  (float64 collated batches of ``data.batch_size``), the EMA takes the fitted weights
  as they are, and no gradient epochs follow. Its training loss is the loss of the
  fitted weights on the training frames.
"""

import math
import sys
from typing import Any, Dict

from ..errors import MLMDError
from .distributed import all_reduce
from .models import family_class
from .objectives import to_device
from .registry import register_in

# Strategy name -> class.
STRATEGIES: Dict[str, Any] = {}


def register_strategy(name: str):
    """Class decorator: make a training strategy available to families that declare it."""
    return register_in(STRATEGIES, name)


def strategy_for(family: str):
    """The strategy (an instance) that model family ``family`` declares."""
    from potentials.base import training_hooks

    name = training_hooks(family_class(family)).strategy
    if name not in STRATEGIES:
        raise MLMDError(f"model family {family!r} asks for training strategy {name!r}, which is not "
                        f"registered; known: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name]()


@register_strategy("gradient")
class GradientStrategy:
    """AdamW epochs over the training batches (see the module docstring)."""

    @staticmethod
    def epochs(configured: int) -> int:
        return configured

    @staticmethod
    def train_epoch(trainer, epoch: int) -> float:
        import torch
        from tqdm.auto import tqdm

        training = trainer.config["training"]
        batch_size = trainer.config["data"]["batch_size"]
        indices = trainer.shard(trainer.split.train, epoch)
        trainer.ddp_model.train()
        totals = torch.zeros(2, dtype=torch.float64, device=trainer.device)
        bar = tqdm(total=math.ceil(len(indices) / batch_size), desc=f"epoch {epoch}/{training['epochs']}",
                   unit="batch", leave=False, disable=None if trainer.progress is None else not trainer.progress,
                   file=sys.stderr)
        try:
            for batch in trainer.objective.batches(indices, batch_size, trainer.dtype, epoch=epoch):
                batch = to_device(batch, trainer.device)
                trainer.optimizer.zero_grad(set_to_none=True)
                loss, frames = trainer.objective.loss(trainer.ddp_model, batch)
                loss.backward()
                if training["grad_clip_norm"] is not None:
                    torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), training["grad_clip_norm"])
                trainer.optimizer.step()
                trainer.ema.update(trainer.model)
                totals += torch.stack([loss.detach().double() * frames,
                                       torch.tensor(float(frames), dtype=torch.float64, device=trainer.device)])
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.3g}")
                reason = trainer.epoch_must_end()
                if reason:
                    trainer.log(f"epoch {epoch} ends after {bar.n} of {bar.total} batches: {reason}")
                    break
        finally:
            bar.close()
        all_reduce(totals, trainer.info)
        return float(totals[0] / totals[1])


@register_strategy("closed_form")
class ClosedFormStrategy:
    """One closed-form fit by the model's ``fit_linear`` (see the module docstring)."""

    @staticmethod
    def epochs(configured: int) -> int:
        return min(configured, 1)

    @staticmethod
    def train_epoch(trainer, epoch: int) -> float:
        import torch

        objective, train = trainer.objective, trainer.split.train
        batches = objective.batches(train, trainer.config["data"]["batch_size"], torch.float64)
        stats = trainer.model.fit_linear(batches, energy_weight=objective.weights["energy"],
                                         force_weight=objective.weights["force"])
        trainer.log(f"closed-form fit of {trainer.family} on {len(train)} frames in {stats['seconds']:.2f} s")
        trainer.ema.module.load_state_dict(trainer.model.state_dict())
        return trainer.evaluate(trainer.ema.module, train)["loss"]

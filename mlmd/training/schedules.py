"""Learning-rate schedules and the stage-two switch of ``[training]``; schedules are registered by name.

Training progress, known before every optimizer step::

    p = min(1, max(e / E, t / T))

``e`` the epochs done, counted in steps (step ``j`` of the ``n`` batches of epoch ``k``: ``e = k - 1 + j/n``),
``E = training.epochs``; ``t`` the seconds trained on the budget clock (``budget_clock``: wall or CPU time; all
invocations) and ``T = t_before + 60 * max_time_min`` (time spent before this invocation plus its budget, so a
resumed run stretches the schedule over its new budget: a warm restart); without a budget ``t/T = 0``. With a
budget the clock is read after every step. The learning rate of a step::

    lr = w(e) * s(p),      w(e) = f0 + (1 - f0) min(1, e/W)        (linear warm-up over W = warmup_epochs
                                                                     from f0 = warmup_start_factor)
    lr0 = lr * (B / B_ref)^a,   a = 0, 1/2, 1 for lr_scaling "none", "sqrt", "linear"; B = batch_size * processes

and ``s`` the schedule (``min_lr`` is never scaled):

- ``plateau``: ``s = level``, starting at ``lr0``; after more than ``lr_patience`` epochs whose validation loss
  is not below ``best * (1 - 1e-4)``, ``level <- max(level * lr_factor, min_lr)`` (torch's ReduceLROnPlateau rule);
- ``cosine``: ``s(p) = min_lr + (lr0 - min_lr) (1 + cos(pi p)) / 2``;
- ``exponential``: ``s(p) = lr0 (min_lr / lr0)^p`` (needs ``min_lr > 0``);
- ``constant``: ``s = lr0``.

Stage two (``stage_two_fraction = f``, as MACE's second stage): every step with ``p >= f`` uses the loss weights
``stage_two_<weight key>`` (those left null keep their stage-one value) and, when ``stage_two_lr`` is set, the
constant ``lr = stage_two_lr`` instead of ``w s``. The switch is kept once made (a resumed run whose progress
falls back stays in stage two). The state (:meth:`Schedule.state_dict`: plain numbers) is the checkpoint's
``scheduler``; without a time budget it is a function of the epochs alone, so a resume repeats it bit for bit.
"""

import math
from typing import Any, Dict, Mapping, Optional

from .registry import register_in

# Schedule name -> class.
SCHEDULES: Dict[str, Any] = {}

# Exponents a of lr0 = lr * (B / B_ref)^a.
LR_SCALING = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}


def register_schedule(name: str):
    """Class decorator: make a :class:`Schedule` subclass available as ``training.lr_schedule = name``."""
    return register_in(SCHEDULES, name)


def scaled_lr(training: Mapping[str, Any], global_batch_size: int) -> float:
    """``lr0 = lr * (B / B_ref)^a`` (see the module docstring)."""
    exponent = LR_SCALING[training["lr_scaling"]]
    return training["lr"] * (global_batch_size / training["reference_batch_size"]) ** exponent


class Schedule:
    """The shared part of every schedule: warm-up, progress, stage two and the state; subclasses give ``value(p)``
    and may watch the validation loss in ``epoch_end``."""

    name = ""

    def __init__(self, training: Mapping[str, Any], global_batch_size: int):
        self.training = training
        self.lr0 = scaled_lr(training, global_batch_size)
        self.stage = 1
        self.stage_two_epoch = 0   # the epoch in which stage two began (0: not yet)
        self.time_before_s = 0.0   # training seconds of earlier invocations (kept with a budget or snapshot marks)
        self.progress = self.epochs_done = 0.0

    # -- the maths --

    def value(self, progress: float) -> float:
        """``s(p)``: the schedule's learning rate at progress ``p`` before warm-up."""
        raise NotImplementedError

    def warmup(self, epochs_done: float) -> float:
        """``w(e) = f0 + (1 - f0) min(1, e/W)``; 1 without warm-up."""
        span = self.training["warmup_epochs"]
        if span <= 0 or epochs_done >= span:
            return 1.0
        start = self.training["warmup_start_factor"]
        return start + (1.0 - start) * epochs_done / span

    def progress_at(self, epochs_done: float, elapsed_s: float) -> float:
        """``p = min(1, max(e/E, t/T))``."""
        fraction = epochs_done / self.training["epochs"]
        budget = self.training["max_time_min"]
        if budget is not None:
            fraction = max(fraction, (self.time_before_s + elapsed_s) / (self.time_before_s + 60.0 * budget))
        return min(1.0, fraction)

    def advance(self, epoch: int, epochs_done: float, elapsed_s: float) -> bool:
        """Set the progress of the next step (of epoch ``epoch``); True when this call began stage two."""
        self.progress = self.progress_at(epochs_done, elapsed_s)
        self.epochs_done = epochs_done
        fraction = self.training["stage_two_fraction"]
        if self.stage == 1 and fraction is not None and self.progress >= fraction:
            self.stage, self.stage_two_epoch = 2, epoch
            return True
        return False

    def lr(self) -> float:
        """The learning rate of the next step (after :meth:`advance`)."""
        if self.stage == 2 and self.training["stage_two_lr"] is not None:
            return self.training["stage_two_lr"]
        return self.warmup(self.epochs_done) * self.value(self.progress)

    def epoch_end(self, validation_loss: float) -> None:
        """Called after each epoch's validation; only loss-watching schedules use it."""

    def restart_tracking(self) -> None:
        """Forget the loss history (the loss changes meaning when stage two begins)."""

    # -- state --

    def state_dict(self, elapsed_s: float = 0.0) -> Dict[str, Any]:
        # The time trained is kept for the budget's schedule and for snapshot marks counted over invocations.
        timed = self.training["max_time_min"] is not None or bool(self.training.get("snapshot_minutes"))
        return {"name": self.name, "stage": self.stage, "stage_two_epoch": self.stage_two_epoch,
                "time_s": self.time_before_s + elapsed_s if timed else 0.0, **self.extra_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.stage = int(state.get("stage", 1))
        self.stage_two_epoch = int(state.get("stage_two_epoch", 0))
        self.time_before_s = float(state.get("time_s", 0.0))
        self.load_extra_state(state)

    def extra_state(self) -> Dict[str, Any]:
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Nothing beyond the shared state by default."""


@register_schedule("constant")
class ConstantSchedule(Schedule):
    """``s = lr0``."""

    def value(self, progress: float) -> float:
        return self.lr0


@register_schedule("cosine")
class CosineSchedule(Schedule):
    """``s(p) = min_lr + (lr0 - min_lr) (1 + cos(pi p)) / 2``."""

    def value(self, progress: float) -> float:
        low = self.training["min_lr"]
        return low + (self.lr0 - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


@register_schedule("exponential")
class ExponentialSchedule(Schedule):
    """``s(p) = lr0 (min_lr / lr0)^p``."""

    def value(self, progress: float) -> float:
        return self.lr0 * (self.training["min_lr"] / self.lr0) ** progress


@register_schedule("plateau")
class PlateauSchedule(Schedule):
    """``s = level``; ``level <- max(level * lr_factor, min_lr)`` after ``lr_patience`` epochs without
    improvement (see the module docstring)."""

    threshold = 1e-4
    eps = 1e-8

    def __init__(self, training: Mapping[str, Any], global_batch_size: int):
        super().__init__(training, global_batch_size)
        self.level = self.lr0
        self.best: Optional[float] = None
        self.bad_epochs = 0

    def value(self, progress: float) -> float:
        return self.level

    def epoch_end(self, validation_loss: float) -> None:
        if self.best is None or validation_loss < self.best * (1.0 - self.threshold):
            self.best, self.bad_epochs = validation_loss, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.training["lr_patience"]:
            lowered = max(self.level * self.training["lr_factor"], self.training["min_lr"])
            if self.level - lowered > self.eps:
                self.level = lowered
            self.bad_epochs = 0

    def restart_tracking(self) -> None:
        self.best, self.bad_epochs = None, 0

    def extra_state(self) -> Dict[str, Any]:
        return {"level": self.level, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        if "_last_lr" in state:  # a checkpoint of torch's ReduceLROnPlateau (mlmd before the schedule registry)
            best = float(state["best"])
            self.level, self.best, self.bad_epochs = float(state["_last_lr"][0]), \
                None if math.isinf(best) else best, int(state["num_bad_epochs"])
            return
        self.level, self.best, self.bad_epochs = float(state["level"]), state["best"], int(state["bad_epochs"])


def make_schedule(training: Mapping[str, Any], global_batch_size: int) -> Schedule:
    """The schedule ``training.lr_schedule`` names (the config check has made sure it is registered)."""
    return SCHEDULES[training["lr_schedule"]](training, global_batch_size)


def stage_two_weights(training: Mapping[str, Any], weight_keys: Mapping[str, str]) -> Dict[str, float]:
    """Loss weights of stage two: ``training["stage_two_" + key]`` for each weight whose stage-two key is set."""
    return {name: training[f"stage_two_{key}"] for name, key in weight_keys.items()
            if training.get(f"stage_two_{key}") is not None}

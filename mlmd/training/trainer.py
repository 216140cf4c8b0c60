"""The training loop behind ``mlmd train``: :func:`train`, :class:`Trainer` and :class:`TrainResult`.

AdamW (the family's strategy may fit in closed form instead, see
:mod:`mlmd.training.strategies`); the loss is the objective's; an exponential
moving average (EMA) of the weights with warm-up ``min(decay, (1+n)/(10+n))``
after ``n`` steps, which is what validation, ``best.pt`` and export use; the
learning rate of every step, and the switch to stage-two loss weights, from the
registered schedule ``training.lr_schedule`` (:mod:`mlmd.training.schedules`:
warm-up, plateau/cosine/exponential decay over the epochs or the time budget,
batch-size scaling); early stopping on the validation loss of the EMA weights
(the training frames stand in when the validation split is empty), whose best
value is forgotten when stage two begins, so ``best.pt`` then holds the best
stage-two weights; gradient clipping by total norm. Each epoch, rank 0
atomically writes ``checkpoint.pt``, ``metrics.csv``, ``learning_curve.png`` and,
on improvement, ``best.pt`` in the output directory; ``summary.json`` at the end holds the best epoch and the test
metrics of the best weights. A non-finite loss stops the run with the last good
checkpoint kept.

Snapshots (``training.snapshot_minutes``): when the budget clock (wall or CPU
time, ``budget_clock``; counted over all invocations) passes a mark of ``M``
minutes, the epoch ends after that batch as at the end of a budget, is
validated, and rank 0 atomically writes ``snapshot-<M>min.pt``, a ``"best"``
checkpoint of the best EMA weights so far (what ``best.pt`` would hold had the
budget been ``M``, with the objective's post-training settings fitted on those
weights), with the clock readings of that
moment (:mod:`mlmd.training.checkpoint`). One run thus gives the model of
every budget; ``mlmd export snapshot-5min.pt -o model.pt`` exports one. A run
that ends by itself (its epochs done, or early stopping) before a mark writes that
mark's snapshot at its end: the final best weights, with the clocks of the end.

``--resume`` continues from ``checkpoint.pt`` exactly: weights, optimizer,
scheduler, EMA, RNG states (torch, numpy, python), epoch, best metric and
early-stopping counter. The epoch's shuffle is seeded by ``(seed, epoch)``.
On CPU, a run resumed after any epoch ends with bitwise the same weights as an
uninterrupted one. The resumed run keeps the checkpoint's model, optimizer and
scheduler state; the dataset, split and dtype must not change.
"""

import copy
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from ..errors import MLMDError
from .checkpoint import (BEST_FILE, CHECKPOINT_FILE, build_checkpoint, load_checkpoint, rng_state, save_checkpoint,
                         set_rng_state, snapshot_file)
from .config import load_config
from .distributed import Distributed, all_reduce, barrier, setup_distributed, shard, teardown_distributed
from .ema import EMA
from .models import build_model, default_dtype
from .objectives import objective_class
from .reports import CURVE_FILE, METRICS_FILE, SUMMARY_FILE, plot_learning_curve, write_metrics, write_summary
from .schedules import make_schedule, stage_two_weights
from .strategies import strategy_for


@dataclass
class TrainResult:
    """What :func:`train` returns. ``model`` holds the last weights, ``ema_model`` their EMA
    (the weights export uses), both in memory; ``history`` has one row per epoch (all epochs,
    also those before a resume)."""

    directory: Path
    checkpoint: Path
    best_checkpoint: Path
    epoch: int
    best_epoch: int
    best_validation_loss: float
    stopped_early: bool
    stop_reason: str = "epochs done"  # "epochs done", "early stopping" or "budget reached"
    history: List[Dict[str, Any]] = field(default_factory=list)
    test_metrics: Dict[str, float] = field(default_factory=dict)
    model: Any = None
    ema_model: Any = None


def train(config: Union[Mapping[str, Any], str, os.PathLike], resume: bool = False, epochs: Optional[int] = None,
          verbose: bool = True, progress: Optional[bool] = None) -> TrainResult:
    """Train the model a config describes (a dict or a JSON/TOML file; see :mod:`mlmd.training.config`).

    ``resume`` continues from the output folder's ``checkpoint.pt``; ``epochs``
    overrides ``training.epochs`` (the total, counting epochs done before a
    resume). ``verbose`` prints one line per epoch; ``progress`` shows a
    progress bar per epoch (None: only on a terminal).
    """
    config = load_config(config)
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise MLMDError(f"--epochs must be a positive integer, got {epochs!r}")
        config["training"]["epochs"] = epochs
    objective_class(config["model"]["family"]).check_data(config)
    strategy_for(config["model"]["family"])  # a clear error for an untrainable family, before any set-up
    info, device = setup_distributed(config["training"]["device"])
    try:
        return Trainer(config, info, device, verbose, progress).run(resume)
    finally:
        teardown_distributed(info)


class Trainer:
    """One training run of a validated config on this process's device (see the module docstring)."""

    def __init__(self, config, info: Distributed, device, verbose: bool, progress: Optional[bool]):
        self.config = config
        self.info = info
        self.device = device
        self.verbose = verbose and info.main
        self.progress = progress if info.main else False
        self.family = config["model"]["family"]
        self.objective = objective_class(self.family)(config, self.log)
        self.strategy = strategy_for(self.family)
        self.directory = Path(config["output"]["directory"])
        self.checkpoint_path = self.directory / CHECKPOINT_FILE
        self.best_path = self.directory / BEST_FILE

    def log(self, message: str) -> None:
        if self.verbose:
            print(message, flush=True)

    # -- setup --

    def setup(self, resume: bool) -> None:
        """Load the data, build (or restore) the model, EMA, optimizer and scheduler."""
        import numpy as np
        import torch

        config, training = self.config, self.config["training"]
        self.dtype = getattr(torch, training["dtype"])
        if training["num_threads"] is not None:
            torch.set_num_threads(training["num_threads"])
        if resume and not self.checkpoint_path.is_file():
            raise MLMDError(f"--resume: there is no {self.checkpoint_path} to resume; "
                            "run without --resume to start training")
        if not resume and self.checkpoint_path.exists():
            raise MLMDError(f"{self.checkpoint_path} already exists; pass --resume to continue that run "
                            "or set output.directory to a new folder")
        self.objective.load()
        split = self.split = self.objective.split
        self.validation_indices = split.validation if len(split.validation) > 0 else split.train
        if len(split.validation) == 0:
            self.log("warning: the validation split is empty; the training frames stand in for it")

        checkpoint = load_checkpoint(self.checkpoint_path) if resume else None
        if checkpoint is not None:
            self.check_resumable(checkpoint)

        seed = training["seed"]
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        with default_dtype(self.dtype):
            if checkpoint is None:
                model, self.model_config = self.objective.build_model(config["model"], split.train.tolist())
            else:
                self.model_config = checkpoint["model_config"]
                model = build_model(checkpoint["family"], self.model_config)
        self.model = model.to(device=self.device, dtype=self.dtype)
        self.model.train()
        self.objective.attach(self.model)
        self.ema = EMA(self.model, training["ema_decay"])
        self.schedule = make_schedule(training, config["data"]["batch_size"] * self.info.world_size)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.schedule.lr0,
                                           weight_decay=training["weight_decay"])
        self.optimizer.register_step_post_hook(self.after_step)
        self.elapsed_s, self.elapsed_fresh = 0.0, False
        self.epoch = 0
        self.best_metric = float("inf")
        self.best_epoch = 0
        self.bad_epochs = 0
        self.history: List[Dict[str, Any]] = []
        self.best_ema = None
        if checkpoint is not None:
            self.restore(checkpoint)
        # Snapshot marks still to come (minutes on the budget clock); a resumed run keeps those it wrote.
        self.marks = sorted(m for m in training["snapshot_minutes"] or []
                            if checkpoint is None or not (self.directory / snapshot_file(m)).exists())

        self.ddp_model = self.model
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=training["find_unused_parameters"])

    def restore(self, checkpoint: Mapping[str, Any]) -> None:
        """Take every piece of training state from a ``"training"`` checkpoint."""
        self.model.load_state_dict(checkpoint["model"])
        self.ema.module.load_state_dict(checkpoint["ema"])
        self.ema.updates = int(checkpoint["ema_updates"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.schedule.load_state_dict(checkpoint["scheduler"])
        if self.schedule.stage == 2:
            self.objective.weights.update(stage_two_weights(self.config["training"], self.objective.weight_keys))
        self.epoch = int(checkpoint["epoch"])
        self.best_metric = float(checkpoint["best_metric"])
        self.best_epoch = int(checkpoint["best_epoch"])
        self.bad_epochs = int(checkpoint["bad_epochs"])
        self.history = list(checkpoint["history"])
        self.best_ema = checkpoint["best_ema"]
        set_rng_state(checkpoint["rng"])
        self.log(f"resuming {self.checkpoint_path} after epoch {self.epoch}")

    def check_resumable(self, checkpoint: Mapping[str, Any]) -> None:
        """A clear error when the config no longer fits the checkpoint it resumes."""
        stored = checkpoint["config"]
        where = f"checkpoint {self.checkpoint_path}"
        if checkpoint.get("kind") == "best":
            raise MLMDError(f"{where} holds best weights only; resume from {CHECKPOINT_FILE}")
        if checkpoint["family"] != self.family:
            raise MLMDError(f"model.family is {self.family!r} but {where} trained "
                            f"{checkpoint['family']!r}; a resumed run keeps its model")
        for key, value in self.config["model"].items():
            if key != "family" and key in checkpoint["model_config"] and checkpoint["model_config"][key] != value:
                raise MLMDError(f"model.{key} is {value!r} but {where} has {checkpoint['model_config'][key]!r}; "
                                "a resumed run keeps its model: restore the value or start a new run")
        if checkpoint["data_hash"] != self.objective.hash:
            raise MLMDError(f"data.path {self.config['data']['path']} differs from the data {where} was trained on; "
                            "resume with the same dataset or start a new run")
        schedule = stored["training"].get("lr_schedule", "plateau")  # checkpoints before the registry: plateau
        if schedule != self.config["training"]["lr_schedule"]:
            raise MLMDError(f"training.lr_schedule is {self.config['training']['lr_schedule']!r} but {where} used "
                            f"{schedule!r}; restore it to resume")
        for section, key in (*self.objective.resume_keys, ("training", "dtype"), ("training", "seed")):
            if stored[section][key] != self.config[section][key]:
                raise MLMDError(f"{section}.{key} is {self.config[section][key]!r} but {where} used "
                                f"{stored[section][key]!r}; restore it to resume")

    # -- pieces of an epoch --

    def shard(self, indices, shuffle_epoch: Optional[int]):
        """This rank's share of ``indices`` (shuffled by ``(seed, epoch)`` when training)."""
        return shard(indices, self.info, self.config["training"]["seed"], shuffle_epoch)

    def evaluate(self, module, indices) -> Dict[str, float]:
        """The objective's metrics of ``module`` on ``indices``, summed over all ranks."""
        batch_size = self.config["data"]["validation_batch_size"] or self.config["data"]["batch_size"]
        sums = self.objective.error_sums(module, self.shard(indices, None), batch_size, self.dtype, self.device)
        return self.objective.metrics(all_reduce(sums, self.info))

    def checkpoint(self, kind: str, model_config: Optional[Dict[str, Any]] = None, **state: Any) -> Dict[str, Any]:
        """A checkpoint of this run (see :mod:`mlmd.training.checkpoint`); ``model_config`` replaces the run's."""
        return build_checkpoint(kind, family=self.family, model_config=model_config or self.model_config,
                                config=self.config,
                                data_hash=self.objective.hash, epoch=self.epoch, best_metric=self.best_metric,
                                **state)

    def training_checkpoint(self) -> Dict[str, Any]:
        """Everything an exact resume needs."""
        return self.checkpoint(
            "training", model=self.model.state_dict(), ema=self.ema.state_dict(), ema_updates=self.ema.updates,
            best_ema=self.best_ema, optimizer=self.optimizer.state_dict(),
            scheduler=self.schedule.state_dict(self.elapsed_s), rng=rng_state(), best_epoch=self.best_epoch,
            bad_epochs=self.bad_epochs, history=self.history)

    # The clocks of the time budget (a test replaces them): wall time, or this process's CPU time (user +
    # system, all threads; ``training.budget_clock = "cpu"``), which other work on a shared machine does not use up.
    clock = staticmethod(time.perf_counter)
    cpu_clock = staticmethod(time.process_time)

    def budget_time(self) -> float:
        """Seconds on the clock the budget is kept in."""
        return self.cpu_clock() if self.config["training"]["budget_clock"] == "cpu" else self.clock()

    @property
    def timed(self) -> bool:
        """Whether the budget clock is read after every step: for a time budget or a snapshot mark to come."""
        return self.config["training"]["max_time_min"] is not None or bool(self.marks)

    def out_of_time(self) -> bool:
        """Whether this invocation's time budget is spent; every rank takes rank 0's answer. Strategies
        ask after every batch, so a budget is kept to within one batch (the epoch then ends early)."""
        budget = self.config["training"]["max_time_min"]
        if not self.timed:
            return False
        if not self.elapsed_fresh:
            self.read_elapsed()
        self.elapsed_fresh = False
        return budget is not None and self.elapsed_s > 60.0 * budget

    def snapshot_due(self) -> bool:
        """Whether the last clock reading (of :meth:`out_of_time`) has passed the next snapshot mark; the
        marks count the time trained over all invocations."""
        return bool(self.marks) and self.schedule.time_before_s + self.elapsed_s >= 60.0 * self.marks[0]

    def epoch_must_end(self) -> Optional[str]:
        """Why the epoch ends after this batch (the budget is spent, or a snapshot mark is passed), or None;
        reads the budget clock. Strategies ask after every batch."""
        if self.out_of_time():
            return f"the {self.config['training']['max_time_min']} min budget is spent"
        if self.snapshot_due():
            return f"the {self.marks[0]:g} min snapshot mark is passed"
        return None

    def read_elapsed(self) -> None:
        """``elapsed_s``: rank 0's budget-clock seconds since the run started (the others add 0, so all ranks
        agree)."""
        import torch

        elapsed = torch.tensor([self.budget_time() - self.run_started if self.info.main else 0.0],
                               dtype=torch.float64, device=self.device)
        if self.info.enabled:
            all_reduce(elapsed, self.info)
        self.elapsed_s = float(elapsed.item())

    # -- the schedule --

    def set_schedule(self, epoch: int, epochs_done: float) -> None:
        """Learning rate and loss weights of the next step (progress ``epochs_done`` epochs, see
        :mod:`mlmd.training.schedules`)."""
        if self.schedule.advance(epoch, epochs_done, self.elapsed_s):
            self.objective.weights.update(stage_two_weights(self.config["training"], self.objective.weight_keys))
            self.log(f"stage two from epoch {epoch} (progress {self.schedule.progress:.3f}): loss weights "
                     f"{self.objective.weights}")
        lr = self.schedule.lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def begin_epoch(self, epoch: int) -> None:
        """Count this epoch's steps (its batches on this rank) and set the schedule of its first step."""
        self.step_in_epoch = 0
        self.steps_per_epoch = max(1, math.ceil(len(self.shard(self.split.train, epoch))
                                                / self.config["data"]["batch_size"]))
        self.set_schedule(epoch, epoch - 1.0)

    def after_step(self, optimizer, args, kwargs) -> None:
        """Optimizer hook: remember the step's learning rate, then set the next step's schedule (with a time
        budget, from a fresh clock reading, which the budget check after the batch then uses)."""
        self.step_lr = optimizer.param_groups[0]["lr"]
        if self.timed:
            self.read_elapsed()
            self.elapsed_fresh = True
        self.step_in_epoch += 1
        if self.step_in_epoch < self.steps_per_epoch:  # after the last step, the next epoch's begin_epoch sets it
            epoch = self.epoch + 1
            self.set_schedule(epoch, epoch - 1.0 + self.step_in_epoch / self.steps_per_epoch)

    def write_epoch_files(self, row: Dict[str, Any], improved: bool) -> None:
        """Rank 0: checkpoint, best weights on improvement, metrics and learning curve."""
        save_checkpoint(self.training_checkpoint(), self.checkpoint_path)
        if improved:
            save_checkpoint(self.checkpoint("best", ema=self.best_ema, metrics=row), self.best_path)
        write_metrics(self.directory / METRICS_FILE, self.history, self.objective.metric_columns)
        if self.config["output"]["learning_curve"]:
            plot_learning_curve(self.directory / CURVE_FILE, self.history, self.best_epoch, self.objective.curve)

    def best_row(self) -> Dict[str, Any]:
        """The history row (``metrics.csv``) of the best epoch, or {} before one."""
        return next((row for row in self.history if row.get("epoch") == self.best_epoch), {})

    def write_snapshots(self, final: bool = False) -> None:
        """A snapshot of the best weights for every mark the last clock reading has passed (``final``: for
        every mark left, at the end of a run that ended by itself). Rank 0 writes; every rank drops the
        marks, so all agree."""
        if final and self.marks:
            self.read_elapsed()
        while self.marks and (final or self.snapshot_due()):
            minutes = self.marks.pop(0)
            # fitted on the snapshot's weights, as best.pt's at the end; every rank takes part (all-reduced)
            settings = self.fitted_settings()
            if not self.info.main:
                continue
            training = self.config["training"]
            clocks = {"minutes": minutes, "budget_clock": training["budget_clock"],
                      "budget_s": round(self.schedule.time_before_s + self.elapsed_s, 3),
                      "cpu_s": round(self.cpu_clock() - self.cpu_started, 3),
                      "wall_s": round(self.clock() - self.wall_started, 3), "epochs": self.epoch}
            snapshot = self.checkpoint("best", model_config={**self.model_config, **settings}, ema=self.best_ema,
                                       metrics=self.best_row(), snapshot=clocks)
            snapshot["epoch"] = self.best_epoch  # the epoch of its weights, as in best.pt
            path = self.directory / snapshot_file(minutes)
            save_checkpoint(snapshot, path)
            self.log(f"snapshot at {clocks['budget_s'] / 60:.3g} min ({training['budget_clock']} clock) of the best "
                     f"weights (epoch {self.best_epoch}): {path}")

    # -- the run --

    def run_epoch(self, epoch: int):
        """Train and validate epoch ``epoch``, step the schedule and append its row to the history;
        returns ``(validation metrics, whether they improved)``."""
        started = time.perf_counter()
        self.begin_epoch(epoch)
        self.step_lr = self.optimizer.param_groups[0]["lr"]
        train_loss = self.strategy.train_epoch(self, epoch)
        validation = self.evaluate(self.ema.module, self.validation_indices)
        if not (math.isfinite(train_loss) and math.isfinite(validation["loss"])):
            kept = f"the last good state is {self.checkpoint_path}" if self.epoch > 0 else "no checkpoint was kept"
            raise MLMDError(f"training diverged in epoch {epoch} (loss {train_loss}, validation "
                            f"{validation['loss']}); {kept}; lower training.lr or grad_clip_norm")
        if self.schedule.stage_two_epoch == epoch:
            # The loss changed meaning: forget stage one's best, so best.pt holds the best stage-two weights.
            self.best_metric, self.bad_epochs = float("inf"), 0
            self.schedule.restart_tracking()
        self.schedule.epoch_end(validation["loss"])
        improved = validation["loss"] < self.best_metric
        if improved:
            self.best_metric, self.best_epoch, self.bad_epochs = validation["loss"], epoch, 0
            self.best_ema = {k: v.detach().clone() for k, v in self.ema.state_dict().items()}
        else:
            self.bad_epochs += 1
        self.epoch = epoch
        # lr of the epoch's last step; stage and loss weights at its end (those of the validation loss)
        row = {"epoch": epoch, "lr": self.step_lr, "stage": self.schedule.stage,
               **{self.objective.weight_keys[name]: value for name, value in self.objective.weights.items()},
               "train_loss": train_loss, "val_loss": validation["loss"],
               **{f"val_{k}": v for k, v in validation.items() if k != "loss"},
               "time_s": round(time.perf_counter() - started, 3)}
        self.history.append(row)
        return validation, improved

    def run(self, resume: bool) -> TrainResult:
        self.setup(resume)
        if self.info.main:
            self.directory.mkdir(parents=True, exist_ok=True)
        training = self.config["training"]
        patience = training["early_stopping_patience"]
        stopped_early, out_of_time = patience is not None and self.bad_epochs >= patience, False
        self.run_started = self.budget_time()
        if self.marks:  # both clocks go into every snapshot
            self.wall_started, self.cpu_started = self.clock(), self.cpu_clock()
        if self.info.main and not resume:
            self.log(f"training {self.family} ({sum(p.numel() for p in self.model.parameters())} parameters) on "
                     f"{len(self.split.train)} frames, validating on {len(self.split.validation)}, "
                     f"{self.info.world_size} process(es) on {self.device}, {training['dtype']}")
        while self.epoch < self.strategy.epochs(training["epochs"]) and not stopped_early and not out_of_time:
            validation, improved = self.run_epoch(self.epoch + 1)
            row = self.history[-1]
            stopped_early = patience is not None and self.bad_epochs >= patience
            out_of_time = self.out_of_time()
            if self.info.main:
                self.write_epoch_files(row, improved)
            self.write_snapshots()
            self.log(f"epoch {self.epoch:4d}/{training['epochs']}  lr {row['lr']:.2e}  train {row['train_loss']:.4g}  "
                     f"val {validation['loss']:.4g}  {self.objective.describe(validation)}{'  *' if improved else ''}")
            barrier(self.info)
        if not out_of_time:
            self.write_snapshots(final=True)
        if stopped_early:
            self.log(f"stopped early: no improvement for {self.bad_epochs} epochs")
        elif out_of_time:
            self.log(f"stopped after epoch {self.epoch}: the {training['max_time_min']} min budget is spent; "
                     "--resume continues")
        reason = "early stopping" if stopped_early else "budget reached" if out_of_time else "epochs done"
        return self.finish(stopped_early, reason)

    def fitted_settings(self) -> Dict[str, Any]:
        """The objective's post-training settings of the best weights, fitted on the validation frames
        ({} when it has none). Every rank calls it: the sums are all-reduced."""
        if self.best_ema is None or len(self.split.validation) == 0:
            return {}
        best = copy.deepcopy(self.ema.module)
        best.load_state_dict(self.best_ema)
        batch_size = self.config["data"]["validation_batch_size"] or self.config["data"]["batch_size"]
        sums = self.objective.calibration_sums(best, self.shard(self.split.validation, None), batch_size,
                                               self.dtype, self.device)
        if sums is None:
            return {}
        return self.objective.calibrate(best, all_reduce(sums, self.info)) or {}

    def calibrate(self) -> None:
        """Fit the objective's post-training settings (:meth:`fitted_settings`); they go into ``model_config``
        (so ``best.pt`` and every export carry them) and onto the in-memory modules."""
        settings = self.fitted_settings()
        if not settings:
            return
        self.model_config.update(settings)
        for module in (self.model, self.ema.module):
            for key, value in settings.items():
                setattr(module, key, value)
        if self.info.main:
            # Both files carry the settings (fitted on the best weights), so either exports calibrated.
            save_checkpoint(self.checkpoint("best", ema=self.best_ema, metrics=self.best_row()), self.best_path)
            save_checkpoint(self.training_checkpoint(), self.checkpoint_path)

    def finish(self, stopped_early: bool, reason: str = "epochs done") -> TrainResult:
        """Calibrate and test the best weights, write ``summary.json`` and return the result."""
        self.calibrate()
        test_metrics: Dict[str, float] = {}
        if len(self.split.test) > 0 and self.best_ema is not None:
            best = copy.deepcopy(self.ema.module)
            best.load_state_dict(self.best_ema)
            test_metrics = self.evaluate(best, self.split.test)
            self.log(f"test (best EMA weights, epoch {self.best_epoch}): {self.objective.describe(test_metrics)}")
        if self.info.main:
            write_summary(self.directory / SUMMARY_FILE, {
                "epoch": self.epoch, "best_epoch": self.best_epoch, "best_validation_loss": self.best_metric,
                "stopped_early": stopped_early, "stop_reason": reason, "test": test_metrics,
                "data_hash": self.objective.hash, "family": self.family, "n_train": len(self.split.train),
                "n_validation": len(self.split.validation), "n_test": len(self.split.test)})
        barrier(self.info)
        return TrainResult(
            directory=self.directory, checkpoint=self.checkpoint_path, best_checkpoint=self.best_path,
            epoch=self.epoch, best_epoch=self.best_epoch, best_validation_loss=self.best_metric,
            stopped_early=stopped_early, stop_reason=reason, history=self.history, test_metrics=test_metrics,
            model=self.model, ema_model=self.ema.module,
        )

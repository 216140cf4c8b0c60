"""The training recipe: learning-rate schedules (warm-up, cosine, exponential, plateau), batch-size scaling, the
stage-two loss weights, and their exact resume; every value against its closed form or torch's own scheduler."""

import math

import pytest
import torch

from mlmd.errors import MLMDError
from mlmd.train import load_checkpoint, train
from mlmd.training.config import validate_config
from mlmd.training.objectives.potential import PotentialObjective
from mlmd.training.schedules import PlateauSchedule, make_schedule
from mlmd.training.trainer import Trainer
from test_train import data_file, make_config  # noqa: F401  (data_file is a fixture)

# make_config's split of the 16 frames: 10 train frames, batch 4 -> 3 steps per epoch
STEPS_PER_EPOCH = 3


def training_section(**keys):
    """The validated [training] section of a config with these keys (the data file need not exist)."""
    config = make_config("unused.xyz", "unused", **keys)
    return validate_config(config)["training"]


def record_step_lrs(monkeypatch):
    """The learning rate of every optimizer step of the runs that follow, in order."""
    lrs = []
    original = Trainer.after_step

    def after_step(self, optimizer, args, kwargs):
        lrs.append(optimizer.param_groups[0]["lr"])
        original(self, optimizer, args, kwargs)

    monkeypatch.setattr(Trainer, "after_step", after_step)
    return lrs


def cosine_with_warmup(step, lr, min_lr, epochs, warmup_epochs, start_factor):
    """Closed form: lr of global step ``step`` (``e = step / steps per epoch``)."""
    e = step / STEPS_PER_EPOCH
    warm = start_factor + (1 - start_factor) * min(1.0, e / warmup_epochs)
    return warm * (min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * e / epochs)))


def test_warmup_and_cosine_follow_the_closed_form(data_file, tmp_path, monkeypatch):
    lrs = record_step_lrs(monkeypatch)
    settings = dict(epochs=4, lr=0.02, min_lr=0.001, lr_schedule="cosine", warmup_epochs=1.5,
                    warmup_start_factor=0.2)
    result = train(make_config(data_file, tmp_path / "cosine", **settings), verbose=False, progress=False)
    expected = [cosine_with_warmup(step, 0.02, 0.001, 4, 1.5, 0.2) for step in range(4 * STEPS_PER_EPOCH)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[0] == pytest.approx(0.2 * 0.02)  # warm-up starts at lr * warmup_start_factor
    # metrics.csv's lr is that of each epoch's last step
    assert [row["lr"] for row in result.history] == pytest.approx(expected[STEPS_PER_EPOCH - 1::STEPS_PER_EPOCH])


def test_cosine_follows_the_time_budget(data_file, tmp_path, monkeypatch):
    """With a budget, progress is max(e/E, t/T): a fake clock spends the 1 min budget in 4 batches of 10 s
    (+10 s per epoch end), far before the 1000 epochs, and the lrs follow the time fraction."""
    readings = []

    def clock():
        readings.append(None)
        return 10.0 * len(readings)

    monkeypatch.setattr(Trainer, "clock", staticmethod(clock))
    lrs = record_step_lrs(monkeypatch)
    config = make_config(data_file, tmp_path / "timed", epochs=1000, lr=0.02, min_lr=0.001,
                         lr_schedule="cosine", max_time_min=1.0)
    result = train(config, verbose=False, progress=False)
    assert result.stop_reason == "budget reached"
    # elapsed before each step: 0, 10, 20 (epoch 1), then 40, 50, 60 (the epoch end read the clock once more)
    elapsed = [0, 10, 20, 40, 50, 60]
    cosine = [0.001 + 0.019 * 0.5 * (1 + math.cos(math.pi * t / 60)) for t in elapsed]
    assert lrs == pytest.approx(cosine, rel=1e-12)
    state = load_checkpoint(result.checkpoint)["scheduler"]
    assert state["time_s"] == pytest.approx(80.0)  # time trained (read after epoch 2), for the stretched schedule of a resume


def test_exponential_constant_and_scaling_closed_forms():
    training = training_section(lr=0.01, min_lr=1e-4, lr_schedule="exponential", lr_scaling="sqrt",
                                reference_batch_size=16, warmup_epochs=0)
    schedule = make_schedule(training, global_batch_size=4)
    assert schedule.lr0 == pytest.approx(0.01 * math.sqrt(4 / 16))
    for epochs_done in (0.0, 1.0, 2.5, 4.0):
        schedule.advance(1, epochs_done, 0.0)
        assert schedule.lr() == pytest.approx(0.005 * (1e-4 / 0.005) ** (epochs_done / 4))
    linear = make_schedule(training_section(lr=0.01, lr_schedule="constant", lr_scaling="linear",
                                            reference_batch_size=16), global_batch_size=64)
    linear.advance(3, 2.0, 0.0)
    assert linear.lr() == pytest.approx(0.04)


def test_plateau_matches_torch_reduce_lr_on_plateau():
    """The plateau schedule against torch's ReduceLROnPlateau on the same validation losses (the old trainer)."""
    training = training_section(lr=0.1, lr_factor=0.5, lr_patience=1, min_lr=0.01)
    ours = make_schedule(training, global_batch_size=4)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=1,
                                                           min_lr=0.01)
    losses = [5.0, 4.0, 4.0, 4.0, 3.9999, 3.0, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5]
    for epoch, loss in enumerate(losses, start=1):
        ours.advance(epoch, epoch - 1.0, 0.0)
        assert ours.lr() == optimizer.param_groups[0]["lr"], epoch
        ours.epoch_end(loss)
        reference.step(loss)
    assert optimizer.param_groups[0]["lr"] == 0.01  # the floor was reached, so every rule was exercised
    # a checkpoint of the old trainer (torch's state) resumes into the plateau schedule
    restored = PlateauSchedule(training, 4)
    restored.load_state_dict(reference.state_dict())
    assert (restored.level, restored.best, restored.bad_epochs) == (0.01, reference.best, reference.num_bad_epochs)


def test_stage_two_switches_weights_and_lr_at_its_progress(data_file, tmp_path, monkeypatch):
    """stage_two_fraction 0.5 of 4 epochs: steps 0-5 use the stage-one weights, 6-11 the stage-two ones, and
    each batch's loss equals the hand-computed weighted MSE with the weights of its step."""
    calls = []
    original = PotentialObjective.loss

    def loss(self, module, batch):
        value, frames = original(self, module, batch)
        out = module(batch["positions"], batch["atomic_numbers"], batch["cell"], batch["pbc"], batch["batch"],
                     True, False)
        e = ((out["energy"] - batch["energy"]) / batch["n_atoms"]).detach()
        f = (out["forces"] - batch["forces"]).detach()
        calls.append((float(value.detach()), float((e ** 2).mean()), float((f ** 2).mean())))
        return value, frames

    monkeypatch.setattr(PotentialObjective, "loss", loss)
    lrs = record_step_lrs(monkeypatch)
    settings = dict(epochs=4, lr=0.02, lr_schedule="cosine", energy_weight=1.0, force_weight=10.0,
                    stress_weight=0.0, stage_two_fraction=0.5, stage_two_energy_weight=50.0,
                    stage_two_force_weight=2.0, stage_two_lr=0.003)
    result = train(make_config(data_file, tmp_path / "stages", **settings), verbose=False, progress=False)
    assert len(calls) == 4 * STEPS_PER_EPOCH
    for step, (value, e_mse, f_mse) in enumerate(calls):
        w_e, w_f = (1.0, 10.0) if step < 2 * STEPS_PER_EPOCH else (50.0, 2.0)
        assert value == pytest.approx(w_e * e_mse + w_f * f_mse, rel=1e-10), step
    assert lrs[2 * STEPS_PER_EPOCH:] == [0.003] * (2 * STEPS_PER_EPOCH)
    assert lrs[2 * STEPS_PER_EPOCH - 1] == pytest.approx(0.02 * 0.5 * (1 + math.cos(math.pi * 5 / 12)))
    assert [(r["stage"], r["energy_weight"], r["force_weight"]) for r in result.history] == [
        (1, 1.0, 10.0), (1, 1.0, 10.0), (2, 50.0, 2.0), (2, 50.0, 2.0)]
    header, *rows = (tmp_path / "stages" / "metrics.csv").read_text().splitlines()
    assert header.endswith("stage,energy_weight,force_weight,stress_weight")
    assert rows[2].endswith(",2,50.0,2.0,0.0")
    assert result.best_epoch >= 3  # the best of stage one was forgotten at the switch


def test_resume_mid_schedule_repeats_the_lr_sequence(data_file, tmp_path, monkeypatch):
    """Warm-up, cosine and stage two (from epoch 4 of 5): a run killed after epoch 2's checkpoint and resumed
    gives the uninterrupted run's learning rates, weights and schedule state bit for bit."""
    lrs = record_step_lrs(monkeypatch)
    settings = dict(epochs=5, lr=0.05, min_lr=0.001, lr_schedule="cosine", warmup_epochs=1, stage_two_fraction=0.6,
                    stage_two_energy_weight=30.0)
    straight = train(make_config(data_file, tmp_path / "straight", **settings), verbose=False, progress=False)
    straight_lrs = list(lrs)
    lrs.clear()
    write_epoch_files = Trainer.write_epoch_files

    def killed_after_epoch_2(self, row, improved):
        write_epoch_files(self, row, improved)
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "write_epoch_files", killed_after_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            train(make_config(data_file, tmp_path / "resumed", **settings), verbose=False, progress=False)
    resumed = train(make_config(data_file, tmp_path / "resumed", **settings), resume=True, verbose=False,
                    progress=False)
    assert lrs == straight_lrs and len(set(lrs)) > 5
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    assert a["scheduler"] == b["scheduler"] and a["scheduler"]["stage"] == 2
    for part in ("model", "ema", "best_ema"):
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), (part, name)
    assert [r["val_loss"] for r in a["history"]] == [r["val_loss"] for r in b["history"]]
    with pytest.raises(MLMDError, match="training.lr_schedule is 'plateau' but .* used 'cosine'"):
        train(make_config(data_file, tmp_path / "resumed", **{**settings, "epochs": 6, "lr_schedule": "plateau"}),
              resume=True, verbose=False, progress=False)


@pytest.mark.parametrize("keys, message", [
    (dict(warmup_epochs=-1), r"training\.warmup_epochs must be >= 0, got -1; set e\.g\. warmup_epochs = 2"),
    (dict(lr_schedule="cosin"), r"training\.lr_schedule must be one of .*'cosine'.*, got 'cosin'"),
    (dict(lr_scaling="square"), r"training\.lr_scaling must be one of 'none', 'sqrt', 'linear', got 'square'"),
    (dict(stage_two_fraction=1.5), r"training\.stage_two_fraction must be <= 1, got 1\.5"),
    (dict(lr_schedule="exponential", min_lr=0.0), r"training\.min_lr must be > 0 for lr_schedule = \"exponential\""),
    (dict(lr_schedule="cosine", lr=1e-3, min_lr=1e-2), r"training\.min_lr \(0\.01\) is above training\.lr"),
])
def test_bad_schedule_values_give_one_line_naming_the_key(keys, message):
    with pytest.raises(MLMDError, match=message) as error:
        training_section(**keys)
    assert "\n" not in str(error.value)

"""Snapshots of the best weights at marks on the budget clock (``training.snapshot_minutes``): a snapshot equals
the best.pt of a run whose budget was that mark, it exports, and a real short run writes every one."""

import pytest
import torch

import mlmd
from mlmd.cli import main as mlmd_main
from mlmd.errors import MLMDError
from mlmd.train import load_checkpoint, train
from mlmd.training.trainer import Trainer
from test_train import data_file, make_config  # noqa: F401  (data_file is a fixture)


def clock_of_steps(monkeypatch, seconds_per_step: float = 10.0):
    """Both clocks read ``seconds_per_step`` times the optimizer steps taken so far (counted over all runs that
    follow, each of which starts its clock afresh), so that runs that take the same steps read the same times."""
    steps = []
    original = Trainer.after_step

    def after_step(self, optimizer, args, kwargs):
        steps.append(None)
        original(self, optimizer, args, kwargs)

    monkeypatch.setattr(Trainer, "after_step", after_step)
    monkeypatch.setattr(Trainer, "clock", staticmethod(lambda: seconds_per_step * len(steps)))
    monkeypatch.setattr(Trainer, "cpu_clock", staticmethod(lambda: seconds_per_step * len(steps)))


def energies_of(model_file, data):
    batch = mlmd.data.load_dataset(data).collate([0, 1, 2], dtype=torch.float64)
    return mlmd.load_model(model_file)(batch["positions"], batch["atomic_numbers"], batch["cell"], batch["pbc"],
                                       batch["batch"])["energy"]


def test_snapshot_is_the_best_pt_of_a_run_with_that_budget(data_file, tmp_path, monkeypatch):
    """10 train frames in batches of one, 10 s per step: the 0.25 min mark (15 s) is passed after the second
    step, so epoch 1 ends there as a 0.25 min budget would end it; the snapshot then equals that run's best.pt
    bit for bit, and the run goes on to its 0.5 min mark in epoch 2."""
    clock_of_steps(monkeypatch)
    config = make_config(data_file, tmp_path / "budget", epochs=3, max_time_min=0.25, budget_clock="cpu")
    config["data"]["batch_size"] = 1
    budgeted = train(config, verbose=False, progress=False)
    assert budgeted.epoch == 1 and budgeted.stop_reason == "budget reached"

    config = make_config(data_file, tmp_path / "marks", epochs=3, snapshot_minutes=[0.5, 0.25], budget_clock="cpu")
    config["data"]["batch_size"] = 1
    marked = train(config, verbose=False, progress=False)
    assert marked.epoch == 3 and marked.stop_reason == "epochs done"
    first = load_checkpoint(tmp_path / "marks" / "snapshot-0.25min.pt")
    second = load_checkpoint(tmp_path / "marks" / "snapshot-0.5min.pt")
    best = load_checkpoint(budgeted.best_checkpoint)
    assert first["kind"] == "best" and set(first["ema"]) == set(best["ema"])
    for name in best["ema"]:
        assert torch.equal(first["ema"][name], best["ema"][name]), name
    assert first["snapshot"] == {"minutes": 0.25, "budget_clock": "cpu", "budget_s": 20.0, "cpu_s": 20.0,
                                 "wall_s": 20.0, "epochs": 1}
    # epoch 1 had 2 steps (to 20 s), epoch 2 ends at the step that reaches 30 s
    assert second["snapshot"]["epochs"] == 2 and second["snapshot"]["budget_s"] == 30.0
    assert second["epoch"] == min(marked.history[:2], key=lambda row: row["val_loss"])["epoch"]

    # `mlmd export` reads a snapshot like best.pt
    assert mlmd_main(["export", str(tmp_path / "marks" / "snapshot-0.25min.pt"), "-o", str(tmp_path / "s.pt")]) == 0
    assert mlmd_main(["export", str(budgeted.best_checkpoint), "-o", str(tmp_path / "b.pt")]) == 0
    torch.testing.assert_close(energies_of(tmp_path / "s.pt", data_file), energies_of(tmp_path / "b.pt", data_file),
                               rtol=0, atol=0)
    assert mlmd.load_model(tmp_path / "s.pt").metadata["training"]["epoch"] == first["epoch"] == 1


def test_marks_beyond_a_run_that_ends_by_itself_get_its_final_best_weights(data_file, tmp_path):
    result = train(make_config(data_file, tmp_path / "short", epochs=2, snapshot_minutes=[1000.0]), verbose=False,
                   progress=False)
    snapshot = load_checkpoint(tmp_path / "short" / "snapshot-1000min.pt")
    best = load_checkpoint(result.best_checkpoint)
    assert snapshot["snapshot"]["epochs"] == 2 and snapshot["snapshot"]["budget_s"] < 60.0 * 1000
    for name in best["ema"]:
        assert torch.equal(snapshot["ema"][name], best["ema"][name]), name


def test_short_real_run_writes_every_snapshot_and_each_exports(data_file, tmp_path):
    """The process CPU clock, tiny marks: every snapshot is written after its mark, in order, and exports."""
    marks = [0.002, 0.005]
    config = make_config(data_file, tmp_path / "real", epochs=100000, snapshot_minutes=marks, max_time_min=0.008,
                         budget_clock="cpu")
    result = train(config, verbose=False, progress=False)
    assert result.stop_reason == "budget reached"
    snapshots = [load_checkpoint(tmp_path / "real" / f"snapshot-{m:g}min.pt") for m in marks]
    for mark, snapshot in zip(marks, snapshots):
        clocks = snapshot["snapshot"]
        assert clocks["minutes"] == mark and clocks["budget_s"] >= 60.0 * mark
        assert clocks["cpu_s"] >= clocks["budget_s"] - 0.01 and clocks["wall_s"] > 0  # the same clock, read later
        output = tmp_path / f"model-{mark:g}.pt"
        assert mlmd_main(["export", str(tmp_path / "real" / f"snapshot-{mark:g}min.pt"), "-o", str(output)]) == 0
        assert torch.isfinite(energies_of(output, data_file)).all()
    assert snapshots[0]["snapshot"]["epochs"] <= snapshots[1]["snapshot"]["epochs"] <= result.epoch


@pytest.mark.parametrize("value, message", [([0], "must be > 0"), ("5", "list of minutes"), ([5, 5], "repeat"),
                                            ([], "non-empty list")])
def test_bad_snapshot_marks_are_named(data_file, tmp_path, value, message):
    with pytest.raises(MLMDError, match=f"training.snapshot_minutes .*{message}"):
        train(make_config(data_file, tmp_path / "bad", snapshot_minutes=value), verbose=False, progress=False)

"""`mlmd train` and `mlmd export`: learning, exact resume, atomic files, clear config errors, DDP."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write

import mlmd
from mlmd.cli import main as mlmd_main
from mlmd.errors import MLMDError
from mlmd.train import export_checkpoint, load_checkpoint, train
from potentials import FAMILIES, register_family
from potentials.base import Potential

TESTS = Path(__file__).resolve().parent


class PairPotential(Potential):
    """A learnable radial pair potential: E_i = e_Z(i) + shift + scale/avg_nn * sum_j sum_k w_{s_i s_j k} g_k(r_ij) fc(r_ij)."""

    def __init__(self, species: List[int], cutoff: float = 4.0, num_basis: int = 6, avg_num_neighbors: float = 1.0,
                 atomic_energies_ref: Optional[List[float]] = None, scale: float = 1.0, shift: float = 0.0):
        super().__init__(species, cutoff)
        n = len(self.species)
        self.num_basis = int(num_basis)
        self.avg_num_neighbors = float(avg_num_neighbors)
        self.scale = float(scale)
        self.shift = float(shift)
        reference = atomic_energies_ref if atomic_energies_ref is not None else [0.0] * n
        self.register_buffer("atomic_energies_ref", torch.tensor(reference, dtype=torch.get_default_dtype()))
        self.register_buffer("centers", torch.linspace(1.5, cutoff, self.num_basis))
        self.weights = torch.nn.Parameter(0.1 * torch.randn(n, n, self.num_basis))

    def config(self):
        return dict(species=self.species, cutoff=self.cutoff, num_basis=self.num_basis,
                    avg_num_neighbors=self.avg_num_neighbors, atomic_energies_ref=self.atomic_energies_ref.tolist(),
                    scale=self.scale, shift=self.shift)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def atomic_energies(self, positions, species, edge_index, edge_vectors, batch):
        r = torch.linalg.vector_norm(edge_vectors, dim=1)
        width = (self.cutoff - 1.5) / self.num_basis
        basis = torch.exp(-(((r.unsqueeze(1) - self.centers) / width) ** 2))
        envelope = 0.5 * (torch.cos(math.pi * r / self.cutoff) + 1.0)
        w = self.weights[species[edge_index[0]], species[edge_index[1]]]
        pair = (w * basis).sum(dim=1) * envelope
        energies = torch.zeros(positions.shape[0], dtype=positions.dtype, device=positions.device)
        energies = energies.index_add(0, edge_index[0], pair) * (self.scale / self.avg_num_neighbors)
        return energies + self.shift + self.atomic_energies_ref[species]


if "test-pair" not in FAMILIES:
    register_family("test-pair")(PairPotential)


def make_dataset(path: Path, frames: int = 16, seed: int = 0) -> Path:
    """Rattled and strained 8-atom copper cells labelled by ASE's EMT (energy, forces, stress)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(frames):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        atoms.set_cell(atoms.cell.array * (1 + rng.uniform(-0.03, 0.03)), scale_atoms=True)
        atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        images.append(atoms)
    write(path, images, format="extxyz")
    return path


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "cu.xyz")


def make_config(data_file, directory, **training):
    settings = dict(epochs=4, lr=0.02, ema_decay=0.9, lr_patience=1, lr_factor=0.5, early_stopping_patience=50,
                    seed=1, dtype="float64", device="cpu", force_weight=10.0, stress_weight=10.0)
    settings.update(training)
    return {
        "data": {"path": str(data_file), "validation_fraction": 0.25, "test_fraction": 0.125, "batch_size": 4},
        "model": {"family": "test-pair", "cutoff": 4.0, "num_basis": 6},
        "training": settings,
        "output": {"directory": str(directory)},
    }


@pytest.fixture(scope="module")
def trained(data_file, tmp_path_factory):
    """One 12-epoch run, shared by the tests that inspect its files."""
    directory = tmp_path_factory.mktemp("run")
    return train(make_config(data_file, directory, epochs=12, lr=0.1), verbose=False, progress=False)


def test_loss_decreases_and_every_file_is_written(trained):
    history = trained.history
    assert [row["epoch"] for row in history] == list(range(1, 13))
    assert history[-1]["val_loss"] < 0.3 * history[0]["val_loss"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert trained.best_validation_loss == min(row["val_loss"] for row in history)
    assert all(math.isfinite(row["val_force_mae_meV_per_A"]) for row in history)
    assert math.isfinite(history[-1]["val_stress_mae_meV_per_A3"])
    assert trained.test_metrics["force_rmse_meV_per_A"] > 0
    names = sorted(p.name for p in trained.directory.iterdir())
    assert names == ["best.pt", "checkpoint.pt", "learning_curve.png", "metrics.csv", "summary.json"]
    rows = trained.directory.joinpath("metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,train_loss,val_loss,val_energy_mae_meV_per_atom")
    assert len(rows) == 13
    assert trained.directory.joinpath("learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(trained.directory.joinpath("summary.json").read_text())
    assert summary["best_epoch"] == trained.best_epoch and summary["n_test"] == 2


def test_data_derived_hyperparameters_are_filled(trained, data_file):
    config = load_checkpoint(trained.checkpoint)["model_config"]
    assert config["species"] == [29]
    assert config["avg_num_neighbors"] > 10  # fcc copper within 4 Å: 12 first + 6 second neighbours
    assert config["scale"] > 0.1 and config["num_basis"] == 6
    dataset = mlmd.data.load_dataset(data_file)
    train_indices = dataset.split(0.25, 0.125, 0).train
    assert config["atomic_energies_ref"] == [dataset.reference_energies(train_indices)[29]]
    assert config["scale"] == pytest.approx(dataset.statistics(4.0, train_indices)["force_rms"], rel=1e-12)


def test_checkpoint_is_complete_and_loads_with_weights_only(trained):
    checkpoint = torch.load(trained.checkpoint, weights_only=True)
    for key in ("model", "ema", "best_ema", "optimizer", "scheduler", "rng", "epoch", "best_metric",
                "bad_epochs", "data_hash", "model_config", "config"):
        assert key in checkpoint
    assert set(checkpoint["rng"]) >= {"torch", "numpy", "python"}
    assert checkpoint["epoch"] == 12
    best = load_checkpoint(trained.best_checkpoint)
    assert best["epoch"] == trained.best_epoch
    for name, value in best["ema"].items():
        assert torch.equal(value, checkpoint["best_ema"][name])


def test_failed_checkpoint_write_keeps_the_old_one(trained, monkeypatch):
    from mlmd.training.checkpoint import save_checkpoint

    before = trained.checkpoint.read_bytes()

    def crash(obj, path):
        Path(path).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        save_checkpoint({"anything": 1}, trained.checkpoint)
    assert trained.checkpoint.read_bytes() == before
    assert not [p for p in trained.directory.iterdir() if "tmp" in p.name]


def test_export_gives_the_ema_energies(trained, tmp_path, data_file):
    path = export_checkpoint(trained.checkpoint, tmp_path / "model.pt")
    model = mlmd.load_model(path)
    assert model.family == "test-pair" and model.species == [29]
    assert model.metadata["training_data_hash"] == load_checkpoint(trained.checkpoint)["data_hash"]
    batch = mlmd.data.load_dataset(data_file).collate([0, 1, 2], dtype=torch.float64)
    args = (batch["positions"], batch["atomic_numbers"], batch["cell"], batch["pbc"], batch["batch"], True, True)
    exported = model(*args)
    expected = trained.ema_model(*args)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(exported[key], expected[key], rtol=1e-12, atol=1e-12)
    # the EMA differs from the raw weights, so the export really took the average
    assert not torch.allclose(trained.model(*args)["energy"], expected["energy"], rtol=0, atol=1e-12)

    # --best through the command line gives the weights kept in best.pt
    assert mlmd_main(["export", str(trained.checkpoint), "-o", str(tmp_path / "best.pt"), "--best"]) == 0
    assert mlmd_main(["export", str(trained.best_checkpoint), "-o", str(tmp_path / "best2.pt")]) == 0
    first, second = mlmd.load_model(tmp_path / "best.pt"), mlmd.load_model(tmp_path / "best2.pt")
    torch.testing.assert_close(first(*args)["energy"], second(*args)["energy"], rtol=0, atol=0)
    assert first.metadata["training"]["epoch"] == trained.best_epoch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "best2.pt", "model.pt"]


def test_resume_is_bitwise_identical(data_file, tmp_path):
    # A large step and no scheduler patience make the validation loss bounce in epoch 3, so the
    # resumed run must carry the scheduler's and early stopping's memory across the restart.
    settings = dict(lr=1.0, lr_patience=0)
    straight = train(make_config(data_file, tmp_path / "straight", epochs=4, **settings), verbose=False,
                     progress=False)
    train(make_config(data_file, tmp_path / "resumed", epochs=2, **settings), verbose=False, progress=False)
    resumed = train(make_config(data_file, tmp_path / "resumed", epochs=2, **settings), resume=True, epochs=4,
                    verbose=False, progress=False)
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    assert a["epoch"] == b["epoch"] == 4
    for part in ("model", "ema", "best_ema"):
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), (part, name)
    for state_a, state_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for name in state_a:
            assert torch.equal(torch.as_tensor(state_a[name]), torch.as_tensor(state_b[name]))
    assert a["scheduler"] == b["scheduler"]
    assert [r["val_loss"] for r in a["history"]] == [r["val_loss"] for r in b["history"]]
    assert len({r["lr"] for r in a["history"]}) > 1, "the scheduler should have acted, so its state was tested"
    assert a["bad_epochs"] == b["bad_epochs"] > 0
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert sorted(p.name for p in resumed.directory.iterdir()) == sorted(p.name for p in straight.directory.iterdir())


def test_resume_and_overwrite_guards(data_file, tmp_path):
    config = make_config(data_file, tmp_path / "run", epochs=1)
    with pytest.raises(MLMDError, match="no .*checkpoint.pt to resume"):
        train(config, resume=True, verbose=False, progress=False)
    train(config, verbose=False, progress=False)
    with pytest.raises(MLMDError, match="already exists; pass --resume"):
        train(config, verbose=False, progress=False)
    config["model"]["num_basis"] = 7
    with pytest.raises(MLMDError, match="model.num_basis is 7 but"):
        train(config, resume=True, epochs=2, verbose=False, progress=False)


def test_bad_model_hyperparameter_is_named(data_file, tmp_path):
    config = make_config(data_file, tmp_path / "run")
    config["model"]["num_basiss"] = 3
    with pytest.raises(MLMDError, match=r"model.num_basiss is not a hyperparameter .*did you mean 'num_basis'"):
        train(config, verbose=False, progress=False)
    assert not (tmp_path / "run").exists()


def test_divergence_stops_with_the_last_good_checkpoint(data_file, tmp_path, monkeypatch):
    from mlmd.training.objectives import potential

    original, calls = potential.batch_loss, []

    def poisoned(*args):
        calls.append(1)
        loss = original(*args)
        return loss * float("nan") if len(calls) > 3 else loss  # epoch 1 has 3 batches

    monkeypatch.setattr(potential, "batch_loss", poisoned)
    config = make_config(data_file, tmp_path / "run", epochs=3)
    with pytest.raises(MLMDError, match="diverged in epoch 2.*last good state is .*checkpoint.pt"):
        train(config, verbose=False, progress=False)
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(value).all() for value in checkpoint["model"].values())


def test_molecules_and_crystals_in_one_batch(tmp_path):
    """Frames without a cell (no stress label) beside periodic ones with stress: finite loss, stress metric."""
    rng = np.random.default_rng(1)
    images = []
    for index in range(8):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        if index % 2 == 0:
            atoms.pbc, atoms.cell = False, [0, 0, 0]
        atoms.calc = EMT()
        atoms.get_potential_energy(), atoms.get_forces()
        if atoms.pbc.all():
            atoms.get_stress()
        images.append(atoms)
    write(tmp_path / "mixed.xyz", images, format="extxyz")
    config = make_config(tmp_path / "mixed.xyz", tmp_path / "run", epochs=2)
    config["data"].update(validation_fraction=0.5, test_fraction=0.0, batch_size=8)
    result = train(config, verbose=False, progress=False)
    assert all(math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"]) for row in result.history)
    assert math.isfinite(result.history[-1]["val_stress_mae_meV_per_A3"])
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["data"].update(path="missing.xyz"), "data.path"),
        (lambda c: c["data"].pop("path"), "data.path is missing"),
        (lambda c: c["model"].update(family="no-such-family"), "unknown model family 'no-such-family'"),
        (lambda c: c["training"].update(lr=-0.01), "training.lr must be > 0, got -0.01"),
        (lambda c: c["training"].update(learning_rate=0.01), "unknown key training.learning_rate"),
        (lambda c: c["training"].update(dtype="float16"), "training.dtype must be one of"),
        (lambda c: c["data"].update(validation_fraction=0.6, test_fraction=0.5), "must be below 1"),
    ],
)
def test_bad_config_gives_one_line_and_status_2(data_file, tmp_path, mlmd_cli, change, message):
    config = make_config(data_file, tmp_path / "run")
    change(config)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = mlmd_cli("train", path, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_toml_config_with_relative_paths(data_file, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cu.xyz").write_bytes(data_file.read_bytes())
    (tmp_path / "train.toml").write_text(
        '[data]\npath = "data/cu.xyz"\nvalidation_fraction = 0.25\nbatch_size = 8\n'
        '[model]\nfamily = "test-pair"\ncutoff = 4.0\n'
        '[training]\nepochs = 1\ndevice = "cpu"\n'
        '[output]\ndirectory = "out"\nlearning_curve = false\n'
    )
    result = train(tmp_path / "train.toml", verbose=False, progress=False)
    assert result.directory == tmp_path / "out"
    assert (tmp_path / "out" / "checkpoint.pt").is_file()
    assert not (tmp_path / "out" / "learning_curve.png").exists()


DDP_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import test_train  # registers the "test-pair" family in this process
from mlmd.cli import main
sys.exit(main(["train", {config!r}, "--quiet"]))
"""


def test_distributed_data_parallel_under_torchrun(data_file, tmp_path):
    config = make_config(data_file, tmp_path / "ddp", epochs=2)
    config["data"]["batch_size"] = 2
    (tmp_path / "config.json").write_text(json.dumps(config))
    script = tmp_path / "run_train.py"
    script.write_text(DDP_SCRIPT.format(tests=str(TESTS), config=str(tmp_path / "config.json")))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(script)],
        cwd=tmp_path, capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    checkpoint = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    assert checkpoint["epoch"] == 2
    assert len(checkpoint["history"]) == 2 and all(math.isfinite(r["val_loss"]) for r in checkpoint["history"])
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == [
        "best.pt", "checkpoint.pt", "learning_curve.png", "metrics.csv", "summary.json"]


def test_equivariant_family_trains(data_file, tmp_path):
    config = make_config(data_file, tmp_path / "equivariant", epochs=2, lr=0.005)
    config["model"] = {"family": "equivariant", "cutoff": 4.0, "channels": 8, "lmax": 1, "num_layers": 1,
                       "num_basis": 4}
    result = train(config, verbose=False, progress=False)
    assert result.epoch == 2 and all(math.isfinite(r["val_loss"]) for r in result.history)
    model = mlmd.load_model(export_checkpoint(result.checkpoint, tmp_path / "model.pt"))
    assert model.family == "equivariant"


def test_wall_clock_budget_stops_after_the_epoch_that_spends_it(data_file, tmp_path):
    result = train(make_config(data_file, tmp_path / "budget", epochs=5, max_time_min=1e-6), verbose=False,
                   progress=False)
    assert result.epoch == 1 and not result.stopped_early
    resumed = train(make_config(data_file, tmp_path / "budget", epochs=5, max_time_min=1e-6), resume=True,
                    verbose=False, progress=False)
    assert resumed.epoch == 2


def test_quiet_command_prints_why_training_stopped(data_file, tmp_path, capsys):
    """The summary line names the stop reason even with --quiet: the budget, then the configured epochs."""
    from mlmd.cli import main

    config = make_config(data_file, tmp_path / "reason", epochs=2, max_time_min=1e-6)
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert main(["train", str(tmp_path / "config.json"), "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == ["training stopped after epoch 1 (budget reached); best epoch 1"]
    config["training"]["max_time_min"] = None
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert main(["train", str(tmp_path / "config.json"), "--resume", "--quiet"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("training stopped after epoch 2 (epochs done)")
    assert json.loads((tmp_path / "reason" / "summary.json").read_text())["stop_reason"] == "epochs done"


def test_budget_is_kept_within_a_batch(data_file, tmp_path, monkeypatch):
    """A fake clock that moves 10 s per reading: with a 30 s budget the first epoch (10 batches of one frame)
    ends after the batch that spends it, not at the end of the epoch."""
    from mlmd.training.trainer import Trainer

    readings = []

    def clock():
        readings.append(None)
        return 10.0 * len(readings)

    monkeypatch.setattr(Trainer, "clock", staticmethod(clock))
    config = make_config(data_file, tmp_path / "batch-budget", epochs=5, max_time_min=0.5)
    config["data"]["batch_size"] = 1
    result = train(config, verbose=False, progress=False)
    assert result.epoch == 1 and result.stop_reason == "budget reached"
    # one reading at the start, one after each of the 4 batches (the 4th finds 40 s > 30 s), one at the epoch's end
    assert len(readings) == 6


def test_cpu_budget_reads_the_process_cpu_clock_not_the_wall_clock(data_file, tmp_path, monkeypatch):
    """With budget_clock = "cpu" a wall clock racing ahead (a loaded machine) does not stop training; the
    CPU clock does, within a batch, as the wall clock would."""
    from mlmd.training.trainer import Trainer

    cpu_readings = []

    def cpu_clock():
        cpu_readings.append(None)
        return 10.0 * len(cpu_readings)

    monkeypatch.setattr(Trainer, "clock", staticmethod(lambda: 1e9 * len(cpu_readings)))
    monkeypatch.setattr(Trainer, "cpu_clock", staticmethod(cpu_clock))
    config = make_config(data_file, tmp_path / "cpu-budget", epochs=5, max_time_min=0.5)
    config["data"]["batch_size"] = 1
    config["training"]["budget_clock"] = "cpu"
    result = train(config, verbose=False, progress=False)
    assert result.epoch == 1 and result.stop_reason == "budget reached"
    assert len(cpu_readings) == 6
    config["training"]["budget_clock"] = "process"
    with pytest.raises(MLMDError, match="budget_clock"):
        train(config, verbose=False, progress=False)

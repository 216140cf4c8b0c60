"""The training package's seams: the config reference in `pydoc mlmd.train`, and the family-to-trainer
hooks of potentials.base.TrainableFamily (objective and strategy declarations, config()/from_config)."""

import pydoc

import pytest

from mlmd.errors import MLMDError
from mlmd.train import STRATEGIES, objective_class, train
from potentials import FAMILIES
from potentials.base import TrainableFamily, training_hooks
from reference_potentials import LennardJonesPotential
from test_train import PairPotential, data_file, make_config  # noqa: F401  (data_file is a fixture)


def test_pydoc_of_mlmd_train_lists_every_config_key():
    text = pydoc.render_doc("mlmd.train", renderer=pydoc.plaintext)
    for family in ("test-pair", "forecaster"):
        for section, keys in objective_class(family).schema().items():
            assert f"[{section}]" in text
            for key in keys:
                assert f"{key} =" in text, f"{section}.{key} is not documented"


def test_builtin_families_declare_their_objective_and_strategy():
    assert training_hooks(FAMILIES["spline"]).strategy == "closed_form"
    assert training_hooks(FAMILIES["forecaster"]).objective == "trajectory"
    assert training_hooks(PairPotential) == training_hooks(FAMILIES["equivariant"])
    assert (training_hooks(PairPotential).objective, training_hooks(PairPotential).strategy) == ("potential",
                                                                                                "gradient")
    assert all(issubclass(cls, TrainableFamily) for cls in FAMILIES.values())


class Counting:
    """A strategy that fits nothing and records the epochs it was asked for."""

    calls = []

    @staticmethod
    def epochs(configured):
        return min(configured, 2)

    @staticmethod
    def train_epoch(trainer, epoch):
        Counting.calls.append(epoch)
        return 1.0


class DeclaresCounting(PairPotential):
    training_strategy = "test-counting"


class DeclaresUnknown(PairPotential):
    training_strategy = "no-such-strategy"


def test_the_trainer_runs_the_strategy_a_family_declares(data_file, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setitem(STRATEGIES, "test-counting", Counting)
    monkeypatch.setitem(FAMILIES, "test-counting", DeclaresCounting)
    monkeypatch.setattr(Counting, "calls", [])
    config = make_config(data_file, tmp_path / "run", epochs=5)
    config["model"]["family"] = "test-counting"
    result = train(config, verbose=False, progress=False)
    assert Counting.calls == [1, 2] and result.epoch == 2 and len(result.history) == 2


def test_unknown_strategy_and_untrainable_family_are_named(data_file, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setitem(FAMILIES, "test-unknown", DeclaresUnknown)
    monkeypatch.setitem(FAMILIES, "test-lj", LennardJonesPotential)
    config = make_config(data_file, tmp_path / "unknown")
    config["model"]["family"] = "test-unknown"
    with pytest.raises(MLMDError, match="training strategy 'no-such-strategy', which is not registered"):
        train(config, verbose=False, progress=False)
    assert not (tmp_path / "unknown").exists()
    config = make_config(data_file, tmp_path / "lj")
    config["model"] = {"family": "test-lj", "cutoff": 4.0}
    with pytest.raises(MLMDError, match="'test-lj' cannot be trained: it defines no config"):
        train(config, verbose=False, progress=False)
    assert not (tmp_path / "lj").exists()

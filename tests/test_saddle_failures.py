"""Failed evaluations (an SCF that does not converge) are handled the same way by every method; device arguments."""

import numpy as np
import pytest
from ase.calculators.calculator import CalculationFailed
from ase.io import write

from mlmd.cli import main
from mlmd.errors import MLMDError
from mlmd.saddle import search
from mlmd.saddle.methods import METHODS as SADDLE_METHODS
from mlmd.saddle.surfaces import MB_SADDLES, MullerBrown, leps_atoms, muller_brown_atoms

MB_MODE = np.array([[1.0, -1.0, 0.0]])
METHODS = sorted(SADDLE_METHODS)  # every registered method


class Intermittent(MullerBrown):
    """Müller-Brown whose every ``period``-th evaluation fails, as a flaky SCF would."""

    def __init__(self, period=5, **kwargs):
        super().__init__(**kwargs)
        self.period = period
        self.evaluations = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        self.evaluations += 1
        if self.evaluations % self.period == 0:
            raise CalculationFailed("SCF not converged")
        super().calculate(atoms, properties, system_changes)


class Walled(MullerBrown):
    """Müller-Brown that fails everywhere more than ``radius_A`` from ``centre`` (x, y)."""

    def __init__(self, centre, radius_A, **kwargs):
        super().__init__(**kwargs)
        self.centre, self.radius_A = np.asarray(centre), radius_A

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        if np.linalg.norm(atoms.positions[0, :2] - self.centre) > self.radius_A:
            raise CalculationFailed("SCF not converged")
        super().calculate(atoms, properties, system_changes)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_recovers_from_intermittent_failures(method):
    result = search(muller_brown_atoms(-0.7, 0.9), calculator=Intermittent(), method=method, mode=MB_MODE,
                    max_calls=150)
    failed = sum(h["kind"] == "failed" for h in result.history)
    assert failed >= 2
    assert result.status == "verified", result.message
    assert np.linalg.norm(result.atoms.positions[0, :2] - MB_SADDLES[0]) < 3e-3


@pytest.mark.parametrize("method", METHODS)
def test_every_method_stops_after_failures_in_a_row_and_says_why(method):
    """The potential fails everywhere but at the start: each method ends with the same reason."""
    result = search(muller_brown_atoms(-0.7, 0.9), calculator=Walled((-0.7, 0.9), 0.005), method=method,
                    mode=MB_MODE, max_calls=150, max_failures=3)
    assert not result.converged and result.status == "not-converged"
    kinds = [h["kind"] for h in result.history]
    assert kinds[-3:] == ["failed"] * 3
    assert "failed 3 times in a row" in result.message
    assert f"after {len(kinds)} of 150 force calls" in result.message
    assert np.linalg.norm(result.atoms.positions[0, :2] - [-0.7, 0.9]) <= 0.005  # a point it could evaluate


@pytest.mark.parametrize("method", METHODS)
def test_a_wall_before_the_saddle_ends_within_the_budget_naming_the_failures(method):
    """The saddle lies beyond the region the potential can evaluate: no method claims it, each says why."""
    result = search(muller_brown_atoms(-0.7, 0.9), calculator=Walled((-0.7, 0.9), 0.1), method=method,
                    mode=MB_MODE, max_calls=60)
    assert not result.converged
    failed = sum(h["kind"] == "failed" for h in result.history)
    assert failed >= 1 and (f"({failed} evaluations failed)" in result.message or "in a row" in result.message)
    assert np.linalg.norm(result.atoms.positions[0, :2] - [-0.7, 0.9]) <= 0.1


def test_the_budget_message_names_the_real_budget():
    result = search(muller_brown_atoms(-0.3, 0.6), method="dimer", mode=MB_MODE, fmax=1e-6, max_calls=9)
    assert f"the budget is spent after {result.force_calls} of 9 force calls" in result.message


def test_a_potential_that_fails_at_the_start_is_one_clear_error():
    with pytest.raises(MLMDError, match="at the start"):
        search(muller_brown_atoms(-0.7, 0.9), calculator=Walled((5.0, 5.0), 0.1), method="dimer", mode=MB_MODE)


def test_cli_and_api_share_the_default_budget(capsys):
    from mlmd.saddle.settings import SaddleSettings

    with pytest.raises(SystemExit):
        main(["saddle", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default {SaddleSettings().max_calls};" in text
    import inspect

    assert inspect.signature(search).parameters["max_calls"].default == SaddleSettings().max_calls


# --- devices ------------------------------------------------------------------

def test_bad_devices_end_in_one_line(tmp_path, capsys):
    import torch

    write(tmp_path / "h3.xyz", leps_atoms(1.0, 1.0))
    bad = ["bogus", "mps"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in bad:
        code = main(["saddle", str(tmp_path / "h3.xyz"), "--calculator", "emt", "--device", device])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "--device" in err, (device, err)
        with pytest.raises(MLMDError, match="device"):
            search(leps_atoms(), calculator="emt", device=device)


def test_auto_device_puts_the_model_where_the_gp_goes(monkeypatch):
    """With CUDA reported available, 'auto' gives the model and the GP the same device, 'cuda'."""
    import torch

    import importlib

    search_module = importlib.import_module("mlmd.saddle.search")
    from mlmd.saddle.gp_dimer import resolve_torch_device

    seen = {}

    class Stop(Exception):
        pass

    def fake_calculator(calculator, model, device, atoms):
        seen["model"] = device
        raise Stop

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(search_module, "resolve_calculator", fake_calculator)
    with pytest.raises(Stop):
        search_module.search(leps_atoms(), model="unused.pt", device="auto")
    assert seen["model"] == resolve_torch_device("auto") == "cuda"

"""Saddle settings validation, the method registry and the trust-region rule."""

import numpy as np
import pytest
from ase.io import write

from mlmd.cli import main
from mlmd.saddle import METHODS, SaddleSettings, SettingsError, register_method, search
from mlmd.saddle.methods import MethodOutcome
from mlmd.saddle.surfaces import leps_atoms, muller_brown_atoms
from mlmd.saddle.trust_region import TrustRegion


@pytest.mark.parametrize("changes, words", [
    ({"method": "neb"}, "unknown method"),
    ({"mode": "sideways"}, "unknown mode"),
    ({"mode": "displacement"}, "displace_A > 0"),
    ({"fmax": 0.0}, "fmax must be positive"),
    ({"max_calls": 2}, "max_calls at least 3"),
    ({"separation_A": -0.01}, "separation_A"),
    ({"max_step_A": 0.0}, "max_step_A"),
    ({"trust_radius_A": 3.0}, "trust_radius_A 3.0 <= trust_max_A 2.0"),
    ({"prune_size": 0}, "prune_size"),
    ({"initial_rotations": -1}, "initial_rotations"),
    ({"min_negative_curvature": float("nan")}, "min_negative_curvature"),
])
def test_bad_settings_name_the_setting(changes, words):
    assert SaddleSettings().validate() is not None
    with pytest.raises(SettingsError, match=words.replace("(", r"\(").replace(")", r"\)")):
        SaddleSettings(**changes).validate()
    with pytest.raises(SettingsError):  # the facade validates the same way, before any force call
        search(leps_atoms(), **changes)


def test_cli_reports_a_bad_setting_on_one_line(tmp_path, capsys):
    write(tmp_path / "h3.xyz", leps_atoms(1.0, 1.0))
    code = main(["saddle", str(tmp_path / "h3.xyz"), "--calculator", "emt", "--max-step", "-1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "max-step" in err


def test_a_registered_method_is_run_by_search():
    seen = {}

    @register_method("test-stay", default_max_step_A=0.05)
    def stay(start, surface, settings, say):
        seen["max_step_A"] = settings.max_step_A
        energy, gradient = surface(start.x0)
        return MethodOutcome(x=start.x0, mode=start.mode, converged=False, curvature=float("nan"), iterations=0,
                             energy=energy, fmax=float(np.abs(gradient).max()))

    try:
        result = search(muller_brown_atoms(-0.7, 0.9), method="test-stay", mode=np.array([[1.0, 0, 0]]))
        with pytest.raises(ValueError, match="already registered"):
            register_method("test-stay", default_max_step_A=0.1)(stay)
    finally:
        del METHODS["test-stay"]
    assert seen["max_step_A"] == 0.05  # the method's own default fills the unset setting
    assert result.force_calls == 1 and not result.converged and result.method == "test-stay"
    np.testing.assert_allclose(result.atoms.positions[0], [-0.7, 0.9, 0.0])


def _line_region(limit=0.3, min_limit=0.1, max_limit=1.0, failure_min_limit=0.0):
    """A 1-D region whose single observation is at 0: d(x) = |x| (Å)."""
    return TrustRegion(lambda x: float(abs(np.asarray(x).ravel()[0])), limit, min_limit, max_limit,
                       failure_min_limit, unit="Å")


def test_trust_region_pulls_a_long_step_back_to_two_thirds_of_the_limit():
    region = _line_region()
    x, stop = region.accept(np.array([0.0]), np.array([0.25]))
    assert x[0] == 0.25 and not stop
    x, stop = region.accept(np.array([0.0]), np.array([1.0]))
    assert stop and x[0] == pytest.approx(0.2, abs=1e-6)
    x, stop = region.accept(np.array([0.25]), np.array([1.0]))  # already beyond 2/3 of the limit: stay
    assert stop and x[0] == 0.25


def test_trust_region_limit_follows_the_prediction_error():
    region = _line_region()
    region.update(predicted_eV=-1.0, observed_eV=-1.01, previous_eV=-0.5)  # error 0.01 < change 0.5 / 4
    assert region.limit == pytest.approx(0.45)
    for _ in range(5):
        region.update(predicted_eV=-1.0, observed_eV=-1.0, previous_eV=-0.5)
    assert region.limit == 1.0  # at most max_limit
    region.update(predicted_eV=-1.0, observed_eV=-1.3, previous_eV=-0.9)  # error 0.3 > change 0.1: halve
    assert region.limit == 0.5
    region.update(predicted_eV=-1.0, observed_eV=-1.05, previous_eV=-0.9)  # in between: unchanged
    assert region.limit == 0.5
    for _ in range(5):
        region.update(predicted_eV=-1.0, observed_eV=-2.0, previous_eV=-1.0)
    assert region.limit == 0.1  # at least min_limit
    region.on_failure()
    assert region.limit == 0.05  # a failure may go below min_limit, down to failure_min_limit
    floored = _line_region(limit=0.15, failure_min_limit=0.1)
    floored.on_failure()
    assert floored.limit == 0.1
    assert region.describe() == "trust 0.05 Å"

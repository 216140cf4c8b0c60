"""The thermostat check of ``mlmd forecast``: a forecaster that loses kinetic energy at every call is stopped
although no single value looks wrong; an exact propagator under the same thermostat runs to the end."""

import numpy as np
import pytest
import torch
from ase import Atoms

from mlmd.forecast import ForecastUnstableError, run
from mlmd.dynamics.guards import ThermostatCheck
from reference_forecasters import HarmonicForecaster

N_ATOMS, INTERVAL_FS, TAU_FS, TARGET_K = 27, 10.0, 100.0, 300.0


def lattice():
    grid = np.array([[i, j, k] for i in range(3) for j in range(3) for k in range(3)], dtype=float) * 3.0
    return Atoms(f"Ar{N_ATOMS}", positions=grid)


class DampedForecaster(HarmonicForecaster):
    """The exact harmonic propagator with new velocities scaled by ``damping``: a deterministic forecaster that
    keeps only the conditional mean of the velocities loses their variance, as a mean-squared-error fit does."""

    def __init__(self, *args, damping: float):
        super().__init__(*args)
        self.damping = damping

    def forward(self, positions, atomic_numbers, cell, pbc, batch, velocities):
        out = super().forward(positions, atomic_numbers, cell, pbc, batch, velocities)
        return {"displacement": out["displacement"], "velocities": self.damping * out["velocities"]}


def oscillators(damping=None):
    atoms = lattice()
    omega = torch.linspace(0.02, 0.06, N_ATOMS, dtype=torch.float64)  # periods of 100-300 fs
    arguments = (torch.tensor(atoms.positions), omega, INTERVAL_FS, [18])
    return atoms, HarmonicForecaster(*arguments) if damping is None else DampedForecaster(*arguments, damping=damping)


def test_a_forecaster_that_cools_is_stopped(tmp_path):
    atoms, forecaster = oscillators(damping=0.9)
    with pytest.raises(ForecastUnstableError, match="mean temperature|below the canonical bound") as caught:
        run(atoms, forecaster, steps=3000, temperature_K=TARGET_K, tau_fs=TAU_FS, replicas=4, seed=2,
            log=tmp_path / "f.csv", restart_file=tmp_path / "f.restart")
    assert "the thermostat cannot hold it" in str(caught.value) or "loses kinetic energy" in str(caught.value)
    # without the check the same run ends normally, far below the target: the failure it catches is silent
    cold = run(atoms, forecaster, steps=1500, temperature_K=TARGET_K, tau_fs=TAU_FS, replicas=4, seed=2,
               temperature_drift_K=0)
    assert cold.log[len(cold.log) // 2:, 3].mean() < 0.8 * TARGET_K


def test_an_exact_propagator_under_csvr_runs_to_the_end():
    atoms, forecaster = oscillators()
    result = run(atoms, forecaster, steps=3000, temperature_K=TARGET_K, tau_fs=TAU_FS, replicas=4, seed=3)
    assert result.step == 3000
    # equipartition, the independent reference: the mean temperature is the target
    assert result.log[300:, 3].mean() == pytest.approx(TARGET_K, rel=0.05)


def test_default_tolerance_follows_the_statistics():
    """Five standard errors of a W-check mean of a canonical temperature, W = 10 correlation times, >= 5 % T."""
    small = ThermostatCheck.for_run(300.0, 9, correlation_checks=10)
    large = ThermostatCheck.for_run(300.0, 10000, correlation_checks=10)
    assert small.window == large.window == 100
    assert small.tolerance_K == pytest.approx(5 * 300 * np.sqrt(2 / 27) * np.sqrt(0.2))
    assert large.tolerance_K == pytest.approx(0.05 * 300)
    assert ThermostatCheck.for_run(0.0, 10, 10) is None

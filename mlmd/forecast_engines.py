"""Kept for one release: the forecaster's ASE dynamics moved to :mod:`mlmd.ase.forecast`, its OpenMM
driver to :mod:`mlmd.openmm.forecast`."""

from .ase.forecast import ForecastDynamics
from .openmm.forecast import OpenMMForecastDriver, forecast_integrator

__all__ = ["ForecastDynamics", "OpenMMForecastDriver", "forecast_integrator"]

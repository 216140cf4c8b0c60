"""mlmd in ASE: the calculator, mlmd's integrators as ASE dynamics, and the plugin entry point.

- :mod:`mlmd.ase.calculator`: :class:`MLMDCalculator`, any exported model as an
  ASE calculator, registered with ASE under the name ``mlmd``;
- :mod:`mlmd.ase.dynamics`: :class:`BAOAB`, :class:`OBABO`, :class:`GJF`,
  :class:`CSVR` and :class:`VelocityVerlet` as ASE ``MolecularDynamics``
  classes for any calculator, keeping their forces between steps;
- :mod:`mlmd.ase.forecast`: :class:`ForecastDynamics`, a trajectory forecaster as ASE dynamics;
- :mod:`mlmd.ase.lookup`: ``ase.calculators.mlmd`` served on demand, so that ASE's
  ``get_calculator_class("mlmd")`` works in a fresh process;
- :mod:`mlmd.ase.plugin`: the ``ase.plugins`` entry point (what ASE can find
  by name, and how, is explained there).

The dynamics classes import torch, so they load on first use and
``import mlmd`` stays fast.
"""

from importlib import import_module

from .calculator import MLMDCalculator

# Names loaded from their module on first access: name -> module (relative to this package).
_LAZY = {
    "BAOAB": ".dynamics", "OBABO": ".dynamics", "GJF": ".dynamics", "CSVR": ".dynamics",
    "VelocityVerlet": ".dynamics", "IntegratorDynamics": ".dynamics",
    "ForecastDynamics": ".forecast",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BAOAB", "CSVR", "ForecastDynamics", "GJF", "IntegratorDynamics", "MLMDCalculator", "OBABO", "VelocityVerlet"]

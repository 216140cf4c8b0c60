"""Saddle-point searches: GP-dimer, OT-GP-dimer, the classical dimer, P-RFO and GP-P-RFO (``mlmd.saddle.search``).

Layout: ``settings`` (:class:`SaddleSettings`, validated in one place),
``search`` (the :func:`search` facade and :class:`SaddleResult`), ``methods``
(the :data:`METHODS` registry), ``gp_dimer`` (the GP-dimer iteration),
``optimizer`` (the GP-dimer as an ASE optimizer, :class:`GPDimerOptimizer`),
``trust_region``, ``gp`` and ``kernel`` (the Gaussian process and its
kernel), ``distance`` (optimal-transport distance, pruning), ``dimer`` (the
classical dimer), ``prfo`` and ``gp_prfo`` (partitioned rational-function
optimisation on the true surface and on the GP), ``internal`` (redundant
internal coordinates), ``verify`` and ``curvature`` (the checks before a
saddle is called one), ``start`` and ``true_surface`` (what a search starts from
and evaluates), ``relax``, ``report``, ``batch``, ``cli``, ``surfaces`` (model
surfaces for tests).
"""

from .methods import METHODS, register_method
from .search import SaddleResult, search, search_with_settings
from .settings import SaddleSettings, SettingsError


def __getattr__(name):
    if name == "GPDimerOptimizer":  # imports ASE's optimizer machinery on first use
        from .optimizer import GPDimerOptimizer

        return GPDimerOptimizer
    raise AttributeError(f"module 'mlmd.saddle' has no attribute {name!r}")


__all__ = ["GPDimerOptimizer", "METHODS", "SaddleResult", "SaddleSettings", "SettingsError", "register_method",
           "search", "search_with_settings"]

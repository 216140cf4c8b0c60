"""Old home of the ASE calculator, kept for one release: use :mod:`mlmd.ase` (``mlmd.ase.calculator``)."""

from .ase.calculator import MLMDCalculator

__all__ = ["MLMDCalculator"]

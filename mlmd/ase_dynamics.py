"""Old home of mlmd's integrators as ASE dynamics, kept for one release: use :mod:`mlmd.ase`
(``mlmd.ase.dynamics``)."""

from .ase.dynamics import BAOAB, CSVR, GJF, OBABO, IntegratorDynamics, VelocityVerlet

__all__ = ["BAOAB", "CSVR", "GJF", "IntegratorDynamics", "OBABO", "VelocityVerlet"]

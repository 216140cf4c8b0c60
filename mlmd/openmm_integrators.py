"""Old home of the OpenMM integrators, kept for one release: use :mod:`mlmd.openmm`
(``mlmd.openmm.integrators``)."""

from .openmm.integrators import *  # noqa: F401,F403
from .openmm.integrators import __all__  # noqa: F401

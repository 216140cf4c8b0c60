"""mlmd in OpenMM: any exported model as an OpenMM force, Systems around it, and integrators.

- :mod:`mlmd.openmm.force`: :func:`create_force` with the backends of
  :data:`FORCE_BACKENDS` (``"torch"``: openmm-torch ``TorchForce`` over
  :class:`TorchForceModule`; ``"python"``: ``openmm.PythonForce`` over
  :class:`PythonForceComputation`; the default ``"auto"`` takes TorchForce
  where the ``torchforce`` extra works with this torch), extended with :func:`register_backend`;
- :mod:`mlmd.openmm.system`: :func:`create_system` (pure ML),
  :func:`create_mixed_system` (ML/MM, mechanical embedding) and
  :func:`topology_from_atoms` (ASE Atoms -> Topology and positions);
- :mod:`mlmd.openmm.integrators`: BAOAB and GJF as ``CustomIntegrator``s and
  :data:`OPENMM_INTEGRATORS`, the integrators by name;
- :mod:`mlmd.openmm.engine`: the ``openmm`` engine of ``mlmd md`` (registered with
  :mod:`mlmd.dynamics.engine`, loaded when asked for);
- :mod:`mlmd.openmm.forecast`: :class:`OpenMMForecastDriver`, a forecaster advancing a ``Simulation``;
- :mod:`mlmd.openmm.plugins`: loading openmm-torch and its OpenMM plugins;
- :mod:`mlmd.openmm.openmmml`: the ``mlmd`` potential of OpenMM-ML (``MLPotential("mlmd", modelPath=...)``).

Units are converted in these modules and nowhere else: mlmd's eV, Å, fs and K
inside, OpenMM's kJ/mol, nm and ps at the boundary.
"""

import torch  # noqa: F401  (before openmm: openmm-torch's plugins link torch's libraries)

from .force import FORCE_BACKENDS, PythonForceComputation, TorchForceModule, create_force, register_backend
from .integrators import (
    OPENMM_INTEGRATORS,
    baoab_integrator,
    gjf_integrator,
    kt_kj_per_mol,
    langevin_middle_integrator,
    verlet_integrator,
)
from .plugins import import_openmmtorch
from .system import create_mixed_system, create_system, topology_from_atoms

from .forecast import OpenMMForecastDriver, forecast_integrator

#: The backend names (the registry itself), kept under its old name for one release.
BACKENDS = FORCE_BACKENDS

__all__ = ["BACKENDS", "FORCE_BACKENDS", "OPENMM_INTEGRATORS", "OpenMMForecastDriver", "PythonForceComputation", "TorchForceModule",
           "baoab_integrator", "create_force", "create_mixed_system", "create_system", "forecast_integrator", "gjf_integrator",
           "import_openmmtorch", "kt_kj_per_mol", "langevin_middle_integrator", "register_backend",
           "topology_from_atoms", "verlet_integrator"]

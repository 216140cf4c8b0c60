"""Old home of the OpenMM integrators, kept for one release: use :mod:`mlmd.openmm`
(``mlmd.openmm.integrators``)."""

from .openmm.integrators import (
    OPENMM_INTEGRATORS,
    baoab_integrator,
    gjf_integrator,
    kt_kj_per_mol,
    langevin_middle_integrator,
    verlet_integrator,
)

__all__ = ["OPENMM_INTEGRATORS", "baoab_integrator", "gjf_integrator", "kt_kj_per_mol",
           "langevin_middle_integrator", "verlet_integrator"]

"""Langevin BAOAB and Grønbech-Jensen–Farago (GJF) as OpenMM ``CustomIntegrator`` builders.

Arguments are in mlmd's units (temperature K, friction 1/ps, time step fs)
and are converted here, at the OpenMM boundary, with :mod:`mlmd.constants`
(``kT`` in kJ/mol, ``dt`` in ps). With friction γ, step h, ``c = exp(-γ h)``
and OpenMM's per-degree-of-freedom ``x, v, f, m``:

BAOAB (Leimkuhler & Matthews), the same splitting as :mod:`integrators.langevin`::

    B  v ← v + (h/2) f/m
    A  x ← x + (h/2) v
    O  v ← c v + sqrt((1 - c²) kT/m) ξ
    A  x ← x + (h/2) v
    B  v ← v + (h/2) f'/m

GJF (Grønbech-Jensen & Farago 2013), with ``b = 1/(1 + γh/2)``,
``a = (1 - γh/2) b`` and ``β = sqrt(2 γ kT h / m) ξ``::

    x' = x + b h v + b h²/(2m) f + (b h/2) β
    v' = a v + (h/2m)(a f + f') + b β

Both sample the configurational distribution of a harmonic system exactly at
any stable step. Constraints are handled as OpenMM's own Langevin integrators
do: positions are projected after each drift and the velocity is corrected by
the projection's displacement over the drift's duration, then projected.
Particles of zero mass (fixed atoms) are not moved. ``kT`` (kJ/mol) and
``gamma`` (1/ps) are global variables that can be changed on a live
integrator with ``setGlobalVariableByName``.

OpenMM treats a random-number seed of 0 as "pick one at random"; pass a
non-zero ``seed`` for reproducible runs.
"""

from typing import Callable, Dict

import openmm

from ..constants import EV_KJ_PER_MOL, FS_PS, KB_EV_PER_K
from ..errors import MLMDError


def _check(temperature_K: float, friction_per_ps: float, timestep_fs: float) -> None:
    if not timestep_fs > 0:
        raise MLMDError(f"the time step must be positive, got {timestep_fs} fs")
    if not temperature_K >= 0:
        raise MLMDError(f"the temperature must be zero or positive, got {temperature_K} K")
    if not friction_per_ps >= 0:
        raise MLMDError(f"the friction must be zero or positive, got {friction_per_ps} 1/ps")


def kt_kj_per_mol(temperature_K: float) -> float:
    """k_B T in kJ/mol."""
    return KB_EV_PER_K * EV_KJ_PER_MOL * float(temperature_K)


def _custom(temperature_K: float, friction_per_ps: float, timestep_fs: float, seed: int) -> openmm.CustomIntegrator:
    _check(temperature_K, friction_per_ps, timestep_fs)
    integrator = openmm.CustomIntegrator(timestep_fs * FS_PS)
    integrator.addGlobalVariable("kT", kt_kj_per_mol(temperature_K))
    integrator.addGlobalVariable("gamma", float(friction_per_ps))
    integrator.addPerDofVariable("x1", 0.0)
    integrator.setRandomNumberSeed(int(seed))
    return integrator


def _drift(integrator: openmm.CustomIntegrator, fraction: str) -> None:
    """x ← x + fraction·h·v, then project onto the constraints and correct v by the projection."""
    integrator.addComputePerDof("x", f"x + {fraction}*dt*v")
    integrator.addComputePerDof("x1", "x")
    integrator.addConstrainPositions()
    integrator.addComputePerDof("v", f"v + (x - x1)/({fraction}*dt)")
    integrator.addConstrainVelocities()


def baoab_integrator(temperature_K: float, friction_per_ps: float, timestep_fs: float,
                     seed: int = 0) -> openmm.CustomIntegrator:
    """Langevin BAOAB at ``temperature_K`` with friction ``friction_per_ps`` and step ``timestep_fs``."""
    integrator = _custom(temperature_K, friction_per_ps, timestep_fs, seed)
    integrator.addGlobalVariable("c", 0.0)
    integrator.addUpdateContextState()
    integrator.addComputeGlobal("c", "exp(-gamma*dt)")
    integrator.addComputePerDof("v", "v + 0.5*dt*f/m")
    integrator.addConstrainVelocities()
    _drift(integrator, "0.5")
    integrator.addComputePerDof("v", "c*v + sqrt((1 - c*c)*kT/m)*gaussian")
    integrator.addConstrainVelocities()
    _drift(integrator, "0.5")
    integrator.addComputePerDof("v", "v + 0.5*dt*f/m")
    integrator.addConstrainVelocities()
    return integrator


def gjf_integrator(temperature_K: float, friction_per_ps: float, timestep_fs: float,
                   seed: int = 0) -> openmm.CustomIntegrator:
    """Grønbech-Jensen–Farago Langevin at ``temperature_K``, ``friction_per_ps``, ``timestep_fs``."""
    integrator = _custom(temperature_K, friction_per_ps, timestep_fs, seed)
    integrator.addGlobalVariable("a", 0.0)
    integrator.addGlobalVariable("b", 0.0)
    integrator.addPerDofVariable("beta", 0.0)
    integrator.addPerDofVariable("fold", 0.0)
    integrator.addUpdateContextState()
    integrator.addComputeGlobal("b", "1/(1 + 0.5*gamma*dt)")
    integrator.addComputeGlobal("a", "(1 - 0.5*gamma*dt)*b")
    integrator.addComputePerDof("beta", "sqrt(2*gamma*kT*dt/m)*gaussian")
    integrator.addComputePerDof("fold", "f")
    integrator.addComputePerDof("x", "x + b*dt*v + 0.5*b*dt*dt*fold/m + 0.5*b*dt*beta")
    integrator.addComputePerDof("x1", "x")
    integrator.addConstrainPositions()
    integrator.addComputePerDof("v", "a*v + 0.5*dt*(a*fold + f)/m + b*beta + (x - x1)/dt")
    integrator.addConstrainVelocities()
    return integrator


def langevin_middle_integrator(temperature_K: float, friction_per_ps: float, timestep_fs: float,
                               seed: int = 0) -> openmm.LangevinMiddleIntegrator:
    """OpenMM's own ``LangevinMiddleIntegrator`` with the same arguments (its velocities are half-step)."""
    _check(temperature_K, friction_per_ps, timestep_fs)
    integrator = openmm.LangevinMiddleIntegrator(float(temperature_K), float(friction_per_ps), timestep_fs * FS_PS)
    integrator.setRandomNumberSeed(int(seed))
    return integrator


def verlet_integrator(temperature_K: float, friction_per_ps: float, timestep_fs: float,
                      seed: int = 0) -> openmm.VerletIntegrator:
    """OpenMM's ``VerletIntegrator`` (NVE; temperature, friction and seed are ignored)."""
    _check(temperature_K, friction_per_ps, timestep_fs)
    return openmm.VerletIntegrator(timestep_fs * FS_PS)


#: Builders by the name ``mlmd md --engine openmm --integrator NAME`` takes.
OPENMM_INTEGRATORS: Dict[str, Callable[..., openmm.Integrator]] = {
    "baoab": baoab_integrator,
    "gjf": gjf_integrator,
    "langevin-middle": langevin_middle_integrator,
    "verlet": verlet_integrator,
}

__all__ = ["OPENMM_INTEGRATORS", "baoab_integrator", "gjf_integrator", "kt_kj_per_mol",
           "langevin_middle_integrator", "verlet_integrator"]

"""mlmd's integrators as ASE ``MolecularDynamics`` classes, for any ASE calculator.

:class:`BAOAB`, :class:`OBABO`, :class:`GJF` (Langevin, ``friction`` γ) and
:class:`CSVR` (Bussi-Donadio-Parrinello velocity rescaling, ``friction`` =
1/τ) take ``(atoms, timestep, temperature_K, friction, seed=0)`` in ASE's
conventions (time step and friction in ASE units, e.g. ``0.5 * units.fs`` and
``0.01 / units.fs``); :class:`VelocityVerlet` is the NVE scheme. Each step
runs the same step function as the batched torch integrators
(``integrators.INTEGRATORS[scheme]``, positions Å, time fs, masses
converted from amu with :data:`mlmd.constants.AMU_A2_PER_FS2_EV`), so ASE
observers, loggers and trajectory writers work unchanged, and a run is
reproducible from its seed (the noise is indexed by the step number).

Forces are kept between steps: the forces at the end of one step are those at
the start of the next, and the calculator is asked again only when the
positions, cell, pbc, atomic numbers or the calculator itself changed since
the forces were computed, or its results were cleared (``calc.reset()``, which
is also what makes ASE itself recompute after a parameter change). Every step
therefore asks the calculator once, for the forces only (the step never needs
the energy; loggers ask for it, and a caching calculator answers from the same
calculation). ``FixAtoms`` constraints are honoured; other constraints are
refused with a clear error.
"""

from typing import Optional

import numpy as np
import torch
from ase import units
from ase.md.md import MolecularDynamics
from torch import Tensor

from integrators import INTEGRATORS
from integrators.state import init_state

from ..checks import fixed_atoms_mask
from ..constants import KB_EV_PER_K
from ..dynamics.system import replicate
from ..errors import MLMDError


class KeptForces:
    """Forces (eV/Å) together with everything they depend on: positions, cell, pbc, numbers, calculator."""

    def __init__(self, atoms, forces: np.ndarray):
        self.positions = atoms.get_positions()
        self.cell = atoms.cell.array.copy()
        self.pbc = atoms.pbc.copy()
        self.numbers = atoms.numbers.copy()
        self.calculator = atoms.calc
        self.forces = forces

    def valid_for(self, atoms) -> bool:
        """Whether ``atoms`` (with its calculator) is still where these forces were computed; a calculator
        whose results were cleared since (``calc.reset()``) invalidates them."""
        return (atoms.calc is self.calculator and bool(getattr(atoms.calc, "results", None))
                and np.array_equal(atoms.positions, self.positions)
                and np.array_equal(atoms.cell.array, self.cell) and np.array_equal(atoms.pbc, self.pbc)
                and np.array_equal(atoms.numbers, self.numbers))


class IntegratorDynamics(MolecularDynamics):
    """Base class: ASE dynamics advanced by ``integrators.INTEGRATORS[self.scheme]``.

    A subclass sets ``scheme`` (and ``thermostatted = False`` when it takes no
    temperature or friction).
    """

    scheme = ""
    thermostatted = True

    def __init__(self, atoms, timestep, temperature_K=None, friction=None, seed=0, **kwargs):
        super().__init__(atoms, timestep, **kwargs)
        if self.scheme not in INTEGRATORS:
            raise MLMDError(f"unknown integrator {self.scheme!r}; known: {', '.join(sorted(INTEGRATORS))}")
        if self.thermostatted and (temperature_K is None or friction is None):
            raise MLMDError(f"{type(self).__name__} needs temperature_K and friction (in 1/ASE time units)")
        self.temperature_K = 0.0 if temperature_K is None else float(temperature_K)
        self.friction = 0.0 if friction is None else float(friction)
        self.seed = int(seed)
        self.fixed = fixed_atoms_mask(atoms, type(self).__name__)
        self.steps_taken = 0
        self.kept: Optional[KeptForces] = None

    def forces(self) -> np.ndarray:
        """The forces on ``self.atoms`` where they are now: kept ones if still valid, else the calculator's."""
        if self.kept is None or not self.kept.valid_for(self.atoms):
            self.kept = KeptForces(self.atoms, self.atoms.get_forces())
        return self.kept.forces

    def _energy_forces(self, positions: Tensor, atomic_numbers, cell, pbc, batch):
        self.atoms.set_positions(positions.numpy(), apply_constraint=False)
        # The step functions never read the energy; not asking for it keeps this to one request.
        return {"energy": torch.full((1,), float("nan"), dtype=torch.float64),
                "forces": torch.from_numpy(self.forces())}

    def step(self):
        atoms = self.atoms
        system = replicate(atoms, 1, self.seed, source=type(self).__name__)
        velocities = torch.from_numpy(atoms.get_velocities() * units.fs)  # Å/(ASE time) -> Å/fs
        state = init_state(self._energy_forces, system.positions, kT=KB_EV_PER_K * self.temperature_K,
                           friction=self.friction * units.fs,  # 1/(ASE time) -> 1/fs
                           velocities=velocities, **system.arguments()).replace(step=self.steps_taken)
        state = INTEGRATORS[self.scheme](state, self._energy_forces, self.dt / units.fs)
        atoms.set_positions(state.positions.numpy(), apply_constraint=False)
        atoms.set_velocities(state.velocities.numpy() / units.fs)
        self.steps_taken += 1
        return state.forces.numpy()


class BAOAB(IntegratorDynamics):
    """Langevin BAOAB (Leimkuhler & Matthews) at ``temperature_K`` with friction γ = ``friction``."""

    scheme = "baoab"


class OBABO(IntegratorDynamics):
    """Langevin OBABO at ``temperature_K`` with friction γ = ``friction``; exact velocity distribution."""

    scheme = "obabo"


class GJF(IntegratorDynamics):
    """Grønbech-Jensen-Farago Langevin at ``temperature_K`` with friction γ = ``friction``."""

    scheme = "gjf"


class CSVR(IntegratorDynamics):
    """Bussi-Donadio-Parrinello velocity rescaling at ``temperature_K`` with ``friction`` = 1/τ."""

    scheme = "csvr"


class VelocityVerlet(IntegratorDynamics):
    """Velocity Verlet (NVE); ``temperature_K`` and ``friction`` are not used."""

    scheme = "verlet"
    thermostatted = False


__all__ = ["BAOAB", "CSVR", "GJF", "IntegratorDynamics", "KeptForces", "OBABO", "VelocityVerlet"]

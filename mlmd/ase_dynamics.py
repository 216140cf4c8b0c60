"""mlmd's integrators as ASE ``MolecularDynamics`` classes, for any ASE calculator.

``BAOAB(atoms, timestep, temperature_K=300, friction=0.01 / units.fs, seed=0)``
and its siblings ``OBABO``, ``GJF``, ``CSVR`` (``friction`` is 1/τ there) and
``VelocityVerlet`` take ASE's conventions (time step and friction in ASE
units) and run the same step functions as the batched torch integrators, so
ASE observers, loggers and trajectory writers work unchanged. ``FixAtoms``
constraints are honoured; other constraints are refused with a clear error.
"""

import torch
from ase import units
from ase.md.md import MolecularDynamics

from integrators import INTEGRATORS
from integrators.state import init_state

from .checks import fixed_atoms_mask
from .constants import AMU_A2_PER_FS2_EV, KB_EV_PER_K
from .errors import MLMDError


class IntegratorDynamics(MolecularDynamics):
    """ASE dynamics driven by ``integrators.INTEGRATORS[scheme]``."""

    scheme = ""

    def __init__(self, atoms, timestep, temperature_K=None, friction=None, seed=0, **kwargs):
        super().__init__(atoms, timestep, **kwargs)
        if self.scheme not in INTEGRATORS:
            raise MLMDError(f"unknown integrator {self.scheme!r}; known: {', '.join(sorted(INTEGRATORS))}")
        if self.scheme != "verlet" and (temperature_K is None or friction is None):
            raise MLMDError(f"{type(self).__name__} needs temperature_K and friction (in 1/ASE time units)")
        self.temperature_K = 0.0 if temperature_K is None else float(temperature_K)
        self.friction = 0.0 if friction is None else float(friction)
        self.seed = int(seed)
        self.fixed = fixed_atoms_mask(atoms, type(self).__name__)
        self.steps_taken = 0

    def _energy_forces(self, positions, atomic_numbers, cell, pbc, batch):
        self.atoms.set_positions(positions.numpy(), apply_constraint=False)
        energy = self.atoms.get_potential_energy()
        forces = self.atoms.get_forces()
        return {"energy": torch.tensor([energy], dtype=torch.float64), "forces": torch.from_numpy(forces)}

    def step(self):
        atoms = self.atoms
        timestep_fs = self.dt / units.fs
        masses = torch.from_numpy(atoms.get_masses() * AMU_A2_PER_FS2_EV)
        velocities = torch.from_numpy(atoms.get_velocities() * units.fs)  # Å/(ASE time) -> Å/fs
        state = init_state(
            self._energy_forces,
            torch.from_numpy(atoms.get_positions()),
            masses,
            torch.from_numpy(atoms.numbers),
            torch.from_numpy(atoms.cell.array).unsqueeze(0),
            torch.from_numpy(atoms.pbc).unsqueeze(0),
            torch.zeros(len(atoms), dtype=torch.int64),
            kT=KB_EV_PER_K * self.temperature_K,
            friction=self.friction * units.fs,  # 1/(ASE time) -> 1/fs
            seeds=self.seed,
            velocities=velocities,
            fixed=torch.from_numpy(self.fixed),
        ).replace(step=self.steps_taken)
        state = INTEGRATORS[self.scheme](state, self._energy_forces, timestep_fs)
        atoms.set_positions(state.positions.numpy(), apply_constraint=False)
        atoms.set_velocities(state.velocities.numpy() / units.fs)
        self.steps_taken += 1
        return state.forces.numpy()


def _dynamics(name: str, scheme: str, doc: str):
    return type(name, (IntegratorDynamics,), {"scheme": scheme, "__doc__": doc})


BAOAB = _dynamics("BAOAB", "baoab", "Langevin BAOAB (Leimkuhler-Matthews) as ASE dynamics.")
OBABO = _dynamics("OBABO", "obabo", "Langevin OBABO as ASE dynamics.")
GJF = _dynamics("GJF", "gjf", "Grønbech-Jensen-Farago Langevin as ASE dynamics.")
CSVR = _dynamics("CSVR", "csvr", "Bussi-Donadio-Parrinello velocity rescaling as ASE dynamics (friction = 1/tau).")
VelocityVerlet = _dynamics("VelocityVerlet", "verlet", "Velocity Verlet (NVE) as ASE dynamics.")

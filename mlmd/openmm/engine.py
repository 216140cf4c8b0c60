"""The ``openmm`` MD engine: an exported model as an OpenMM force (TorchForce or PythonForce) in a ``Context``.

One replica; the integrators of :mod:`mlmd.openmm.integrators`; positions and
velocities cross the boundary in nm and nm/ps and are converted here. Restart
points are OpenMM checkpoints (they load only on the platform that wrote them).
"""

from typing import Callable, Optional

import numpy as np

from ..constants import A_PER_FS_NM_PER_PS, AMU_A2_PER_FS2_EV, KB_EV_PER_K, KJ_PER_MOL_EV, NM_ANGSTROM
from ..dynamics.engine import (WARM_UP_CALLS, ForceCallFailed, MDSettings, Snapshot, integrators_of, one_line,
                               register_engine)
from ..dynamics.system import starting_velocities
from ..checks import fixed_atoms_mask
from ..errors import MLMDError


@register_engine("openmm")
class OpenMMEngine:
    """The model as an OpenMM force in an OpenMM Context (one replica)."""

    drives = "potential"
    integrator_registry = "mlmd.openmm.integrators:OPENMM_INTEGRATORS"

    @staticmethod
    def check(settings: MDSettings, model, calculator) -> None:
        if calculator is not None:
            raise MLMDError("--engine openmm runs an exported model as an OpenMM force and needs --model; "
                            "run ASE calculators with the torch engine")
        if settings.replicas != 1:
            raise MLMDError("--replicas runs batched replicas in the torch engine only; drop --engine openmm")

    @classmethod
    def create(cls, atoms, model, calculator, settings: MDSettings, restart: Optional[dict]):
        return cls(atoms, model, settings, restart)

    def __init__(self, atoms, model, settings: MDSettings, restart: Optional[dict] = None):
        import openmm
        import torch

        from .integrators import kt_kj_per_mol
        from .system import create_system, topology_from_atoms

        integrator, temperature_K, seed = settings.integrator, settings.temperature_K, settings.seed
        device, platform, friction_per_ps = settings.device, settings.platform, settings.friction_per_ps

        self.masses_amu = atoms.get_masses()
        self._loaded_epot_eV: Optional[np.ndarray] = None
        self._snapshot_epot_eV: Optional[np.ndarray] = None
        fixed = fixed_atoms_mask(atoms, "mlmd md")
        self.free_atoms = int(np.count_nonzero(~fixed))
        topology, positions_nm = topology_from_atoms(atoms)
        system = create_system(topology, model)
        for i, mass in enumerate(self.masses_amu):
            system.setParticleMass(i, 0.0 if fixed[i] else float(mass))  # OpenMM never moves massless particles
        # OpenMM reads a seed of 0 as "random"; map every mlmd seed to a fixed non-zero one.
        self.integrator = integrators_of(self)[integrator](temperature_K, friction_per_ps, settings.timestep_fs,
                                                         seed=1 + seed % (2**31 - 2))
        name = platform or ("CUDA" if str(device).startswith("cuda") else "CPU")
        try:
            chosen = openmm.Platform.getPlatformByName(name)
        except openmm.OpenMMException:
            platforms = (openmm.Platform.getPlatform(i) for i in range(openmm.Platform.getNumPlatforms()))
            known = ", ".join(p.getName() for p in platforms)
            raise MLMDError(f"OpenMM platform {name!r} is not available here; available: {known}") from None
        self.context = openmm.Context(system, self.integrator, chosen)
        self.periodic = bool(np.all(atoms.pbc))
        if restart is None:
            velocities = starting_velocities(atoms, temperature_K, [seed], "mlmd md")
            if self.periodic:  # topology_from_atoms rotated the positions into OpenMM's reduced frame
                _, rotation = atoms.cell.standard_form()
                velocities = velocities @ np.asarray(rotation).T
            self.context.setPositions(positions_nm)
            self.context.setVelocities(velocities * A_PER_FS_NM_PER_PS)
            self._step = 0
        else:
            # TorchScript's first calls of a module run unoptimised graphs whose forces differ in the last bits;
            # warm the fresh module up so that the continuation is bit for bit.
            self.context.setPositions(positions_nm)
            for _ in range(WARM_UP_CALLS):
                self.context.getState(getForces=True)
            try:
                self.context.loadCheckpoint(restart["checkpoint"].numpy().tobytes())
            except openmm.OpenMMException as exc:
                raise MLMDError(f"the OpenMM checkpoint in the restart file does not fit this system or platform "
                                f"({exc}); OpenMM checkpoints only load on the platform that wrote them") from None
            if isinstance(self.integrator, openmm.CustomIntegrator):  # the checkpoint restored the saved values
                self.integrator.setGlobalVariableByName("kT", kt_kj_per_mol(temperature_K))
                self.integrator.setGlobalVariableByName("gamma", float(friction_per_ps))
            self._step = int(restart["step"])
            # Asking a freshly loaded Context for its energy before its first step changes the noise that
            # follows (OpenMM 8.6), so the first snapshot takes the saved energy instead.
            self._loaded_epot_eV = np.asarray(restart["epot_eV"], dtype=float)
        self._torch = torch

    @property
    def step(self) -> int:
        return self._step

    def advance(self, n_steps: int, on_step: Callable[[int], object]) -> None:
        import openmm

        try:
            self.integrator.step(n_steps)
        except openmm.OpenMMException as exc:
            raise ForceCallFailed(f"OpenMM failed between steps {self._step} and {self._step + n_steps} "
                                   f"({one_line(exc)})") from exc
        self._step += n_steps
        self._loaded_epot_eV = None
        on_step(n_steps)

    def save_point(self):
        """(step, OpenMM checkpoint, potential energy of the latest snapshot)."""
        return self._step, self.context.createCheckpoint(), self._snapshot_epot_eV

    def restore(self, point) -> None:
        self._step, checkpoint, self._loaded_epot_eV = point
        self.context.loadCheckpoint(checkpoint)

    def snapshot(self) -> Snapshot:
        from openmm import unit

        loaded = self._loaded_epot_eV is not None
        state = self.context.getState(getPositions=True, getVelocities=True, getEnergy=not loaded)
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * NM_ANGSTROM
        velocities = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        velocities = velocities / A_PER_FS_NM_PER_PS
        kinetic = 0.5 * float(np.sum(self.masses_amu[:, None] * velocities**2)) * AMU_A2_PER_FS2_EV
        cell = np.zeros((3, 3))
        if self.periodic:
            cell = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) * NM_ANGSTROM
        self._snapshot_epot_eV = self._loaded_epot_eV if loaded else np.array(
            [state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * KJ_PER_MOL_EV])
        return Snapshot(
            step=self._step,
            epot_eV=self._snapshot_epot_eV,
            ekin_eV=np.array([kinetic]),
            temperature_K=np.array([2.0 * kinetic / (3.0 * max(self.free_atoms, 1) * KB_EV_PER_K)]),
            positions_A=np.asarray(positions), velocities_A_per_fs=np.asarray(velocities), cell_A=np.asarray(cell),
            pbc=np.full(3, self.periodic))

    def payload(self, point) -> dict:
        step, checkpoint, epot_eV = point
        return {"engine": "openmm", "step": step, "epot_eV": epot_eV.tolist(),
                "checkpoint": self._torch.frombuffer(bytearray(checkpoint), dtype=self._torch.uint8)}

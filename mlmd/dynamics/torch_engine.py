"""The ``torch`` engine: the schemes of :mod:`integrators` on a batch of replicas.

The potential is the model contract (an exported model on CPU or CUDA) or an ASE
calculator behind the same callable (:class:`mlmd.dynamics.potential.CalculatorPotential`),
so every scheme works with every calculator. ``T = 2 E_kin / (N_dof k_B)`` with
``N_dof = 3 N_free - constrained`` per replica (fixed atoms excluded): under a
momentum-conserving scheme (``integrators.MOMENTUM_CONSERVING``: ``verlet``, ``csvr``) a
replica that starts with zero total momentum and forces summing to zero keeps 3 components at
zero, an isolated one started also with zero angular momentum 3 more (2 for a diatomic)
(:func:`integrators.state.conserved_components`); CSVR thermostats only the rest. The count is
fixed at the start and stored in restart files. Velocities drawn by mlmd's sampler carry
momentum, so only a structure given with momentum-free velocities counts fewer.
"""

from typing import Callable, Optional

import numpy as np
import torch

from ..constants import FS_PS, KB_EV_PER_K
from ..errors import MLMDError
from .engine import (WARM_UP_CALLS, ForceCallFailed, MDSettings, Snapshot, StateEngine, integrators_of, one_line,
                     register_engine)
from .potential import CalculatorPotential
from .system import start_or_continue


@register_engine("torch")
class TorchEngine(StateEngine):
    """:data:`integrators.INTEGRATORS` schemes on ``settings.replicas`` copies of ``atoms``."""

    drives = "potential"
    integrator_registry = "integrators:INTEGRATORS"

    @staticmethod
    def check(settings: MDSettings, model, calculator) -> None:
        if calculator is not None and not str(settings.device).startswith("cpu"):
            raise MLMDError("ASE calculators run on the CPU; drop --device or use --model")

    @classmethod
    def create(cls, atoms, model, calculator, settings: MDSettings, restart: Optional[dict]):
        """From an exported model (loaded :class:`mlmd.model.Model`) or an ASE calculator (name or object)."""
        if model is not None:
            energy_forces = model.energy_forces
        else:
            energy_forces = CalculatorPotential(atoms, calculator, settings.replicas)
        return cls(atoms, energy_forces, settings, restart)

    def __init__(self, atoms, energy_forces: Callable, settings: MDSettings, restart: Optional[dict] = None):
        from integrators import MOMENTUM_CONSERVING
        from integrators.state import conserved_components, init_state

        self.step_function = integrators_of(self)[settings.integrator]
        self.energy_forces = energy_forces
        self.timestep_fs = settings.timestep_fs
        device = settings.device
        system, positions, velocities = start_or_continue(atoms, settings.replicas, settings.seed,
                                                          settings.temperature_K, device, "mlmd md", restart)
        state = init_state(energy_forces, positions, kT=KB_EV_PER_K * settings.temperature_K,
                           friction=settings.friction_per_ps * FS_PS, velocities=velocities, **system.arguments())
        if restart is not None:
            # The saved forces, not re-evaluated ones, and a warmed-up model, so that the continuation is bit for bit.
            if not isinstance(energy_forces, CalculatorPotential):
                for _ in range(WARM_UP_CALLS - 1):
                    energy_forces(state.positions, state.atomic_numbers, state.cell, state.pbc, state.batch)
            state = state.replace(energy=restart["energy"].to(device), forces=restart["forces"].to(device),
                                  step=int(restart["step"]))
        if settings.integrator not in MOMENTUM_CONSERVING:
            constrained = torch.zeros_like(state.constrained_dof)
        elif restart is not None and "constrained_dof" in restart:
            constrained = restart["constrained_dof"].to(device)
        else:  # a fresh start (or a restart file written before the count was stored)
            constrained = conserved_components(state, state.forces)
        self.state = state.replace(constrained_dof=constrained)

    def step_once(self, state):
        try:
            return self.step_function(state, self.energy_forces, self.timestep_fs)
        except (RuntimeError, ValueError, ArithmeticError, torch.jit.Error) as exc:  # what a failing model raises
            raise ForceCallFailed(f"the force call failed at step {state.step + 1} ({one_line(exc)})") from exc

    def snapshot(self) -> Snapshot:
        from integrators.state import degrees_of_freedom, kinetic_energy

        state = self.state
        kinetic = kinetic_energy(state)
        dof = degrees_of_freedom(state).clamp(min=1.0)
        return Snapshot(
            step=state.step,
            epot_eV=state.energy.detach().cpu().numpy().astype(np.float64),
            ekin_eV=kinetic.detach().cpu().numpy(),
            temperature_K=(2.0 * kinetic / (dof * KB_EV_PER_K)).cpu().numpy(),
            positions_A=state.positions.detach().cpu().numpy(),
            velocities_A_per_fs=state.velocities.detach().cpu().numpy(),
            cell_A=state.cell[0].cpu().numpy(),
            pbc=state.pbc[0].cpu().numpy(),
            forces_eV_per_A=state.forces.detach().cpu().numpy().astype(np.float64),
        )

    def payload(self, point) -> dict:
        return {"engine": "torch", "step": point.step,
                **{key: getattr(point, key).detach().cpu()
                   for key in ("positions", "velocities", "energy", "forces", "constrained_dof")}}

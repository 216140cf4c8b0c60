"""Energy functions the engines call: an ASE calculator behind the model contract, and energy monitors."""

from typing import Callable, Optional

import numpy as np
import torch

from ..errors import MLMDError


class CalculatorPotential:
    """An ASE calculator as the energy/forces callable of the model contract (CPU, float64).

    Each replica has its own copy of the atoms (and, for a calculator given by
    name, its own calculator); replicas are evaluated one after another.
    """

    def __init__(self, atoms, calculator, replicas: int = 1):
        from ..calculators import get_calculator

        self.replica_atoms = []
        for _ in range(replicas):
            copy = atoms.copy()
            copy.set_constraint()
            copy.calc = get_calculator(calculator) if isinstance(calculator, str) else calculator
            self.replica_atoms.append(copy)

    def __call__(self, positions, atomic_numbers, cell, pbc, batch):
        n_atoms = len(self.replica_atoms[0])
        coordinates = positions.detach().to("cpu", torch.float64).numpy().reshape(-1, n_atoms, 3)
        energy = np.zeros(len(self.replica_atoms))
        forces = np.zeros_like(coordinates)
        for r, atoms in enumerate(self.replica_atoms):
            atoms.set_positions(coordinates[r], apply_constraint=False)
            energy[r] = atoms.get_potential_energy()
            forces[r] = atoms.get_forces(apply_constraint=False)
        return {"energy": torch.from_numpy(energy).to(positions.device),
                "forces": torch.from_numpy(forces.reshape(-1, 3)).to(positions.device)}


def energy_monitor(atoms, potential=None, calculator=None, replicas: int = 1,
                   device: str = "cpu") -> Optional[Callable]:
    """``energy(positions, atomic_numbers, cell, pbc, batch) -> [B]`` eV from an mlmd potential or an ASE
    calculator (what a forecast logs as ``epot_eV``), or None when neither is given."""
    if potential is not None and calculator is not None:
        raise MLMDError("give at most one energy monitor: --potential MODEL.pt or --calculator NAME")
    if calculator is not None:
        monitor = CalculatorPotential(atoms, calculator, replicas)
        return lambda *inputs: monitor(*inputs)["energy"]
    if potential is not None:
        from ..checks import check_atoms
        from ..model import load_model

        loaded = load_model(potential, device=device)
        if loaded.is_forecaster:
            raise MLMDError("the energy monitor (--potential) must be a potential, not a forecaster")
        check_atoms(atoms, source="mlmd forecast", species=loaded.species)
        return lambda *inputs: loaded(*inputs, False, False)["energy"].detach()
    return None

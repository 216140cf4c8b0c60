"""The ASE calculator: any exported mlmd model in any ASE workflow.

``MLMDCalculator(model, device="cpu")`` takes a model file, a loaded
:class:`mlmd.model.Model` or an in-memory potential, and implements
``energy``, ``free_energy`` (equal to the energy: the models are
zero-temperature), ``forces``, ``energies`` (per atom) and, for periodic
systems, ``stress`` (eV/Å³, ASE's Voigt order). ASE finds it by the name
``mlmd`` (``ase.calculators.calculator.get_calculator_class("mlmd")`` once
mlmd is imported, and through the ``ase.plugins`` entry point).
"""

from typing import Sequence

import numpy as np
from ase.calculators.calculator import (
    Calculator,
    PropertyNotImplementedError,
    all_changes,
    external_calculators,
    register_calculator_class,
)

from .checks import check_atoms


class MLMDCalculator(Calculator):
    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(self, model, device="cpu", **kwargs):
        super().__init__(**kwargs)
        from .model import load_model

        self.model = load_model(model, device=device)
        self._species = np.array(sorted(self.model.species))

    def calculate(self, atoms=None, properties: Sequence[str] = ("energy",), system_changes=all_changes):
        import torch

        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        compute_stress = "stress" in properties
        if compute_stress and not atoms.pbc.all():
            raise PropertyNotImplementedError("stress is defined only for systems periodic in all three directions")
        if not np.isin(atoms.numbers, self._species).all() or not np.isfinite(atoms.positions).all():
            check_atoms(atoms, source="MLMDCalculator", species=self._species.tolist())
        device = self.model.device
        out = self.model(
            torch.as_tensor(atoms.positions, device=device),
            torch.as_tensor(atoms.numbers, device=device),
            torch.as_tensor(atoms.cell.array, device=device).unsqueeze(0),
            torch.as_tensor(atoms.pbc, device=device).unsqueeze(0),
            torch.zeros(len(atoms), dtype=torch.int64, device=device),
            True,
            compute_stress,
        )
        energy = float(out["energy"][0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out["forces"].detach().cpu().double().numpy(),
            "energies": out["energies"].detach().cpu().double().numpy(),
        }
        if compute_stress:
            stress = out["stress"][0].detach().cpu().double().numpy()
            self.results["stress"] = stress.flat[[0, 4, 8, 5, 2, 1]]


if "mlmd" not in external_calculators:
    register_calculator_class("mlmd", MLMDCalculator)

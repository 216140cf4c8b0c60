"""The ASE calculator: any exported mlmd model in any ASE workflow.

``MLMDCalculator(model, device="cpu")`` takes a model file, a loaded
:class:`mlmd.model.Model` or an in-memory potential. It follows ASE's
calculator conventions: ``implemented_properties`` lists ``energy``,
``free_energy`` (equal to the energy: the models are zero-temperature),
``forces`` (eV/Å), ``energies`` (eV per atom) and ``stress`` (eV/Å³, ASE's
Voigt order xx yy zz yz xz xy); ``calculate`` fills ``self.results``, and ASE's
``check_state`` (positions, numbers, cell, pbc) decides when a cached result is
reused, so asking for the energy and then the forces of the same atoms runs the
model once.

Stress, periodic or not, follows ASE's own calculators (``EMT``,
``LennardJones``, ``MorsePotential``; measured with ASE 3.29):

- the cell spans a volume ``V = |det cell| > 0``: ``σ = (1/V) ∂E/∂ε``, the
  strain derivative, for every ``pbc``. For a molecule in a box, ``V σ`` is the
  virial ``-Σ_i r_i ⊗ F_i`` whatever the box; that is what the i-PI clients
  send on (i-PI's ASE driver and ASE's ``SocketClient`` both form ``W = -V σ``;
  i-PI always sends a cell, its default for a structure without one is a
  1-bohr box), so mlmd runs non-periodic systems under i-PI;
- no volume (a molecule without a cell): ASE's ``PropertyNotImplementedError``,
  as ASE's calculators raise and clients expect (``ase run`` skips the
  property). A zero stress would help no client: ASE's ``SocketClient`` fails on
  such atoms in ``atoms.get_volume()`` before it uses the stress.

Importing this module registers the class with ASE under the name ``mlmd``
(``ase.calculators.calculator.get_calculator_class("mlmd")``); in a fresh
process :mod:`mlmd.ase.lookup` makes the same name work before mlmd is imported.
"""

import warnings
from typing import Sequence

import numpy as np
from ase.calculators.calculator import (
    Calculator,
    PropertyNotImplementedError,
    all_changes,
    external_calculators,
    register_calculator_class,
)

from ..checks import check_atoms

#: The name ASE knows the calculator by.
ASE_NAME = "mlmd"


class MLMDCalculator(Calculator):
    """An exported mlmd model (file, :class:`~mlmd.model.Model` or potential) as an ASE calculator.

    Stress is ``(1/V) ∂E/∂ε`` whenever the cell spans a volume V, periodic or not (as ASE's EMT
    and i-PI expect; see the module docstring); a cell without volume raises
    ``PropertyNotImplementedError``.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(self, model, device="cpu", **kwargs):
        super().__init__(**kwargs)
        from ..model import load_model

        self.model = load_model(model, device=device)
        self._species = np.array(sorted(self.model.species))

    def calculate(self, atoms=None, properties: Sequence[str] = ("energy",), system_changes=all_changes):
        import torch

        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        compute_stress = "stress" in properties
        if compute_stress and not atoms.cell.volume > 0.0:
            raise PropertyNotImplementedError(
                "stress needs a cell that spans a volume, periodic or not; give the atoms one, e.g. "
                "atoms.center(vacuum=5.0), or a third lattice vector (vacuum) along a non-periodic axis")
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


def register_with_ase() -> None:
    """Make ``get_calculator_class("mlmd")`` return :class:`MLMDCalculator` in this process.

    Idempotent; if another package already claimed the name, its class stays and a warning says so.
    """
    registered = external_calculators.get(ASE_NAME)
    if registered is None:
        register_calculator_class(ASE_NAME, MLMDCalculator)
    elif registered is not MLMDCalculator:
        warnings.warn(f"ASE's calculator name {ASE_NAME!r} is already taken by {registered.__module__}."
                      f"{registered.__qualname__}; use mlmd.MLMDCalculator directly", stacklevel=2)


register_with_ase()

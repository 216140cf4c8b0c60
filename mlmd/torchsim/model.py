"""An mlmd potential as a TorchSim ``ModelInterface``: batched states, forces and stress.

``MLMDModel(model)`` takes what :func:`mlmd.load_model` takes (a model file, a shipped
model name such as ``"ethanol"``, a loaded :class:`~mlmd.model.Model` or an in-memory
potential) and runs it on a TorchSim ``SimState`` of any number of systems in one call:

    energy [B] (eV),  forces [N,3] = -dE/dr (eV/Å),  stress [B,3,3] = (1/V) dE/d(strain) (eV/Å³)

TorchSim's metal units and ASE's sign convention. The model's neighbour list with a skin
is carried between calls (:class:`mlmd.model.Model`). Stress is defined for periodic
states; a non-periodic state (``pbc=False``) gets a zero stress, the convention of an
isolated system under no external pressure (what ASE's socket client sends i-PI for one).
"""

from typing import Optional, Union

import torch
import torch_sim
from torch_sim.models.interface import ModelInterface

from ..errors import MLMDError
from ..model import DEFAULT_SKIN_A, load_model


class MLMDModel(ModelInterface):
    """TorchSim model over an mlmd potential; see :mod:`mlmd.torchsim.model`.

    ``device`` (default: cuda when available, else cpu) and ``dtype`` (default: the
    model's) are those of the states it takes and the results it returns; the model
    computes in its own dtype. ``compute_forces``/``compute_stress`` choose the outputs;
    ``skin_A`` is the neighbour-list skin in Å (0: a fresh list at every call).
    """

    def __init__(self, model, device: Optional[Union[str, torch.device]] = None,
                 dtype: Optional[torch.dtype] = None, compute_forces: bool = True, compute_stress: bool = True,
                 skin_A: float = DEFAULT_SKIN_A):
        super().__init__()
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = load_model(model, device=device, skin_A=skin_A)
        if self.model.is_forecaster:
            raise MLMDError(f"{self.model!r} is a trajectory forecaster, not a potential: TorchSim needs energies "
                            "and forces; load a potential model")
        self._device = device
        self._dtype = dtype or self.model.dtype
        self._compute_forces = bool(compute_forces)
        self._compute_stress = bool(compute_stress)
        self._memory_scales_with = "n_atoms_x_density"  # a radial cutoff: neighbours grow with density
        self.species = torch.tensor(sorted(self.model.species), device=device)

    def forward(self, state, **kwargs) -> dict:
        if isinstance(state, dict):
            state = torch_sim.SimState(**state, masses=torch.ones_like(state["positions"][:, 0]))
        numbers = state.atomic_numbers.to(self._device)
        unknown = ~torch.isin(numbers, self.species)
        if bool(unknown.any()):
            raise MLMDError(f"the state contains atomic number {int(numbers[unknown][0])}, which this model was not "
                            f"trained on (it knows {self.species.tolist()}); use a model trained on it")
        cell = state.row_vector_cell.to(self._device)
        n_systems = cell.shape[0]
        pbc = torch.as_tensor(state.pbc, device=self._device).to(torch.bool).expand(n_systems, 3)
        periodic = bool(pbc.all())
        out = self.model(state.positions.to(self._device), numbers, cell, pbc, state.system_idx.to(self._device),
                         self._compute_forces, self._compute_stress and periodic)
        results = {"energy": out["energy"].to(self._dtype)}
        if self._compute_forces:
            results["forces"] = out["forces"].to(self._dtype)
        if self._compute_stress:
            results["stress"] = (out["stress"].to(self._dtype) if periodic
                                 else torch.zeros((n_systems, 3, 3), dtype=self._dtype, device=self._device))
        return results

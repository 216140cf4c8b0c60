"""The model contract shared by every potential, and what every model shares.

:class:`AtomisticModel` holds the species table (atomic number -> index, an
unknown element is a clear error), the cutoff (Å) and the compute dtype, for
potentials and the forecaster alike; :class:`Configurable` rebuilds a family
from its constructor arguments.

A :class:`Potential` maps one batch of systems to energies; forces and stress
are derived here, once, by autograd:

    F_i = -dE/dr_i                       (eV/Å)
    sigma = (1/V) dE/d(epsilon)|_{epsilon=0}   (eV/Å³, ASE sign convention)

where the cell and positions are deformed by the symmetric strain
``(I + epsilon)``. A family implements :meth:`atomic_energies` only; the
energy is that plus an optional short-range repulsion prior (``repulsion``, a
name in :data:`potentials.blocks.repulsion.REPULSIONS`, ``"none"`` by default),
so a family's learned part fits the residual of the reference energies.
"""

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .blocks.repulsion import make_repulsion
from .neighbors import edge_vectors, neighbor_list, neighbors_within_cutoff


def species_table(species: List[int]) -> Tensor:
    """``[119]`` int64 table: atomic number -> index into ``species``, -1 for elements not in it."""
    table = torch.full((119,), -1, dtype=torch.int64)
    table[torch.tensor(species, dtype=torch.int64)] = torch.arange(len(species))
    return table


def lookup_species(table: Tensor, species: List[int], atomic_numbers: Tensor) -> Tensor:
    """Index into ``species`` for every atom through ``table`` (:func:`species_table`); raises a
    ValueError naming the first element the model does not know. Shared by every model family."""
    index = table[atomic_numbers.clamp(0, 118)]
    unknown = (index < 0) | (atomic_numbers > 118) | (atomic_numbers < 0)
    if bool(unknown.any()):
        z = int(atomic_numbers[unknown][0].item())
        raise ValueError("the structure contains an element (atomic number " + str(z) + ") that this model "
                         "was not trained on (it knows " + str(species) + "); use a model trained on it")
    return index


class Configurable:
    """A family rebuilt from its constructor arguments: ``__init__`` stores them in ``self._config``.

    ``config()`` is what checkpoints and model files store; ``from_config`` rebuilds the model from it.
    """

    def config(self) -> Dict[str, Any]:
        """Constructor arguments that rebuild this model (stored in checkpoints and model files);
        a potential's ``repulsion`` is added here, once for every family."""
        config = dict(self._config)
        if isinstance(self, Potential):
            config["repulsion"] = self.repulsion_name
        return config

    @classmethod
    def from_config(cls, config: Dict[str, Any]):
        return cls(**config)


class AtomisticModel(torch.nn.Module):
    """What every model of the package shares: the species it knows, its cutoff and its compute dtype.

    ``species`` are atomic numbers (the order indexes per-species parameters);
    ``cutoff`` is in Å. The buffer ``dtype_probe`` follows ``.to(dtype)`` and tells
    ``forward`` which dtype to compute in; :meth:`species_index` maps atomic
    numbers to indices into ``species`` and names an unknown element.
    """

    family: str = ""

    def __init__(self, species: List[int], cutoff: float):
        super().__init__()
        if len(species) == 0:
            raise ValueError(f"{type(self).__name__} needs at least one species")
        if cutoff <= 0:
            raise ValueError(f"cutoff must be positive, got {cutoff}")
        self.species: List[int] = [int(z) for z in species]
        self.cutoff: float = float(cutoff)
        self.register_buffer("species_index_table", species_table(self.species), persistent=False)
        # Follows .to(dtype): the dtype the model computes in.
        self.register_buffer("dtype_probe", torch.zeros(0), persistent=False)

    def species_index(self, atomic_numbers: Tensor) -> Tensor:
        """Index into ``self.species`` for every atom; raises on an unknown element."""
        return lookup_species(self.species_index_table, self.species, atomic_numbers)


class Potential(AtomisticModel):
    """Base class of every potential family (the forecaster has its own contract).

    Inputs: ``positions [N,3]`` Å, ``atomic_numbers [N]`` int64, ``cell [B,3,3]``
    Å (rows are lattice vectors), ``pbc [B,3]`` bool, ``batch [N]`` system index.
    Outputs: ``energy [B]`` eV, ``forces [N,3]`` eV/Å and, on request,
    ``stress [B,3,3]`` eV/Å³ and ``energies [N]`` eV.

    ``repulsion`` names the short-range prior added to every atom's energy
    (:data:`potentials.blocks.repulsion.REPULSIONS`); a family takes it as a
    constructor argument and passes it here.
    """

    def __init__(self, species: List[int], cutoff: float, repulsion: str = "none"):
        super().__init__(species, cutoff)
        self.repulsion_name: str = str(repulsion)
        self.repulsion = make_repulsion(self.repulsion_name, self.species, self.cutoff)

    def repulsion_labels(self, batch: Dict[str, Tensor]) -> Tuple[Tensor, Tensor]:
        """The prior alone on a collated batch (``positions``, ``atomic_numbers``, ``cell``, ``pbc``,
        ``batch``), in float64: ``(energy [B] eV, forces [N,3] eV/Å)``. A family fitted in closed
        form subtracts these from its targets, so it fits the residual as gradient training does."""
        positions = batch["positions"].to(torch.float64).detach().requires_grad_(True)
        cell = batch["cell"].to(torch.float64)
        frame = batch["batch"]
        edges, shifts = neighbor_list(positions, cell, batch["pbc"], frame, self.cutoff)
        energies = self.repulsion(self.species_index(batch["atomic_numbers"]), edges,
                                  edge_vectors(positions, cell, frame, edges, shifts))
        energy = torch.zeros(cell.shape[0], dtype=torch.float64, device=positions.device).index_add(0, frame, energies)
        if not energy.requires_grad:  # no pair inside the prior's range
            return energy.detach(), torch.zeros_like(positions).detach()
        (gradient,) = torch.autograd.grad([energy.sum()], [positions])
        return energy.detach(), -gradient

    def atomic_energies(
        self,
        positions: Tensor,
        species: Tensor,
        edge_index: Tensor,
        edge_vectors: Tensor,
        batch: Tensor,
    ) -> Tensor:
        """Per-atom energies ``[N]`` in eV from species indices and edge vectors ``r_ij``."""
        raise NotImplementedError

    def forward(
        self,
        positions: Tensor,
        atomic_numbers: Tensor,
        cell: Tensor,
        pbc: Tensor,
        batch: Tensor,
        compute_forces: bool = True,
        compute_stress: bool = False,
        edge_index: Optional[Tensor] = None,
        shifts: Optional[Tensor] = None,
    ) -> Dict[str, Tensor]:
        """The contract; ``edge_index``/``shifts`` optionally give a list built with a larger radius
        (a Verlet list, :class:`potentials.neighbors.VerletList`), of which the pairs within the
        cutoff are used, so the result equals that of a fresh list."""
        dtype = self.dtype_probe.dtype
        positions = positions.to(dtype)
        cell = cell.to(dtype)
        n_systems = cell.shape[0]
        species = self.species_index(atomic_numbers)
        edges, edge_shifts = neighbors_within_cutoff(positions, cell, pbc, batch, self.cutoff, edge_index, shifts)

        strain = torch.zeros((n_systems, 3, 3), dtype=dtype, device=positions.device)
        inputs: List[Tensor] = []
        if compute_forces:
            positions = positions.detach().requires_grad_(True)
            inputs.append(positions)
        if compute_stress:
            strain.requires_grad_(True)
            inputs.append(strain)
            deformation = torch.eye(3, dtype=dtype, device=positions.device) + strain
            positions = torch.einsum("ni,nij->nj", positions, deformation[batch])
            cell = torch.bmm(cell, deformation)

        vectors = edge_vectors(positions, cell, batch, edges, edge_shifts)
        energies = self.atomic_energies(positions, species, edges, vectors, batch)
        energies = energies + self.repulsion(species, edges, vectors)
        energy = torch.zeros(n_systems, dtype=energies.dtype, device=energies.device)
        energy = energy.index_add(0, batch, energies)
        out: Dict[str, Tensor] = {"energy": energy, "energies": energies}
        if len(inputs) > 0:
            grads = torch.autograd.grad(
                [energy.sum()], inputs, create_graph=self.training, allow_unused=True
            )
            if compute_forces:
                g = grads[0]
                out["forces"] = -g if g is not None else torch.zeros_like(positions)
            if compute_stress:
                g = grads[len(inputs) - 1]
                volume = torch.linalg.det(cell).abs()
                if g is None:
                    g = torch.zeros_like(strain)
                out["stress"] = g / volume.view(-1, 1, 1)
        if not self.training:
            # Engines consume plain numbers; keep no graph alive between steps.
            for key in list(out.keys()):
                out[key] = out[key].detach()
        return out


# --- the hooks between a family and the trainer ------------------------------------
# (imports kept here, with the section they serve)
from dataclasses import dataclass  # noqa: E402
from typing import Protocol, runtime_checkable  # noqa: E402


@runtime_checkable
class TrainableFamily(Protocol):
    """What ``mlmd train`` and ``mlmd export`` ask of a model family, stated once.

    Required (:class:`Configurable` supplies both):

    ``config() -> dict``
        the constructor arguments that rebuild the model (JSON-able); checkpoints
        and model files store them.
    ``from_config(config)`` (classmethod)
        the model rebuilt from ``config()``.

    Optional declarations, class attributes read through :func:`training_hooks`
    (which fills in the defaults; nothing else probes for them):

    ``training_objective: str = "potential"``
        what the family learns from, a name in ``mlmd.training.OBJECTIVES``:
        ``"potential"`` (energies, forces and stress of labelled frames) or
        ``"trajectory"`` (pairs of reference MD frames, for a forecaster).
    ``training_strategy: str = "gradient"``
        how its parameters are fitted, a name in ``mlmd.training.STRATEGIES``:
        ``"gradient"`` (AdamW epochs) or ``"closed_form"`` for a family whose energy
        is linear in its parameters: one call of
        ``fit_linear(batches, energy_weight=, force_weight=) -> {"seconds": float, ...}``
        on every training frame, and no gradient epochs.

    Optional method, read through :func:`family_metadata`:

    ``extra_metadata() -> dict``
        keys the family adds to an exported model file's metadata (default: none).
    """

    def config(self) -> Dict[str, Any]:
        ...

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> Any:
        ...


@dataclass(frozen=True)
class TrainingHooks:
    """A family's training declarations (see :class:`TrainableFamily`), defaults filled in."""

    objective: str = "potential"
    strategy: str = "gradient"


def training_hooks(family: Any) -> TrainingHooks:
    """The declared ``training_objective`` and ``training_strategy`` of a family class or
    model; the defaults of :class:`TrainableFamily` for what it does not declare."""
    default = TrainingHooks()
    return TrainingHooks(objective=str(getattr(family, "training_objective", default.objective)),
                         strategy=str(getattr(family, "training_strategy", default.strategy)))


def family_metadata(module: Any) -> Dict[str, Any]:
    """What a model adds to its model file's metadata: ``config`` (a :class:`TrainableFamily`)
    and the keys of its ``extra_metadata()`` when it defines one."""
    metadata: Dict[str, Any] = {}
    if isinstance(module, TrainableFamily):
        metadata["config"] = module.config()
    if isinstance(module, Potential):
        metadata["repulsion"] = module.repulsion_name
    extra = getattr(module, "extra_metadata", None)
    if extra is not None:
        metadata.update(extra())
    return metadata

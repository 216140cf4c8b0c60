"""An mlmd potential behind metatomic's model interface, on the engine's neighbour list.

:class:`MetatomicPotential` asks the engine for one full, strict neighbour list
with the model's cutoff (Å) and evaluates the potential's own per-atom energies on
it: for every pair ``(i, j, S)`` of that list the engine supplies

    r_ij = positions[j] - positions[i] + S @ cell      (Å)

already attached to its autograd graph, and the wrapper passes these vectors,
untouched, to ``atomic_energies``. Forces ``-dE/dr`` and the virial therefore come
from the engine's own backward pass, as metatomic expects of a conservative model.

Outputs: ``energy`` per system (eV, samples ``system``) or per atom (samples
``system``, ``atom``), restricted to ``selected_atoms`` when the engine gives them
(domain decomposition: the other atoms only serve as neighbours).
"""

from typing import Dict, List, Optional

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import ModelOutput, NeighborListOptions, System
from torch import Tensor


class MetatomicPotential(torch.nn.Module):
    """Metatomic ``ModelInterface`` over an mlmd potential (``species_index`` and ``atomic_energies``).

    ``potential`` may be a plain module of a family or the TorchScript module of an
    exported model file; ``cutoff`` is its cutoff in Å.
    """

    def __init__(self, potential: torch.nn.Module, cutoff: float):
        super().__init__()
        self.potential = potential
        self.cutoff = float(cutoff)
        self.neighbor_options = NeighborListOptions(cutoff=self.cutoff, full_list=True, strict=True)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self.neighbor_options]

    def forward(self, systems: List[System], outputs: Dict[str, ModelOutput],
                selected_atoms: Optional[Labels] = None) -> Dict[str, TensorMap]:
        results: Dict[str, TensorMap] = {}
        if "energy" not in outputs or len(systems) == 0:
            return results
        device = systems[0].positions.device
        positions: List[Tensor] = []
        numbers: List[Tensor] = []
        batch: List[Tensor] = []
        edges: List[Tensor] = []
        vectors: List[Tensor] = []
        offsets: List[int] = []
        offset = 0
        for index, system in enumerate(systems):
            n_atoms = system.positions.shape[0]
            pairs = system.get_neighbor_list(self.neighbor_options)
            edges.append(pairs.samples.values[:, :2].T.to(torch.int64) + offset)
            vectors.append(pairs.values.reshape(-1, 3))
            positions.append(system.positions)
            numbers.append(system.types.to(torch.int64))
            batch.append(torch.full((n_atoms,), index, dtype=torch.int64, device=device))
            offsets.append(offset)
            offset += n_atoms
        edge_index = torch.cat(edges, dim=1)
        edge_vectors = torch.cat(vectors, dim=0)
        # A strict list holds only pairs within the cutoff; keep that true for engines that pad it.
        keep = (edge_vectors * edge_vectors).sum(dim=1) < self.cutoff * self.cutoff
        all_batch = torch.cat(batch)
        species = self.potential.species_index(torch.cat(numbers))
        energies = self.potential.atomic_energies(torch.cat(positions), species, edge_index[:, keep],
                                                  edge_vectors[keep], all_batch)
        atom = torch.cat([torch.arange(b.shape[0], device=device) for b in batch])
        if selected_atoms is not None:
            chosen = selected_atoms.values.to(torch.int64)
            start = torch.tensor(offsets, dtype=torch.int64, device=device)
            picked = start[chosen[:, 0]] + chosen[:, 1]
            energies, all_batch, atom = energies[picked], all_batch[picked], atom[picked]
        properties = Labels(["energy"], torch.zeros((1, 1), dtype=torch.int32, device=device))
        if outputs["energy"].sample_kind == "atom":
            samples = Labels(["system", "atom"], torch.stack([all_batch, atom], dim=1).to(torch.int32))
            values = energies.unsqueeze(1)
        else:
            total = torch.zeros(len(systems), dtype=energies.dtype, device=device).index_add(0, all_batch, energies)
            samples = Labels(["system"], torch.arange(len(systems), dtype=torch.int32, device=device).unsqueeze(1))
            values = total.unsqueeze(1)
        block = TensorBlock(values=values, samples=samples, components=torch.jit.annotate(List[Labels], []),
                            properties=properties)
        results["energy"] = TensorMap(Labels(["_"], torch.zeros((1, 1), dtype=torch.int32, device=device)), [block])
        return results

"""Analytic potentials written in the model contract, for testing engines against ASE's own calculators."""

import torch

from potentials.base import Potential


class LennardJonesPotential(Potential):
    """E = sum_{i<j} 4 eps [(sigma/r)^12 - (sigma/r)^6] - shift, shifted to zero at the cutoff,
    as ASE's ``LennardJones(smooth=False)``."""

    def __init__(self, species, sigma: float = 2.3, epsilon: float = 0.2, cutoff: float = 5.0):
        super().__init__(species, cutoff)
        self.sigma = torch.nn.Parameter(torch.tensor(sigma, dtype=torch.float64))
        self.epsilon = torch.nn.Parameter(torch.tensor(epsilon, dtype=torch.float64))

    def atomic_energies(self, positions, species, edge_index, edge_vectors, batch):
        r = torch.linalg.vector_norm(edge_vectors, dim=1)
        pair = 4 * self.epsilon * ((self.sigma / r) ** 12 - (self.sigma / r) ** 6)
        shift = 4 * self.epsilon * ((self.sigma / self.cutoff) ** 12 - (self.sigma / self.cutoff) ** 6)
        energies = torch.zeros(positions.shape[0], dtype=positions.dtype, device=positions.device)
        return energies.index_add(0, edge_index[0], 0.5 * (pair - shift))

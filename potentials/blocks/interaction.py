"""The equivariant message-passing layer (NequIP/MACE style) of the ``equivariant`` family and the forecaster.

With edge vectors ``r_ij`` (``j`` a neighbour of the centre ``i``), unit vectors
``u_ij``, a radial basis ``B(r_ij)`` and the spherical harmonics ``Y(u_ij)``:

    m_i  = 1/sqrt(<n>) sum_j  W(B(r_ij)) . [ Lin(h_j) (x) Y(u_ij) ]
    h_i' = h_i + Gate( Lin(m_i) + Lin_self(h_i) )        (residual when the irreps agree)

``W`` is a bias-free MLP of the radial basis; ``(x)`` the ``uvu`` tensor product
restricted to natural-parity outputs up to ``lmax``; ``<n>`` the mean neighbour
count of the training data.
"""

import math

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from torch import Tensor

from .irreps import GatedActivation, natural_irreps, uvu_tensor_product


class InteractionBlock(torch.nn.Module):
    """One equivariant message-passing layer with a residual update (see the module docstring)."""

    def __init__(self, irreps_in: o3.Irreps, channels: int, lmax: int, num_basis: int, radial_hidden: int,
                 avg_num_neighbors: float):
        super().__init__()
        irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        irreps_hidden = natural_irreps(channels, lmax)
        self.linear_up = o3.Linear(irreps_in, irreps_in)
        self.tensor_product = uvu_tensor_product(irreps_in, irreps_sh, irreps_hidden)
        irreps_mid = self.tensor_product.irreps_out
        self.radial = FullyConnectedNet([num_basis, radial_hidden, radial_hidden, self.tensor_product.weight_numel],
                                        torch.nn.functional.silu)
        self.gate = GatedActivation(channels, lmax)
        self.linear_message = o3.Linear(irreps_mid, self.gate.irreps_in)
        self.linear_self = o3.Linear(irreps_in, self.gate.irreps_in)
        self.message_norm = 1.0 / math.sqrt(avg_num_neighbors)
        self.residual = o3.Irreps(irreps_in) == irreps_hidden
        self.irreps_out = irreps_hidden

    def forward(self, features: Tensor, edge_sh: Tensor, edge_basis: Tensor, centre: Tensor,
                neighbour: Tensor) -> Tensor:
        weights = self.radial(edge_basis)
        messages = self.tensor_product(self.linear_up(features)[neighbour], edge_sh, weights)
        summed = torch.zeros((features.shape[0], messages.shape[1]), dtype=messages.dtype, device=messages.device)
        summed = summed.index_add(0, centre, messages) * self.message_norm
        update = self.gate(self.linear_message(summed) + self.linear_self(features))
        if self.residual:
            return features + update
        return update

"""E(3)-equivariant message-passing potential (NequIP/MACE family), family ``equivariant``.

Node features are ``C`` channels of every natural-parity irrep up to ``lmax``
(``0e + 1o + 2e + ...``). With edge vectors ``r_ij`` (``j`` a neighbour of the
centre ``i``), unit vectors ``u_ij`` and distances ``r = |r_ij|``:

    R_n(r)      = sqrt(2/r_c) sin(w_n r / r_c) / r * f_env(r / r_c)      (Bessel basis)
    f_env(d)    = 1 - (p+1)(p+2)/2 d^p + p(p+2) d^(p+1) - p(p+1)/2 d^(p+2)   (d < 1)
    m_i         = 1/sqrt(<n>) sum_j  W(R(r_ij)) . [ Lin(h_j) (x) Y(u_ij) ]
    h_i'        = h_i + Gate( Lin(m_i) + Lin_self(h_i) )                 (residual)
    E_i         = E_ref[z_i] + shift + scale * sum_layers readout_t(h_i^(t), scalars)

``W`` is a bias-free MLP of the radial basis, so every message vanishes with
all its derivatives up to order ``p`` as ``r -> r_c``. ``(x)`` is e3nn's
tensor product restricted to natural-parity paths (``uvu``: each channel of
``h_j`` couples to each spherical harmonic separately), ``<n>`` the mean
neighbour count of the training data. The gate multiplies each ``l > 0``
channel by the sigmoid of its own scalar; scalars pass through SiLU. Forces
and stress come from autograd in :class:`~potentials.base.Potential`. The
radial basis, the interaction layer and the readouts live in
:mod:`potentials.blocks`.
"""

from typing import Any, Dict, Optional, Sequence

import torch
from e3nn import o3
from torch import Tensor

from . import register_family
from .base import Configurable, Potential
from .blocks.interaction import InteractionBlock
from .blocks.irreps import eager_e3nn
from .blocks.radial import BesselBasis
from .blocks.readout import layer_readout, reference_energies


@register_family("equivariant")
class EquivariantPotential(Configurable, Potential):
    """E(3)-equivariant message-passing potential; hyperparameters as in :meth:`config`.

    ``species`` are atomic numbers; ``cutoff`` in Å; ``atomic_energies_ref``
    (eV, in ``species`` order), ``scale`` (eV, typically the force RMS) and
    ``shift`` (eV/atom) come from the training data; ``repulsion`` names the
    short-range prior added to the learned energy (:class:`~potentials.base.Potential`).
    """

    def __init__(self, species: Sequence[int], cutoff: float = 5.0,
                 channels: int = 32, lmax: int = 2, num_layers: int = 2,
                 num_basis: int = 8, radial_hidden: int = 64, readout_hidden: int = 16, envelope_power: int = 6,
                 avg_num_neighbors: float = 10.0,
                 atomic_energies_ref: Optional[Sequence[float]] = None, scale: float = 1.0, shift: float = 0.0,
                 repulsion: str = "none"):
        super().__init__(list(species), cutoff, repulsion)
        if channels < 1 or lmax < 0 or num_layers < 1 or num_basis < 1:
            raise ValueError("channels, num_layers and num_basis must be positive and lmax non-negative")
        atomic_energies_ref = reference_energies(atomic_energies_ref, len(self.species))
        self._config: Dict[str, Any] = dict(
            species=list(self.species), cutoff=float(cutoff), channels=int(channels), lmax=int(lmax),
            num_layers=int(num_layers), num_basis=int(num_basis), radial_hidden=int(radial_hidden),
            readout_hidden=int(readout_hidden), envelope_power=int(envelope_power),
            avg_num_neighbors=float(avg_num_neighbors), atomic_energies_ref=atomic_energies_ref,
            scale=float(scale), shift=float(shift),
        )
        self.channels = channels
        with eager_e3nn():
            self._build(channels, lmax, num_layers, num_basis, radial_hidden, readout_hidden, envelope_power,
                        avg_num_neighbors)
        self.register_buffer("atomic_energies_ref", torch.tensor(atomic_energies_ref, dtype=torch.get_default_dtype()))
        self.scale = float(scale)
        self.shift = float(shift)

    def _build(self, channels: int, lmax: int, num_layers: int, num_basis: int, radial_hidden: int,
               readout_hidden: int, envelope_power: int, avg_num_neighbors: float) -> None:
        self.embedding = torch.nn.Embedding(len(self.species), channels)
        self.radial_basis = BesselBasis(self.cutoff, num_basis, envelope_power)
        self.spherical_harmonics = o3.SphericalHarmonics(o3.Irreps.spherical_harmonics(lmax), normalize=True,
                                                         normalization="component")
        irreps = o3.Irreps(f"{channels}x0e")
        blocks = []
        readouts = []
        for layer in range(num_layers):
            block = InteractionBlock(irreps, channels, lmax, num_basis, radial_hidden, avg_num_neighbors)
            blocks.append(block)
            irreps = block.irreps_out
            readouts.append(layer_readout(channels, readout_hidden, last=layer == num_layers - 1))
        self.blocks = torch.nn.ModuleList(blocks)
        self.readouts = torch.nn.ModuleList(readouts)

    def atomic_energies(self, positions: Tensor, species: Tensor, edge_index: Tensor, edge_vectors: Tensor,
                        batch: Tensor) -> Tensor:
        centre = edge_index[0]
        neighbour = edge_index[1]
        r = torch.linalg.vector_norm(edge_vectors, dim=1)
        edge_sh = self.spherical_harmonics(edge_vectors)
        edge_basis = self.radial_basis(r)
        features = self.embedding(species)
        energies = torch.zeros(species.shape[0], dtype=positions.dtype, device=positions.device)
        for block, readout in zip(self.blocks, self.readouts):
            features = block(features, edge_sh, edge_basis, centre, neighbour)
            energies = energies + readout(features[:, :self.channels]).squeeze(-1)
        return self.atomic_energies_ref[species] + self.shift + self.scale * energies

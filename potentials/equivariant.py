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
and stress come from autograd in :class:`~potentials.base.Potential`.
"""

import math
from contextlib import contextmanager
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import e3nn
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from torch import Tensor

from . import register_family
from .base import Configurable, Potential


@contextmanager
def eager_e3nn():
    """Build e3nn modules without pre-scripted pieces.

    With its default ``jit_mode="script"`` e3nn stores ScriptFunctions inside
    modules, which cannot be deep-copied (the trainer's weight average) or
    pickled. The whole potential is compiled by TorchScript at export anyway.
    """
    previous = e3nn.get_optimization_defaults()["jit_mode"]
    e3nn.set_optimization_defaults(jit_mode="eager")
    try:
        yield
    finally:
        e3nn.set_optimization_defaults(jit_mode=previous)


def natural_irreps(channels: int, lmax: int) -> o3.Irreps:
    """``channels x (0e + 1o + 2e + ...)`` up to ``lmax``: the parity of each ``l`` is ``(-1)^l``."""
    return o3.Irreps([(channels, (l, (-1) ** l)) for l in range(lmax + 1)])


def polynomial_envelope(d: Tensor, p: float) -> Tensor:
    """``1 - (p+1)(p+2)/2 d^p + p(p+2) d^(p+1) - p(p+1)/2 d^(p+2)`` for ``d < 1``, else 0.

    ``d = r / r_c``; the envelope and its first ``p - 1`` derivatives vanish at ``d = 1``.
    """
    value = (1.0 - (p + 1.0) * (p + 2.0) / 2.0 * d.pow(p) + p * (p + 2.0) * d.pow(p + 1.0)
             - p * (p + 1.0) / 2.0 * d.pow(p + 2.0))
    return value * (d < 1.0).to(d.dtype)


class BesselBasis(torch.nn.Module):
    """``R_n(r) = sqrt(2/r_c) sin(w_n r / r_c) / r`` times the polynomial envelope; ``w_n`` starts at ``n pi``."""

    def __init__(self, cutoff: float, num_basis: int, envelope_power: int):
        super().__init__()
        self.cutoff = float(cutoff)
        self.power = float(envelope_power)
        self.prefactor = math.sqrt(2.0 / cutoff)
        self.frequencies = torch.nn.Parameter(math.pi * torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()))

    def forward(self, r: Tensor) -> Tensor:
        d = (r / self.cutoff).unsqueeze(-1)
        basis = self.prefactor * torch.sin(self.frequencies * d) / r.unsqueeze(-1)
        return basis * polynomial_envelope(d, self.power)


class GatedActivation(torch.nn.Module):
    """Gate on ``C x 0e + G x 0e + (gated irreps)``: SiLU on the first scalars, sigmoid gates on the rest.

    Gate ``g`` of ``G = C * lmax`` multiplies channel ``g`` of the gated irreps,
    which are laid out as ``C x 1o + C x 2e + ...``. Equivariant because each
    irrep is scaled by an invariant.
    """

    def __init__(self, channels: int, lmax: int):
        super().__init__()
        self.channels = channels
        self.num_gates = channels * lmax
        blocks: List[Tuple[int, int]] = []
        start = channels + self.num_gates
        for l in range(1, lmax + 1):
            blocks.append((start, 2 * l + 1))
            start += channels * (2 * l + 1)
        self.blocks = blocks
        self.irreps_in = o3.Irreps(f"{channels}x0e") + o3.Irreps(f"{self.num_gates}x0e") + natural_irreps(channels, lmax)[1:]
        self.irreps_out = natural_irreps(channels, lmax)

    def forward(self, x: Tensor) -> Tensor:
        c = self.channels
        parts: List[Tensor] = [torch.nn.functional.silu(x[:, :c])]
        gates = torch.sigmoid(x[:, c:c + self.num_gates])
        for index, (start, dim) in enumerate(self.blocks):
            block = x[:, start:start + c * dim].reshape(x.shape[0], c, dim)
            gate = gates[:, index * c:(index + 1) * c].unsqueeze(-1)
            parts.append((block * gate).reshape(x.shape[0], c * dim))
        return torch.cat(parts, dim=1)


class InteractionBlock(torch.nn.Module):
    """One equivariant message-passing layer with a residual update (see the module docstring)."""

    def __init__(self, irreps_in: o3.Irreps, channels: int, lmax: int, num_basis: int, radial_hidden: int,
                 avg_num_neighbors: float):
        super().__init__()
        irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        irreps_hidden = natural_irreps(channels, lmax)
        self.linear_up = o3.Linear(irreps_in, irreps_in)
        # uvu paths from every input irrep and harmonic to every natural-parity output up to lmax.
        irreps_mid: List[Tuple[int, Tuple[int, int]]] = []
        instructions = []
        for i, (mul, ir_in) in enumerate(irreps_in):
            for j, (_, ir_sh) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in irreps_hidden:
                        instructions.append((i, j, len(irreps_mid), "uvu", True))
                        irreps_mid.append((mul, ir_out))
        irreps_mid = o3.Irreps(irreps_mid)
        self.tensor_product = o3.TensorProduct(irreps_in, irreps_sh, irreps_mid, instructions,
                                               shared_weights=False, internal_weights=False)
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


@register_family("equivariant")
class EquivariantPotential(Configurable, Potential):
    """E(3)-equivariant message-passing potential; hyperparameters as in :meth:`config`.

    ``species`` are atomic numbers; ``cutoff`` in Å; ``atomic_energies_ref``
    (eV, in ``species`` order), ``scale`` (eV, typically the force RMS) and
    ``shift`` (eV/atom) come from the training data.
    """

    def __init__(
        self,
        species: Sequence[int],
        cutoff: float = 5.0,
        channels: int = 32,
        lmax: int = 2,
        num_layers: int = 2,
        num_basis: int = 8,
        radial_hidden: int = 64,
        readout_hidden: int = 16,
        envelope_power: int = 6,
        avg_num_neighbors: float = 10.0,
        atomic_energies_ref: Optional[Sequence[float]] = None,
        scale: float = 1.0,
        shift: float = 0.0,
    ):
        super().__init__(list(species), cutoff)
        if channels < 1 or lmax < 0 or num_layers < 1 or num_basis < 1:
            raise ValueError("channels, num_layers and num_basis must be positive and lmax non-negative")
        if atomic_energies_ref is None:
            atomic_energies_ref = [0.0] * len(self.species)
        if len(atomic_energies_ref) != len(self.species):
            raise ValueError(f"atomic_energies_ref has {len(atomic_energies_ref)} values for "
                             f"{len(self.species)} species")
        self._config: Dict[str, Any] = dict(
            species=list(self.species), cutoff=float(cutoff), channels=int(channels), lmax=int(lmax),
            num_layers=int(num_layers), num_basis=int(num_basis), radial_hidden=int(radial_hidden),
            readout_hidden=int(readout_hidden), envelope_power=int(envelope_power),
            avg_num_neighbors=float(avg_num_neighbors), atomic_energies_ref=[float(e) for e in atomic_energies_ref],
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
            if layer < num_layers - 1:
                readouts.append(torch.nn.Linear(channels, 1, bias=False))
            else:
                readouts.append(torch.nn.Sequential(torch.nn.Linear(channels, readout_hidden), torch.nn.SiLU(),
                                                    torch.nn.Linear(readout_hidden, 1)))
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

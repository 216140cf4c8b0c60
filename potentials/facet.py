r"""Facet-style E(3)-equivariant potential (Facet, 2025), family ``facet``.

Node features are ``C`` channels of spherical-harmonic coefficients up to ``L``,
``h_i [C, (L+1)^2]`` in the ``0e + 1o + 2e + ...`` layout of
:mod:`potentials.blocks.gaunt` (natural parity: ``l`` has parity ``(-1)^l``). A layer is

    m_i  = 1/sqrt(<n>) sum_j  TP( U h_j , R(r_ij) * Y(u_ij) )        message
    h_i' = h_i + Mix( W_m m_i + W_s h_i )                            residual update
    E_i  = E_ref[z_i] + shift + scale * sum_layers readout_t(h_i^(t)_{l=0})

Radial weights are cubic B-splines of the distance on uniform knots (shared by
all element pairs), times the polynomial envelope of
:func:`potentials.blocks.radial.polynomial_envelope`:

    R_{c,q}(r) = f_env(r / r_c) sum_p w_{c,q,p} B_p(r),     B_p on [0, r_c], n_intervals + 3 of them

so a weight is a table lookup and a 4-term sum, not an MLP, and every message
vanishes smoothly at the cutoff. ``U, W_m, W_s`` mix channels within each ``l``.
``TP`` is chosen per block (registry :data:`MESSAGES`):

- ``"gaunt"``: the Gaunt product through a sphere grid. With ``T`` the grid
  evaluation and ``P`` the grid projection (:mod:`potentials.blocks.gaunt`), both
  exact on a grid fine enough for degree ``3L``,

      m_i = P( sum_j T(U h_j) * sum_l R_{c,l}(r_ij) T_l(Y_l(u_ij)) )

  Projection is linear, so neighbours are summed on the grid and projected
  once per atom. It has the parity-even paths only (``l1 + l2 + l3`` even),
  which on natural-parity features are all the paths that reach natural-parity
  outputs; it can not form odd paths such as the cross product ``1o x 1o ->
  1e`` (see ``tests/test_gaunt.py``). Its path weights factor into a radial
  weight per (channel, ``l`` of ``Y``) and a channel mix per ``l`` of ``h``.
- ``"cg"``: e3nn's Clebsch-Gordan product, one spline radial weight per
  channel and path ("uvu"), as in the ``equivariant`` family.

The first block reads the species embedding (``l = 0`` only) and the last
block returns only the ``l = 0`` channels its readout uses, so both of their
products need no grid (:class:`GauntMessage`); a full grid product runs in the
middle blocks of models with three or more layers.

``Mix`` is the spherical-grid mixing layer :class:`SphereGridMixing`: evaluate
the features on a sphere grid, apply one small MLP over the channels at every
grid point, project back and add a scalar path. A pointwise nonlinearity is
not band-limited, so this is equivariant only up to the grid's aliasing: for
the default grid the relative change of its output under rotation is bounded
by :data:`MIXING_EQUIVARIANCE_BOUND` (measured and tested in
``tests/test_facet.py``). Everything else is exact. Forces and stress come
from autograd in :class:`~potentials.base.Potential`.

``mixing = "product"`` replaces the MLP by :class:`DensityProductMixing`, a polynomial of degree
``nu = mixing_correlation`` in the grid values. Its input is the neighbour density ``m_i`` (plus the self
path), so a layer reaches correlation order ``nu`` as MACE's symmetric contraction does, at grid cost; the
polynomial is band-limited (degree ``nu L``), so on a grid exact to degree ``(nu + 1) L`` it is equivariant
to round-off.
"""

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from e3nn import o3
from torch import Tensor

from . import register_family
from .base import Configurable, Potential
from .blocks.gaunt import from_grid_matrix, quadrature_grid_matrices, to_grid_matrix
from .blocks.irreps import eager_e3nn, natural_irreps, uvu_tensor_product
from .blocks.radial import SplineRadialBasis
from .blocks.readout import layer_readout, reference_energies

# Relative equivariance error of SphereGridMixing on its default grid, max |Mix(Dx) - D Mix(x)| / max |Mix(x)|
# for unit-variance features, 32 channels, random weights and rotations (float64): measured 2.8e-3 (L = 1,
# grid 8x7), 1.1e-3 (L = 2, 16x15), 1.0e-3 (L = 3, 24x23); 3.7e-3 at L = 2 for features three times larger,
# 2e-5 for features of size 0.3 (the aliasing grows with the nonlinearity's curvature). tests/test_facet.py
# holds it under this bound and shows that the exact rule's grid for degree 2 L does not.
MIXING_EQUIVARIANCE_BOUND = 1e-2


def mixing_resolution(lmax: int) -> Tuple[int, int]:
    """Default mixing grid ``(res_beta, res_alpha) = (8 L, 8 L - 1)``, chosen by measurement.

    A pointwise MLP of a degree-``L`` signal is not band-limited, so no grid is
    exact; this one keeps the aliasing under :data:`MIXING_EQUIVARIANCE_BOUND`.
    """
    return max(8 * lmax, 2), max(8 * lmax - 1, 1)


def component_grids(lmax: int, degree: int) -> Tuple[Tensor, Tensor]:
    """``(T [(L+1)^2, G], P [G, (L+1)^2])``: values at the points of a grid exact to ``degree`` and projection back.

    ``T P = 1``. Scaled for e3nn's "component" coefficients, so a feature with
    ``l = 0`` coefficient ``a`` has value ``a`` everywhere.
    """
    to_grid, from_grid = quadrature_grid_matrices(lmax, degree)
    scale = math.sqrt(4.0 * math.pi)
    return scale * to_grid, from_grid / scale


def degree_of_component(lmax: int) -> Tensor:
    """``l`` of each of the ``(L+1)^2`` components."""
    return torch.cat([torch.full((2 * l + 1,), l, dtype=torch.int64) for l in range(lmax + 1)])


class ChannelLinear(torch.nn.Module):
    """``y[c', lm] = sum_c W_l[c', c] x[c, lm] / sqrt(C_in)``: equivariant channel mixing, one matrix per ``l``."""

    def __init__(self, channels_in: int, channels_out: int, lmax: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(lmax + 1, channels_out, channels_in))
        self.norm = 1.0 / math.sqrt(channels_in)
        self.register_buffer("degree", degree_of_component(lmax), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("nck,kdc->ndk", x, self.weight[self.degree]) * self.norm


def to_irreps_layout(x: Tensor, lmax: int) -> Tensor:
    """``[N, C, (L+1)^2]`` -> e3nn's ``C x 0e + C x 1o + ...`` layout ``[N, C (L+1)^2]``."""
    parts: List[Tensor] = []
    for l in range(lmax + 1):
        parts.append(x[:, :, l * l:(l + 1) * (l + 1)].reshape(x.shape[0], -1))
    return torch.cat(parts, dim=1)


def to_channel_layout(x: Tensor, channels: int, lmax: int) -> Tensor:
    """Inverse of :func:`to_irreps_layout`."""
    parts: List[Tensor] = []
    start = 0
    for l in range(lmax + 1):
        size = channels * (2 * l + 1)
        parts.append(x[:, start:start + size].reshape(x.shape[0], channels, 2 * l + 1))
        start += size
    return torch.cat(parts, dim=2)


class GauntMessage(torch.nn.Module):
    """Messages by the Gaunt product of ``U h_j`` (degrees to ``lmax_in``) and ``R(r) Y(u)`` (to ``lmax``).

    Full blocks multiply on a grid exact for degree ``lmax_in + lmax + lmax_out``
    and sum neighbours on the grid (see the module docstring). Two cases need no
    grid and are computed in coefficient space with the same result: a scalar
    input (``lmax_in = 0``: ``m = x_0 R Y``, the first block) and a scalar output
    (``lmax_out = 0``: ``m_0 = sum_lm x_lm R_l Y_lm``, the last block).
    """

    def __init__(self, channels: int, lmax_in: int, lmax_out: int, lmax: int, num_basis: int,
                 avg_num_neighbors: float):
        super().__init__()
        self.channels = channels
        self.lmax = lmax
        self.num_out = (lmax_out + 1) ** 2
        self.scalar_input = lmax_in == 0
        self.scalar_output = lmax_out == 0 and not self.scalar_input
        lmax_grid = max(lmax_in, lmax, lmax_out)
        to_grid, from_grid = component_grids(lmax_grid, lmax_in + lmax + lmax_out)
        dtype = torch.get_default_dtype()
        self.register_buffer("to_grid_in", to_grid[:(lmax_in + 1) ** 2].to(dtype), persistent=False)
        self.register_buffer("to_grid_sh", to_grid[:(lmax + 1) ** 2].to(dtype), persistent=False)
        self.register_buffer("from_grid", from_grid[:, :(lmax_out + 1) ** 2].to(dtype), persistent=False)
        self.register_buffer("degree", degree_of_component(lmax), persistent=False)
        self.linear_up = ChannelLinear(channels, channels, lmax_in)
        self.radial = torch.nn.Linear(num_basis, channels * (lmax + 1), bias=False)
        self.message_norm = 1.0 / math.sqrt(avg_num_neighbors)

    def forward(self, features: Tensor, edge_sh: Tensor, edge_basis: Tensor, centre: Tensor,
                neighbour: Tensor) -> Tensor:
        up = self.linear_up(features)
        weights = self.radial(edge_basis).reshape(-1, self.channels, self.lmax + 1)
        if self.scalar_input or self.scalar_output:
            weighted_sh = weights[:, :, self.degree] * edge_sh.unsqueeze(1)  # [E, C, (lmax+1)^2]
            if self.scalar_input:
                products = up[neighbour][:, :, :1] * weighted_sh[:, :, :self.num_out]
            else:
                products = (up[neighbour] * weighted_sh).sum(dim=2, keepdim=True)
            summed = torch.zeros((features.shape[0], self.channels, products.shape[2]), dtype=products.dtype,
                                 device=products.device)
            return summed.index_add(0, centre, products) * self.message_norm
        node_grid = torch.matmul(up, self.to_grid_in)  # [N, C, G]
        sh_grid: List[Tensor] = []
        for l in range(self.lmax + 1):
            sh_grid.append(torch.matmul(edge_sh[:, l * l:(l + 1) * (l + 1)], self.to_grid_sh[l * l:(l + 1) * (l + 1)]))
        edge_grid = torch.einsum("ecl,elg->ecg", weights, torch.stack(sh_grid, dim=1))
        products = node_grid[neighbour] * edge_grid
        summed = torch.zeros((features.shape[0], self.channels, products.shape[2]), dtype=products.dtype,
                             device=products.device)
        summed = summed.index_add(0, centre, products)
        return torch.matmul(summed, self.from_grid) * self.message_norm


class ClebschGordanMessage(torch.nn.Module):
    """Messages by e3nn's Clebsch-Gordan product ("uvu", natural-parity outputs), spline radial weights."""

    def __init__(self, channels: int, lmax_in: int, lmax_out: int, lmax: int, num_basis: int,
                 avg_num_neighbors: float):
        super().__init__()
        self.channels = channels
        self.lmax_in = lmax_in
        self.lmax_out = lmax_out
        irreps_out = natural_irreps(channels, lmax_out)
        self.linear_up = ChannelLinear(channels, channels, lmax_in)
        self.tensor_product = uvu_tensor_product(natural_irreps(channels, lmax_in),
                                                 o3.Irreps.spherical_harmonics(lmax), irreps_out)
        self.radial = torch.nn.Linear(num_basis, self.tensor_product.weight_numel, bias=False)
        self.linear_down = o3.Linear(self.tensor_product.irreps_out, irreps_out)
        self.message_norm = 1.0 / math.sqrt(avg_num_neighbors)

    def forward(self, features: Tensor, edge_sh: Tensor, edge_basis: Tensor, centre: Tensor,
                neighbour: Tensor) -> Tensor:
        up = to_irreps_layout(self.linear_up(features), self.lmax_in)
        messages = self.tensor_product(up[neighbour], edge_sh, self.radial(edge_basis))
        summed = torch.zeros((features.shape[0], messages.shape[1]), dtype=messages.dtype, device=messages.device)
        summed = summed.index_add(0, centre, messages) * self.message_norm
        return to_channel_layout(self.linear_down(summed), self.channels, self.lmax_out)


# Tensor-product kinds selectable per block; a new kind registers here with the same constructor and forward.
MESSAGES = {"gaunt": GauntMessage, "cg": ClebschGordanMessage}


class SphereGridMixing(torch.nn.Module):
    r"""``Mix(x) = P( MLP( T x ) ) + W silu(x_{l=0})``: a pointwise MLP over channels on a sphere grid.

    ``T x`` evaluates each channel's signal ``f_c(r) = sum_lm x_{c,lm} Y_lm(r)`` at
    the grid points; the MLP (``C -> hidden -> C``, SiLU) acts on the channel
    vector at each point; ``P`` projects back to degree ``L``; the scalar path
    ``W silu(x_0)`` adds a plain invariant update. Rotating ``x`` rotates ``f``
    on the sphere, so the result is equivariant up to the grid's aliasing of
    the non-band-limited ``MLP(f)`` (see :data:`MIXING_EQUIVARIANCE_BOUND`).
    For ``L = 0`` the signal is a constant and this is an ordinary MLP, exactly.
    """

    def __init__(self, channels: int, lmax: int, hidden: int, res: Optional[Tuple[int, int]] = None):
        super().__init__()
        self.res = mixing_resolution(lmax) if res is None else (int(res[0]), int(res[1]))
        scale = math.sqrt(4.0 * math.pi)
        to_grid, from_grid = scale * to_grid_matrix(lmax, self.res), from_grid_matrix(lmax, self.res) / scale
        self.register_buffer("to_grid", to_grid.to(torch.get_default_dtype()), persistent=False)
        self.register_buffer("from_grid", from_grid.to(torch.get_default_dtype()), persistent=False)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(channels, hidden), torch.nn.SiLU(),
                                       torch.nn.Linear(hidden, channels))
        self.scalar = torch.nn.Linear(channels, channels, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        values = torch.matmul(x, self.to_grid).transpose(1, 2)  # [N, G, C]
        mixed = torch.matmul(self.mlp(values).transpose(1, 2), self.from_grid)  # [N, C, K]
        scalar = self.scalar(torch.nn.functional.silu(x[:, :, 0]))
        return torch.cat([mixed[:, :, :1] + scalar.unsqueeze(-1), mixed[:, :, 1:]], dim=2)


class DensityProductMixing(torch.nn.Module):
    r"""``Mix(x) = P( sum_{k=1..nu} prod_{j=1..k} W_{kj} T x ) + W silu(x_{l=0})``: products of the density.

    ``T x`` are the channel signals ``f_c`` on the sphere; each ``W_{kj}`` mixes channels at every grid point,
    so for ``nu = 3`` the update's grid values are ``W_1 f + (W_21 f)(W_22 f) + (W_31 f)(W_32 f)(W_33 f)``
    (grid products of linear maps of the signal: Gaunt products without Clebsch-Gordan sums). A degree-``L``
    signal gives a product of degree ``k L``; ``P`` projects it to degree ``L`` with a rule exact to degree
    ``(nu + 1) L`` (:func:`component_grids`), so the result is equivariant to round-off, with no aliasing.
    The scalar path is that of :class:`SphereGridMixing`.
    """

    def __init__(self, channels: int, lmax: int, correlation: int = 3):
        super().__init__()
        if correlation < 1:
            raise ValueError(f"mixing_correlation must be at least 1, not {correlation}")
        if lmax == 0:  # a constant signal: one point carries it
            to_grid, from_grid = torch.ones(1, 1), torch.ones(1, 1)
        else:
            to_grid, from_grid = component_grids(lmax, (correlation + 1) * lmax)
        self.register_buffer("to_grid", to_grid.to(torch.get_default_dtype()), persistent=False)
        self.register_buffer("from_grid", from_grid.to(torch.get_default_dtype()), persistent=False)
        self.channels = channels
        self.correlation = correlation
        self.factors = torch.nn.Linear(channels, channels * correlation * (correlation + 1) // 2, bias=False)
        self.scalar = torch.nn.Linear(channels, channels, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        values = torch.matmul(x, self.to_grid).transpose(1, 2)  # [N, G, C]
        factors = self.factors(values).split(self.channels, dim=2)
        grid = factors[0]
        start = 1
        for order in range(2, self.correlation + 1):
            term = factors[start]
            for j in range(1, order):
                term = term * factors[start + j]
            grid = grid + term
            start += order
        mixed = torch.matmul(grid.transpose(1, 2), self.from_grid)  # [N, C, K]
        scalar = self.scalar(torch.nn.functional.silu(x[:, :, 0]))
        return torch.cat([mixed[:, :, :1] + scalar.unsqueeze(-1), mixed[:, :, 1:]], dim=2)


def _mlp_mixing(channels: int, lmax: int, hidden: int, res: Optional[Tuple[int, int]], correlation: int):
    return SphereGridMixing(channels, lmax, hidden, res if lmax > 0 else None)


def _product_mixing(channels: int, lmax: int, hidden: int, res: Optional[Tuple[int, int]], correlation: int):
    return DensityProductMixing(channels, lmax, correlation)


# Mixing kinds (``mixing``): name -> builder(channels, lmax, mixing_hidden, mixing_resolution, mixing_correlation).
MIXINGS = {"mlp": _mlp_mixing, "product": _product_mixing}


class FacetBlock(torch.nn.Module):
    """``h' = h_{l <= lmax_out} + Mix(W_m m + W_s h)`` with the message ``m`` of the chosen tensor-product kind."""

    def __init__(self, kind: str, channels: int, lmax_in: int, lmax_out: int, lmax: int, num_basis: int,
                 avg_num_neighbors: float, mixing_hidden: int, mixing_res: Optional[Tuple[int, int]],
                 mixing: str = "mlp", mixing_correlation: int = 3):
        super().__init__()
        self.num_out = (lmax_out + 1) ** 2
        self.message = MESSAGES[kind](channels, lmax_in, lmax_out, lmax, num_basis, avg_num_neighbors)
        self.linear_message = ChannelLinear(channels, channels, lmax_out)
        self.linear_self = ChannelLinear(channels, channels, min(lmax_in, lmax_out))
        self.mixing = MIXINGS[mixing](channels, lmax_out, mixing_hidden, mixing_res, mixing_correlation)

    def forward(self, features: Tensor, edge_sh: Tensor, edge_basis: Tensor, centre: Tensor,
                neighbour: Tensor) -> Tensor:
        message = self.linear_message(self.message(features, edge_sh, edge_basis, centre, neighbour))
        own = self.linear_self(features[:, :, :self.num_out])
        if own.shape[2] < self.num_out:  # scalar input: the self path feeds l = 0 only
            own = torch.cat([own, own.new_zeros(own.shape[0], own.shape[1], self.num_out - own.shape[2])], dim=2)
        update = self.mixing(message + own)
        residual = features[:, :, :self.num_out]
        if residual.shape[2] < self.num_out:
            return torch.cat([residual + update[:, :, :residual.shape[2]], update[:, :, residual.shape[2]:]], dim=2)
        return residual + update


@register_family("facet")
class FacetPotential(Configurable, Potential):
    """Facet-style potential; hyperparameters as in :meth:`config`.

    ``tensor_product`` is ``"gaunt"``, ``"cg"`` or one of them per layer;
    ``spline_intervals`` sets the radial B-spline knots (``spline_intervals +
    3`` functions on ``[0, cutoff]``); ``mixing_hidden`` the width of the grid
    MLP and ``mixing_resolution`` its grid ``(res_beta, res_alpha)`` (default
    :func:`mixing_resolution`); ``mixing`` is ``"mlp"`` or ``"product"`` (:data:`MIXINGS`), the latter of
    degree ``mixing_correlation``. Grid matrices are not part of the state dict, so
    trained weights load into a model with a finer mixing grid unchanged: on the
    ethanol model of ``scripts/compare_families.py`` the force rotation error
    went from 1.9e-3 (16x15) to 1.3e-4 (24x23) and 1.2e-5 (32x31) of max |F|
    with the force MAE unchanged to 0.01 meV/Å. ``atomic_energies_ref`` (eV), ``scale`` (eV)
    and ``shift`` (eV/atom) come from the training data as in ``equivariant``; ``repulsion`` names the
    short-range prior added to the learned energy (:class:`~potentials.base.Potential`).
    """

    def __init__(self, species: Sequence[int], cutoff: float = 5.0,
                 channels: int = 32, lmax: int = 2, num_layers: int = 2,
                 tensor_product: Union[str, Sequence[str]] = "gaunt", spline_intervals: int = 8,
                 mixing_hidden: int = 32, mixing_resolution: Optional[Sequence[int]] = None,
                 readout_hidden: int = 16, envelope_power: int = 6, avg_num_neighbors: float = 10.0,
                 atomic_energies_ref: Optional[Sequence[float]] = None, scale: float = 1.0, shift: float = 0.0,
                 repulsion: str = "none", mixing: str = "mlp", mixing_correlation: int = 3):
        super().__init__(list(species), cutoff, repulsion)
        if mixing not in MIXINGS:
            raise ValueError(f"mixing {mixing!r} is not one of {sorted(MIXINGS)}")
        if channels < 1 or lmax < 0 or num_layers < 1 or spline_intervals < 1 or mixing_hidden < 1:
            raise ValueError("channels, num_layers, spline_intervals and mixing_hidden must be positive "
                             "and lmax non-negative")
        kinds = [tensor_product] * num_layers if isinstance(tensor_product, str) else list(tensor_product)
        if len(kinds) != num_layers:
            raise ValueError(f"tensor_product lists {len(kinds)} kinds for {num_layers} layers")
        unknown = [k for k in kinds if k not in MESSAGES]
        if unknown:
            raise ValueError(f"tensor_product {unknown[0]!r} is not one of {sorted(MESSAGES)}")
        atomic_energies_ref = reference_energies(atomic_energies_ref, len(self.species))
        res = None if mixing_resolution is None else (int(mixing_resolution[0]), int(mixing_resolution[1]))
        self._config: Dict[str, Any] = dict(
            species=list(self.species), cutoff=float(cutoff), channels=int(channels), lmax=int(lmax),
            num_layers=int(num_layers), tensor_product=kinds, spline_intervals=int(spline_intervals),
            mixing_hidden=int(mixing_hidden), mixing_resolution=None if res is None else list(res),
            readout_hidden=int(readout_hidden), envelope_power=int(envelope_power),
            avg_num_neighbors=float(avg_num_neighbors), atomic_energies_ref=atomic_energies_ref,
            scale=float(scale), shift=float(shift), mixing=mixing, mixing_correlation=int(mixing_correlation),
        )
        self.channels = channels
        self.lmax = lmax
        with eager_e3nn():
            self.radial_basis = SplineRadialBasis(cutoff, spline_intervals, envelope_power)
            self.spherical_harmonics = o3.SphericalHarmonics(o3.Irreps.spherical_harmonics(lmax), normalize=True,
                                                             normalization="norm")
            self.embedding = torch.nn.Embedding(len(self.species), channels)
            # The first block sees scalars only; the last needs only the scalars its readout uses.
            degrees = [0] + [lmax] * (num_layers - 1) + [0]
            self.blocks = torch.nn.ModuleList([
                FacetBlock(kind, channels, degrees[t], degrees[t + 1], lmax, self.radial_basis.num_basis,
                           avg_num_neighbors, mixing_hidden, res, mixing, mixing_correlation)
                for t, kind in enumerate(kinds)])
        self.readouts = torch.nn.ModuleList([layer_readout(channels, readout_hidden, last=t == num_layers - 1)
                                             for t in range(num_layers)])
        self.register_buffer("atomic_energies_ref", torch.tensor(atomic_energies_ref, dtype=torch.get_default_dtype()))
        self.scale = float(scale)
        self.shift = float(shift)

    def atomic_energies(self, positions: Tensor, species: Tensor, edge_index: Tensor, edge_vectors: Tensor,
                        batch: Tensor) -> Tensor:
        centre = edge_index[0]
        neighbour = edge_index[1]
        edge_sh = self.spherical_harmonics(edge_vectors)
        edge_basis = self.radial_basis(torch.linalg.vector_norm(edge_vectors, dim=1))
        features = self.embedding(species).unsqueeze(-1)
        energies = torch.zeros(species.shape[0], dtype=positions.dtype, device=positions.device)
        for block, readout in zip(self.blocks, self.readouts):
            features = block(features, edge_sh, edge_basis, centre, neighbour)
            energies = energies + readout(features[:, :, 0]).squeeze(-1)
        return self.atomic_energies_ref[species] + self.shift + self.scale * energies

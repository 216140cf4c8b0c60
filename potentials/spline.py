"""UF3-style spline potential (Xie et al., "Ultra-fast interpretable machine-learning
potentials", npj Comput. Mater. 2023), family ``spline``.

Energy (eV) of a system with atoms of species ``a_i``::

    E = sum_i e1[a_i]                                              one-body (eV)
      + sum_{i<j} V2_{a_i a_j}(r_ij)                               two-body, r_ij < cutoff
      + sum_i sum_{j<k} V3_{a_i, {a_j a_k}}(r_ij, r_ik, r_jk)       three-body, r_ij, r_ik < cutoff_3body

Every term is a cubic B-spline on uniform knots::

    V2_ab(r)      = sum_p c_ab[p] B_p(r)
    V3_abc(x,y,z) = sum_pqr c_abc[p,q,r] B_p(x) B_q(y) B_r(z)      (tensor product)

with ``B_p(r) = N((r - r_min) / h - p + 3)``, ``N`` the cardinal cubic B-spline on
[0, 4] and ``h = (r_cut - r_min) / n_intervals`` (Å). On ``[r_min, r_cut]`` the
``n_intervals + 3`` functions sum to one (:mod:`potentials.blocks.bsplines`). The last three coefficients along every
axis that ends at a cutoff are fixed to zero, so V, dV/dr and d2V/dr2 vanish at the
cutoff (C2). The ``r_jk`` axis spans ``[r_min_3body, 2 cutoff_3body]`` with no
constraint (``r_jk < r_ij + r_ik``). Below ``r_min`` a spline continues linearly
with its value and slope at ``r_min`` (C1), so close contacts stay finite.

The three-body channel of a centre ``a`` and neighbours ``b <= c`` (species index)
is stored once; its neighbours are ordered so that ``r_ij`` belongs to ``b``, and
for ``b == c`` the coefficients are symmetrised in ``(p, q)``, which makes the
energy invariant under any permutation of atoms.

The energy is linear in the coefficients, so :meth:`SplinePotential.fit_linear`
fits them by regularised linear least squares on energies and forces (UF3's ridge
and curvature penalties), in float64, in seconds.
"""

import math
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import register_family
from .base import Configurable, Potential
from .blocks.bsplines import dense_basis, local_basis
from .blocks.readout import reference_energies
from .neighbors import edge_vectors, neighbor_list


def edge_pairs(centre: Tensor, n_atoms: int) -> Tuple[Tensor, Tensor]:
    """Every unordered pair of edges that share their centre atom, as two index tensors into ``centre``."""
    order = torch.argsort(centre, stable=True)
    sorted_centre = centre[order]
    counts = torch.bincount(sorted_centre, minlength=n_atoms)
    start = torch.cumsum(counts, 0) - counts
    position = torch.arange(centre.shape[0], device=centre.device)
    later = start[sorted_centre] + counts[sorted_centre] - 1 - position  # edges after this one, same centre
    first = torch.repeat_interleave(position, later)
    group_start = torch.cumsum(later, 0) - later
    second = first + 1 + torch.arange(first.shape[0], device=centre.device) - group_start[first]
    return order[first], order[second]


@register_family("spline")
class SplinePotential(Configurable, Potential):
    """UF3-style two- and three-body cubic B-spline potential (see the module docstring).

    ``species``: atomic numbers. ``cutoff`` (Å): two-body cutoff; ``cutoff_3body`` (Å):
    three-body cutoff, 0 turns the three-body term off. ``r_min``, ``r_min_3body`` (Å):
    first knot. ``n_intervals``, ``n_intervals_3body``: knot intervals on
    ``[r_min, cutoff]`` and on each three-body side ``[r_min_3body, cutoff_3body]``.
    ``ridge``, ``curvature``: the fit's penalties (see :meth:`fit_linear`).
    ``atomic_energies_ref`` (eV, ``species`` order): initial one-body energies.
    The coefficients start at zero; fit them with :meth:`fit_linear`. ``repulsion``: the
    short-range prior added to the splines (:class:`~potentials.base.Potential`).

    Put ``r_min`` at or below the shortest distance in the data (below it the spline is
    only a linear continuation). Size: ``s (s+1)/2 * n_intervals`` pair coefficients and
    ``s^2 (s+1)/2 * n_intervals_3body^2 * (n_jk + 3)`` triplet ones for ``s`` species, with
    ``n_jk ~ 2 n_intervals_3body``; the fit's cost grows with the cube of their number
    (defaults: 245 coefficients for Cu, 4,155 and ~5 s on one core for H/C/O).
    """

    # mlmd train fits it once, in closed form, by fit_linear (see potentials.base.TrainableFamily).
    training_strategy: str = "closed_form"

    def __init__(
        self,
        species: Sequence[int],
        cutoff: float = 5.5,
        cutoff_3body: float = 3.5,
        r_min: float = 1.5,
        r_min_3body: float = 1.5,
        n_intervals: int = 20,
        n_intervals_3body: int = 4,
        ridge: float = 1e-6,
        curvature: float = 1e-5,
        atomic_energies_ref: Optional[Sequence[float]] = None,
        repulsion: str = "none",
    ):
        cutoff_3body = float(cutoff_3body)
        super().__init__(list(species), max(float(cutoff), cutoff_3body), repulsion)
        if not 0 <= r_min < cutoff:
            raise ValueError(f"need 0 <= r_min < cutoff, got r_min={r_min}, cutoff={cutoff}")
        if n_intervals < 2:
            raise ValueError(f"n_intervals must be at least 2, got {n_intervals}")
        if cutoff_3body < 0:
            raise ValueError(f"cutoff_3body must be >= 0 (0 turns the three-body term off), got {cutoff_3body}")
        use_3body = cutoff_3body > 0
        if use_3body and not 0 <= r_min_3body < cutoff_3body:
            raise ValueError(f"need 0 <= r_min_3body < cutoff_3body, got {r_min_3body}, {cutoff_3body}")
        if use_3body and n_intervals_3body < 2:
            raise ValueError(f"n_intervals_3body must be at least 2, got {n_intervals_3body}")
        if ridge < 0 or curvature < 0:
            raise ValueError("ridge and curvature penalties must be non-negative")
        n_species = len(self.species)
        atomic_energies_ref = reference_energies(atomic_energies_ref, n_species)
        self._config: Dict[str, Any] = dict(
            species=list(self.species), cutoff=float(cutoff), cutoff_3body=cutoff_3body, r_min=float(r_min),
            r_min_3body=float(r_min_3body), n_intervals=int(n_intervals), n_intervals_3body=int(n_intervals_3body),
            ridge=float(ridge), curvature=float(curvature),
            atomic_energies_ref=atomic_energies_ref,
        )
        self.cutoff_2body = float(cutoff)
        self.r_min = float(r_min)
        self.n_intervals = int(n_intervals)
        self.spacing = (self.cutoff_2body - self.r_min) / self.n_intervals
        self.use_3body = use_3body
        self.cutoff_3body = cutoff_3body
        self.r_min_3body = float(r_min_3body)
        self.n_intervals_3body = int(n_intervals_3body) if use_3body else 4
        self.spacing_3body = (cutoff_3body - self.r_min_3body) / self.n_intervals_3body if use_3body else 1.0
        # r_jk axis: same spacing, from r_min_3body up to at least 2 cutoff_3body.
        self.n_intervals_jk = (int(math.ceil((2 * cutoff_3body - self.r_min_3body) / self.spacing_3body - 1e-9))
                               if use_3body else 1)
        self.ridge = float(ridge)
        self.curvature = float(curvature)

        pair_index = torch.zeros(n_species, n_species, dtype=torch.int64)
        pairs = [(a, b) for a in range(n_species) for b in range(a, n_species)]
        for k, (a, b) in enumerate(pairs):
            pair_index[a, b] = pair_index[b, a] = k
        self.n_pairs = len(pairs)
        self.n_channels = n_species * self.n_pairs if use_3body else 0
        channel_index = torch.zeros(n_species, n_species, n_species, dtype=torch.int64)
        same_species = torch.zeros(max(self.n_channels, 1), dtype=torch.bool)
        for a in range(n_species):
            for k, (b, c) in enumerate(pairs):
                channel_index[a, b, c] = channel_index[a, c, b] = a * self.n_pairs + k
                if use_3body:
                    same_species[a * self.n_pairs + k] = b == c
        self.register_buffer("pair_index", pair_index, persistent=False)
        self.register_buffer("channel_index", channel_index, persistent=False)
        self.register_buffer("same_species", same_species[:self.n_channels], persistent=False)

        dtype = torch.get_default_dtype()
        self.one_body = torch.nn.Parameter(torch.tensor(atomic_energies_ref, dtype=dtype))
        # Free coefficients (eV); the three trailing ones along each cutoff axis are the fixed zeros.
        self.pair_coefficients = torch.nn.Parameter(torch.zeros(self.n_pairs, self.n_intervals, dtype=dtype))
        self.triplet_coefficients = torch.nn.Parameter(torch.zeros(
            self.n_channels, self.n_intervals_3body, self.n_intervals_3body, self.n_intervals_jk + 3, dtype=dtype))

    # -- coefficients ---------------------------------------------------------

    def full_pair_coefficients(self) -> Tensor:
        """``[n_pairs, n_intervals + 3]`` eV, trailing three zeros included."""
        return torch.nn.functional.pad(self.pair_coefficients, (0, 3))

    def full_triplet_coefficients(self) -> Tensor:
        """``[n_channels, n1, n1, n_jk]`` eV with ``n1 = n_intervals_3body + 3``, trailing zeros
        on the ``r_ij`` and ``r_ik`` axes, symmetric in ``(p, q)`` for channels with ``b == c``."""
        c = torch.nn.functional.pad(self.triplet_coefficients, (0, 0, 0, 3, 0, 3))
        symmetric = 0.5 * (c + c.transpose(1, 2))
        return torch.where(self.same_species.view(-1, 1, 1, 1), symmetric, c)

    # -- energy ---------------------------------------------------------------

    def _triplets(self, species: Tensor, edge_index: Tensor, vectors: Tensor, r: Tensor) -> Tuple[
            Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Three-body terms: centre, first and second neighbour, channel, the vectors ``r_ij`` and
        ``r_ik`` (ordered so that species[j] <= species[k]) and ``r_jk = r_ik - r_ij`` (Å)."""
        selected = torch.nonzero(r < self.cutoff_3body).squeeze(-1)
        centre_of = edge_index[0][selected]
        first, second = edge_pairs(centre_of, species.shape[0])
        e1 = selected[first]
        e2 = selected[second]
        swap = species[edge_index[1][e1]] > species[edge_index[1][e2]]
        e1, e2 = torch.where(swap, e2, e1), torch.where(swap, e1, e2)
        centre = edge_index[0][e1]
        j = edge_index[1][e1]
        k = edge_index[1][e2]
        channel = self.channel_index[species[centre], species[j], species[k]]
        v1 = vectors[e1]
        v2 = vectors[e2]
        return centre, j, k, channel, v1, v2, v2 - v1

    def atomic_energies(self, positions: Tensor, species: Tensor, edge_index: Tensor, edge_vectors: Tensor,
                        batch: Tensor) -> Tensor:
        """``E_i = e1[a_i] + 1/2 sum_j V2(r_ij) + sum_{j<k} V3(r_ij, r_ik, r_jk)`` in eV."""
        energies = self.one_body[species].to(positions.dtype)
        r = torch.linalg.vector_norm(edge_vectors, dim=1)
        inside = torch.nonzero(r < self.cutoff_2body).squeeze(-1)
        centre = edge_index[0][inside]
        pair = self.pair_index[species[centre], species[edge_index[1][inside]]]
        per_pair = torch.matmul(dense_basis(r[inside], self.r_min, self.spacing, self.n_intervals),
                                self.full_pair_coefficients().T)  # V2 of every pair type, [E, n_pairs]
        pair_energy = per_pair.gather(1, pair.unsqueeze(1)).squeeze(1)
        energies = energies.index_add(0, centre, 0.5 * pair_energy)
        if self.use_3body:
            centre3, _, _, channel, v1, v2, v3 = self._triplets(species, edge_index, edge_vectors, r)
            energies = energies.index_add(0, centre3, self._triplet_energy(channel, v1, v2, v3))
        return energies

    def _triplet_energy(self, channel: Tensor, v1: Tensor, v2: Tensor, v3: Tensor) -> Tensor:
        """``V3 = sum_pqr c[ch,p,q,r] B_p(r_ij) B_q(r_ik) B_r(r_jk)`` as ``(B_ij (x) B_ik) @ c``: one dense matmul."""
        n1 = self.n_intervals_3body + 3
        n3 = self.n_intervals_jk + 3
        b1 = dense_basis(torch.linalg.vector_norm(v1, dim=1), self.r_min_3body, self.spacing_3body,
                         self.n_intervals_3body)
        b2 = dense_basis(torch.linalg.vector_norm(v2, dim=1), self.r_min_3body, self.spacing_3body,
                         self.n_intervals_3body)
        b3 = dense_basis(torch.linalg.vector_norm(v3, dim=1), self.r_min_3body, self.spacing_3body,
                         self.n_intervals_jk)
        outer = (b1.unsqueeze(2) * b2.unsqueeze(1)).reshape(-1, n1 * n1)
        coefficients = self.full_triplet_coefficients().permute(1, 2, 0, 3).reshape(n1 * n1, -1)
        along_jk = torch.matmul(outer, coefficients).view(-1, self.n_channels, n3)
        if self.n_channels > 1:
            along_jk = along_jk.gather(1, channel.view(-1, 1, 1).expand(-1, 1, n3))
        return (along_jk.squeeze(1) * b3).sum(dim=1)

    # -- linear least-squares fit --------------------------------------------------

    def n_coefficients(self) -> int:
        """Length of the full coefficient vector: one-body, pair, triplet (fixed zeros included)."""
        return len(self.species) + self.full_pair_coefficients().numel() + self.full_triplet_coefficients().numel()

    def _free_columns(self) -> Tensor:
        """Boolean mask of the fitted entries of the full coefficient vector."""
        pair = torch.zeros(self.n_pairs, self.n_intervals + 3, dtype=torch.bool)
        pair[:, :self.n_intervals] = True
        n1 = self.n_intervals_3body + 3
        triplet = torch.zeros(self.n_channels, n1, n1, self.n_intervals_jk + 3, dtype=torch.bool)
        triplet[:, :self.n_intervals_3body, :self.n_intervals_3body] = True
        return torch.cat([torch.ones(len(self.species), dtype=torch.bool), pair.reshape(-1), triplet.reshape(-1)])

    def coefficient_vector(self) -> Tensor:
        """The full effective coefficient vector (float64): the model's energy is ``features @ vector``."""
        with torch.no_grad():
            return torch.cat([self.one_body.double(), self.full_pair_coefficients().double().reshape(-1),
                              self.full_triplet_coefficients().double().reshape(-1)])

    def set_coefficient_vector(self, vector: Tensor) -> None:
        """Load a full coefficient vector (fixed entries must be zero; same-species channels are symmetrised)."""
        n_species = len(self.species)
        n_pair = self.n_pairs * (self.n_intervals + 3)
        n1 = self.n_intervals_3body + 3
        with torch.no_grad():
            self.one_body.copy_(vector[:n_species])
            pair = vector[n_species:n_species + n_pair].view(self.n_pairs, -1)
            self.pair_coefficients.copy_(pair[:, :self.n_intervals])
            triplet = vector[n_species + n_pair:].view(self.n_channels, n1, n1, self.n_intervals_jk + 3)
            self.triplet_coefficients.copy_(triplet[:, :self.n_intervals_3body, :self.n_intervals_3body])

    def _curvature_penalty(self, free: Tensor) -> Tensor:
        """``D2^T D2`` over the free coefficients (dense ``[n_free, n_free]``), where ``D2`` takes the
        second differences ``c[p-1] - 2 c[p] + c[p+1]`` along every spline axis of the full layout;
        the fixed zeros at a cutoff take part, so the spline is also kept from kinking into them."""
        blocks: List[Tuple[Tuple[int, ...], int]] = [((self.n_pairs, self.n_intervals + 3), len(self.species))]
        if self.use_3body:
            n1 = self.n_intervals_3body + 3
            blocks.append(((self.n_channels, n1, n1, self.n_intervals_jk + 3),
                           len(self.species) + self.n_pairs * (self.n_intervals + 3)))
        free = free.cpu()
        column_of = torch.cumsum(free.to(torch.int64), 0) - 1  # full index -> free index
        n_free = int(free.sum())
        penalty = torch.zeros(n_free, n_free, dtype=torch.float64)
        for shape, start in blocks:
            index = torch.arange(math.prod(shape)).view(shape) + start
            for axis in range(1, len(shape)):
                n = shape[axis]
                # One difference row per (lower, centre, upper) triple; fixed entries drop out (weight 0).
                terms = []
                for offset, weight in ((0, 1.0), (1, -2.0), (2, 1.0)):
                    full = index.narrow(axis, offset, n - 2).reshape(-1)
                    terms.append((column_of[full].clamp(min=0), weight * free[full].to(torch.float64)))
                for column_a, weight_a in terms:
                    for column_b, weight_b in terms:
                        penalty.index_put_((column_a, column_b), weight_a * weight_b, accumulate=True)
        return penalty

    def features(self, batch: Dict[str, Tensor], chunk: int = 4096) -> Tuple[Tensor, Tensor]:
        """Design matrices of one collated batch, over the full coefficient vector, in float64.

        Returns ``(energy [B, P], forces [3N, P])``: the frame energies are
        ``energy @ c`` (eV) and the forces, flattened atom-major, ``forces @ c`` (eV/Å).
        Force features are minus the analytic position derivatives of the basis products;
        three-body terms are scattered ``chunk`` triplets at a time to bound memory.
        """
        dtype = torch.float64
        device = self.one_body.device
        batch = {key: value.to(device) for key, value in batch.items()}
        positions = batch["positions"].to(dtype)
        cell = batch["cell"].to(dtype)
        frame = batch["batch"]
        n_atoms, n_frames = positions.shape[0], cell.shape[0]
        species = self.species_index(batch["atomic_numbers"])
        edge_index, shifts = neighbor_list(positions, cell, batch["pbc"], frame, self.cutoff)
        vectors = edge_vectors(positions, cell, frame, edge_index, shifts)
        r = torch.linalg.vector_norm(vectors, dim=1)
        n_species = len(self.species)
        n_coefficients = self.n_coefficients()
        energy = torch.zeros(n_frames, n_coefficients, dtype=dtype, device=device)
        forces = torch.zeros(n_atoms * 3, n_coefficients, dtype=dtype, device=device)
        energy.index_put_((frame, species), torch.ones(n_atoms, dtype=dtype, device=device), accumulate=True)

        def accumulate(rows: Tensor, columns: Tensor, energy_values: Tensor, atoms: List[Tensor],
                       gradients: List[Tensor]) -> None:
            """Add energy features (per term and column) and the forces -grad on each atom of the term."""
            energy.index_put_((rows, columns), energy_values, accumulate=True)
            for atom, gradient in zip(atoms, gradients):  # gradient [terms, columns, 3]
                row = (atom.view(-1, 1, 1) * 3 + torch.arange(3, device=device)).expand_as(gradient)
                forces.index_put_((row.reshape(-1), columns.unsqueeze(-1).expand_as(gradient).reshape(-1)),
                                  -gradient.reshape(-1), accumulate=True)

        # Two-body: each full-list edge carries half of V2(r_ij).
        inside = torch.nonzero(r < self.cutoff_2body).squeeze(-1)
        i, j = edge_index[0][inside], edge_index[1][inside]
        unit = vectors[inside] / r[inside].unsqueeze(-1)
        first, values, slopes = local_basis(r[inside], self.r_min, self.spacing, self.n_intervals)
        pair = self.pair_index[species[i], species[j]]
        columns = (n_species + (pair * (self.n_intervals + 3) + first).unsqueeze(-1)
                   + torch.arange(4, device=device))
        gradient_j = 0.5 * slopes.unsqueeze(-1) * unit.unsqueeze(1)  # d(term)/d(x_j) [e, 4, 3]
        accumulate(frame[i].unsqueeze(-1).expand_as(columns), columns, 0.5 * values, [j, i],
                   [gradient_j, -gradient_j])

        if self.use_3body:
            offset = n_species + self.n_pairs * (self.n_intervals + 3)
            n1 = self.n_intervals_3body + 3
            n3 = self.n_intervals_jk + 3
            centre, j, k, channel, v1, v2, v3 = self._triplets(species, edge_index, vectors, r)
            four = torch.arange(4, device=device)
            for start in range(0, centre.shape[0], chunk):
                part = slice(start, start + chunk)
                bases = []
                for v, n_intervals in ((v1[part], self.n_intervals_3body), (v2[part], self.n_intervals_3body),
                                       (v3[part], self.n_intervals_jk)):
                    d = torch.linalg.vector_norm(v, dim=1)
                    bases.append((v / d.unsqueeze(-1),) + local_basis(d, self.r_min_3body, self.spacing_3body,
                                                                      n_intervals))
                (u1, f1, b1, s1), (u2, f2, b2, s2), (u3, f3, b3, s3) = bases
                index = ((channel[part] * n1 + f1).view(-1, 1, 1, 1) + four.view(1, 4, 1, 1)) * n1
                index = ((index + f2.view(-1, 1, 1, 1) + four.view(1, 1, 4, 1)) * n3
                         + f3.view(-1, 1, 1, 1) + four.view(1, 1, 1, 4))
                columns = offset + index.reshape(index.shape[0], 64)
                value = torch.einsum("ta,tb,tc->tabc", b1, b2, b3).reshape(-1, 64)
                d1 = torch.einsum("ta,tb,tc->tabc", s1, b2, b3).reshape(-1, 64, 1)  # d/dr_ij
                d2 = torch.einsum("ta,tb,tc->tabc", b1, s2, b3).reshape(-1, 64, 1)  # d/dr_ik
                d3 = torch.einsum("ta,tb,tc->tabc", b1, b2, s3).reshape(-1, 64, 1)  # d/dr_jk
                g1, g2, g3 = d1 * u1.unsqueeze(1), d2 * u2.unsqueeze(1), d3 * u3.unsqueeze(1)
                accumulate(frame[centre[part]].unsqueeze(-1).expand_as(columns), columns, value,
                           [centre[part], j[part], k[part]], [-g1 - g2, g1 - g3, g2 + g3])
            # Same-species channels: the energy sees (c[p,q,r] + c[q,p,r]) / 2.
            full = torch.arange(self.n_channels * n1 * n1 * n3, device=device).view(self.n_channels, n1, n1, n3)
            transposed = torch.where(self.same_species.view(-1, 1, 1, 1), full.transpose(1, 2), full)
            permutation = torch.cat([torch.arange(offset, device=device), offset + transposed.reshape(-1)])
            energy = 0.5 * (energy + energy[:, permutation])
            forces = 0.5 * (forces + forces[:, permutation])
        return energy, forces

    def fit_linear(self, batches: Iterable[Dict[str, Tensor]], energy_weight: float = 1.0, force_weight: float = 10.0,
                   ridge: Optional[float] = None, curvature: Optional[float] = None) -> Dict[str, float]:
        """Fit every coefficient (one-body included) by regularised linear least squares; returns fit statistics.

        ``batches``: collated frames (``positions``, ``atomic_numbers``, ``cell``, ``pbc``,
        ``batch``, ``energy`` eV, ``forces`` eV/Å, ``n_atoms``). Minimises, in float64::

            w_E mean_frames((E_pred - E)/n_atoms)^2 + w_F mean_components(F_pred - F)^2
              + ridge |c|^2 + curvature sum_axes |D2 c|^2

        over the free spline coefficients ``c`` (eV) and the one-body energies, which
        are not penalised. ``D2`` takes second differences along each spline axis.
        Stress labels are not used. With a repulsion prior the targets are the labels minus
        the prior's energies and forces, so the splines fit the residual.
        ``ridge`` and ``curvature`` default to the model's; they weigh squared coefficients
        (eV^2) against the loss terms in (eV/atom)^2 and (eV/Å)^2. The normal equations
        are accumulated batch by batch over the free coefficients only.
        """
        started = time.perf_counter()
        ridge = self.ridge if ridge is None else float(ridge)
        curvature = self.curvature if curvature is None else float(curvature)
        device = self.one_body.device
        free = self._free_columns().to(device)
        n = int(free.sum())
        normal_energy = torch.zeros(n, n, dtype=torch.float64, device=device)
        normal_forces = torch.zeros(n, n, dtype=torch.float64, device=device)
        target_energy = torch.zeros(n, dtype=torch.float64, device=device)
        target_forces = torch.zeros(n, dtype=torch.float64, device=device)
        squares = torch.zeros(2, dtype=torch.float64, device=device)  # sums of squared targets: E/atom, F
        n_frames = 0
        n_components = 0
        for batch in batches:
            energy_features, force_features = self.features(batch)
            n_atoms = batch["n_atoms"].to(device=device, dtype=torch.float64)
            per_atom = energy_features[:, free] / n_atoms.unsqueeze(-1)
            force_features = force_features[:, free]
            energy_target = batch["energy"].to(device=device, dtype=torch.float64)
            force_target = batch["forces"].to(device=device, dtype=torch.float64)
            if self.repulsion_name != "none":  # the splines fit what the prior leaves
                prior_energy, prior_forces = self.repulsion_labels({k: v.to(device) for k, v in batch.items()})
                energy_target, force_target = energy_target - prior_energy, force_target - prior_forces
            energy_target = energy_target / n_atoms
            force_target = force_target.reshape(-1)
            normal_energy += per_atom.T @ per_atom
            target_energy += per_atom.T @ energy_target
            normal_forces += force_features.T @ force_features
            target_forces += force_features.T @ force_target
            squares += torch.stack([(energy_target ** 2).sum(), (force_target ** 2).sum()])
            n_frames += per_atom.shape[0]
            n_components += force_target.shape[0]
        if n_frames == 0:
            raise ValueError("fit_linear needs at least one frame")
        n_species = len(self.species)
        matrix = energy_weight / n_frames * normal_energy + force_weight / n_components * normal_forces
        rhs = energy_weight / n_frames * target_energy + force_weight / n_components * target_forces
        penalty = ridge * torch.eye(n, dtype=torch.float64, device=device)
        penalty[:n_species, :n_species] = 0.0  # the one-body columns come first
        if curvature > 0:
            penalty = penalty + curvature * self._curvature_penalty(free).to(device)
        # Jacobi scaling (unit diagonal), then Cholesky with a 1e-10 relative floor: unseen coefficients
        # stay zero, and one-body energies of a single composition take the minimum-norm split.
        matrix = matrix + penalty
        scale = matrix.diagonal().sqrt()
        scale = torch.where(scale > 0, 1.0 / scale, torch.ones_like(scale))
        scaled = scale.unsqueeze(-1) * matrix * scale
        scaled.diagonal().add_(1e-10)
        factor = torch.linalg.cholesky(scaled)
        solution = torch.cholesky_solve((scale * rhs).unsqueeze(-1), factor).squeeze(-1) * scale
        vector = torch.zeros(free.shape[0], dtype=torch.float64, device=device)
        vector[free] = solution
        self.set_coefficient_vector(vector)
        # Training errors from the normal equations: |A c - y|^2 = c'A'Ac - 2 c'A'y + y'y.
        sse_energy = solution @ normal_energy @ solution - 2 * solution @ target_energy + squares[0]
        sse_forces = solution @ normal_forces @ solution - 2 * solution @ target_forces + squares[1]
        return {"seconds": time.perf_counter() - started, "frames": float(n_frames),
                "force_components": float(n_components), "coefficients": float(n),
                "energy_rmse_eV_per_atom": math.sqrt(max(float(sse_energy), 0.0) / n_frames),
                "force_rmse_eV_per_A": math.sqrt(max(float(sse_forces), 0.0) / n_components)}

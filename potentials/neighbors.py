"""Batched cell-list neighbour list, TorchScript-compilable.

For every centre atom ``i`` it finds every atom ``j`` (including periodic
images of ``i`` itself) with

    r_ij = positions[j] - positions[i] + shifts_ij @ cell[batch[i]],   |r_ij| < cutoff

where ``shifts_ij`` is an integer vector of lattice translations. This is the
convention of ASE's ``neighbor_list("ijS")``. Both directions of every pair
are returned (a full list).

Method, linear in the number of atoms:

1. fractional coordinates are wrapped into [0, 1) along periodic axes;
2. each atom is replicated into the periodic images whose fractional
   coordinate lies within ``cutoff / height`` of the unit cell, so cells
   thinner than the cutoff produce several images of one atom;
3. all points are hashed into cubic bins of side ``cutoff``; every atom looks
   at its own and the 26 surrounding bins through a sorted-key search, so no
   dense grid is ever allocated (open systems may be spread out freely).

Axes that are not periodic may have a zero cell vector, as in ASE: they are
completed by an orthonormal basis of the complement of the periodic vectors.
Gradients do not flow through the list; models recompute ``r_ij`` from the
integer shifts with the original positions and cell.
"""

from typing import List, Optional, Tuple

import torch
from torch import Tensor

def complete_cell(cell: Tensor, pbc: Tensor) -> Tensor:
    """Replace the rows of non-periodic axes by an orthonormal basis of the
    orthogonal complement of the periodic rows. ``cell [B,3,3]``, ``pbc [B,3]``."""
    periodic_rows = cell * pbc.unsqueeze(-1).to(cell.dtype)
    # Right singular vectors with zero singular value span the complement.
    _, _, vh = torch.linalg.svd(periodic_rows)
    n_periodic = pbc.sum(dim=1, keepdim=True)  # [B,1]
    nonperiodic = ~pbc
    # k-th non-periodic axis takes the (n_periodic + k)-th right singular vector.
    rank_among_nonperiodic = torch.cumsum(nonperiodic.to(torch.int64), dim=1) - 1
    which = torch.where(nonperiodic, n_periodic + rank_among_nonperiodic, torch.zeros_like(n_periodic))
    which = which.clamp(0, 2)
    fill = torch.gather(vh, 1, which.unsqueeze(-1).expand(-1, -1, 3))
    return torch.where(pbc.unsqueeze(-1), cell, fill)


def neighbor_list(
    positions: Tensor,
    cell: Tensor,
    pbc: Tensor,
    batch: Tensor,
    cutoff: float,
) -> Tuple[Tensor, Tensor]:
    """Full neighbour list of a batch of systems.

    Args:
        positions: ``[N,3]`` Cartesian positions in Å.
        cell: ``[B,3,3]`` lattice vectors as rows, Å.
        pbc: ``[B,3]`` bool, periodic along each lattice vector.
        batch: ``[N]`` int64, system index of each atom, sorted or not.
        cutoff: radius in Å.

    Returns:
        ``edge_index [2,E]`` (centre ``i``, neighbour ``j``; sorted by ``i`` then
        ``j``) and ``shifts [E,3]`` int64 lattice translations.
    """
    device = positions.device
    n_atoms = positions.shape[0]
    n_systems = cell.shape[0]
    if cutoff <= 0.0:
        raise ValueError("neighbor_list: cutoff must be positive")
    if n_atoms == 0:
        return (
            torch.zeros((2, 0), dtype=torch.int64, device=device),
            torch.zeros((0, 3), dtype=torch.int64, device=device),
        )
    pos = positions.detach().to(torch.float64)
    lattice = cell.detach().to(torch.float64)
    pbc = pbc.to(torch.bool)
    batch = batch.to(torch.int64)
    if not bool(torch.isfinite(pos).all()):
        raise ValueError("neighbor_list: positions contain NaN or infinity")
    if not bool(torch.isfinite(lattice).all()):
        raise ValueError("neighbor_list: the cell contains NaN or infinity; give finite lattice vectors")

    if bool(pbc.all()):
        full_cell = lattice
    else:
        full_cell = complete_cell(lattice, pbc)
    det = torch.linalg.det(full_cell)
    # A periodic cell must span a volume; compare with the product of row lengths.
    scale = torch.linalg.vector_norm(full_cell, dim=2).prod(dim=1)
    if bool((det.abs() <= 1e-8 * scale).any()) or bool((scale == 0.0).any()):
        raise ValueError(
            "neighbor_list: the cell is singular along its periodic axes "
            "(zero or linearly dependent lattice vectors); give a cell with non-zero volume "
            "or switch off periodicity along the missing axes"
        )
    inverse = torch.linalg.inv(full_cell)  # frac = pos @ inverse
    atom_pbc = pbc[batch]
    frac = torch.einsum("ni,nij->nj", pos, inverse[batch])
    wrap = torch.where(atom_pbc, torch.floor(frac), torch.zeros_like(frac))
    frac = frac - wrap
    pos = pos - torch.einsum("ni,nij->nj", wrap, lattice[batch])
    wrap_int = wrap.to(torch.int64)

    # Image windows: |delta frac_d| <= cutoff * |reciprocal_d| = cutoff / height_d.
    pad = cutoff * torch.linalg.vector_norm(inverse, dim=1)  # [B,3]; column d of inverse is reciprocal_d
    atom_pad = pad[batch]
    low = torch.where(atom_pbc, torch.ceil(-atom_pad - frac), torch.zeros_like(frac)).to(torch.int64)
    high = torch.where(atom_pbc, torch.floor(1.0 + atom_pad - frac), torch.zeros_like(frac)).to(torch.int64)
    width = high - low + 1  # [N,3]
    images_per_atom = width.prod(dim=1)
    image_start = torch.cumsum(images_per_atom, 0) - images_per_atom

    # Enumerate the images of every atom by mixed-radix decoding.
    point_atom = torch.repeat_interleave(torch.arange(n_atoms, device=device), images_per_atom)
    local = torch.arange(point_atom.shape[0], device=device) - image_start[point_atom]
    w = width[point_atom]
    lo = low[point_atom]
    s0 = lo[:, 0] + local % w[:, 0]
    rest = torch.div(local, w[:, 0], rounding_mode="floor")
    s1 = lo[:, 1] + rest % w[:, 1]
    s2 = lo[:, 2] + torch.div(rest, w[:, 1], rounding_mode="floor")
    point_shift = torch.stack([s0, s1, s2], dim=1)
    point_system = batch[point_atom]
    point_pos = pos[point_atom] + torch.einsum(
        "ni,nij->nj", point_shift.to(torch.float64), lattice[point_system]
    )
    # Index of the unshifted copy of each atom among the points.
    zero_local = (-low[:, 0]) + width[:, 0] * ((-low[:, 1]) + width[:, 1] * (-low[:, 2]))
    home_point = image_start + zero_local

    # Cubic bins of side `cutoff`, origin at each system's lowest point.
    big = torch.full((n_systems, 3), float("inf"), dtype=torch.float64, device=device)
    origin = big.scatter_reduce(0, point_system.unsqueeze(1).expand(-1, 3), point_pos, reduce="amin")
    bin_coord = torch.floor((point_pos - origin[point_system]) / cutoff).to(torch.int64) + 1
    dims = bin_coord.max(dim=0).values + 2  # one empty layer each side
    dims_list: List[int] = dims.tolist()
    n_bins_per_system = float(dims_list[0]) * float(dims_list[1]) * float(dims_list[2])
    if n_bins_per_system * float(n_systems) > 4.0e18:
        raise ValueError(
            "neighbor_list: atoms are spread over a region too large to bin; "
            "check that positions are in Å"
        )
    stride_x = dims_list[1] * dims_list[2]
    stride_y = dims_list[2]
    point_key = ((point_system * dims_list[0] + bin_coord[:, 0]) * dims_list[1] + bin_coord[:, 1]) * dims_list[
        2
    ] + bin_coord[:, 2]

    sorted_key, order = torch.sort(point_key)
    bin_key, bin_count = torch.unique_consecutive(sorted_key, return_counts=True)
    bin_start = torch.cumsum(bin_count, 0) - bin_count

    # The 27 bins around (and including) each atom's own bin.
    axis = torch.arange(-1, 2, device=device)
    offsets = torch.stack(torch.meshgrid([axis, axis, axis], indexing="ij"), dim=-1).reshape(-1, 3)
    key_offsets = offsets[:, 0] * stride_x + offsets[:, 1] * stride_y + offsets[:, 2]
    query_key = (point_key[home_point].unsqueeze(1) + key_offsets.unsqueeze(0)).reshape(-1)
    query_atom = torch.arange(n_atoms, device=device).repeat_interleave(offsets.shape[0])
    slot = torch.searchsorted(bin_key, query_key).clamp(max=bin_key.shape[0] - 1)
    found = bin_key[slot] == query_key
    count = torch.where(found, bin_count[slot], torch.zeros_like(slot))
    start = bin_start[slot]

    # Expand every (atom, bin) query into its candidate points.
    centre = torch.repeat_interleave(query_atom, count)
    first = torch.repeat_interleave(start, count)
    query_begin = torch.cumsum(count, 0) - count
    within = torch.arange(centre.shape[0], device=device) - torch.repeat_interleave(query_begin, count)
    candidate = order[first + within]

    delta = point_pos[candidate] - pos[centre]
    keep = ((delta * delta).sum(dim=1) < cutoff * cutoff) & (candidate != home_point[centre])
    centre = centre[keep]
    candidate = candidate[keep]
    neighbour = point_atom[candidate]
    shifts = point_shift[candidate] - wrap_int[neighbour] + wrap_int[centre]

    _, edge_order = torch.sort(centre * n_atoms + neighbour, stable=True)
    edge_index = torch.stack([centre[edge_order], neighbour[edge_order]], dim=0)
    return edge_index, shifts[edge_order]


def edge_vectors(
    positions: Tensor, cell: Tensor, batch: Tensor, edge_index: Tensor, shifts: Tensor
) -> Tensor:
    """``r_ij = positions[j] - positions[i] + shifts @ cell[batch[i]]`` in Å, differentiable
    with respect to positions and cell."""
    centre = edge_index[0]
    offset = torch.einsum("ei,eij->ej", shifts.to(positions.dtype), cell[batch[centre]])
    return positions[edge_index[1]] - positions[centre] + offset


class VerletList(torch.nn.Module):
    """A neighbour list carried between calls (a Verlet or skin list), TorchScript-compilable.

    Built by :func:`neighbor_list` with radius ``cutoff + skin`` and reused while every atom is
    within ``skin / 2`` of where it was at the build (then no pair can have crossed into the
    cutoff unseen: each pair distance changed by less than ``skin``), and while the cell, pbc and
    batch are unchanged. An atom that was wrapped back into the cell by a lattice translation
    ``n`` (as forecast rollouts do) counts by its displacement modulo the lattice; the shifts of its
    edges absorb ``n``: ``S_ij <- S_ij - n_j + n_i``.

    Returns the pairs within ``cutoff + skin`` in the convention of :func:`neighbor_list`;
    consumers keep those with ``|r_ij| < cutoff`` (:meth:`within_cutoff`). ``builds`` and ``calls``
    count what happened, for benchmarks. ``skin = 0`` builds at every call.
    """

    def __init__(self, cutoff: float, skin: float = 0.5):
        super().__init__()
        if cutoff <= 0.0 or skin < 0.0:
            raise ValueError("VerletList: cutoff must be positive and skin zero or positive")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.builds = 0
        self.calls = 0
        empty = torch.zeros(0)
        self.register_buffer("reference_positions", empty.clone(), persistent=False)
        self.register_buffer("reference_cell", empty.clone(), persistent=False)
        # Inverse of the completed reference cell, for displacements modulo the lattice (computed at each build).
        self.register_buffer("reference_inverse", empty.clone(), persistent=False)
        self.register_buffer("reference_pbc", torch.zeros(0, dtype=torch.bool), persistent=False)
        self.register_buffer("reference_batch", torch.zeros(0, dtype=torch.int64), persistent=False)
        self.register_buffer("edge_index", torch.zeros((2, 0), dtype=torch.int64), persistent=False)
        self.register_buffer("shifts", torch.zeros((0, 3), dtype=torch.int64), persistent=False)

    def forward(self, positions: Tensor, cell: Tensor, pbc: Tensor, batch: Tensor) -> Tuple[Tensor, Tensor]:
        self.calls += 1
        positions = positions.detach()
        cell = cell.detach()
        same_system = (
            self.skin > 0.0
            and self.reference_positions.shape == positions.shape
            and self.reference_positions.device == positions.device
            and self.reference_cell.shape == cell.shape
            and bool(torch.equal(self.reference_cell, cell.to(self.reference_cell.dtype)))
            and bool(torch.equal(self.reference_pbc, pbc.to(torch.bool)))
            and bool(torch.equal(self.reference_batch, batch.to(torch.int64)))
        )
        if same_system:
            moved = positions.to(torch.float64) - self.reference_positions
            jumps = torch.zeros_like(moved)
            if bool(pbc.any()):
                fractional = torch.einsum("ni,nij->nj", moved, self.reference_inverse[batch])
                jumps = torch.where(self.reference_pbc[batch], torch.round(fractional), torch.zeros_like(fractional))
                moved = moved - torch.einsum("ni,nij->nj", jumps, self.reference_cell[batch])
            half = 0.5 * self.skin
            if bool(((moved * moved).sum(dim=1) < half * half).all()):
                n = jumps.to(torch.int64)
                return self.edge_index, self.shifts - n[self.edge_index[1]] + n[self.edge_index[0]]
        edge_index, shifts = neighbor_list(positions, cell, pbc, batch, self.cutoff + self.skin)
        self.builds += 1
        self.reference_positions = positions.to(torch.float64).clone()
        self.reference_cell = cell.to(torch.float64).clone()
        self.reference_pbc = pbc.to(torch.bool).clone()
        if bool(pbc.any()):
            self.reference_inverse = torch.linalg.inv(complete_cell(self.reference_cell, self.reference_pbc))
        self.reference_batch = batch.to(torch.int64).clone()
        self.edge_index = edge_index
        self.shifts = shifts
        return edge_index, shifts


def within_cutoff(positions: Tensor, cell: Tensor, batch: Tensor, edge_index: Tensor, shifts: Tensor,
                  cutoff: float) -> Tuple[Tensor, Tensor]:
    """The pairs of a (skin) list with ``|r_ij| < cutoff``, decided in float64 as :func:`neighbor_list` does."""
    vectors = edge_vectors(positions.detach().to(torch.float64), cell.detach().to(torch.float64), batch,
                           edge_index, shifts)
    keep = (vectors * vectors).sum(dim=1) < cutoff * cutoff
    return edge_index[:, keep], shifts[keep]


def neighbors_within_cutoff(positions: Tensor, cell: Tensor, pbc: Tensor, batch: Tensor, cutoff: float,
                            edge_index: Optional[Tensor] = None,
                            shifts: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """The pairs within ``cutoff``: filtered from a given (skin) list, else a fresh :func:`neighbor_list`."""
    if edge_index is not None and shifts is not None:
        return within_cutoff(positions, cell, batch, edge_index, shifts, cutoff)
    return neighbor_list(positions, cell, pbc, batch, cutoff)

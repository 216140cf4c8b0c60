"""The cell-list neighbour list against ASE's ``neighbor_list("ijS")`` as an independent reference.

Every comparison is exact: the sorted set of ``(i, j, shift)`` triples must be identical. Each
case is first checked to have no pair within ``MARGIN`` of the cutoff, so that a disagreement
is a real bug and not a rounding tie. Covers random triclinic cells and periodicity patterns,
hard geometries, batching, TorchScript, float32 input, ``edge_vectors`` and input errors.
"""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import fcc111
from ase.neighborlist import neighbor_list as ase_neighbor_list

from potentials.neighbors import edge_vectors, neighbor_list

MARGIN = 1e-6  # Å; no reference pair may lie closer than this to the cutoff

PBC_PATTERNS = [(a, b, c) for a in (False, True) for b in (False, True) for c in (False, True)]


# ----------------------------------------------------------------------------- helpers


def to_torch(systems, dtype=torch.float64):
    """Concatenate ASE Atoms into (positions, cell, pbc, batch) tensors."""
    positions = torch.tensor(np.concatenate([a.positions for a in systems]), dtype=dtype)
    cell = torch.tensor(np.stack([np.array(a.cell) for a in systems]), dtype=dtype)
    pbc = torch.tensor(np.stack([a.pbc for a in systems]), dtype=torch.bool)
    batch = torch.repeat_interleave(torch.arange(len(systems)), torch.tensor([len(a) for a in systems]))
    return positions, cell, pbc, batch


def triples(edge_index, shifts):
    return sorted(zip(edge_index[0].tolist(), edge_index[1].tolist(), map(tuple, shifts.tolist())))


def check_contract(edge_index, shifts, n_atoms):
    """Shapes and dtypes as documented, and edges sorted by centre then neighbour."""
    assert edge_index.dtype == torch.int64 and shifts.dtype == torch.int64
    assert edge_index.dim() == 2 and edge_index.shape[0] == 2
    assert shifts.shape == (edge_index.shape[1], 3)
    if edge_index.shape[1]:
        assert 0 <= int(edge_index.min()) and int(edge_index.max()) < n_atoms
        key = edge_index[0] * n_atoms + edge_index[1]
        assert bool((key[1:] >= key[:-1]).all()), "edges are not sorted by (i, j)"


def ours(atoms, cutoff, dtype=torch.float64, fn=neighbor_list):
    edge_index, shifts = fn(*to_torch([atoms], dtype), cutoff)
    check_contract(edge_index, shifts, len(atoms))
    return triples(edge_index, shifts)


def reference(atoms, cutoff, margin=MARGIN):
    """ASE's triples, or None when some pair lies within `margin` of the cutoff (an
    ill-posed case where float rounding may legitimately decide)."""
    i, j, S, d = ase_neighbor_list("ijSd", atoms, cutoff + margin)
    if np.any(np.abs(d - cutoff) < margin):
        return None
    keep = d < cutoff
    return sorted(zip(i[keep].tolist(), j[keep].tolist(), map(tuple, S[keep].tolist())))


def describe(atoms, cutoff):
    return (f"{len(atoms)} atoms, pbc={atoms.pbc.tolist()}, cutoff={cutoff:.4f}, "
            f"cell={np.array(atoms.cell).round(4).tolist()}")


def assert_matches_ase(atoms, cutoff, dtype=torch.float64, fn=neighbor_list):
    expected = reference(atoms, cutoff)
    assert expected is not None, f"test case has a pair within {MARGIN} Å of the cutoff: {describe(atoms, cutoff)}"
    got = ours(atoms, cutoff, dtype, fn)
    if got != expected:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        duplicated = len(got) - len(set(got))
        raise AssertionError(
            f"neighbour list differs from ASE for {describe(atoms, cutoff)}: "
            f"{len(got)} vs {len(expected)} edges; missing {len(missing)} e.g. {missing[:5]}, "
            f"extra {len(extra)} e.g. {extra[:5]}, duplicated {duplicated}")
    return got


def well_conditioned_cell(rng, low=1.5, high=7.0):
    """Random triclinic cell; rejects nearly flat cells (|det| < 0.3 * product of row
    lengths), on which ASE's own binning can run out of memory."""
    while True:
        cell = rng.normal(size=(3, 3))
        cell *= rng.uniform(low, high, size=(3, 1)) / np.linalg.norm(cell, axis=1, keepdims=True)
        if abs(np.linalg.det(cell)) >= 0.3 * np.prod(np.linalg.norm(cell, axis=1)):
            return cell


def random_system(seed):
    """Random cell, periodicity pattern (all 8 cycled by seed), atoms up to one cell length
    outside the cell, random cutoff, and sometimes zero cell vectors on open axes."""
    rng = np.random.default_rng(seed)
    pbc = np.array(PBC_PATTERNS[seed % 8])
    cell = well_conditioned_cell(rng)
    n_atoms = int(rng.integers(1, 40))
    positions = rng.uniform(-0.8, 1.8, size=(n_atoms, 3)) @ cell
    if rng.random() < 0.5:
        cell[~pbc] = 0.0
    atoms = Atoms(numbers=np.ones(n_atoms, dtype=int), positions=positions, cell=cell, pbc=pbc)
    while True:
        cutoff = float(rng.uniform(0.8, 6.0))
        if reference(atoms, cutoff) is not None:
            return atoms, cutoff


# ----------------------------------------------------------------------------- random systems


@pytest.mark.parametrize("seed", range(100))
def test_random_systems_match_ase(seed):
    """Random triclinic cells, all periodicity patterns, atoms outside the cell, random cutoffs."""
    atoms, cutoff = random_system(seed)
    assert_matches_ase(atoms, cutoff)


# ----------------------------------------------------------------------------- hard geometries


SKEWED_CELLS = {
    "sheared_all_axes": [[4.0, 0.0, 0.0], [3.8, 1.2, 0.0], [3.7, 1.0, 1.1]],
    "obtuse_left_handed": [[3.0, 0.0, 0.0], [-2.9, 0.6, 0.0], [2.8, 0.4, -0.7]],
    "hexagonal": [[3.0, 0.0, 0.0], [-1.5, 1.5 * 3**0.5, 0.0], [0.0, 0.0, 4.9]],
    "monoclinic_150deg": [[5.0, 0.0, 0.0], [0.0, 4.0, 0.0], [-5.2, 0.0, 3.0]],
}


@pytest.mark.parametrize("name", SKEWED_CELLS)
@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True)])
def test_strongly_skewed_cells(name, pbc):
    """Heights much smaller than the cell vectors: image windows must use the heights."""
    rng = np.random.default_rng(7)
    atoms = Atoms("H6", scaled_positions=rng.uniform(-0.5, 1.5, size=(6, 3)), cell=SKEWED_CELLS[name], pbc=pbc)
    assert_matches_ase(atoms, 3.53)


@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, False), (False, True, True)])
@pytest.mark.parametrize("skewed", [False, True])
def test_atoms_exactly_on_faces_and_corners(pbc, skewed):
    """Fractional coordinates exactly 0, 1/2 and 1: atoms on the faces, edges and corners, where
    wrapping is decided by rounding; atoms at 0 and 1 coincide through a shift (distance 0)."""
    cell = np.array([[3.1, 0.0, 0.0], [0.0, 3.1, 0.0], [0.0, 0.0, 3.1]])
    if skewed:
        cell = np.array([[3.1, 0.0, 0.0], [1.3, 2.9, 0.0], [-0.7, 0.9, 3.3]])
    grid = np.array([(a, b, c) for a in (0.0, 0.5, 1.0) for b in (0.0, 0.5, 1.0) for c in (0.0, 0.5, 1.0)])
    atoms = Atoms(numbers=np.ones(len(grid), dtype=int), positions=grid @ cell, cell=cell, pbc=pbc)
    got = assert_matches_ase(atoms, 4.0)
    if all(pbc):
        assert any(i != j and np.allclose(atoms.positions[j] - atoms.positions[i] + np.dot(s, cell), 0.0)
                   for i, j, s in got), "coincident images of distinct atoms were not found"


@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True)])
def test_tiny_cell_many_images(pbc):
    """Cell vectors about 1 Å with a 3.93 Å cutoff: each atom meets many images of every atom,
    including its own images (i == j with a non-zero shift)."""
    cell = [[1.0, 0.0, 0.0], [0.4, 1.1, 0.0], [-0.3, 0.2, 0.9]]
    atoms = Atoms("H2", scaled_positions=[[0.1, 0.2, 0.3], [0.75, -0.4, 1.6]], cell=cell, pbc=pbc)
    got = assert_matches_ase(atoms, 3.93)
    self_images = [(i, j, s) for i, j, s in got if i == j]
    assert len(got) > 100 and self_images
    assert all(any(s) for _, _, s in self_images)


def test_single_atom():
    """One atom: only its own images when periodic, nothing when open."""
    periodic = Atoms("H", positions=[[0.3, -0.2, 5.0]], cell=[[2.0, 0, 0], [0.5, 2.2, 0], [0, 0.3, 2.5]], pbc=True)
    got = assert_matches_ase(periodic, 3.0)
    assert got and all(i == j == 0 and any(s) for i, j, s in got)
    isolated = Atoms("H", positions=[[0.3, -0.2, 5.0]], pbc=False)
    assert assert_matches_ase(isolated, 3.0) == []


@pytest.mark.parametrize("pbc", [False, True])
def test_no_neighbours(pbc):
    """Atoms farther apart than the cutoff (also across the boundary): an empty, well-formed list."""
    grid = 10.0 * np.array([(a, b, c) for a in range(2) for b in range(2) for c in range(2)])
    atoms = Atoms("H8", positions=grid + 1.0, cell=np.eye(3) * 20.0 if pbc else np.zeros((3, 3)), pbc=pbc)
    edge_index, shifts = neighbor_list(*to_torch([atoms]), 3.0)
    assert edge_index.shape == (2, 0) and shifts.shape == (0, 3)
    assert assert_matches_ase(atoms, 3.0) == []


def test_open_molecule_with_zero_cell():
    """Open boundaries with an all-zero cell, molecule far from the origin at negative coordinates."""
    rng = np.random.default_rng(3)
    positions = rng.normal(scale=2.5, size=(30, 3)) + [-50.0, 20.0, -3.0]
    atoms = Atoms(numbers=np.ones(30, dtype=int), positions=positions, cell=np.zeros((3, 3)), pbc=False)
    assert len(assert_matches_ase(atoms, 3.0)) > 0


def test_open_clusters_far_apart():
    """Two clusters 10^4 Å apart in open boundaries: bins are sparse, not a dense grid."""
    rng = np.random.default_rng(4)
    positions = np.concatenate([rng.normal(size=(10, 3)), rng.normal(size=(10, 3)) + [1e4, -1e4, 5e3]])
    atoms = Atoms(numbers=np.ones(20, dtype=int), positions=positions, pbc=False)
    assert_matches_ase(atoms, 1.7)


MIXED_ZERO_VECTOR_CELLS = {
    "wire_z": ((False, False, True), [[0, 0, 0], [0, 0, 0], [0.3, 0.2, 2.5]]),
    "slab_xy_oblique": ((True, True, False), [[2.9, 0, 0], [1.2, 2.6, 0.4], [0, 0, 0]]),
    "periodic_xz": ((True, False, True), [[3.2, 0.1, 0], [0, 0, 0], [0.5, -0.4, 2.7]]),
    "wire_y": ((False, True, False), [[0, 0, 0], [0.2, 1.9, 0.3], [0, 0, 0]]),
    "nonorthogonal_open_vector": ((True, True, False), [[2.9, 0, 0], [0.9, 2.8, 0], [1.0, 2.0, 3.0]]),
}


@pytest.mark.parametrize("name", MIXED_ZERO_VECTOR_CELLS)
def test_mixed_pbc_with_zero_vectors_on_open_axes(name):
    """Zero (or non-orthogonal) cell vectors along non-periodic axes, as ASE allows; atoms spread
    far along the open axes."""
    pbc, cell = MIXED_ZERO_VECTOR_CELLS[name]
    rng = np.random.default_rng(5)
    positions = rng.uniform(-6.0, 6.0, size=(25, 3))
    atoms = Atoms(numbers=np.ones(25, dtype=int), positions=positions, cell=cell, pbc=pbc)
    assert len(assert_matches_ase(atoms, 3.1)) > 0


def test_two_dimensional_slab():
    """A rattled Cu(111) slab with vacuum, periodic in-plane only."""
    slab = fcc111("Cu", size=(3, 3, 4), vacuum=8.0)
    slab.rattle(stdev=0.05, seed=1)
    assert tuple(slab.pbc) == (True, True, False)
    got = assert_matches_ase(slab, 5.0)
    assert all(s[2] == 0 for _, _, s in got)


# ----------------------------------------------------------------------------- batching


def batch_systems():
    rng = np.random.default_rng(11)
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
    slab.rattle(stdev=0.05, seed=2)
    cell = well_conditioned_cell(rng, 3.0, 6.0)
    periodic = Atoms("H12", positions=rng.uniform(-0.5, 1.5, size=(12, 3)) @ cell, cell=cell, pbc=True)
    molecule = Atoms("H9", positions=rng.normal(scale=1.5, size=(9, 3)), pbc=False)
    tiny = Atoms("H2", scaled_positions=[[0.1, 0.2, 0.3], [0.6, 0.5, 0.9]],
                 cell=[[1.2, 0, 0], [0.3, 1.1, 0], [0, 0.2, 1.3]], pbc=True)
    single = Atoms("H", positions=[[1.0, 2.0, 3.0]], cell=[[2.5, 0, 0], [0, 2.6, 0], [0, 0, 2.7]], pbc=True)
    wire = Atoms("H5", positions=rng.uniform(-3, 3, size=(5, 3)), cell=[[0, 0, 0], [0, 0, 0], [0, 0, 2.2]],
                 pbc=(False, False, True))
    return [slab, periodic, molecule, tiny, single, wire]


def test_batch_equals_systems_alone():
    """Systems with different cells and pbc concatenated in one batch give, after index
    offsets, exactly the union of their separate lists; the same holds when the atoms of
    all systems are shuffled (unsorted batch)."""
    cutoff = 3.3
    systems = batch_systems()
    expected, offset = [], 0
    for atoms in systems:
        alone = assert_matches_ase(atoms, cutoff)
        expected += [(i + offset, j + offset, s) for i, j, s in alone]
        offset += len(atoms)
    expected.sort()

    positions, cell, pbc, batch = to_torch(systems)
    edge_index, shifts = neighbor_list(positions, cell, pbc, batch, cutoff)
    check_contract(edge_index, shifts, offset)
    assert triples(edge_index, shifts) == expected

    perm = torch.randperm(offset, generator=torch.Generator().manual_seed(0))
    new_index = torch.empty_like(perm)
    new_index[perm] = torch.arange(offset)  # atom perm[k] becomes atom k
    edge_index, shifts = neighbor_list(positions[perm], cell, pbc, batch[perm], cutoff)
    check_contract(edge_index, shifts, offset)
    shuffled = sorted((int(new_index[i]), int(new_index[j]), s) for i, j, s in expected)
    assert triples(edge_index, shifts) == shuffled


# ----------------------------------------------------------------------------- TorchScript, dtypes


@pytest.fixture(scope="module")
def scripted():
    return torch.jit.script(neighbor_list)


@pytest.mark.parametrize("seed", [0, 3, 6, 13])
def test_torchscript_identical_to_eager(scripted, seed):
    """The compiled function returns exactly the eager tensors, in the same order."""
    atoms, cutoff = random_system(seed)
    inputs = to_torch([atoms])
    for a, b in zip(neighbor_list(*inputs, cutoff), scripted(*inputs, cutoff)):
        assert torch.equal(a, b)
    assert_matches_ase(atoms, cutoff, fn=scripted)


def test_torchscript_identical_to_eager_batched(scripted):
    inputs = to_torch(batch_systems())
    for a, b in zip(neighbor_list(*inputs, 3.3), scripted(*inputs, 3.3)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("seed", [1, 2, 5])
def test_float32_input_gives_the_float64_list(seed):
    """float32 positions and cell (rounded, ~1e-6 Å) give the list of the float64 system on
    cases with no pair within 1e-3 Å of the cutoff."""
    rng = np.random.default_rng(100 + seed)
    cell = well_conditioned_cell(rng, 3.0, 8.0)
    atoms = Atoms(numbers=np.ones(30, dtype=int), positions=rng.uniform(-0.5, 1.5, size=(30, 3)) @ cell,
                  cell=cell, pbc=PBC_PATTERNS[7 - seed])
    cutoff = 4.0
    while reference(atoms, cutoff, margin=1e-3) is None:
        cutoff += 0.0173
    expected = assert_matches_ase(atoms, cutoff)
    assert ours(atoms, cutoff, dtype=torch.float32) == expected
    positions, cell64, pbc, batch = to_torch([atoms])
    edge_index, shifts = neighbor_list(positions.float(), cell64, pbc, batch, cutoff)
    assert triples(edge_index, shifts) == expected


# ----------------------------------------------------------------------------- edge vectors


@pytest.mark.parametrize("seed", [4, 7, 9, 15])
def test_edge_vectors_match_ase_distances(seed):
    """|r_ij| from edge_vectors equals ASE's distance for the same (i, j, shift), and the
    vectors equal ASE's D; they are differentiable with respect to positions and cell."""
    atoms, cutoff = random_system(seed)
    positions, cell, pbc, batch = to_torch([atoms])
    edge_index, shifts = neighbor_list(positions, cell, pbc, batch, cutoff)
    positions.requires_grad_(True)
    cell.requires_grad_(True)
    vectors = edge_vectors(positions, cell, batch, edge_index, shifts)
    lengths = torch.linalg.vector_norm(vectors, dim=1)

    i, j, S, d, D = ase_neighbor_list("ijSdD", atoms, cutoff)
    by_triple = {(a, b, tuple(s)): (dist, vec) for a, b, s, dist, vec in zip(i.tolist(), j.tolist(), S.tolist(), d, D)}
    assert len(by_triple) == len(i) == edge_index.shape[1]
    keys = list(zip(edge_index[0].tolist(), edge_index[1].tolist(), map(tuple, shifts.tolist())))
    ase_d = np.array([by_triple[k][0] for k in keys])
    ase_D = np.array([by_triple[k][1] for k in keys]).reshape(-1, 3)
    np.testing.assert_allclose(lengths.detach().numpy(), ase_d, rtol=0, atol=1e-10)
    np.testing.assert_allclose(vectors.detach().numpy(), ase_D, rtol=0, atol=1e-10)
    assert bool((lengths < cutoff).all())

    if len(keys):
        lengths.sum().backward()
        assert positions.grad is not None and bool(positions.grad.abs().sum() > 0)
        assert cell.grad is not None


# ----------------------------------------------------------------------------- errors


def one_atom_inputs(position=(0.5, 0.5, 0.5), cell=np.eye(3) * 3.0, pbc=True):
    return (torch.tensor([position], dtype=torch.float64), torch.tensor(np.array(cell, dtype=float))[None],
            torch.tensor([[pbc] * 3 if isinstance(pbc, bool) else pbc]), torch.zeros(1, dtype=torch.int64))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_positions_raise(bad, scripted):
    with pytest.raises(ValueError, match="NaN"):
        neighbor_list(*one_atom_inputs((0.1, bad, 0.2)), 2.0)
    with pytest.raises(torch.jit.Error, match="NaN"):
        scripted(*one_atom_inputs((0.1, bad, 0.2)), 2.0)


@pytest.mark.parametrize("cell, pbc", [
    ([[3.0, 0, 0], [6.0, 0, 0], [0, 0, 3.0]], True),                 # linearly dependent rows
    ([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 0]], True),                   # zero periodic row
    ([[3.0, 0, 0], [0, 0, 0], [0, 0, 0]], (True, True, False)),       # zero periodic row, mixed pbc
    ([[3.0, 1.0, 0], [6.0, 2.0, 0], [0, 0, 0]], (True, True, False)),  # dependent periodic rows, mixed pbc
])
def test_singular_periodic_cell_raises(cell, pbc):
    with pytest.raises(ValueError, match="singular"):
        neighbor_list(*one_atom_inputs(cell=cell, pbc=pbc), 2.0)


def test_non_positive_cutoff_raises():
    with pytest.raises(ValueError, match="positive"):
        neighbor_list(*one_atom_inputs(), 0.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_cell_raises(bad):
    cell = np.eye(3) * 3.0
    cell[1, 2] = bad
    with pytest.raises(ValueError, match="cell contains NaN"):
        neighbor_list(*one_atom_inputs(cell=cell), 2.0)

"""The dataset loader: splits, reference energies, statistics, batches and bad files."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.neighborlist import neighbor_list as ase_neighbor_list

from mlmd.data import Dataset, load_dataset
from mlmd.errors import InputFileError, MLMDError, StructureError

ELEMENT_ENERGY = {1: -13.6, 6: -1030.0, 8: -2040.0}


def _labelled(atoms, energy, stress=None, rng=None):
    rng = rng or np.random.default_rng(0)
    results = {"energy": energy, "forces": rng.normal(size=(len(atoms), 3))}
    if stress is not None:
        results["stress"] = stress
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def _mixed_molecules(n=30):
    """Frames of several compositions whose energies are exactly sums of element energies."""
    rng = np.random.default_rng(1)
    frames = []
    for k in range(n):
        atoms = molecule(["H2O", "CH4", "CH3OH", "CO2", "C2H6"][k % 5])
        atoms.rattle(0.05, seed=k)
        energy = sum(ELEMENT_ENERGY[int(z)] for z in atoms.numbers)
        frames.append(_labelled(atoms, energy, rng=rng))
    return frames


def test_split_is_deterministic_disjoint_and_complete():
    dataset = Dataset(_mixed_molecules(50))
    first = dataset.split(validation=0.2, test=0.1, seed=5)
    again = dataset.split(validation=0.2, test=0.1, seed=5)
    other = dataset.split(validation=0.2, test=0.1, seed=6)
    np.testing.assert_array_equal(first.train, again.train)
    assert not np.array_equal(first.train, other.train)
    together = np.concatenate([first.train, first.validation, first.test])
    assert sorted(together.tolist()) == list(range(50))
    assert (len(first.validation), len(first.test)) == (10, 5)


def test_reference_energies_recover_the_element_energies():
    dataset = Dataset(_mixed_molecules())
    recovered = dataset.reference_energies()
    for z, energy in ELEMENT_ENERGY.items():
        assert recovered[z] == pytest.approx(energy, abs=1e-6)


def test_statistics_match_ase_neighbour_count_and_force_rms():
    rng = np.random.default_rng(2)
    frames = []
    for k in range(4):
        atoms = bulk("Cu", "fcc", a=3.6).repeat((2, 2, 2))
        atoms.rattle(0.1, seed=k)
        frames.append(_labelled(atoms, -1.0 * k, stress=np.zeros(6), rng=rng))
    dataset = Dataset(frames)
    stats = dataset.statistics(cutoff=4.5)
    ase_edges = sum(len(ase_neighbor_list("i", atoms, 4.5)) for atoms in frames)
    assert stats["avg_num_neighbors"] == pytest.approx(ase_edges / sum(len(a) for a in frames))
    forces = np.concatenate([atoms.get_forces() for atoms in frames])
    assert stats["force_rms"] == pytest.approx(np.sqrt(np.mean(forces**2)))


def test_collate_follows_the_model_contract(tmp_path):
    frames = _mixed_molecules(3)
    periodic = bulk("Cu", "fcc", a=3.6)
    frames.append(_labelled(periodic, -3.0, stress=np.arange(6.0)))
    path = tmp_path / "mixed.xyz"
    write(path, frames)
    dataset = load_dataset(path)
    batch = dataset.collate([0, 3])
    n0, n3 = len(frames[0]), len(frames[3])
    assert batch["positions"].shape == (n0 + n3, 3)
    assert batch["batch"].tolist() == [0] * n0 + [1] * n3
    assert batch["cell"].shape == (2, 3, 3) and batch["pbc"].tolist() == [[False] * 3, [True] * 3]
    assert batch["has_stress"].tolist() == [False, True]
    # Voigt (xx, yy, zz, yz, xz, xy) = (0..5) expanded to a symmetric matrix.
    assert batch["stress"][1].tolist() == [[0.0, 5.0, 4.0], [5.0, 1.0, 3.0], [4.0, 3.0, 2.0]]
    assert batch["energy"].tolist() == pytest.approx([frames[0].get_potential_energy(), -3.0])
    assert len(dataset.hash) == 64


def test_batches_cover_the_indices_once():
    dataset = Dataset(_mixed_molecules(10))
    seen = []
    for batch in dataset.batches(range(10), batch_size=4, shuffle=True, seed=1):
        seen.append(int(batch["n_atoms"].shape[0]))
    assert seen == [4, 4, 2]


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        load_dataset(tmp_path / "nope.xyz")


def test_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.xyz"
    path.write_text("this is not\nan xyz file\n")
    with pytest.raises(InputFileError, match="could not read"):
        load_dataset(path)


def test_frames_without_forces_are_rejected(tmp_path):
    path = tmp_path / "bare.xyz"
    write(path, [molecule("H2O")])
    with pytest.raises(InputFileError, match="frame 0 has no energy"):
        load_dataset(path)


def test_nan_coordinates_are_rejected():
    atoms = _labelled(molecule("H2O"), -1.0)
    atoms.positions[1, 0] = np.nan
    with pytest.raises(StructureError, match="NaN"):
        Dataset([atoms])


def test_singular_periodic_cell_is_rejected():
    atoms = _labelled(Atoms("Cu2", positions=[[0, 0, 0], [1, 1, 1]], cell=[[3, 0, 0], [6, 0, 0], [0, 0, 3]],
                            pbc=True), -1.0)
    with pytest.raises(StructureError, match="singular"):
        Dataset([atoms])


def test_unknown_element_and_overlapping_atoms_are_named():
    from mlmd.checks import check_atoms

    with pytest.raises(StructureError, match="element.*Cl"):
        check_atoms(molecule("HCl"), species=[1, 6, 8])
    with pytest.raises(StructureError, match="0.100 Å apart"):
        check_atoms(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.1]]), min_distance=0.5)
    assert issubclass(StructureError, MLMDError)

"""The saddle-evaluation cases (scripts/saddle_cases.py): end states are distinct minima, the mode is a unit
vector on free atoms, and the intended-saddle judge accepts the known Müller-Brown saddle and rejects the other
one, a minimum and an unconverged end point."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import saddle_cases  # noqa: E402
from saddle_cases import build_case, judge, kabsch_aligned, reference_saddle, rmsd  # noqa: E402

from mlmd.saddle.surfaces import MB_MINIMA, MB_SADDLES, muller_brown_atoms  # noqa: E402

SLABS = ("pt111-hop", "cu100-exchange", "cu100-vacancy")
MOLECULES = ("hcn", "ethanol-torsion", "malonaldehyde", "vinyl-alcohol", "cyclobutene")


def _max_force(atoms, case):
    work = atoms.copy()
    work.calc = case.factory()
    return float(np.linalg.norm(work.get_forces()[case.free], axis=1).max())


def _check_end_states(case):
    for atoms in (case.reactant, case.product):
        assert _max_force(atoms, case) < 2 * saddle_cases.RELAX_FMAX
    # the product is another structure: some atom moves by more than 0.4 Å
    assert np.linalg.norm(case.product.positions - case.reactant.positions, axis=1).max() > 0.4
    assert abs(np.linalg.norm(case.mode) - 1) < 1e-12
    fixed = np.setdiff1d(np.arange(len(case.reactant)), case.free)
    assert np.all(case.mode[fixed] == 0)


@pytest.mark.parametrize("name", SLABS)
def test_slab_cases_are_minima(name):
    case = build_case(name)
    _check_end_states(case)
    _check_displaced(case)


def _check_displaced(case):
    """A slab start displaces the moving atoms and their first neighbours (ASE's neighbour list), no more,
    and none of the fixed atoms."""
    from ase.neighborlist import NeighborList

    radius = saddle_cases.DISPLACE_RADIUS_A
    neighbours = NeighborList([radius / 2] * len(case.reactant), skin=0.0, self_interaction=False,
                              bothways=True)
    neighbours.update(case.reactant)
    expected = set(case.moving.tolist())
    for atom in case.moving:
        expected.update(neighbours.get_neighbors(atom)[0].tolist())
    expected &= set(case.free.tolist())
    assert set(case.displaced.tolist()) == expected
    assert 1 < len(expected) < len(case.free) // 2
    assert len(case.free) >= 31  # 4x4 top two layers (+ adatom), bigger than the old 3x3x3 slab


@pytest.mark.parametrize("name", MOLECULES)
def test_molecular_cases_are_minima(name):
    pytest.importorskip("tblite")
    case = build_case(name)
    _check_end_states(case)
    index, _ = saddle_cases.hessian_index(case.reactant, case)
    assert index == 0  # a minimum, not a saddle, once rigid motions are projected out


def test_judge_on_muller_brown(tmp_path):
    case = build_case("mb")
    reference = reference_saddle(case, tmp_path)
    assert reference["hessian_index"] == 1 and reference["source"] == "analytic"
    assert (tmp_path / "mb.json").exists()
    right, wrong = (muller_brown_atoms(*p) for p in MB_SADDLES)
    assert judge(right, True, case, reference)["outcome"] == "intended"
    verdict = judge(wrong, True, case, reference)  # the other first-order saddle (C -> B)
    assert verdict["outcome"] == "wrong-saddle" and verdict["hessian_index"] == 1
    assert verdict["rmsd_to_reference"] > 1.0
    minimum = judge(muller_brown_atoms(*MB_MINIMA[0]), True, case, reference)
    assert minimum["outcome"] == "wrong-saddle" and minimum["hessian_index"] == 0
    assert judge(right, False, case, reference)["outcome"] == "not-converged"
    # a point 0.2 Å off the saddle is beyond the RMSD tolerance (0.15 Å)
    off = muller_brown_atoms(MB_SADDLES[0][0] + 0.2, MB_SADDLES[0][1])
    assert judge(off, True, case, reference)["outcome"] == "wrong-saddle"


def test_molecular_rmsd_ignores_rigid_motion_and_equivalent_atoms():
    pytest.importorskip("tblite")
    case = build_case("ethanol-torsion")
    positions = case.reactant.positions
    angle = 0.7
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    moved = positions @ rotation.T + [1.0, -2.0, 0.5]
    moved[[6, 7]] = moved[[7, 6]]  # two methyl hydrogens swapped: the same structure
    assert rmsd(moved, positions, case) < 1e-6
    assert np.allclose(kabsch_aligned(positions @ rotation.T, positions), positions, atol=1e-8)
    distorted = positions.copy()
    distorted[2] += [0.5, 0, 0]
    assert rmsd(distorted, positions, case) > 0.1

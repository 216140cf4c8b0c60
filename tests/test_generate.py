"""`mlmd generate`: labels agree with the reference calculator, runs are reproducible."""

import json

import numpy as np
import pytest
from ase.io import read

from mlmd.calculators import get_calculator
from mlmd.generate import SYSTEMS, generate

FAST = dict(equilibration_steps=5, stride=2, progress=False)


def _relabel_check(frames, calculator_name, tolerance=1e-8):
    """Recompute every frame with a fresh reference calculator: the stored labels must match.

    ``tolerance`` is the reference's own reproducibility (self-consistent methods
    converge to a threshold, so their labels depend slightly on the initial guess)."""
    calculator = get_calculator(calculator_name)
    for atoms in frames:
        copy = atoms.copy()
        copy.calc = calculator
        assert copy.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), abs=tolerance)
        np.testing.assert_allclose(copy.get_forces(), atoms.get_forces(), rtol=0, atol=tolerance)
        if atoms.pbc.all():
            np.testing.assert_allclose(copy.get_stress(), atoms.get_stress(), rtol=0, atol=tolerance)


def test_emt_copper_has_every_configuration_and_correct_labels():
    frames = generate("cu", frames=60, temperatures_K=[300], **FAST)
    assert len(frames) == 60
    configs = {atoms.info["config"] for atoms in frames}
    assert configs == {"bulk", "bulk-large", "vacancy", "surface-100", "surface-111", "adatom-100"}
    sizes = {atoms.info["config"]: len(atoms) for atoms in frames}
    assert sizes["vacancy"] == sizes["bulk"] - 1
    assert sizes["adatom-100"] == sizes["surface-100"] + 1
    assert {atoms.info["source"] for atoms in frames} == {"md", "displacement"}
    _relabel_check(frames, "emt")


def test_cuau_alloy_configurations_and_labels():
    """Compositions and sizes of every configuration; the ordered crystal is L1_2 (each Au has 12 Cu nearest
    neighbours, each Cu 4 Au and 8 Cu) with zero EMT forces, as every atom of it is a centre of inversion."""
    from ase.neighborlist import neighbor_list

    from mlmd.generate.systems import alloy_configs

    configs = dict(alloy_configs("Cu", "Au"))
    expected = {"ordered-a3b": (24, 8), "disordered-a3b": (81, 27), "disordered-ab": (16, 16), "vacancy": (23, 8),
                "surface-111": (18, 18)}
    assert {name: (int((a.numbers == 29).sum()), int((a.numbers == 79).sum())) for name, a in configs.items()} \
        == expected
    ordered = configs["ordered-a3b"]
    a = ordered.cell[0, 0] / 2  # 2x2x2 cubic cells
    first, second = neighbor_list("ij", ordered, 0.5 * (a / 2 ** 0.5 + a))  # between the first and second shells
    for atom in range(len(ordered)):
        neighbours = ordered.numbers[second[first == atom]]
        cu, au = int((neighbours == 29).sum()), int((neighbours == 79).sum())
        assert (cu, au) == ((12, 0) if ordered.numbers[atom] == 79 else (8, 4)), atom
    ordered.calc = get_calculator("emt")
    assert np.abs(ordered.get_forces()).max() < 1e-10
    frames = generate("cuau", frames=20, temperatures_K=[600], **FAST)
    assert {atoms.info["config"] for atoms in frames} == set(expected)
    assert all({29, 79} <= set(atoms.numbers) for atoms in frames)
    _relabel_check(frames, "emt")


def test_gfn2_ethanol_labels_match_tblite():
    pytest.importorskip("tblite")
    frames = generate("ethanol", frames=6, **FAST)
    assert all(atoms.get_chemical_formula() == "C2H6O" for atoms in frames)
    assert {atoms.info["temperature_K"] for atoms in frames} == {300.0, 600.0}
    _relabel_check(frames, "gfn2", tolerance=1e-4)


def test_lennard_jones_argon_liquid():
    frames = generate("argon", frames=4, **FAST)
    assert len(frames[0]) == 108 and frames[0].pbc.all()
    _relabel_check(frames, "lj")


def test_same_seed_same_data_other_seed_other_data():
    first = generate("al", frames=6, seed=3, **FAST)
    again = generate("al", frames=6, seed=3, **FAST)
    other = generate("al", frames=6, seed=4, **FAST)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.positions, b.positions)
    assert any(not np.allclose(a.positions, b.positions) for a, b in zip(first, other))


def test_settings_recorded_in_every_frame():
    frames = generate("cu", frames=6, seed=7, temperatures_K=[500.0], **FAST)
    settings = json.loads(frames[0].info["mlmd_generate"])
    assert settings["seed"] == 7 and settings["temperatures_K"] == [500.0]
    assert settings["calculator"] == "emt" and settings["frames"] == 6
    assert all(atoms.info["mlmd_generate"] == frames[0].info["mlmd_generate"] for atoms in frames)


def test_molecules_from_the_g2_collection_and_named_ones_are_registered():
    for name in ("ethanol", "malonaldehyde", "ch3cooh", "cu", "argon"):
        assert name in SYSTEMS


def test_command_line_writes_readable_extxyz(tmp_path, mlmd_cli):
    output = tmp_path / "cu.xyz"
    result = mlmd_cli("generate", "cu", "--frames", 6, "--temperatures", "400", "--equilibration", 5,
                      "--stride", 2, "--quiet", "-o", output)
    assert result.returncode == 0, result.stderr
    assert "wrote 6 frames" in result.stdout
    frames = read(output, ":")
    assert len(frames) == 6
    assert frames[0].get_forces().shape == (len(frames[0]), 3)
    assert frames[0].get_stress().shape == (6,)
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


@pytest.mark.slow
def test_ethanol_1000_frames_from_the_command_line(tmp_path, mlmd_cli):
    pytest.importorskip("tblite")
    output = tmp_path / "ethanol.xyz"
    result = mlmd_cli("generate", "ethanol", "--frames", 1000, "--quiet", "-o", output)
    assert result.returncode == 0, result.stderr
    frames = read(output, ":")
    assert len(frames) == 1000
    energies = np.array([atoms.get_potential_energy() for atoms in frames])
    assert len(np.unique(energies)) == 1000, "frames should all differ"

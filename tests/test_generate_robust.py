"""`mlmd generate` frames off the MD distribution: displacements of several amplitudes, strained cells,
cut surfaces, the config_type of every frame, and one-line errors for options that do not fit."""

import math

import numpy as np
import pytest
from ase.io import read

from mlmd.calculators import get_calculator
from mlmd.cli import main
from mlmd.generate import SYSTEMS, generate
from mlmd.generate.frames import minimum_of
from mlmd.generate.systems import parse_miller, slab_from_bulk

FAST = dict(equilibration_steps=5, stride=2, progress=False, temperatures_K=[300.0])


@pytest.fixture(scope="module")
def copper():
    """36 EMT Cu frames at 300 K: MD, displacements of 0.05 and 0.15 Å from the minimum, 3 % strains."""
    return generate("cu", frames=48, displacements_A=[0.05, 0.15], strain=0.03, seed=5, **FAST)


def of_type(frames, config_type):
    return [atoms for atoms in frames if atoms.info["config_type"] == config_type]


@pytest.mark.parametrize("amplitude", [0.05, 0.15])
def test_displaced_frames_have_the_requested_rms_displacement(copper, amplitude):
    """Displacements from the relaxed minimum (recomputed here) are Gaussian with sigma = amplitude per
    coordinate: the sample RMS of n coordinates is within 5 / sqrt(2 n) of it, the mean within 5 / sqrt(n)."""
    frames = of_type(copper, f"displaced-{amplitude:g}")
    assert len(frames) >= 10
    configs = dict(SYSTEMS["cu"].build())
    emt = get_calculator("emt")
    minima = {label: minimum_of(configs[label], emt) for label in {a.info["config"] for a in frames}}
    for label, minimum in minima.items():  # the minimum really is one: EMT forces below the BFGS threshold
        check = minimum.copy()
        check.calc = emt
        assert np.abs(check.get_forces()).max() < 0.01
    steps = np.concatenate([(a.positions - minima[a.info["config"]].positions).ravel() for a in frames])
    n = steps.size
    rms = math.sqrt(np.mean(steps ** 2))
    assert abs(rms / amplitude - 1) < 5 / math.sqrt(2 * n), (rms, amplitude, n)
    assert abs(steps.mean()) < 5 * amplitude / math.sqrt(n)
    assert all(a.info["displaced_from"] == "minimum" and a.info["displacement_A"] == amplitude for a in frames)


def test_strained_frames_stay_within_bounds_and_carry_the_atoms(copper):
    frames = of_type(copper, "strained-0.03")
    assert len(frames) >= 6
    configs = dict(SYSTEMS["cu"].build())
    md = [a for a in copper if a.info["source"] in ("md", "displacement") and a.info["config_type"] != "strained-0.03"]
    largest = 0.0
    for atoms in frames:
        strain = np.asarray(atoms.info["strain"]).reshape(3, 3)
        np.testing.assert_array_equal(strain, strain.T)
        assert np.abs(strain).max() <= 0.03
        largest = max(largest, float(np.abs(strain).max()))
        start = configs[atoms.info["config"]].cell.array  # NVT MD keeps the cell
        np.testing.assert_allclose(atoms.cell.array, start @ (np.eye(3) + strain), rtol=0, atol=1e-10)
        ratio = atoms.get_volume() / abs(np.linalg.det(start))
        assert ratio == pytest.approx(np.linalg.det(np.eye(3) + strain), rel=1e-10)
        assert 0.97 ** 3 <= ratio <= 1.03 ** 3
        # The atoms moved with the cell: fractional positions are those of an MD frame of the same configuration.
        fractional = atoms.get_scaled_positions(wrap=False)
        bases = [b for b in md if b.info["config"] == atoms.info["config"]]
        assert min(np.abs(b.get_scaled_positions(wrap=False) - fractional).max() for b in bases) < 1e-10
        assert atoms.get_stress().shape == (6,)
    assert largest > 0.015  # uniform draws up to 3 %, not a no-op


def test_every_frame_records_its_kind(copper):
    kinds = {atoms.info["config_type"] for atoms in copper}
    assert kinds == {"md", "displaced-0.05", "displaced-0.15", "strained-0.03"}
    plain = generate("cu", frames=12, seed=1, displaced_fraction=0.5, **FAST)
    assert {atoms.info["config_type"] for atoms in plain} == {"md", "displaced-md-0.08"}


def test_labels_of_off_distribution_frames_match_the_reference(copper):
    emt = get_calculator("emt")
    for atoms in of_type(copper, "displaced-0.15")[:3] + of_type(copper, "strained-0.03")[:3]:
        copy = atoms.copy()
        copy.calc = emt
        assert copy.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), abs=1e-8)
        np.testing.assert_allclose(copy.get_forces(), atoms.get_forces(), atol=1e-8)
        np.testing.assert_allclose(copy.get_stress(), atoms.get_stress(), atol=1e-8)


def test_displacements_from_md_frames():
    frames = generate("cu", frames=12, seed=2, displacements_A=[0.07], displace_from="md",
                      displaced_fraction=0.0, **FAST)
    displaced = of_type(frames, "displaced-md-0.07")
    assert displaced and all(a.info["displaced_from"] == "md" for a in displaced)


def test_surface_slab_is_an_fcc_111_cut_with_vacuum():
    """Interlayer spacing a / sqrt(3) and 4 / (sqrt(3) a^2) atoms per Å^2 in each layer: the fcc (111) plane."""
    bulk = dict(SYSTEMS["cu"].build())["bulk"]
    a = bulk.cell.lengths()[0] / 2  # the 2x2x2 conventional cell
    slab = slab_from_bulk(bulk, parse_miller("111"), vacuum_A=6.0)
    normal = np.cross(slab.cell[0], slab.cell[1])
    normal /= np.linalg.norm(normal)
    heights = np.sort(slab.positions @ normal)
    layers = np.split(heights, np.where(np.diff(heights) > 0.5)[0] + 1)
    spacing = np.diff([layer.mean() for layer in layers])
    np.testing.assert_allclose(spacing, a / math.sqrt(3), rtol=1e-6)
    area = np.linalg.norm(np.cross(slab.cell[0], slab.cell[1]))
    assert all(len(layer) / area == pytest.approx(4 / (math.sqrt(3) * a ** 2), rel=1e-6) for layer in layers)
    assert heights[-1] - heights[0] >= 7.0
    height = abs(np.dot(slab.cell[2], normal))
    assert height - (heights[-1] - heights[0]) == pytest.approx(12.0, abs=1e-6)  # 6 Å of vacuum on each side
    assert parse_miller("-1,1,0") == (-1, 1, 0)


def test_surface_frames_from_the_command_line(tmp_path, mlmd_cli):
    output = tmp_path / "al.xyz"
    result = mlmd_cli("generate", "al", "--frames", 14, "--temperatures", "300", "--equilibration", 3, "--stride",
                      1, "--surface", "111", "--quiet", "-o", output)
    assert result.returncode == 0, result.stderr
    frames = read(output, ":")
    surface = of_type(frames, "surface-111")
    assert len(surface) == 2 and all(a.info["config"] == "slab-111" for a in surface)
    assert len(frames) == 14 and all("config_type" in a.info for a in frames)


@pytest.mark.parametrize("args, message", [
    (("ethanol", "--strain", "0.03"), "--strain needs a periodic system"),
    (("ethanol", "--surface", "111"), "--surface cuts a slab from the bulk"),
    (("cu", "--strain", "0.5"), "--strain must be in (0, 0.2)"),
    (("cu", "--displacements", "0.1,far"), "--displacements must be comma-separated amplitudes"),
    (("cu", "--displacements", "0,0.1"), "--displacements must be amplitudes in Å in (0, 0.5]"),
    (("cu", "--displace-from", "md"), "--displace-from says where --displacements start"),
    (("cu", "--surface", "11"), "is not three Miller indices"),
    (("cu", "--strain", "0.03", "--trajectory"), "--strain makes labelled frames and does not combine with "
                                                 "--trajectory"),
    (("cu", "--displacements", "0.1", "--structure"), "does not combine with --structure"),
])
def test_bad_combinations_end_in_one_line(tmp_path, capsys, args, message):
    """In process (the command's own error handling; the subprocess path is that of test_cli.py)."""
    status = main(["generate", *args, "--frames", "2", "--quiet", "-o", str(tmp_path / "out.xyz")])
    stderr = capsys.readouterr().err
    assert status == 2, stderr
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.xyz").exists()


def test_errors_grouped_by_config_type(copper, tmp_path):
    """scripts/evaluate_by_config_type.py with a model that predicts nothing (a spline with zero coefficients):
    its errors are the reference labels themselves, computed here in numpy per group."""
    import sys
    from pathlib import Path

    import torch

    from mlmd.model import export_model
    from potentials import FAMILIES

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from evaluate_by_config_type import errors_by_config_type

    zero = FAMILIES["spline"]([29], cutoff=4.0, cutoff_3body=0.0).to(torch.float64).eval()
    table = errors_by_config_type(str(export_model(zero, tmp_path / "zero.pt")), copper)
    assert set(table) == {"md", "displaced-0.05", "displaced-0.15", "strained-0.03"}
    for group, row in table.items():
        frames = of_type(copper, group)
        forces = np.concatenate([a.get_forces().ravel() for a in frames])
        assert row["frames"] == len(frames)
        assert row["force_mae_meV_per_A"] == pytest.approx(1000 * np.abs(forces).mean(), rel=1e-9)
        assert row["force_rmse_meV_per_A"] == pytest.approx(1000 * np.sqrt(np.mean(forces ** 2)), rel=1e-9)
        energies = [abs(a.get_potential_energy()) / len(a) for a in frames]
        assert row["energy_mae_meV_per_atom"] == pytest.approx(1000 * np.mean(energies), rel=1e-9)
    assert table["displaced-0.15"]["force_mae_meV_per_A"] > table["displaced-0.05"]["force_mae_meV_per_A"]

"""Saddle searches against independent references: known Müller-Brown saddles, ASE's dimer, Hessians."""

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import add_adsorbate, fcc100
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.io import write
from ase.optimize import BFGS

from mlmd.cli import main
from mlmd.errors import MLMDError
from mlmd.saddle import search
from mlmd.saddle.surfaces import (LEPS, MB_SADDLES, MullerBrown, ase_dimer_search, leps_atoms,
                                       muller_brown_atoms, numerical_hessian)

MB_MODE = np.array([[1.0, -1.0, 0.0]])
LEPS_MODE = np.array([[1.0, 0, 0], [-1.0, 0, 0], [1.0, 0, 0]])  # asymmetric stretch


@pytest.mark.parametrize("method", ["dimer", "gp-dimer", "ot-gp-dimer"])
@pytest.mark.parametrize("start, saddle", [((-0.7, 0.9), 0), ((0.5, 0.2), 1)])
def test_muller_brown_saddles(method, start, saddle):
    result = search(muller_brown_atoms(*start), method=method, mode=MB_MODE, fmax=0.01, max_calls=200)
    assert result.converged, result.message
    found = result.atoms.positions[0, :2]
    distances = [np.linalg.norm(found - np.array(known)) for known in MB_SADDLES]
    if method != "ot-gp-dimer":  # the OT trust region may step over to the other saddle
        assert np.argmin(distances) == saddle
    assert min(distances) < 3e-3
    assert result.curvature < 0
    hessian = numerical_hessian(result.atoms, MullerBrown())
    eigenvalues = np.linalg.eigvalsh(hessian)
    assert eigenvalues[0] < 0 < eigenvalues[1]
    if method != "dimer":
        assert result.force_calls <= 15


def test_gp_dimer_uses_fewer_calls_than_classical_dimer_on_leps_and_agrees_with_ase():
    atoms = leps_atoms(1.05, 0.95)
    atoms.rattle(0.05, seed=0)
    gp = search(atoms, method="gp-dimer", mode=LEPS_MODE, fmax=0.01, max_calls=100)
    classical = search(atoms, method="dimer", mode=LEPS_MODE, fmax=0.01, max_calls=300)
    converged, ase_calls, ase_energy, ase_atoms = ase_dimer_search(atoms, LEPS(), LEPS_MODE, fmax=0.01)
    assert gp.converged and classical.converged and converged
    assert gp.energy == pytest.approx(ase_energy, abs=1e-4)
    assert classical.energy == pytest.approx(ase_energy, abs=1e-4)
    d = gp.atoms.get_all_distances()
    np.testing.assert_allclose([d[0, 1], d[1, 2]], [1.149, 0.862], atol=3e-3)
    eigenvalues = np.linalg.eigvalsh(numerical_hessian(gp.atoms, LEPS()))
    assert eigenvalues[0] < -1 and (eigenvalues[1:] > -0.05).all()  # first order (6 near-zero rigid modes)
    assert gp.force_calls < classical.force_calls and gp.force_calls < ase_calls


def test_relaxation_reports_barrier_and_both_minima():
    result = search(muller_brown_atoms(-0.7, 0.9), method="gp-dimer", mode=MB_MODE, relax=True, fmax=0.01)
    assert result.converged
    energies = sorted(m["energy"] for m in result.minima)
    np.testing.assert_allclose(energies, [-1.4670, -0.8077], atol=2e-4)  # MB minima A and C, x 0.01
    assert result.barrier == pytest.approx(result.energy - result.minima[0]["energy"])
    summary = result.summary()
    assert {"converged", "energy", "curvature", "force_calls", "wall_s", "gp_s", "barrier"} <= set(summary)


def test_budget_exhausted_keeps_best_structure():
    result = search(muller_brown_atoms(-0.3, 0.6), method="gp-dimer", mode=MB_MODE, fmax=1e-6, max_calls=6)
    assert not result.converged
    assert "not converged" in result.message
    assert result.force_calls <= 7
    best = min((h for h in result.history if h["kind"] != "image"), key=lambda h: h["fmax"])
    assert result.fmax == pytest.approx(best["fmax"])
    assert result.energy == pytest.approx(best["energy"])


# --- adatom hops ------------------------------------------------------------

def _adatom_slab(metal="Al"):
    slab = fcc100(metal, size=(3, 3, 3), vacuum=8.0)
    add_adsorbate(slab, metal, 1.7, "hollow")
    slab.set_constraint(FixAtoms(mask=slab.get_tags() >= 2))  # two bottom layers fixed
    slab.calc = EMT()
    BFGS(slab, logfile=None).run(fmax=0.005)
    return slab


@pytest.fixture(scope="module")
def al_adatom():
    return _adatom_slab("Al")


def test_adatom_hop_from_the_command_line(tmp_path, al_adatom, mlmd_cli):
    start = al_adatom.copy()
    start.calc = None
    start.positions[-1, 0] += 0.6  # part way to the bridge
    write(tmp_path / "start.xyz", start)
    proc = mlmd_cli("saddle", "start.xyz", "--calculator", "emt", "--method", "gp-dimer", "--mode",
                    "displacement", "--displace", "0.05", "--fmax", "0.01", "--max-calls", "60", "--relax",
                    "--json", "summary.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "outer" in proc.stdout  # progress lines
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("converged", "energy", "curvature", "force_calls", "wall_s", "gp_s", "barrier"):
        assert key in summary
    assert summary["converged"] and summary["curvature"] < 0
    assert summary["force_calls"] <= 30
    # ASE's own dimer from the same start and mode finds the same bridge saddle
    reference = start.copy()
    mode = np.zeros((len(start), 3))
    mode[-1, 0] = 1.0
    converged, ase_calls, ase_energy, _ = ase_dimer_search(reference, EMT(), mode, fmax=0.01)
    assert converged
    assert summary["energy"] == pytest.approx(ase_energy, abs=2e-3)
    assert summary["barrier"] == pytest.approx(ase_energy - al_adatom.get_potential_energy(), abs=2e-3)
    assert summary["force_calls"] * 3 < ase_calls
    assert (tmp_path / "start_saddle.xyz").exists() and (tmp_path / "start_saddle.png").exists()
    mode_out = np.loadtxt(tmp_path / "start_saddle_mode.txt")
    assert mode_out.shape == (len(start), 3) and np.linalg.norm(mode_out) == pytest.approx(1.0)


def test_mlmd_model_from_the_command_line(tmp_path, mlmd_cli):
    """An exported Lennard-Jones model; the saddle matches ASE's own Lennard-Jones calculator."""
    from ase.calculators.lj import LennardJones

    from mlmd.model import export_model
    from reference_potentials import LennardJonesPotential

    sigma, epsilon, cutoff = 2.3, 0.2, 5.0
    export_model(LennardJonesPotential([29], sigma, epsilon, cutoff).double(), tmp_path / "lj.pt")
    slab = fcc100("Cu", size=(3, 3, 2), a=2 ** (1 / 6) * sigma * np.sqrt(2), vacuum=8.0)
    add_adsorbate(slab, "Cu", 1.6, "hollow")
    slab.set_constraint(FixAtoms(indices=list(range(len(slab) - 1))))  # only the adatom moves
    slab.calc = LennardJones(sigma=sigma, epsilon=epsilon, rc=cutoff, smooth=False)
    BFGS(slab, logfile=None).run(fmax=0.005)
    slab.positions[-1, 0] += 0.5
    slab.calc = None
    write(tmp_path / "start.xyz", slab)
    proc = mlmd_cli("saddle", "start.xyz", "--model", "lj.pt", "--method", "ot-gp-dimer", "--mode",
                    "displacement", "--displace", "0.05", "--json", "s.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    reference = search(slab, calculator=LennardJones(sigma=sigma, epsilon=epsilon, rc=cutoff, smooth=False),
                       method="dimer", mode="displacement", displace_A=0.05)
    assert summary["converged"] and reference.converged
    assert summary["energy"] == pytest.approx(reference.energy, abs=1e-3)


# --- bad input --------------------------------------------------------------

def _cli_error(capsys, *argv):
    code = main(["saddle", *map(str, argv)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    return err


def test_bad_input_gives_one_line_errors(tmp_path, capsys):
    good = tmp_path / "h3.xyz"
    write(good, leps_atoms(1.0, 1.0))
    overlapping = tmp_path / "overlap.xyz"
    write(overlapping, Atoms("H3", positions=[[0, 0, 0], [0.1, 0, 0], [2, 0, 0]]))
    assert "apart" in _cli_error(capsys, overlapping, "--calculator", "emt")
    frozen = Atoms("H3", positions=[[0, 0, 0], [1, 0, 0], [2, 0, 0]])
    frozen.set_constraint(FixAtoms(indices=[0, 1, 2]))
    write(tmp_path / "frozen.xyz", frozen)
    assert "no free atoms" in _cli_error(capsys, tmp_path / "frozen.xyz", "--calculator", "emt")
    assert "unknown calculator" in _cli_error(capsys, good, "--calculator", "no-such-potential")
    np.savetxt(tmp_path / "mode.txt", np.ones((2, 3)))
    assert "shape" in _cli_error(capsys, good, "--calculator", "emt", "--mode", tmp_path / "mode.txt")
    assert "--model" in _cli_error(capsys, good)
    write(tmp_path / "hhe.xyz", Atoms("H2He", positions=leps_atoms(1.0, 1.0).positions))
    assert "same order" in _cli_error(capsys, good, "--calculator", "emt", "--product", tmp_path / "hhe.xyz")
    write(tmp_path / "two.xyz", [leps_atoms(1.0, 1.0), leps_atoms(1.1, 1.0)])
    assert "2 frames" in _cli_error(capsys, good, "--calculator", "emt", "--product", tmp_path / "two.xyz")
    with pytest.raises(MLMDError, match="unknown method"):
        search(leps_atoms(), method="neb")


def test_batch_writes_one_table(tmp_path, capsys):
    for i, (x, y) in enumerate([(-0.7, 0.9), (0.5, 0.2)]):
        write(tmp_path / f"mb{i}.xyz", muller_brown_atoms(x, y))
    # Müller-Brown is not a named calculator: register it for the run
    from mlmd.calculators import CALCULATORS

    CALCULATORS["muller-brown"] = MullerBrown
    try:
        np.savetxt(tmp_path / "mode.txt", MB_MODE)
        code = main(["saddle", str(tmp_path / "mb0.xyz"), str(tmp_path / "mb1.xyz"), "--calculator", "muller-brown",
                     "--mode", str(tmp_path / "mode.txt"), "--table", str(tmp_path / "table.csv")])
    finally:
        del CALCULATORS["muller-brown"]
    assert code == 0
    lines = (tmp_path / "table.csv").read_text().splitlines()
    assert lines[0].startswith("start,converged,energy") and len(lines) == 3
    assert (tmp_path / "mb1_saddle.json").exists()
    with pytest.raises(MLMDError, match="dask"):
        from mlmd.saddle.batch import run_batch

        run_batch([], scheduler="tcp://127.0.0.1:1")


def test_failed_evaluations_shrink_the_trust_region():
    """A potential that fails (like an SCF that does not converge) far from the start does not end the search."""
    from ase.calculators.calculator import CalculationFailed

    class Fragile(MullerBrown):
        def calculate(self, atoms=None, properties=("energy",), system_changes=()):
            if atoms is not None and np.linalg.norm(atoms.positions[0, :2] - [-0.7, 0.9]) > 0.4:
                raise CalculationFailed("SCF not converged")
            super().calculate(atoms, properties, system_changes)

    atoms = muller_brown_atoms(-0.7, 0.9)
    result = search(atoms, calculator=Fragile(), method="gp-dimer", mode=MB_MODE, fmax=0.01, max_calls=40,
                    trust_ratio=1.0)
    assert any(h["kind"] == "failed" for h in result.history)
    assert result.converged  # the saddle at (-0.822, 0.624) lies 0.30 Å from the start

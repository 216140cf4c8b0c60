"""Verification of converged saddles: each check flags what it is for, and a true saddle passes them all."""

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.io import write

from mlmd.cli import main
from mlmd.errors import MLMDError
from mlmd.saddle import METHODS, search
from mlmd.saddle.curvature import lowest_curvatures, rigid_basis
from mlmd.saddle.methods import MethodOutcome, register_method
from mlmd.saddle.settings import SaddleSettings
from mlmd.saddle.surfaces import (LEPS, MB_MINIMA, MB_SADDLES, MullerBrown, leps_atoms, muller_brown_atoms,
                                  numerical_hessian)
from mlmd.saddle.verify import graph_checks

MB_MODE = np.array([[1.0, -1.0, 0.0]])
LEPS_MODE = np.array([[1.0, 0, 0], [-1.0, 0, 0], [1.0, 0, 0]])
CHECKS = {"hessian_index", "fragments", "bond_stretch", "energy_above_start", "displacement", "mode_overlap"}


class MonkeySaddle(Calculator):
    """E = -(x² + y²)/2 + z²/2 (eV, Å) on atom 0: a second-order saddle at the origin."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        x, y, z = self.atoms.positions[0]
        self.results = {"energy": -0.5 * (x * x + y * y) + 0.5 * z * z,
                        "forces": np.array([[x, y, -z]])}


@pytest.fixture
def claimed():
    """Register a method that reports convergence at a given point (as a faulty method would); yields the point."""
    point = {}

    @register_method("claims-converged", default_max_step_A=0.1)
    def run(start, surface, settings, say):
        x = np.asarray(point["x"], dtype=float)
        energy, gradient = surface(x, kind="midpoint")
        mode = np.asarray(point.get("mode", start.mode), dtype=float)
        return MethodOutcome(x=x, mode=mode / np.linalg.norm(mode), converged=True, curvature=-1.0, iterations=1,
                             energy=energy, fmax=0.0, gradient=gradient)

    yield point
    del METHODS["claims-converged"]


def test_true_saddles_pass_every_check_and_the_summary_carries_them():
    for atoms, mode in ((muller_brown_atoms(-0.7, 0.9), MB_MODE), (leps_atoms(1.05, 0.95), LEPS_MODE)):
        result = search(atoms, method="gp-dimer", mode=mode, max_calls=60)
        assert result.status == "verified", result.message
        summary = json.loads(json.dumps(result.summary()))  # JSON-ready
        assert summary["verified"] is True and summary["status"] == "verified"
        assert set(summary["verification"]["checks"]) == CHECKS
        assert all(c["ok"] for c in summary["verification"]["checks"].values())
        # the index check's curvatures equal the eigenvalues of an independent central-difference Hessian, up
        # to the O(h) error of its forward differences (h = 0.005 Å: 3 % on LEPS's stiff bonds)
        hessian = np.linalg.eigvalsh(numerical_hessian(result.atoms, atoms.calc.__class__()))
        lowest = summary["verification"]["checks"]["hessian_index"]["value"]
        assert lowest[0] == pytest.approx(hessian[0], rel=0.05)
        assert summary["verify_calls"] == result.verify_calls == 3  # 3 free directions (LEPS: 9 less 6 rigid)
        assert summary["force_calls"] + summary["verify_calls"] == len(result.history)


def test_a_second_order_saddle_found_by_the_dimer_is_flagged():
    """The dimer converges at the origin of -(x²+y²)/2 + z²/2 (zero gradient, negative curvature along x)."""
    atoms = Atoms("H", positions=[[0.0, 0.0, 0.0]])
    result = search(atoms, calculator=MonkeySaddle(), method="dimer", mode=np.array([[1.0, 0.2, 0.0]]))
    assert result.converged
    assert result.status == "unverified"
    assert "NOT verified" in result.message and "Hessian index >= 2" in result.message
    values = result.summary()["verification"]["checks"]["hessian_index"]["value"]
    np.testing.assert_allclose(values, [-1.0, -1.0], atol=0.01)
    assert result.warnings and result.warnings[0].startswith("warning: hessian_index")
    off = search(atoms, calculator=MonkeySaddle(), method="dimer", mode=np.array([[1.0, 0.2, 0.0]]), verify=False)
    assert off.status == "converged" and off.verify_calls == 0


def test_a_minimum_is_flagged(claimed):
    claimed["x"] = [*MB_MINIMA[0], 0.0]
    result = search(muller_brown_atoms(-0.5, 1.3), method="claims-converged", mode=MB_MODE)
    assert result.status == "unverified" and "Hessian index 0" in result.message


def test_fragmentation_and_a_stretched_bond_are_flagged():
    settings = SaddleSettings()
    start = Atoms("H4", positions=[[0, 0, 0], [0.7, 0, 0], [1.4, 0, 0], [2.1, 0, 0]])  # one bonded chain
    end = Atoms("H4", positions=[[0, 0, 0], [0.74, 0, 0], [5.0, 0, 0], [5.74, 0, 0]])  # two H2 far apart
    fragments, stretch = graph_checks(start, end, settings)
    assert not fragments.ok and "1 -> 2" in fragments.detail and fragments.value["broken"] == [(1, 2)]
    assert stretch.ok  # every H keeps its partner
    assert graph_checks(start, start, settings)[0].ok
    ethanol = molecule("CH3CH2OH")
    stretched = ethanol.copy()
    c, h = 0, 6  # the methyl C and one of its H
    assert ethanol.get_distance(c, h) < 1.15
    stretched.set_distance(c, h, 1.7, fix=0)
    fragments, stretch = graph_checks(ethanol, stretched, settings)
    assert not stretch.ok and stretch.value == [h] and "1.70 Å" in stretch.detail
    assert not fragments.ok
    mild = ethanol.copy()
    mild.set_distance(c, h, 1.4, fix=0)  # 1.30x the C-H covalent length: a bond breaking at a saddle
    assert graph_checks(ethanol, mild, settings)[1].ok


def test_a_proton_shared_between_two_oxygens_is_not_a_fragment():
    """Proton transfer: O-H...O at the start, the proton midway (1.20 Å from both O, 1.24x the O-H covalent
    length) at the saddle is one fragment; moved out to 1.45 Å from both (1.49x) it is a broken bond."""
    settings = SaddleSettings()
    start = Atoms("OHO", positions=[[0, 0, 0], [0.97, 0, 0], [2.40, 0, 0]])
    middle = Atoms("OHO", positions=[[0, 0, 0], [1.20, 0, 0], [2.40, 0, 0]])
    assert graph_checks(start, middle, settings)[0].ok
    apart = Atoms("OHO", positions=[[0, 0, 0], [1.20, 0.82, 0], [2.40, 0, 0]])
    assert abs(apart.get_distance(0, 1) - 1.45) < 0.01
    fragments = graph_checks(start, apart, settings)[0]
    assert not fragments.ok and fragments.value["broken"] == [(0, 1)]


def test_fragmentation_through_a_search(claimed):
    """A search that claims convergence with an H pulled off the molecule ends unverified."""
    from ase.calculators.emt import EMT

    start = molecule("CH4")
    end = start.copy()
    end.positions[1] += 2.0 * (end.positions[1] - end.positions[0])
    claimed["x"] = end.positions.ravel()
    result = search(start, calculator=EMT(), method="claims-converged", mode="random", max_barrier_eV=100)
    checks = result.summary()["verification"]["checks"]
    assert not checks["fragments"]["ok"] and not checks["bond_stretch"]["ok"]
    assert result.status == "unverified" and "fragmented" in result.message


def test_energy_displacement_and_mode_overlap_thresholds():
    atoms = muller_brown_atoms(0.5, 0.2)
    base = search(atoms, method="gp-dimer", mode=MB_MODE, max_calls=60)
    assert base.status == "verified"
    checks = base.summary()["verification"]["checks"]
    barrier = checks["energy_above_start"]["value"]
    assert barrier == pytest.approx(base.energy - MullerBrown().get_potential_energy(atoms), abs=1e-9)
    moved = np.linalg.norm(base.atoms.positions[0] - atoms.positions[0])
    assert checks["displacement"]["value"]["max_A"] == pytest.approx(moved)
    overlap = checks["mode_overlap"]["value"]
    for change, name in ((dict(max_barrier_eV=0.5 * barrier), "energy_above_start"),
                         (dict(max_displacement_A=0.5 * moved), "displacement")):
        result = search(atoms, method="gp-dimer", mode=MB_MODE, max_calls=60, **change)
        assert result.status == "unverified"
        assert [c.name for c in result.verification.failed] == [name]
    # A weak overlap with the requested (guessed) mode warns, naming it, but does not fail the saddle.
    result = search(atoms, method="gp-dimer", mode=MB_MODE, max_calls=60, min_mode_overlap=min(1.0, overlap + 0.02))
    assert result.status == "verified" and [c.name for c in result.verification.warned] == ["mode_overlap"]
    assert any("overlaps the requested one" in w for w in result.warnings)


def test_a_saddle_below_the_start_is_a_warning(claimed):
    claimed["x"] = [*MB_SADDLES[0], 0.0]
    above = muller_brown_atoms(-0.9, 0.2)  # higher than the saddle at (-0.822, 0.624)
    assert above.get_potential_energy() > muller_brown_atoms(*MB_SADDLES[0]).get_potential_energy()
    result = search(above, method="claims-converged", mode=MB_MODE)
    assert [c.name for c in result.verification.warned] == ["energy_above_start"]
    assert result.status == "verified"  # a warning only: a displaced start may lie above its saddle
    assert result.warnings == [w for w in result.warnings if "below the start" in w] and result.warnings


def test_a_saddle_of_another_reaction_does_not_connect_to_the_start(claimed):
    """From a start in minimum A's basin, Müller-Brown's saddle between B and C relaxes to B and C, not A."""
    start = muller_brown_atoms(-0.5, 1.3)
    claimed["x"] = [*MB_SADDLES[1], 0.0]
    result = search(start, method="claims-converged", mode=MB_MODE, relax=True)
    check = result.summary()["verification"]["checks"]["connects_to_start"]
    assert result.status == "unverified" and not check["ok"]
    assert "does not connect to the start's minimum" in result.message
    a, b, c = (np.array(m) for m in (MB_MINIMA[0], MB_MINIMA[2], MB_MINIMA[1]))
    np.testing.assert_allclose(sorted(check["value"]), sorted([np.linalg.norm(b - a), np.linalg.norm(c - a)]),
                               atol=0.01)
    assert result.summary()["relax_calls"] == result.relax_calls > 0
    # the saddle between A and B connects, and is verified
    claimed["x"] = [*MB_SADDLES[0], 0.0]
    result = search(start, method="claims-converged", mode=MB_MODE, relax=True)
    check = result.summary()["verification"]["checks"]["connects_to_start"]
    assert check["ok"] and min(check["value"]) < 0.01 and result.status == "verified", result.message
    # without --relax there is no such check (it needs the relaxations)
    assert "connects_to_start" not in search(start, method="claims-converged", mode=MB_MODE).summary()[
        "verification"]["checks"]


def test_a_saddle_of_a_competing_reaction_does_not_connect_to_the_product(claimed):
    """From Müller-Brown's middle minimum two saddles lead out: towards the product asked for (the upper-left
    minimum) and towards the lower-right one. Both connect to the start; only the first reaches the product."""
    start = muller_brown_atoms(-0.1, 0.5)  # in the middle minimum's basin
    product = muller_brown_atoms(*MB_MINIMA[0])
    claimed["x"] = [*MB_SADDLES[1], 0.0]  # towards the lower-right minimum
    result = search(start, method="claims-converged", mode=MB_MODE, product=product)
    checks = result.summary()["verification"]["checks"]
    assert checks["connects_to_start"]["ok"] and not checks["connects_to_product"]["ok"]
    assert result.status == "unverified" and "does not connect to the given product" in result.message
    assert result.minima is not None  # a product implies the relaxation
    claimed["x"] = [*MB_SADDLES[0], 0.0]  # the saddle to the product
    result = search(start, method="claims-converged", mode=MB_MODE, product=product.positions)
    checks = result.summary()["verification"]["checks"]
    assert checks["connects_to_product"]["ok"] and min(checks["connects_to_product"]["value"]) < 0.01
    assert result.status == "verified", result.message
    with pytest.raises(MLMDError, match="the product has 2 atoms and the start 1"):
        search(start, method="claims-converged", mode=MB_MODE, product=np.zeros((2, 3)))


@pytest.mark.parametrize("method", ["dimer", "gp-dimer", "ot-gp-dimer", "p-rfo", "gp-p-rfo"])
def test_a_product_orients_the_climb(method):
    """A start displaced from Müller-Brown's middle minimum away from the upper-left one, the mode along the
    line between them: min-mode following climbs up the side the start lies on and ends at the other saddle;
    with the upper-left minimum given as the product every method climbs towards it instead."""
    upper_left, middle = np.array(MB_MINIMA[0]), np.array(MB_MINIMA[2])
    towards = (upper_left - middle) / np.linalg.norm(upper_left - middle)
    start = muller_brown_atoms(*(middle - 0.05 * towards))
    mode = np.array([[*towards, 0.0]])
    for product, saddle in ((None, 1), (muller_brown_atoms(*upper_left), 0)):
        result = search(start, method=method, mode=mode, fmax=0.01, max_calls=100, product=product)
        found = result.atoms.positions[0, :2]
        distances = [np.linalg.norm(found - np.array(known)) for known in MB_SADDLES]
        assert result.status == "verified" and np.argmin(distances) == saddle and min(distances) < 3e-3, (
            product is not None, result.message, found)


class FailsBelow(MullerBrown):
    """Müller-Brown whose evaluations fail (as an SCF that does not converge) below ``y_A``."""

    def __init__(self, y_A: float):
        super().__init__()
        self.y_A = y_A

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        if atoms is not None and atoms.positions[0, 1] < self.y_A:
            from ase.calculators.calculator import CalculationFailed

            raise CalculationFailed("SCF not converged (a test calculator)")
        super().calculate(atoms, properties, system_changes)


def test_a_potential_failing_during_the_relaxation_does_not_end_the_search(claimed):
    """The saddle between the upper-left and middle minima relaxes down one side into a region where the
    potential fails: the search still returns its saddle, says why the relaxation stopped, and does not
    claim the barrier or the connection it could not check."""
    start = muller_brown_atoms(-0.5, 1.3)
    start.calc = FailsBelow(0.55)
    claimed["x"] = [*MB_SADDLES[0], 0.0]
    result = search(start, method="claims-converged", mode=MB_MODE, relax=True)
    assert result.converged and result.atoms.positions[0, :2] == pytest.approx(MB_SADDLES[0])
    failed = [m for m in result.minima if not m["converged"]]
    assert len(failed) == 1 and "the potential failed during the relaxation" in failed[0]["error"]
    assert "SCF not converged (a test calculator)" in result.message
    assert np.isfinite(result.barrier)  # the start's side relaxed normally


def test_davidson_curvatures_against_eigenvalues():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    eigenvalues = np.concatenate([[-2.0, -0.5], np.linspace(0.3, 5.0, 10)])
    hessian = q @ np.diag(eigenvalues) @ q.T
    x = rng.normal(size=12)
    mode = q[:, 0] + 0.5 * rng.normal(size=12)
    full = lowest_curvatures(lambda y: hessian @ y, x, hessian @ x, mode, max_calls=30, residual_tolerance=1e-9)
    assert full.complete and full.calls == 12
    np.testing.assert_allclose(full.values, [-2.0, -0.5], atol=1e-8)
    some = lowest_curvatures(lambda y: hessian @ y, x, hessian @ x, mode, max_calls=4, residual_tolerance=1e-9)
    assert some.calls == 4 and not some.complete
    assert (some.values >= np.array([-2.0, -0.5]) - 1e-9).all()  # Ritz values bound the eigenvalues from above


def test_rigid_motions_are_projected_for_an_isolated_molecule():
    atoms = leps_atoms(1.149, 0.862)
    atoms.positions[2, 1] += 0.3  # bent: three rotations
    assert rigid_basis(atoms.positions, rotations=True).shape == (6, 9)
    assert rigid_basis(leps_atoms().positions, rotations=True).shape == (5, 9)  # linear: two rotations
    basis = rigid_basis(atoms.positions, rotations=True)
    np.testing.assert_allclose(basis @ basis.T, np.eye(6), atol=1e-12)
    hessian = numerical_hessian(atoms, LEPS())
    projector = np.eye(9) - basis.T @ basis
    internal = np.linalg.eigvalsh(projector @ hessian @ projector)
    internal = internal[np.abs(internal) > 1e-6]

    def gradient(y):
        work = atoms.copy()
        work.positions = y.reshape(-1, 3)
        work.calc = LEPS()
        return -work.get_forces().ravel()

    x = atoms.positions.ravel()
    found = lowest_curvatures(gradient, x, gradient(x), np.ones(9), rigid=basis, max_calls=30, step_A=1e-4,
                              residual_tolerance=1e-6)
    assert found.complete and found.calls == 3
    np.testing.assert_allclose(found.values, np.sort(internal)[:2], rtol=2e-3, atol=2e-3)


def test_cli_exits_3_when_not_verified_and_documents_it(tmp_path, capsys):
    from mlmd.calculators import CALCULATORS

    write(tmp_path / "mb.xyz", muller_brown_atoms(-0.7, 0.9))
    np.savetxt(tmp_path / "mode.txt", MB_MODE)
    CALCULATORS["muller-brown"] = MullerBrown
    try:
        common = ["saddle", str(tmp_path / "mb.xyz"), "--calculator", "muller-brown", "--mode",
                  str(tmp_path / "mode.txt"), "--quiet", "--overwrite", "--json", str(tmp_path / "s.json")]
        assert main(common) == 0
        assert json.loads((tmp_path / "s.json").read_text())["status"] == "verified"
        capsys.readouterr()
        assert main(common + ["--max-barrier", "0.01"]) == 3
    finally:
        del CALCULATORS["muller-brown"]
    captured = capsys.readouterr()
    assert "warning: energy_above_start" in captured.err and "NOT verified" in captured.out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["status"] == "unverified" and summary["converged"] and summary["verified"] is False
    with pytest.raises(SystemExit):
        main(["saddle", "--help"])
    assert "3 converged but the saddle is NOT verified" in " ".join(capsys.readouterr().out.split())

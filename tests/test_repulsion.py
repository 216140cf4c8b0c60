"""The short-range repulsion prior (``repulsion = "zbl"``): against an independent numpy ZBL, forces
against finite differences, C2 switching, repulsion of compressed pairs under random learned parts,
periodic images, residual fitting of the closed-form family, the model file, and the conformance
suite of every potential family with the prior on."""

import math

import numpy as np
import pytest
import torch
from ase.units import create_units
from ase.build import bulk

from engine_conformance import LearnedBaselineConformance, MLMDModelConformance
from potentials import FAMILIES
from potentials.blocks.repulsion import COULOMB_EV_A, REPULSIONS, ZBLRepulsion
from potentials.testing import SYSTEMS, relabel
from test_facet import FACET_ROTATION_RTOL
from test_spline import SMALL, collate, randomise, random_structure

units = create_units("2018")  # CODATA 2018, as mlmd.constants
# Cordero covalent radii (Å) of the elements used here, and the published ZBL screening constants.
RADII = {1: 0.31, 6: 0.76, 8: 0.66, 13: 1.21, 29: 1.32}
PHI = [(0.18175, 3.19980), (0.50986, 0.94229), (0.28022, 0.40290), (0.02817, 0.20162)]
FAMILY_SETTINGS = {
    "equivariant": dict(cutoff=5.0, channels=8, lmax=2, num_layers=2),
    "facet": dict(cutoff=5.0, channels=8, lmax=2, num_layers=3),
    "spline": SMALL,
}


def quintic(t):
    return 1 - 10 * t ** 3 + 15 * t ** 4 - 6 * t ** 5


def cosine(t):
    """A C1 switch whose second derivative jumps at both ends (the negative control)."""
    return 0.5 * (1 + np.cos(np.pi * t))


def zbl_numpy(r, z1, z2, switch=quintic):
    """The switched ZBL pair energy (eV), written out in numpy from the formula."""
    k = units._e / (4 * math.pi * units._eps0) * 1e10  # e^2/(4 pi eps0) in eV Å, from ASE's constants
    a = 0.46850 / (z1 ** 0.23 + z2 ** 0.23)
    phi = sum(c * np.exp(-d * r / a) for c, d in PHI)
    outer = 0.7 * (RADII[z1] + RADII[z2])
    inner = 0.5 * outer
    t = np.clip((r - inner) / (outer - inner), 0.0, 1.0)
    return k * z1 * z2 / r * phi * switch(t)


def bare_prior(species, **settings):
    """A spline model whose learned part is zero everywhere: its energy is the prior alone (float64)."""
    settings = dict(SMALL, **settings)
    return FAMILIES["spline"](species, repulsion="zbl", **settings).double().eval()


def run(model, positions, numbers, cell=None, pbc=False):
    positions = torch.tensor(np.asarray(positions, dtype=float))
    cell = torch.tensor(np.eye(3) * 30.0 if cell is None else np.asarray(cell, dtype=float)).unsqueeze(0)
    return model(positions, torch.tensor(numbers), cell, torch.tensor([[pbc] * 3]),
                 torch.zeros(len(numbers), dtype=torch.int64))


def dimer_energy(model, r, z1, z2):
    return float(run(model, [[0, 0, 0], [r, 0, 0]], [z1, z2])["energy"][0])


def test_coulomb_constant_matches_ase():
    assert COULOMB_EV_A == pytest.approx(units._e / (4 * math.pi * units._eps0) * 1e10, rel=1e-9)
    assert COULOMB_EV_A == pytest.approx(units.Hartree * units.Bohr, rel=1e-7)


@pytest.mark.parametrize("z1, z2", [(1, 1), (6, 1), (29, 29), (13, 29)])
def test_dimer_energy_matches_numpy(z1, z2):
    model = bare_prior(sorted({z1, z2}))
    outer = 0.7 * (RADII[z1] + RADII[z2])
    distances = np.concatenate([np.linspace(0.15, 1.2 * outer, 23), [outer, 1.5 * outer, 3.0]])
    expected = zbl_numpy(distances, z1, z2)
    actual = np.array([dimer_energy(model, r, z1, z2) for r in distances])
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)
    assert expected[distances < outer].min() > 0 and np.all(expected[distances >= outer] == 0)


def test_unscreened_coulomb_limit_and_zero_at_bond_lengths():
    """``E r / (k Z1 Z2) -> 1`` as ``r -> 0`` (phi(0) = 1); zero at the H-H, C-H, Cu-Cu bonds."""
    model = bare_prior([1, 6, 29])
    r = 1e-4
    assert dimer_energy(model, r, 29, 29) * r / (COULOMB_EV_A * 29 * 29) == pytest.approx(1.0, abs=3e-3)
    for (z1, z2), bond in {(1, 1): 0.74, (6, 1): 1.09, (29, 29): 2.22}.items():
        assert dimer_energy(model, bond, z1, z2) == 0.0
    assert dimer_energy(model, 1.0, 29, 29) > 100.0  # far below any Cu-Cu distance in data


@pytest.mark.parametrize("z1, z2", [(6, 1), (29, 29)])
def test_forces_are_minus_the_finite_difference_gradient(z1, z2):
    model = bare_prior(sorted({z1, z2}))
    outer = 0.7 * (RADII[z1] + RADII[z2])
    rng = np.random.default_rng(0)
    h = 1e-5
    for r in np.linspace(0.3, 1.05 * outer, 9):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        positions = np.array([[0.1, -0.2, 0.3], [0.1, -0.2, 0.3] + r * direction])
        forces = run(model, positions, [z1, z2])["forces"].numpy()
        numeric = np.zeros_like(positions)
        for atom in range(2):
            for axis in range(3):
                step = np.zeros_like(positions)
                step[atom, axis] = h
                plus = float(run(model, positions + step, [z1, z2])["energy"][0])
                minus = float(run(model, positions - step, [z1, z2])["energy"][0])
                numeric[atom, axis] = -(plus - minus) / (2 * h)
        np.testing.assert_allclose(forces, numeric, rtol=1e-6, atol=1e-6 * max(1.0, np.abs(numeric).max()))


def one_sided_derivatives(f, x0, h):
    """Second-order one-sided first and second derivatives of ``f`` at ``x0``: (left', right', left'', right'')."""
    left = [f(x0 - k * h) for k in range(4)]
    right = [f(x0 + k * h) for k in range(4)]
    first = [(3 * v[0] - 4 * v[1] + v[2]) / (2 * h) for v in (left, right)]
    second = [(2 * v[0] - 5 * v[1] + 4 * v[2] - v[3]) / h ** 2 for v in (left, right)]
    return first[0], -first[1], second[0], second[1]


def assert_c2(f, radii, h, what):
    """Left and right first and second derivatives agree at each radius, to a small part of their size."""
    for r0 in radii:
        left1, right1, left2, right2 = one_sided_derivatives(f, r0, h)
        assert abs(left1 - right1) < 1e-3 * max(abs(left1), 1.0), (what, r0, left1, right1)
        assert abs(left2 - right2) < 1e-2 * max(abs(left2), 1.0), (what, r0, left2, right2)


def test_switch_is_c2_at_both_radii():
    """Finite differences of the pair energy: the first and second derivatives are continuous at
    ``r_out`` (where they vanish) and at ``r_in`` (where the switch leaves the ZBL curve)."""
    model = bare_prior([29])
    outer = 0.7 * 2 * RADII[29]
    inner = 0.5 * outer
    energy = lambda r: dimer_energy(model, r, 29, 29)  # noqa: E731
    assert_c2(energy, (inner, outer), 1e-3, "zbl")
    assert one_sided_derivatives(energy, outer - 0.05, 1e-3)[0] < -0.1  # still on just inside r_out
    # The check can fail: the same ZBL with a cosine switch jumps in its second derivative at r_out.
    assert_c2(lambda r: float(zbl_numpy(r, 29, 29)), (inner, outer), 1e-3, "numpy quintic")
    with pytest.raises(AssertionError):
        assert_c2(lambda r: float(zbl_numpy(r, 29, 29, cosine)), (outer,), 1e-3, "cosine")


@pytest.mark.parametrize("family", sorted(FAMILY_SETTINGS))
def test_compressed_pairs_are_repulsive_under_a_random_learned_part(family):
    """At 0.5 Å (and closer) the pair pushes apart whatever the learned part's random weights say."""
    torch.manual_seed(3)
    model = FAMILIES[family]([1, 6, 8, 29], repulsion="zbl", **FAMILY_SETTINGS[family]).double()
    if family == "spline":
        randomise(model)
    model.eval()
    for z1, z2 in [(6, 1), (8, 1), (6, 6), (29, 29), (29, 1)]:
        energies = [dimer_energy(model, r, z1, z2) for r in (0.3, 0.4, 0.5)]
        assert energies[0] > energies[1] > energies[2], (z1, z2, energies)
        out = run(model, [[0, 0, 0], [0.5, 0, 0]], [z1, z2])
        assert float(out["forces"][0, 0]) < 0 < float(out["forces"][1, 0]), (z1, z2)
    # In a crystal: one Cu pushed to 0.5 Å from a neighbour is pushed back.
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    neighbour = atoms.positions[1]
    atoms.positions[0] = neighbour - 0.5 * neighbour / np.linalg.norm(neighbour)
    forces = run(model, atoms.positions, atoms.numbers, atoms.cell.array, True)["forces"].numpy()
    assert float(forces[0] @ (atoms.positions[0] - neighbour)) > 0


def test_periodic_images_through_the_shared_neighbour_list():
    """A pair across the cell boundary, and an atom close to its own image in a small cell."""
    model = bare_prior([29])
    across = float(run(model, [[0.2, 1, 1], [9.2, 1, 1]], [29, 29], np.eye(3) * 10, True)["energy"][0])
    assert across == pytest.approx(float(zbl_numpy(1.0, 29, 29)), rel=1e-12)
    cell = np.diag([1.2, 10.0, 10.0])  # one atom, images 1.2 Å apart along x: two pairs per cell
    own = run(model, [[0.1, 1, 1]], [29], cell, True)
    assert float(own["energy"][0]) == pytest.approx(float(zbl_numpy(1.2, 29, 29)), rel=1e-12)
    stress = model(torch.tensor([[0.1, 1.0, 1.0]]), torch.tensor([29]), torch.tensor(cell).unsqueeze(0),
                   torch.tensor([[True] * 3]), torch.zeros(1, dtype=torch.int64), True, True)["stress"][0]
    h = 1e-6  # sigma_xx = (1/V) dE/d(eps_xx): stretch the cell along x
    e = [float(zbl_numpy(1.2 * (1 + s), 29, 29)) for s in (h, -h)]
    assert float(stress[0, 0]) == pytest.approx((e[0] - e[1]) / (2 * h) / np.linalg.det(cell), rel=1e-5)


def test_closed_form_fit_learns_the_residual():
    """Labels from a spline with the prior on; a fresh one with the prior recovers the spline exactly."""
    torch.manual_seed(1)
    settings = dict(cutoff=5.0, cutoff_3body=0.0, r_min=0.8, n_intervals=10)
    truth = randomise(FAMILIES["spline"]([13, 29], repulsion="zbl", **settings)).double()
    frames = [random_structure(seed, min_distance=1.0) for seed in range(40)]
    batches = [collate(frames[i:i + 10], truth) for i in range(0, len(frames), 10)]
    assert float(truth.repulsion_labels(batches[0])[0].abs().max()) > 1.0  # the prior is active in the data
    fitted = FAMILIES["spline"]([13, 29], repulsion="zbl", **settings).double()
    stats = fitted.fit_linear(batches, ridge=1e-12, curvature=0.0)
    assert stats["force_rmse_eV_per_A"] < 1e-6
    error = (fitted.coefficient_vector() - truth.coefficient_vector()).abs().max()
    assert float(error) < 1e-6


def test_option_is_stored_in_config_and_model_file(tmp_path):
    import mlmd
    from mlmd.model import export_model

    model = FAMILIES["facet"]([1, 29], repulsion="zbl", **FAMILY_SETTINGS["facet"])
    assert model.config()["repulsion"] == "zbl"
    assert FAMILIES["facet"]([1, 29], **FAMILY_SETTINGS["facet"]).config()["repulsion"] == "none"
    rebuilt = FAMILIES["facet"].from_config(model.config())
    assert isinstance(rebuilt.repulsion, ZBLRepulsion)
    loaded = mlmd.load_model(export_model(model.double().eval(), tmp_path / "model.pt"))
    assert loaded.metadata["repulsion"] == "zbl" and loaded.metadata["config"]["repulsion"] == "zbl"
    with pytest.raises(ValueError, match="repulsion 'lj' is not one of"):
        FAMILIES["facet"]([1], repulsion="lj")
    assert sorted(REPULSIONS) == ["none", "zbl"]


def test_conformance_systems_exercise_the_prior():
    """The suites below would prove nothing about the prior if no pair came within its range."""
    model = bare_prior([1, 6, 8, 29])
    active = []
    for name, make in SYSTEMS.items():
        atoms = relabel(make(), [1, 6, 8, 29])
        periodic = bool(atoms.pbc.any())
        out = run(model, atoms.positions, atoms.numbers, atoms.cell.array if periodic else None, periodic)
        if float(out["energy"][0]) > 0.1:
            active.append(name)
    assert {"cluster", "crystal"} <= set(active)


@pytest.mark.slow
class TestEquivariantWithRepulsion(LearnedBaselineConformance):
    species = [1, 6, 8, 29]

    def make_model(self):
        return FAMILIES["equivariant"](self.species, repulsion="zbl", **FAMILY_SETTINGS["equivariant"])


@pytest.mark.slow
class TestFacetWithRepulsion(LearnedBaselineConformance):
    species = [1, 6, 8, 29]
    rotation_rtol = FACET_ROTATION_RTOL

    def make_model(self):
        return FAMILIES["facet"](self.species, repulsion="zbl", tensor_product=["gaunt", "cg", "cg"],
                                 **FAMILY_SETTINGS["facet"])


@pytest.mark.slow
class TestSplineWithRepulsion(MLMDModelConformance):
    species = [1, 6, 8, 29]

    def reference_energies(self, model):
        return dict(zip(model.species, model.one_body.tolist()))

    def make_model(self):
        return randomise(FAMILIES["spline"](self.species, repulsion="zbl", **SMALL))

"""The conformance suite on analytic Lennard-Jones potentials, where every property is known.

This proves the suite is sound both ways: correct models pass it, and
deliberately broken ones (forces off by 1 % or by a sign, a rotation- or
parity-breaking term, an energy jump at the cutoff, a fragment that feels the
size of its system, a lone atom off its reference, ...) fail the right test.
A pair potential's lone atom has zero energy, the suite's default reference.
"""

import pytest
import torch

from engine_conformance import MLMDModelConformance
from reference_potentials import LennardJonesPotential

SPECIES = [1, 6, 8, 29]


def lennard_jones():
    return LennardJonesPotential(SPECIES, sigma=1.5, epsilon=0.2, cutoff=5.0)


class TestLennardJonesConformance(MLMDModelConformance):
    """The shifted LJ of ``reference_potentials`` (ASE ``LennardJones(smooth=False)``)."""

    species = SPECIES
    known_failures = {
        "test_force_vanishes_at_cutoff": (
            "by design: the energy-shifted LJ is continuous at r_c but its force jumps there by "
            "-dV/dr(r_c) (5e-4 eV/Å here); SmoothLennardJones below passes"
        ),
    }

    def make_model(self):
        return lennard_jones()


class SmoothLennardJones(LennardJonesPotential):
    """Shifted LJ times the switch ``s(x) = 1 - x^3 (10 - 15 x + 6 x^2)``, ``x = (r - r_on)/(r_c - r_on)``
    clamped to [0, 1]: ``s(1) = s'(1) = s''(1) = 0``, so energy and force vanish smoothly at ``r_c``."""

    def __init__(self, species, sigma: float = 1.5, epsilon: float = 0.2, cutoff: float = 5.0, r_on: float = 4.0):
        super().__init__(species, sigma, epsilon, cutoff)
        self.r_on = float(r_on)

    def atomic_energies(self, positions, species, edge_index, edge_vectors, batch):
        r = torch.linalg.vector_norm(edge_vectors, dim=1)
        lj = 4 * self.epsilon * ((self.sigma / r) ** 12 - (self.sigma / r) ** 6)
        shift = 4 * self.epsilon * ((self.sigma / self.cutoff) ** 12 - (self.sigma / self.cutoff) ** 6)
        x = ((r - self.r_on) / (self.cutoff - self.r_on)).clamp(0.0, 1.0)
        switch = 1 - x ** 3 * (10 - 15 * x + 6 * x ** 2)
        energies = torch.zeros(positions.shape[0], dtype=positions.dtype, device=positions.device)
        return energies.index_add(0, edge_index[0], 0.5 * (lj - shift) * switch)


class TestSmoothLennardJonesConformance(MLMDModelConformance):
    species = SPECIES

    def make_model(self):
        return SmoothLennardJones(SPECIES)


# ----------------------------------------------------------------------------- negative controls

class ScaledOutput(torch.nn.Module):
    """Wraps a potential and multiplies one output (``forces`` or ``stress``) by ``factor``."""

    def __init__(self, inner, key: str, factor: float):
        super().__init__()
        self.inner, self.key, self.factor = inner, key, factor
        self.species, self.cutoff = inner.species, inner.cutoff

    def forward(self, *args):
        out = dict(self.inner(*args))
        if self.key in out:
            out[self.key] = out[self.key] * self.factor
        return out


class AnisotropicLennardJones(LennardJonesPotential):
    """Pair energy times ``1 + 0.01 u_x^2`` (``u`` the bond direction): not rotation invariant."""

    def atomic_energies(self, positions, species, edge_index, edge_vectors, batch):
        r = torch.linalg.vector_norm(edge_vectors, dim=1)
        pair = 4 * self.epsilon * ((self.sigma / r) ** 12 - (self.sigma / r) ** 6) * (1 + 0.01 * (edge_vectors[:, 0] / r) ** 2)
        energies = torch.zeros(positions.shape[0], dtype=positions.dtype, device=positions.device)
        return energies.index_add(0, edge_index[0], 0.5 * pair)


class ChiralLennardJones(LennardJonesPotential):
    """Adds ``0.05 det[r_1 - r_0, r_2 - r_0, r_3 - r_0]`` to atom 0: invariant under rotations, odd under reflection."""

    def atomic_energies(self, positions, species, edge_index, edge_vectors, batch):
        energies = super().atomic_energies(positions, species, edge_index, edge_vectors, batch)
        chirality = torch.linalg.det(positions[1:4] - positions[0])
        return energies + 0.05 * chirality * (torch.arange(positions.shape[0]) == 0).to(positions.dtype)


class IndexedLennardJones(LennardJonesPotential):
    """Per-atom energy times ``1 + 0.01 i``: depends on the order of the atoms."""

    def atomic_energies(self, positions, species, edge_index, edge_vectors, batch):
        energies = super().atomic_energies(positions, species, edge_index, edge_vectors, batch)
        return energies * (1 + 0.01 * torch.arange(positions.shape[0], dtype=positions.dtype))


class LeakyBatchLennardJones(LennardJonesPotential):
    """Adds ``1e-3 |r_i - centroid|^2`` with the centroid of the whole batch: systems leak into each other."""

    def atomic_energies(self, positions, species, edge_index, edge_vectors, batch):
        energies = super().atomic_energies(positions, species, edge_index, edge_vectors, batch)
        return energies + 1e-3 * ((positions - positions.mean(dim=0)) ** 2).sum(dim=1)


class UnshiftedLennardJones(LennardJonesPotential):
    """Truncated without the shift: the energy jumps by ``V(r_c)`` at the cutoff."""

    def atomic_energies(self, positions, species, edge_index, edge_vectors, batch):
        r = torch.linalg.vector_norm(edge_vectors, dim=1)
        pair = 4 * self.epsilon * ((self.sigma / r) ** 12 - (self.sigma / r) ** 6)
        energies = torch.zeros(positions.shape[0], dtype=positions.dtype, device=positions.device)
        return energies.index_add(0, edge_index[0], 0.5 * pair)


class SizeDependentLennardJones(LennardJonesPotential):
    """Adds ``1e-3 N`` eV to every atom, ``N`` the atoms of its system: fine in a batch, but two distant
    molecules no longer add up (a global, non-local term)."""

    def atomic_energies(self, positions, species, edge_index, edge_vectors, batch):
        energies = super().atomic_energies(positions, species, edge_index, edge_vectors, batch)
        return energies + 1e-3 * torch.bincount(batch)[batch].to(positions.dtype)


class OffsetLennardJones(LennardJonesPotential):
    """Adds 0.1 eV to every atom: a lone atom is off its (zero) reference energy."""

    def atomic_energies(self, positions, species, edge_index, edge_vectors, batch):
        return super().atomic_energies(positions, species, edge_index, edge_vectors, batch) + 0.1


class MeanPairLennardJones(LennardJonesPotential):
    """Per-atom energy as the mean, not the sum, of its pair terms times 4: 0/0 = NaN without neighbours."""

    def atomic_energies(self, positions, species, edge_index, edge_vectors, batch):
        energies = super().atomic_energies(positions, species, edge_index, edge_vectors, batch)
        count = torch.zeros_like(energies).index_add(0, edge_index[0], torch.ones_like(edge_vectors[:, 0]))
        return 4 * energies / count


class FieldLennardJones(LennardJonesPotential):
    """Adds ``0.01 x_i`` eV (an external field along x): a force on an atom without neighbours."""

    def atomic_energies(self, positions, species, edge_index, edge_vectors, batch):
        energies = super().atomic_energies(positions, species, edge_index, edge_vectors, batch)
        return energies + 0.01 * positions[:, 0]


def _double(model):
    return model.double().eval()


BROKEN = [
    ("forces 1 % too large", lambda: ScaledOutput(_double(lennard_jones()), "forces", 1.01),
     "test_forces_match_finite_differences", dict(name="molecule")),
    ("forces of the wrong sign", lambda: ScaledOutput(_double(lennard_jones()), "forces", -1.0),
     "test_forces_match_finite_differences", dict(name="crystal")),
    ("stress 1 % too large", lambda: ScaledOutput(_double(lennard_jones()), "stress", 1.01),
     "test_stress_matches_strain_finite_differences", dict(name="copper")),
    ("not rotation invariant", lambda: _double(AnisotropicLennardJones(SPECIES, 1.5, 0.2)),
     "test_rotation_and_reflection", dict(name="molecule", proper=True)),
    ("chiral (parity-odd)", lambda: _double(ChiralLennardJones(SPECIES, 1.5, 0.2)),
     "test_rotation_and_reflection", dict(name="molecule", proper=False)),
    ("order-dependent", lambda: _double(IndexedLennardJones(SPECIES, 1.5, 0.2)),
     "test_permutation", dict(name="cluster")),
    ("systems leak across the batch", lambda: _double(LeakyBatchLennardJones(SPECIES, 1.5, 0.2)),
     "test_batch_equals_one_by_one", {}),
    ("energy jump at the cutoff", lambda: _double(UnshiftedLennardJones(SPECIES, 1.5, 0.2)),
     "test_energy_continuous_at_cutoff", {}),
    ("force jump at the cutoff", lambda: _double(lennard_jones()),
     "test_force_vanishes_at_cutoff", {}),
    ("a fragment feels its system's size", lambda: _double(SizeDependentLennardJones(SPECIES, 1.5, 0.2)),
     "test_distant_molecules_add_up", {}),
    ("lone atom off its reference energy", lambda: _double(OffsetLennardJones(SPECIES, 1.5, 0.2)),
     "test_lone_atom_returns_its_reference_energy", {}),
    ("NaN for an atom without neighbours", lambda: _double(MeanPairLennardJones(SPECIES, 1.5, 0.2)),
     "test_atom_without_neighbours_in_a_structure", {}),
    ("force on an atom without neighbours", lambda: _double(FieldLennardJones(SPECIES, 1.5, 0.2)),
     "test_atom_without_neighbours_in_a_structure", {}),
]


@pytest.mark.parametrize("make, test, kwargs", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_suite_catches_a_broken_model(make, test, kwargs):
    model = make()
    suite = TestSmoothLennardJonesConformance()
    method = getattr(suite, test)
    arguments = dict(kwargs)
    parameters = method.__code__.co_varnames[1:method.__code__.co_argcount]
    for name, value in (("model", model), ("model64", model), ("dtype", torch.float64)):
        if name in parameters:
            arguments[name] = value
    with pytest.raises(AssertionError):
        method(**arguments)


@pytest.mark.parametrize("make, test", [
    (lambda: SizeDependentLennardJones(SPECIES, 1.5, 0.2), "test_batch_equals_one_by_one"),
    (lambda: OffsetLennardJones(SPECIES, 1.5, 0.2), "test_distant_molecules_add_up"),
    (lambda: MeanPairLennardJones(SPECIES, 1.5, 0.2), "test_distant_molecules_add_up"),
], ids=["size-dependent in a batch", "offset fragments", "mean-pair fragments"])
def test_locality_controls_break_only_their_property(make, test):
    """Each locality control passes the tests it is not meant to break (so the new tests catch something
    the rest of the suite misses): a size-dependent term survives batching; an offset or a 0/0 survive
    two distant molecules."""
    suite = TestSmoothLennardJonesConformance()
    getattr(suite, test)(_double(make()), torch.float64)


def test_chiral_model_is_still_rotation_invariant():
    """The parity control breaks only reflections, so the reflection test is what catches it."""
    suite = TestSmoothLennardJonesConformance()
    suite.test_rotation_and_reflection(_double(ChiralLennardJones(SPECIES, 1.5, 0.2)), torch.float64, "molecule", True)

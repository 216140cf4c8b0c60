"""Conformance suite for the ``equivariant`` family: a small untrained model (symmetry holds for any weights)."""

from engine_conformance import LearnedBaselineConformance
from potentials import FAMILIES


class TestEquivariantConformance(LearnedBaselineConformance):
    species = [1, 6, 8, 29]

    def make_model(self):
        return FAMILIES["equivariant"](self.species, cutoff=5.0, channels=8, lmax=2, num_layers=2)

"""Conformance suite for the ``equivariant`` family: a small untrained model (symmetry holds for any weights)."""

from engine_conformance import MLMDModelConformance
from potentials import FAMILIES


class TestEquivariantConformance(MLMDModelConformance):
    species = [1, 6, 8, 29]
    known_failures = {
        "test_lone_atom_returns_its_reference_energy": (
            "by design: the self-interaction path (embedding -> blocks -> readouts) gives an atom without "
            "neighbours a learned energy on top of atomic_energies_ref + shift, which the trainer fits as "
            "least-squares per-element energies, not isolated-atom energies"
        ),
    }

    def reference_energies(self, model):
        """What the family defines as a per-species reference: ``atomic_energies_ref[z] + shift``."""
        return {z: float(e) + model.shift for z, e in zip(model.species, model.atomic_energies_ref)}

    def make_model(self):
        return FAMILIES["equivariant"](self.species, cutoff=5.0, channels=8, lmax=2, num_layers=2)

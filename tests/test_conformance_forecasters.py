"""The forecaster conformance suite on free flight, where every property is known.

Free flight (``d = v tau``, ``v' = v``) passes the suite; copies of it broken in one way each
(a fixed direction, a dependence on absolute positions or on the order of the atoms, a
batch-wide mean) fail the test of that property, so the suite is sound both ways.
"""

import pytest
import torch

from potentials.testing import ForecasterConformance
from reference_forecasters import FreeFlightForecaster

SPECIES = [1, 6, 8, 29]


class TestFreeFlightConformance(ForecasterConformance):
    species = SPECIES
    known_failures = {
        "test_unknown_element_is_a_clear_error": "by design: the free-flight test double ignores the elements",
    }

    def make_model(self):
        return FreeFlightForecaster(10.0, SPECIES)


class FixedDirection(FreeFlightForecaster):
    """Adds 0.01 Å along x to every displacement: not rotation equivariant."""

    def forward(self, positions, atomic_numbers, cell, pbc, batch, velocities):
        out = super().forward(positions, atomic_numbers, cell, pbc, batch, velocities)
        out["displacement"] = out["displacement"] + torch.tensor([0.01, 0.0, 0.0], dtype=velocities.dtype)
        return out


class PositionDependent(FreeFlightForecaster):
    """New velocities ``v + 1e-3 x`` (1/fs): equivariant under rotations about the origin, not translations."""

    def forward(self, positions, atomic_numbers, cell, pbc, batch, velocities):
        out = super().forward(positions, atomic_numbers, cell, pbc, batch, velocities)
        out["velocities"] = out["velocities"] + 1e-3 * positions
        return out


class OrderDependent(FreeFlightForecaster):
    """Displacement of atom ``i`` times ``1 + 0.01 i``: depends on the order of the atoms."""

    def forward(self, positions, atomic_numbers, cell, pbc, batch, velocities):
        out = super().forward(positions, atomic_numbers, cell, pbc, batch, velocities)
        factor = 1 + 0.01 * torch.arange(positions.shape[0], dtype=velocities.dtype)
        out["displacement"] = out["displacement"] * factor.unsqueeze(1)
        return out


class LeakyBatch(FreeFlightForecaster):
    """Adds the mean velocity of the whole batch times tau / 10: systems leak into each other."""

    def forward(self, positions, atomic_numbers, cell, pbc, batch, velocities):
        out = super().forward(positions, atomic_numbers, cell, pbc, batch, velocities)
        out["displacement"] = out["displacement"] + 0.1 * self.interval_fs * velocities.mean(dim=0)
        return out


BROKEN = [
    ("fixed direction", FixedDirection, "test_rotation_and_reflection", dict(name="molecule", proper=True)),
    ("absolute positions", PositionDependent, "test_translation_and_permutation", dict(name="molecule")),
    ("order-dependent", OrderDependent, "test_translation_and_permutation", dict(name="crystal")),
    ("systems leak across the batch", LeakyBatch, "test_batch_equals_one_by_one", {}),
]


@pytest.mark.parametrize("cls, test, kwargs", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_suite_catches_a_broken_forecaster(cls, test, kwargs):
    suite = TestFreeFlightConformance()
    with pytest.raises(AssertionError):
        getattr(suite, test)(cls(10.0, SPECIES), torch.float64, **kwargs)


def test_position_dependence_is_not_a_rotation_error():
    """The translation control breaks only translations: it passes the rotation test."""
    TestFreeFlightConformance().test_rotation_and_reflection(PositionDependent(10.0, SPECIES), torch.float64,
                                                             "molecule", True)

"""Engine conformance: every engine of mlmd gives the bare model contract's numbers.

:class:`MLMDModelConformance` is the package's :class:`potentials.testing.ModelConformance`
with mlmd's model file (``mlmd.model.export_model`` then ``mlmd.load_model``) as the
export round trip. :class:`EngineConformance` checks, for one potential, that the ASE
calculator (``mlmd.MLMDCalculator``), the OpenMM forces (``mlmd.openmm.create_system``
with the ``"torch"`` TorchForce and the ``"python"`` PythonForce backends) and one step
of the torch integrators reproduce the bare contract: energy, forces and, where
periodic, stress. Only public names of mlmd are used.

Tolerances: the engines run the same float64 model on the same coordinates, so they
agree to roundoff; ``ENGINE_RTOL = 1e-9`` of the largest value covers the unit
conversions at the OpenMM boundary (nm, kJ/mol and back, OpenMM's own constants
against mlmd's CODATA ones, both to ~1e-10) and stays 1e7 below a 1 % error.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from potentials.testing import ModelConformance


class MLMDModelConformance(ModelConformance):
    """:class:`ModelConformance` with mlmd's model file as the export round trip."""

    def export_and_load(self, model, dtype, directory):
        import mlmd
        from mlmd.model import export_model

        loaded = mlmd.load_model(export_model(model, Path(directory) / "model.pt"))
        assert loaded.dtype == dtype
        return loaded

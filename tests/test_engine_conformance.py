"""Engine conformance for every registered potential family, and a check that it can fail.

Each family is a small untrained model (random spline coefficients, which start at zero) in
float64, built by :data:`SMALL_MODELS`; a family registered without an entry there fails
:func:`test_every_potential_family_has_a_small_model`, so none is skipped silently.
"""

import copy
from importlib.metadata import entry_points
from typing import Callable, Dict, List

import numpy as np
import pytest
import torch
from ase.build import bulk
from torch import Tensor

from engine_conformance import EngineConformance
from potentials import FAMILIES
from potentials.base import Potential
from potentials.testing import ethanol, random_crystal, relabel, transformed

SPECIES = [1, 6, 8, 29]


def _spline(species: List[int]) -> torch.nn.Module:
    model = FAMILIES["spline"](species, cutoff=4.0, cutoff_3body=3.0, r_min=0.8, r_min_3body=0.8, n_intervals=6)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.05)
    return model


SMALL_MODELS: Dict[str, Callable[[List[int]], torch.nn.Module]] = {
    "equivariant": lambda species: FAMILIES["equivariant"](species, cutoff=4.0, channels=8, lmax=2),
    "facet": lambda species: FAMILIES["facet"](species, cutoff=4.0, channels=8, lmax=2, num_layers=3,
                                               tensor_product=["gaunt", "gaunt", "cg"]),
    "spline": _spline,
    "transformer": lambda species: FAMILIES["transformer"](species, cutoff=4.0, channels=16, num_heads=2),
}


def _potential_families() -> List[str]:
    """Potential families that the package ships or another distribution registers (entry points); test
    doubles that a test module registers at import are left out."""
    names = {name for name, cls in FAMILIES.items() if cls.__module__.split(".")[0] == "potentials"}
    names |= {entry.name for entry in entry_points(group="mlmd.families")}
    return sorted(name for name in names if issubclass(FAMILIES[name], Potential))


POTENTIAL_FAMILIES = _potential_families()


def _copper():
    """2x2x2 conventional fcc Cu, rattled: periodic, in OpenMM's reduced (cubic) box form."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    return atoms


def _triclinic():
    """The suite's random triclinic crystal, rotated so that its cell is lower triangular (OpenMM's form)."""
    atoms = relabel(random_crystal(), SPECIES)
    _, rotation = atoms.cell.standard_form()
    atoms = transformed(atoms, rotation)
    atoms.set_cell(np.tril(atoms.cell.array))  # drop the rotation's roundoff above the diagonal
    return atoms


SYSTEMS = {"ethanol": ethanol, "copper": _copper, "triclinic": _triclinic}


def test_every_potential_family_has_a_small_model():
    assert set(POTENTIAL_FAMILIES) <= set(SMALL_MODELS), "add a small model of each new family to SMALL_MODELS"


@pytest.fixture(scope="module", params=POTENTIAL_FAMILIES)
def bare(request):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return SMALL_MODELS[request.param](SPECIES).double().eval()


@pytest.fixture(scope="module")
def model_file(bare, tmp_path_factory):
    from mlmd.model import export_model

    return export_model(bare, tmp_path_factory.mktemp(bare.family) / f"{bare.family}.pt")


@pytest.fixture(params=sorted(SYSTEMS))
def atoms(request):
    return SYSTEMS[request.param]()


class TestEngines(EngineConformance):
    """ASE calculator, OpenMM TorchForce and PythonForce, integrator steps: each equals the bare contract."""


class Scaled(torch.nn.Module):
    """The bare potential with every output scaled by ``1 + 1e-7``: a 0.1 ppm engine error."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.species, self.cutoff = inner.species, inner.cutoff

    def forward(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor, pbc: Tensor, batch: Tensor,
                compute_forces: bool = True, compute_stress: bool = False) -> Dict[str, Tensor]:
        out = self.inner(positions, atomic_numbers, cell, pbc, batch, compute_forces, compute_stress)
        scaled: Dict[str, Tensor] = {}
        for key, value in out.items():
            scaled[key] = value * (1 + 1e-7)
        return scaled


@pytest.mark.parametrize("test", ["test_ase_calculator", "test_openmm_force", "test_integrator_step"])
def test_engine_conformance_catches_a_small_error(tmp_path, test):
    """Each engine check fails when the engine's model is off by 1e-7 relative to the bare one."""
    from mlmd.model import export_model

    from reference_potentials import LennardJonesPotential

    bare = LennardJonesPotential(SPECIES, 1.5, 0.2, 4.0).double().eval()
    wrong = export_model(Scaled(copy.deepcopy(bare)).eval(), tmp_path / "scaled.pt")
    method = getattr(TestEngines(), test)
    extra = {"test_openmm_force": dict(backend="python", platform="Reference"),
             "test_integrator_step": dict(scheme="verlet")}.get(test, {})
    with pytest.raises(AssertionError):
        method(bare, wrong, ethanol(), **extra)
    method(bare, export_model(bare, tmp_path / "right.pt"), ethanol(), **extra)  # the same check passes


"""Export, load and the ASE calculator, checked against ASE's own Lennard-Jones calculator."""

import subprocess
import sys

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError, get_calculator_class
from ase.calculators.lj import LennardJones

import mlmd
from mlmd.errors import InputFileError, StructureError
from mlmd.model import export_model, load_model
from reference_potentials import LennardJonesPotential

SIGMA, EPSILON, CUTOFF = 2.3, 0.2, 5.0


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "lj.pt"
    potential = LennardJonesPotential([1, 6, 8, 29], SIGMA, EPSILON, CUTOFF).double()
    export_model(potential, path, training_data_hash="abc123")
    return path


def _periodic_copper():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.01 * np.random.default_rng(0).normal(size=(3, 3))),
                   scale_atoms=True)
    return atoms


@pytest.mark.parametrize("make", [_periodic_copper, lambda: molecule("CH3CH2OH")])
def test_calculator_matches_ase_lennard_jones(model_file, make):
    atoms = make()
    reference = atoms.copy()
    reference.calc = LennardJones(sigma=SIGMA, epsilon=EPSILON, rc=CUTOFF, smooth=False)
    atoms.calc = mlmd.MLMDCalculator(model_file)
    assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), atol=1e-9)
    assert atoms.get_potential_energies().sum() == pytest.approx(atoms.get_potential_energy())
    if atoms.pbc.all():
        np.testing.assert_allclose(atoms.get_stress(), reference.get_stress(), atol=1e-9)
    else:
        with pytest.raises(PropertyNotImplementedError):
            atoms.get_stress()


def test_metadata_travels_with_the_file(model_file):
    model = load_model(model_file)
    assert model.species == [1, 6, 8, 29]
    assert model.cutoff == CUTOFF
    assert model.metadata["dtype"] == "float64"
    assert model.metadata["training_data_hash"] == "abc123"
    assert model.metadata["mlmd_version"] == mlmd.__version__
    assert model.metadata["units"]["energy"] == "eV"


def test_loads_in_a_fresh_process_without_the_model_code(model_file):
    script = (
        "import sys; sys.modules['reference_potentials'] = None\n"
        "import mlmd\n"
        "from ase.build import molecule\n"
        f"atoms = molecule('H2O'); atoms.calc = mlmd.MLMDCalculator({str(model_file)!r})\n"
        "print(atoms.get_potential_energy())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    reference = molecule("H2O")
    reference.calc = LennardJones(sigma=SIGMA, epsilon=EPSILON, rc=CUTOFF, smooth=False)
    assert float(result.stdout) == pytest.approx(reference.get_potential_energy(), abs=1e-9)


def test_ase_finds_the_calculator_by_name(model_file):
    assert get_calculator_class("mlmd") is mlmd.MLMDCalculator
    from ase._4.plugins import plugins

    assert [p.implementation for p in plugins.calculators if p.name == "mlmd"] == [mlmd.MLMDCalculator]


def test_unknown_element_is_named(model_file):
    atoms = molecule("HCl")
    atoms.calc = mlmd.MLMDCalculator(model_file)
    with pytest.raises(StructureError, match="Cl are not known"):
        atoms.get_potential_energy()


def test_corrupt_foreign_and_missing_files(tmp_path, model_file):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(model_file.read_bytes()[:2000])
    with pytest.raises(InputFileError, match="not a TorchScript archive|could not be loaded"):
        load_model(truncated)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(InputFileError, match="not a TorchScript archive"):
        load_model(text)
    import torch

    foreign = tmp_path / "foreign.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(foreign))
    with pytest.raises(InputFileError, match="not an mlmd model"):
        load_model(foreign)
    with pytest.raises(InputFileError, match="does not exist"):
        load_model(tmp_path / "missing.pt")

"""The metatomic export: a metatomic engine (metatomic-ase's calculator) reproduces mlmd's ASE calculator.

Models: small float64 copper models of two families (``spline``: two- and three-body, one
layer; ``facet``: message passing over two layers), each exported to mlmd's TorchScript file
first so that the TorchScript-loaded path is the one exported, and the shipped ``ethanol``
model (``facet`` with ZBL, float32). Reference: :class:`mlmd.MLMDCalculator` on the same file.

Tolerances: float64 runs the same arithmetic on another neighbour list (vesin's, other pair
order), so results agree to roundoff: 1e-9 relative to the largest value. float32: 1e-5
relative (ten times float32's 1.2e-7 epsilon summed over the ~100 pairs of an atom).
"""

import json

import numpy as np
import pytest
import torch
from ase.build import bulk

import mlmd
from potentials import FAMILIES
from potentials.testing import ethanol

pytest.importorskip("metatomic.torch")
metatomic_ase = pytest.importorskip("metatomic_ase")

from mlmd.model import export_model  # noqa: E402
from mlmd.training.export import ExportMismatch, export  # noqa: E402

RTOL = {"float64": 1e-9, "float32": 1e-5}


def copper(repeat=2, a=3.6, seed=1):
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=seed)
    return atoms


def sheared_copper():
    """A triclinic copper cell (primitive fcc, sheared and repeated)."""
    atoms = bulk("Cu", "fcc", a=3.6).repeat((3, 2, 2))
    atoms.set_cell(atoms.cell.array + np.array([[0, 0, 0], [0.4, 0, 0], [0.2, 0.3, 0]]), scale_atoms=True)
    atoms.rattle(0.05, seed=2)
    return atoms


def small_copper_model(family):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        if family == "spline":
            model = FAMILIES["spline"]([29], cutoff=4.5, cutoff_3body=3.5, r_min=1.5, r_min_3body=1.5,
                                       n_intervals=8)
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.normal_(0.0, 0.05)
        else:
            model = FAMILIES["facet"]([29], cutoff=4.5, channels=8, lmax=2, num_layers=2)
    return model.double().eval()


@pytest.fixture(scope="module", params=["spline", "facet", "ethanol"])
def exported(request, tmp_path_factory):
    """(mlmd model file, metatomic file, structures to compare on) for each model."""
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "ethanol":
        source = mlmd.pretrained("ethanol")
        structures = [ethanol()]
    else:
        source = export_model(small_copper_model(request.param), folder / "model.pt")
        structures = [copper(), sheared_copper()]
    return source, export(source, folder / "metatomic.pt", format="metatomic"), structures


def test_export_reproduces_the_ase_calculator(exported):
    source, path, structures = exported
    reference_calc = mlmd.MLMDCalculator(source)
    engine_calc = metatomic_ase.MetatomicCalculator(str(path), device="cpu", check_consistency=True)
    rtol = RTOL[reference_calc.model.metadata["dtype"]]
    worst = {}
    for atoms in structures:
        reference, engine = atoms.copy(), atoms.copy()
        reference.calc, engine.calc = reference_calc, engine_calc
        properties = ["energy", "forces", "energies"] + (["stress"] if atoms.pbc.all() else [])
        for name in properties:
            expected = np.asarray(reference_calc.get_property(name, reference))
            got = np.asarray(engine_calc.get_property(name, engine))
            worst[name] = max(worst.get(name, 0.0), float(np.abs(got - expected).max()))
            scale = max(float(np.abs(expected).max()), 1.0 if name != "stress" else 1e-2)
            assert worst[name] <= rtol * scale, (name, worst[name], scale)
    print(f"\n{path.parent.name}: largest |metatomic - mlmd| " + json.dumps({k: float(f"{v:.2g}") for k, v in
                                                                        worst.items()}))


def test_metadata_and_capabilities(exported):
    from metatomic.torch import load_atomistic_model, read_model_metadata

    source, path, _ = exported
    model = mlmd.load_model(source)
    metadata = read_model_metadata(str(path))
    assert metadata.name == (f"mlmd-{source.stem}")
    assert model.family in metadata.description and f"cutoff {model.cutoff:g}" in metadata.description
    capabilities = load_atomistic_model(str(path)).capabilities()
    assert capabilities.atomic_types == sorted(model.species)
    assert capabilities.dtype == model.metadata["dtype"]
    assert capabilities.length_unit == "angstrom"
    assert capabilities.outputs["energy"].unit == "eV"
    assert capabilities.outputs["energy"].sample_kind == "atom"
    assert capabilities.supported_devices == ["cuda", "cpu"]
    layers = {"spline": 1, "facet": 2, "equivariant": 2}[model.family]  # the shipped ethanol model has 2 layers
    assert capabilities.interaction_range == pytest.approx(layers * model.cutoff)


def test_selected_atoms_give_the_energy_of_those_atoms(exported):
    """Domain decomposition: with ``selected_atoms`` the energy is the sum over those atoms only,
    the others acting as neighbours (mlmd's per-atom energies of the full system as reference)."""
    import vesin.metatomic
    from metatensor.torch import Labels
    from metatomic.torch import ModelEvaluationOptions, ModelOutput, System, load_atomistic_model

    source, path, structures = exported
    atoms = structures[0]
    reference = atoms.copy()
    reference.calc = mlmd.MLMDCalculator(source)
    per_atom = reference.get_potential_energies()
    model = load_atomistic_model(str(path))
    dtype = getattr(torch, model.capabilities().dtype)
    system = System(types=torch.tensor(atoms.numbers, dtype=torch.int32),
                    positions=torch.tensor(atoms.positions, dtype=dtype),
                    cell=torch.tensor(atoms.cell.array, dtype=dtype), pbc=torch.tensor(atoms.pbc))
    for calculator in vesin.metatomic.neighbor_lists_for_model("angstrom", model):
        calculator.add_neighbor_list([system])
    chosen = np.arange(0, len(atoms), 3)
    selected = Labels(["system", "atom"], torch.tensor([[0, i] for i in chosen], dtype=torch.int32))
    options = ModelEvaluationOptions(length_unit="angstrom", outputs={"energy": ModelOutput(unit="eV")},
                                     selected_atoms=selected)
    energy = float(model([system], options, check_consistency=True)["energy"].block().values[0, 0])
    expected = float(per_atom[chosen].sum())
    assert energy == pytest.approx(expected, rel=RTOL[model.capabilities().dtype], abs=1e-9)
    assert abs(expected - float(per_atom.sum())) > 1e-3  # the selection matters here


def test_export_refuses_a_file_that_disagrees(tmp_path, monkeypatch):
    """A wrapper that drops pairs beyond 0.9 x cutoff (a cutoff bug) gives other numbers: nothing is written."""
    import mlmd.metatomic.potential as potential

    source = export_model(small_copper_model("spline"), tmp_path / "model.pt")
    original = potential.MetatomicPotential
    monkeypatch.setattr(potential, "MetatomicPotential", lambda module, cutoff: original(module, 0.9 * cutoff))
    output = tmp_path / "metatomic.pt"
    with pytest.raises(ExportMismatch, match="metatomic export disagrees"):
        export(source, output, format="metatomic")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.pt"]
    monkeypatch.setattr(potential, "MetatomicPotential", original)
    assert export(source, output, format="metatomic").is_file()  # the same export, unbroken, is written


def test_virial_check_catches_a_wrong_stress():
    """The export's virial check passes mlmd's own calculator and refuses one whose stress is off by
    0.01 eV / V: far below the virial itself, far above float64 roundoff."""
    from ase.calculators.calculator import Calculator, all_changes

    from mlmd.metatomic.export import check_virial

    model = mlmd.load_model(small_copper_model("facet"))
    reference = mlmd.MLMDCalculator(model)

    class ShiftedStress(Calculator):
        implemented_properties = ["energy", "forces", "stress"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            copy = atoms.copy()
            copy.calc = reference
            self.results = {"energy": copy.get_potential_energy(), "forces": copy.get_forces(),
                            "stress": copy.get_stress() + np.array([0.01, 0, 0, 0, 0, 0]) / atoms.get_volume()}

    structures = [sheared_copper()]
    assert check_virial(model, mlmd.MLMDCalculator(model), structures) < 1e-9
    with pytest.raises(ExportMismatch, match="virial disagrees"):
        check_virial(model, ShiftedStress(), structures)


def test_a_forecaster_is_refused(tmp_path):
    from mlmd.errors import MLMDError
    from mlmd.metatomic import write_metatomic

    forecaster = FAMILIES["forecaster"](species=[1, 6, 8], masses=[1.008, 12.011, 15.999], cutoff=4.0)
    with pytest.raises(MLMDError, match="forecaster"):
        write_metatomic(mlmd.load_model(forecaster.eval()), tmp_path / "forecaster-mta.pt")
    assert not (tmp_path / "forecaster-mta.pt").exists()


def test_command_line_export(tmp_path, mlmd_cli):
    result = mlmd_cli("export", "ethanol", "-o", tmp_path / "ethanol-mta.pt", "--format", "metatomic")
    assert result.returncode == 0, result.stderr
    from metatomic.torch import read_model_metadata

    assert read_model_metadata(str(tmp_path / "ethanol-mta.pt")).name == "mlmd-ethanol"

"""mlmd in OpenMM-ML (``MLPotential("mlmd")``) and OpenMM-ML's conventions in ``create_mixed_system``.

References: mlmd's ASE calculator (tested against finite differences elsewhere) and the classical
force field evaluated by OpenMM on its own, as in ``test_openmm.py``.
"""

import copy

import numpy as np
import openmm
import pytest
from ase.build import molecule
from openmm import unit

import mlmd
from mlmd.constants import EV_KJ_PER_MOL, EV_PER_A_KJ_PER_MOL_NM
from mlmd.errors import MLMDError
from mlmd.model import export_model
from mlmd.openmm import create_mixed_system, topology_from_atoms
from reference_potentials import LennardJonesPotential

openmmml = pytest.importorskip("openmmml")

SPECIES = [1, 6, 8]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "lj.pt"
    export_model(LennardJonesPotential(SPECIES, 2.3, 0.2, 5.0).double(), path)
    return path


def evaluate(system, positions, groups=-1, parameters=None):
    """(energy kJ/mol, forces kJ/mol/nm) of ``system`` at ``positions`` on the Reference platform."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    for name, value in (parameters or {}).items():
        context.setParameter(name, value)
    state = context.getState(getEnergy=True, getForces=True, groups=groups)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            np.asarray(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)))


def calculator_reference(atoms, model_file):
    copy_ = atoms.copy()
    copy_.calc = mlmd.MLMDCalculator(model_file)
    return copy_.get_potential_energy() * EV_KJ_PER_MOL, copy_.get_forces() * EV_PER_A_KJ_PER_MOL_NM


def assert_close(actual, expected):
    assert actual[0] == pytest.approx(expected[0], rel=1e-6, abs=1e-6)
    np.testing.assert_allclose(actual[1], expected[1], rtol=1e-6, atol=1e-6 * max(1.0, np.abs(expected[1]).max()))


def classical_system(atoms):
    """Harmonic bonds along consecutive atoms and a NoCutoff NonbondedForce with charges and LJ."""
    system = openmm.System()
    for mass in atoms.get_masses():
        system.addParticle(mass)
    bonds = openmm.HarmonicBondForce()
    pairs = [(i, i + 1) for i in range(len(atoms) - 1)]
    for i, j in pairs:
        bonds.addBond(i, j, 0.11, 1000.0)
    nonbonded = openmm.NonbondedForce()
    nonbonded.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    for q in np.resize([0.3, -0.2, -0.1], len(atoms)):
        nonbonded.addParticle(q, 0.25, 0.4)
    nonbonded.createExceptionsFromBonds(pairs, 0.5, 0.5)
    system.addForce(bonds)
    system.addForce(nonbonded)
    system.addForce(openmm.CMMotionRemover())
    return system


def solvated_ethanol():
    ethanol = molecule("CH3CH2OH")
    water = molecule("H2O")
    water.positions += [4.0, 0.5, 0.0]
    return ethanol, ethanol + water


def test_create_system_through_mlpotential_equals_the_calculator(model_file):
    atoms = molecule("CH3CH2OH")
    topology, positions = topology_from_atoms(atoms)
    system = openmmml.MLPotential("mlmd", modelPath=str(model_file)).createSystem(topology)
    assert any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces())  # OpenMM-ML's default
    assert_close(evaluate(system, positions), calculator_reference(atoms, model_file))


def test_shipped_model_by_name_in_mlpotential():
    atoms = molecule("CH3CH2OH")
    topology, positions = topology_from_atoms(atoms)
    system = openmmml.MLPotential("mlmd", modelPath="ethanol").createSystem(topology, removeCMMotion=False)
    energy, forces = evaluate(system, positions)
    reference = calculator_reference(atoms, mlmd.pretrained("ethanol"))
    assert energy == pytest.approx(reference[0], rel=1e-6)  # a float32 model: relative to its 2.9e4 kJ/mol
    np.testing.assert_allclose(forces, reference[1], atol=1e-3 * np.abs(reference[1]).max())


def test_mixed_system_through_mlpotential_deep_copies_and_interpolates(model_file):
    """OpenMM-ML's mechanical embedding deep-copies forces: the mixed system must survive that, and
    ``lambda_interpolate`` must go from the classical energy (0) to classical-minus-ML-region plus model (1)."""
    ethanol, atoms = solvated_ethanol()
    ml = list(range(len(ethanol)))
    classical = classical_system(atoms)
    topology, positions = topology_from_atoms(atoms)
    potential = openmmml.MLPotential("mlmd", modelPath=str(model_file))
    mixed = copy.deepcopy(potential.createMixedSystem(topology, classical, ml, interpolate=True))
    full = evaluate(classical, positions)
    region = evaluate(classical_system(ethanol), positions[: len(ethanol)])
    model = calculator_reference(ethanol, model_file)
    padded = np.zeros_like(full[1])
    padded[ml] = model[1] - region[1]
    expected_one = (full[0] - region[0] + model[0], full[1] + padded)
    assert_close(evaluate(mixed, positions, parameters={"lambda_interpolate": 0.0}), full)
    assert_close(evaluate(mixed, positions, parameters={"lambda_interpolate": 1.0}), expected_one)


@pytest.mark.parametrize("order", ["mlmd", "openmmml"])
def test_create_mixed_system_takes_openmmml_order_options_and_interpolation(model_file, order):
    ethanol, atoms = solvated_ethanol()
    ml = list(range(len(ethanol)))
    classical = classical_system(atoms)
    topology, positions = topology_from_atoms(atoms)
    first, second = (classical, topology) if order == "mlmd" else (topology, classical)
    mixed = create_mixed_system(first, second, model_file, ml, backend="python", forceGroup=3, interpolate=True,
                                removeCMMotion=False)
    assert not any(isinstance(f, openmm.CMMotionRemover) for f in mixed.getForces())
    full = evaluate(classical, positions)
    region = evaluate(classical_system(ethanol), positions[: len(ethanol)])
    model = calculator_reference(ethanol, model_file)
    padded = np.zeros_like(full[1])
    padded[ml] = model[1] - region[1]
    for lam in (0.0, 0.3, 1.0):
        expected = (full[0] + lam * (model[0] - region[0]), full[1] + lam * padded)
        # Everything interpolated lives in force group 3 (the classical system put all its forces in group 0).
        assert_close(evaluate(mixed, positions, groups={3}, parameters={"lambda_interpolate": lam}), expected)
    plain = create_mixed_system(topology, classical, model_file, ml, backend="python", force_group=2)
    ml_only = evaluate(plain, positions, groups={2})
    assert_close(ml_only, (model[0], np.pad(model[1], ((0, len(atoms) - len(ethanol)), (0, 0)))))


def test_unknown_options_and_missing_model_path_are_named(model_file):
    _, atoms = solvated_ethanol()
    topology, _ = topology_from_atoms(atoms)
    with pytest.raises(MLMDError, match="modelPath"):
        openmmml.MLPotential("mlmd")
    with pytest.raises(MLMDError, match="unknown option 'interpolation'"):
        create_mixed_system(topology, classical_system(atoms), model_file, [0, 1], interpolation=True)

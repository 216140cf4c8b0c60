"""The OpenMM adapter (TorchForce and PythonForce) against the ASE calculator and ASE's own Lennard-Jones."""

import pickle
import subprocess
import sys

import numpy as np
import openmm
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.lj import LennardJones
from openmm import unit

import mlmd
from mlmd.constants import ANGSTROM_NM, EV_KJ_PER_MOL, EV_PER_A_KJ_PER_MOL_NM
from mlmd.errors import MLMDError, StructureError
from mlmd.model import export_model
from mlmd.openmm import (
    FORCE_BACKENDS,
    PythonForceComputation,
    create_force,
    create_mixed_system,
    create_system,
    register_backend,
    topology_from_atoms,
)
from openmm_backends import BACKENDS, USABLE_BACKENDS
from reference_potentials import LennardJonesPotential

SIGMA, EPSILON, CUTOFF = 2.3, 0.2, 5.0
SPECIES = [1, 6, 8, 29]
PLATFORMS = ["Reference", "CPU"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "lj.pt"
    export_model(LennardJonesPotential(SPECIES, SIGMA, EPSILON, CUTOFF).double(), path)
    return path


def _ethanol():
    return molecule("CH3CH2OH")


def _copper():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    return atoms


def _evaluate(system, positions, platform="Reference"):
    """Energy (kJ/mol) and forces (kJ/mol/nm) of ``system`` at ``positions``."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return energy, np.asarray(forces)


def _references(atoms, model_file):
    """(energy kJ/mol, forces kJ/mol/nm) from MLMDCalculator and from ASE's LennardJones."""
    results = []
    for calc in (mlmd.MLMDCalculator(model_file), LennardJones(sigma=SIGMA, epsilon=EPSILON, rc=CUTOFF,
                                                               smooth=False)):
        copy = atoms.copy()
        copy.calc = calc
        results.append((copy.get_potential_energy() * EV_KJ_PER_MOL, copy.get_forces() * EV_PER_A_KJ_PER_MOL_NM))
    return results


def _assert_close(energy, forces, reference_energy, reference_forces):
    assert energy == pytest.approx(reference_energy, rel=1e-6, abs=1e-6)
    scale = max(1.0, float(np.abs(reference_forces).max()))
    np.testing.assert_allclose(forces, reference_forces, rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make", [_ethanol, _copper], ids=["ethanol", "copper"])
def test_matches_ase_calculator_and_lennard_jones(model_file, make, backend):
    atoms = make()
    topology, positions = topology_from_atoms(atoms)
    system = create_system(topology, model_file, backend=backend)
    assert system.usesPeriodicBoundaryConditions() == bool(atoms.pbc.all())
    references = _references(atoms, model_file)
    for platform in PLATFORMS:
        energy, forces = _evaluate(system, positions, platform)
        for reference_energy, reference_forces in references:
            _assert_close(energy, forces, reference_energy, reference_forces)


def test_triclinic_cell_is_rotated_into_openmm_form(model_file):
    atoms = _copper()
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.05 * np.random.default_rng(0).normal(size=(3, 3))),
                   scale_atoms=True)
    topology, positions = topology_from_atoms(atoms)
    a, b, c = topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer)
    assert a[1] == a[2] == b[2] == 0 and min(a[0], b[1], c[2]) > 0
    assert a[0] >= 2 * abs(b[0]) and a[0] >= 2 * abs(c[0]) and b[1] >= 2 * abs(c[1])
    _, rotation = atoms.cell.standard_form()
    (reference_energy, reference_forces), _ = _references(atoms, model_file)
    energy, forces = _evaluate(create_system(topology, model_file, backend="python"), positions)
    _assert_close(energy, forces, reference_energy, reference_forces @ rotation.T)


@pytest.mark.parametrize("backend", BACKENDS)
def test_molecule_across_the_box_edge(model_file, backend):
    atoms = _ethanol()
    atoms.set_cell(np.diag([12.0, 11.0, 10.0]))
    atoms.pbc = True
    atoms.positions += np.array([12.0, 11.0, 10.0]) - atoms.positions.mean(axis=0)  # centred on a corner
    wrapped = atoms.copy()
    wrapped.wrap()
    assert not np.allclose(wrapped.positions, atoms.positions)
    topology, positions = topology_from_atoms(atoms)
    _, wrapped_positions = topology_from_atoms(wrapped)
    system = create_system(topology, model_file, backend=backend)
    energy, forces = _evaluate(system, positions, "CPU")
    wrapped_energy, wrapped_forces = _evaluate(system, wrapped_positions, "CPU")
    _assert_close(wrapped_energy, wrapped_forces, energy, forces)
    _, (reference_energy, reference_forces) = _references(atoms, model_file)
    _assert_close(energy, forces, reference_energy, reference_forces)


def _classical_system(atoms, constrained):
    """Harmonic bonds and angles along consecutive atoms, a NonbondedForce (NoCutoff) on all atoms."""
    n = len(atoms)
    system = openmm.System()
    for mass in atoms.get_masses():
        system.addParticle(mass)
    bonds = openmm.HarmonicBondForce()
    angles = openmm.HarmonicAngleForce()
    pairs = [(i, i + 1) for i in range(n - 1)]
    for i, j in pairs:
        bonds.addBond(i, j, 0.11, 1000.0)
    for i in range(n - 2):
        angles.addAngle(i, i + 1, i + 2, 1.9, 100.0)
    nonbonded = openmm.NonbondedForce()
    nonbonded.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    charges = np.resize([0.3, -0.2, -0.1], n)
    for q in charges:
        nonbonded.addParticle(q, 0.25, 0.4)
    nonbonded.createExceptionsFromBonds(pairs, 0.5, 0.5)
    for i, j in constrained:
        system.addConstraint(i, j, float(atoms.get_distance(i, j)) * ANGSTROM_NM)
    for force in (bonds, angles, nonbonded):
        system.addForce(force)
    return system


def _padded(forces, indices, n):
    out = np.zeros((n, 3))
    out[indices] = forces
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_system_is_classical_plus_model(model_file, backend):
    ethanol = _ethanol()
    water = molecule("H2O")
    water.positions += [4.0, 0.5, 0.0]
    atoms = ethanol + water
    n, ml = len(atoms), list(range(len(ethanol)))
    constrained = [(0, 1), (len(ethanol), len(ethanol) + 1)]  # one inside the ML region, one in the water
    classical = _classical_system(atoms, constrained)
    topology, positions = topology_from_atoms(atoms)
    mixed = create_mixed_system(classical, topology, model_file, ml, backend=backend)

    assert mixed.getNumConstraints() == 1 and list(mixed.getConstraintParameters(0))[:2] == [9, 10]
    bonds = next(f for f in mixed.getForces() if isinstance(f, openmm.HarmonicBondForce))
    assert [tuple(bonds.getBondParameters(k)[:2]) for k in range(bonds.getNumBonds())] == [(8, 9), (9, 10), (10, 11)]
    assert classical.getNumConstraints() == 2  # the input system is not modified

    # Independently: the classical energy of everything minus that of the ML region alone, plus the model.
    full_energy, full_forces = _evaluate(classical, positions)
    ml_alone = _classical_system(ethanol, constrained[:1])
    ml_energy, ml_forces = _evaluate(ml_alone, positions[: len(ethanol)])
    model_energy, model_forces = _references(ethanol, model_file)[1]
    expected_energy = full_energy - ml_energy + model_energy
    expected_forces = full_forces - _padded(ml_forces, ml, n) + _padded(model_forces, ml, n)
    energy, forces = _evaluate(mixed, positions)
    _assert_close(energy, forces, expected_energy, expected_forces)


def test_pickled_python_computation_gives_the_same_forces(model_file):
    atoms = _copper()
    topology, positions = topology_from_atoms(atoms)
    system = create_system(topology, model_file, backend="python")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    state = context.getState(getPositions=True)
    computation = PythonForceComputation(str(model_file), atoms.numbers, periodic=True)
    energy, forces = computation(state)
    blob = pickle.dumps(computation)
    assert len(blob) < 2000  # the path travels, not the model
    copy = pickle.loads(blob)
    assert copy._model is None
    copy_energy, copy_forces = copy(state)
    assert copy_energy == energy
    np.testing.assert_array_equal(copy_forces, forces)
    reference_energy, reference_forces = _references(atoms, model_file)[1]
    _assert_close(energy, forces, reference_energy, reference_forces)


_DESERIALIZE = """
import sys
import numpy as np
import torch  # before openmm, so that openmm-torch's plugins load
import openmm
import openmmtorch
system = openmm.XmlSerializer.deserialize(open(sys.argv[1]).read())
context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
context.setPositions(np.load(sys.argv[2]))
print(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_xml_serialization_round_trip(model_file, backend, tmp_path):
    atoms = _copper()
    topology, positions = topology_from_atoms(atoms)
    # An in-memory potential has no file: the python backend embeds the exported bytes.
    potential = LennardJonesPotential(SPECIES, SIGMA, EPSILON, CUTOFF).double()
    system = create_system(topology, potential, backend=backend)
    xml = openmm.XmlSerializer.serialize(system)
    energy, forces = _evaluate(system, positions)
    if backend == "python":
        restored = openmm.XmlSerializer.deserialize(xml)
        restored_energy, restored_forces = _evaluate(restored, positions)
        np.testing.assert_allclose(restored_forces, forces, rtol=1e-12, atol=1e-9)
        assert restored_energy == pytest.approx(energy, rel=1e-12)
        return
    # Deserializing a TorchForce segfaults with openmm-torch 1.5 (PyPI) on OpenMM 8.6 (TorchForceProxy
    # reads a SerializationNode of another layout), so it runs in a separate process.
    assert 'type="TorchForce"' in xml and "encodedFileContents" in xml
    (tmp_path / "system.xml").write_text(xml)
    np.save(tmp_path / "positions.npy", positions.value_in_unit(unit.nanometer))
    result = subprocess.run([sys.executable, "-c", _DESERIALIZE, str(tmp_path / "system.xml"),
                             str(tmp_path / "positions.npy")], capture_output=True, text=True, timeout=120)
    if result.returncode < 0:
        pytest.xfail(f"openmm-torch cannot deserialize a TorchForce here (signal {-result.returncode})")
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.split()[-1]) == pytest.approx(energy, rel=1e-12)


def test_subset_force_leaves_other_atoms_alone(model_file):
    atoms = _ethanol() + Atoms("Cu", positions=[[20.0, 0.0, 0.0]])
    topology, positions = topology_from_atoms(atoms)
    reference_energy, reference_forces = _references(atoms[:9], model_file)[1]
    for backend in USABLE_BACKENDS:
        system = openmm.System()
        for _ in atoms:
            system.addParticle(1.0)
        system.addForce(create_force(model_file, atoms=atoms, atom_indices=range(9), backend=backend))
        energy, forces = _evaluate(system, positions, "CPU")
        _assert_close(energy, forces, reference_energy, _padded(reference_forces, list(range(9)), 10))


def test_unknown_element_is_named(model_file):
    topology, _ = topology_from_atoms(molecule("HCl"))
    for backend in USABLE_BACKENDS:
        with pytest.raises(StructureError, match="Cl are not known to the model"):
            create_system(topology, model_file, backend=backend)


def test_missing_openmmtorch_suggests_the_python_backend(model_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "openmmtorch", None)
    with pytest.raises(MLMDError, match="backend='python'"):
        create_force(model_file, atoms=_ethanol(), backend="torch")


def test_a_registered_backend_serves_create_force_and_create_system(model_file):
    """A third backend plugs in by name; it receives the numbers, periodicity and subset create_force worked out."""
    calls = []

    def recording(model, numbers, periodic, indices, device):
        calls.append((numbers.tolist(), periodic, None if indices is None else indices.tolist()))
        return FORCE_BACKENDS["python"](model, numbers, periodic, indices, device)

    assert register_backend("recording", recording) is recording
    try:
        with pytest.raises(MLMDError, match="choose one of auto, torch, python, recording"):
            create_force(model_file, atoms=_ethanol(), backend="jax")
        copper = _copper()
        topology, positions = topology_from_atoms(copper)
        energy, forces = _evaluate(create_system(topology, model_file, backend="recording"), positions)
        assert calls == [(copper.numbers.tolist(), True, None)]
        _assert_close(energy, forces, *_references(copper, model_file)[1])
        create_force(model_file, atoms=_ethanol(), atom_indices=[2, 0], backend="recording")
        assert calls[-1] == ([_ethanol().numbers[2], _ethanol().numbers[0]], False, [2, 0])
    finally:
        FORCE_BACKENDS.pop("recording")


def test_bad_arguments(model_file):
    atoms = _ethanol()
    with pytest.raises(MLMDError, match="unknown OpenMM backend"):
        create_force(model_file, atoms=atoms, backend="jax")
    with pytest.raises(MLMDError, match="exactly one of"):
        create_force(model_file)
    with pytest.raises(MLMDError, match="atom_indices"):
        create_force(model_file, atoms=atoms, atom_indices=[0, 99])
    slab = bulk("Cu", "fcc", a=3.6, cubic=True)
    slab.pbc = [True, True, False]
    with pytest.raises(StructureError, match="all three directions or none"):
        topology_from_atoms(slab)


@pytest.mark.parametrize("torch_version, openmmtorch_version, usable", [
    ("2.9.1+cu128", "1.5", True), ("2.10.0", "1.5", False), ("2.14.1", "1.5", False), ("2.14.1", "1.6", True)])
def test_torchforce_is_refused_where_openmm_torch_crashes(model_file, monkeypatch, torch_version,
                                                          openmmtorch_version, usable):
    """openmm-torch 1.5 segfaults inside TorchForce on torch >= 2.10: that pairing is refused before the crash,
    "auto" falls back to PythonForce, and an explicit "torch" names the extra to install."""
    from mlmd.openmm import force as force_module, plugins

    monkeypatch.setattr(plugins.torch, "__version__", torch_version)
    monkeypatch.setattr(plugins, "version", lambda name: openmmtorch_version)
    assert (plugins.torchforce_unavailable() is None) == usable
    assert force_module.resolve_backend("auto") == ("torch" if usable else "python")
    assert force_module.resolve_backend("auto", device="cuda:0") == "python"
    if not usable:
        with pytest.raises(MLMDError, match=r"issue 175.*mlmd\[torchforce\]"):
            create_force(model_file, atoms=_ethanol(), backend="torch")
        force = create_force(model_file, atoms=_ethanol())
        assert isinstance(force, openmm.PythonForce)


def test_without_openmm_torch_the_default_backend_is_python(model_file, monkeypatch):
    from importlib.metadata import PackageNotFoundError

    from mlmd.openmm import plugins

    def missing(name):
        raise PackageNotFoundError(name)

    monkeypatch.setattr(plugins, "version", missing)
    atoms = _ethanol()
    topology, positions = topology_from_atoms(atoms)
    system = create_system(topology, model_file)
    assert isinstance(system.getForce(0), openmm.PythonForce)
    _assert_close(*_evaluate(system, positions), *_references(atoms, model_file)[0])
    with pytest.raises(MLMDError, match="not installed.*mlmd\\[torchforce\\]"):
        create_force(model_file, atoms=atoms, backend="torch")

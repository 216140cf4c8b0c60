"""Engine conformance: every engine of mlmd gives the bare model contract's numbers.

:class:`MLMDModelConformance` is the package's :class:`potentials.testing.ModelConformance`
with mlmd's model file (``mlmd.model.export_model`` then ``mlmd.load_model``) as the
export round trip. :class:`EngineConformance` checks, for one potential, that the ASE
calculator (``mlmd.MLMDCalculator``), the OpenMM forces (``mlmd.openmm.create_system``
with the ``"torch"`` TorchForce and the ``"python"`` PythonForce backends) and one step
of the torch integrators reproduce the bare contract: energy, forces and, where
periodic, stress. Only public names of mlmd are used.

Tolerances: the engines run the same float64 model on the same coordinates, so they
agree to roundoff; ``ENGINE_RTOL = 1e-9`` of the largest value leaves room for the unit
conversions at the OpenMM boundary (nm and kJ/mol there, converted back here with the
exact SI values of e and N_A) and stays 1e7 below a 1 % error. Observed: at
most 4e-14 (OpenMM energies), 2e-14 (stress), 3e-16 (integrator positions and velocities);
a model file off by 1e-7 fails every check (``tests/test_engine_conformance.py``).
"""

from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
from ase import Atoms

from openmm_backends import BACKENDS
from potentials.testing import ModelConformance, assert_close, evaluate

ENGINE_RTOL = 1e-9
# kJ/mol per eV: e N_A / 1000 with the exact SI 2019 values of e and N_A; 1 nm = 10 Å.
KJ_PER_MOL_PER_EV = 1.602176634e-19 * 6.02214076e23 / 1000.0
ANGSTROM_PER_NM = 10.0
# amu in eV fs²/Å² (CODATA 2018 amu); any consistent mass would do, the hand step uses the same.
AMU_EV_FS2_PER_A2 = 1.66053906660e-27 * 1e-20 / 1e-30 / 1.602176634e-19
# Integrators whose zero-friction limit is exactly one velocity-Verlet step.
VERLET_AT_ZERO_FRICTION = ("verlet", "baoab", "obabo", "gjf", "csvr")


class MLMDModelConformance(ModelConformance):
    """:class:`ModelConformance` with mlmd's model file as the export round trip."""

    def export_and_load(self, model, dtype, directory):
        import mlmd
        from mlmd.model import export_model

        loaded = mlmd.load_model(export_model(model, Path(directory) / "model.pt"))
        assert loaded.dtype == dtype
        return loaded


class LearnedBaselineConformance(MLMDModelConformance):
    """For the message-passing families (``equivariant``, ``facet``): a per-species baseline
    ``atomic_energies_ref[z] + shift`` under a learned part, which a lone atom does not zero."""

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


def contract(bare, atoms: Atoms) -> Dict[str, np.ndarray]:
    """The bare contract's numbers for ``atoms`` alone (float64): energy, forces and, if periodic, stress."""
    return evaluate(bare, [atoms], torch.float64, stress=bool(atoms.pbc.all()))


def assert_engine_agrees(actual: Dict[str, np.ndarray], expected: Dict[str, np.ndarray], what: str) -> None:
    """Every quantity of ``actual`` equals ``expected``'s to ``ENGINE_RTOL`` of its largest value."""
    for key, value in actual.items():
        assert_close(value, expected[key], ENGINE_RTOL, f"{what}: {key}")


def openmm_outputs(model_file: Path, atoms: Atoms, backend: str, platform: str) -> Dict[str, np.ndarray]:
    """Energy (eV) and forces (eV/Å) of ``mlmd.openmm.create_system`` on an OpenMM topology built here."""
    import openmm
    from openmm import app, unit

    from mlmd.openmm import create_system

    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    for z in atoms.numbers:
        topology.addAtom(str(z), app.Element.getByAtomicNumber(int(z)), residue)
    if atoms.pbc.all():
        cell = atoms.cell.array / ANGSTROM_PER_NM
        assert np.allclose(cell, np.tril(cell)), "OpenMM needs a lower-triangular (reduced) box"
        topology.setPeriodicBoxVectors([openmm.Vec3(*row) for row in cell] * unit.nanometer)
    system = create_system(topology, model_file, backend=backend)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    context.setPositions(atoms.positions / ANGSTROM_PER_NM * unit.nanometer)
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_PER_MOL_PER_EV
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return {"energy": np.array([energy]), "forces": np.asarray(forces) / KJ_PER_MOL_PER_EV / ANGSTROM_PER_NM}


class EngineConformance:
    """Every engine reproduces the bare contract, for the potential of the fixtures ``bare`` (float64,
    eval mode) and ``model_file`` (``bare`` exported by ``mlmd.model.export_model``), which the test
    module provides, on the systems of the fixture ``atoms`` (periodic cells in OpenMM's reduced,
    lower-triangular box form)."""

    def test_ase_calculator(self, bare, model_file, atoms):
        """``mlmd.MLMDCalculator``: energy, free energy, forces, per-atom energies and (periodic) stress."""
        import mlmd

        expected = contract(bare, atoms)
        assert np.abs(expected["forces"]).max() > 1e-3, "forces vanish: the comparison proves nothing"
        atoms = atoms.copy()
        atoms.calc = mlmd.MLMDCalculator(model_file)
        actual = {"energy": np.array([atoms.get_potential_energy()]), "forces": atoms.get_forces(),
                  "energies": atoms.get_potential_energies()}
        assert atoms.get_potential_energy(force_consistent=True) == actual["energy"][0]
        if atoms.pbc.all():
            actual["stress"] = atoms.get_stress()
            expected["stress"] = expected["stress"][0].flat[[0, 4, 8, 5, 2, 1]]  # Voigt xx yy zz yz xz xy
        assert_engine_agrees(actual, expected, "ASE calculator vs bare contract")

    @pytest.mark.parametrize("platform", ["Reference", "CPU"])
    @pytest.mark.parametrize("backend", BACKENDS)
    def test_openmm_force(self, bare, model_file, atoms, backend, platform):
        """``mlmd.openmm.create_system`` with TorchForce (``"torch"``) and PythonForce (``"python"``)."""
        expected = contract(bare, atoms)
        assert np.abs(expected["forces"]).max() > 1e-3, "forces vanish: the comparison proves nothing"
        actual = openmm_outputs(model_file, atoms, backend, platform)
        assert_engine_agrees(actual, expected, f"OpenMM {backend} on {platform} vs bare contract")

    @pytest.mark.parametrize("scheme", VERLET_AT_ZERO_FRICTION)
    def test_integrator_step(self, bare, model_file, atoms, scheme):
        """One step of ``integrators.INTEGRATORS[scheme]`` at zero friction, driven by the loaded model file,
        equals one velocity-Verlet step written out here on the bare model:
        ``v += h/2 F/m; x += h v; F = F(x); v += h/2 F/m``."""
        import mlmd
        from integrators import INTEGRATORS
        from integrators.state import init_state

        timestep = 1.0  # fs
        dtype = torch.float64
        masses = torch.tensor(atoms.get_masses() * AMU_EV_FS2_PER_A2, dtype=dtype)
        velocities = torch.tensor(0.01 * np.random.default_rng(5).normal(size=(len(atoms), 3)), dtype=dtype)
        inputs = (torch.tensor(atoms.numbers), torch.tensor(atoms.cell.array, dtype=dtype)[None],
                  torch.tensor(atoms.pbc)[None], torch.zeros(len(atoms), dtype=torch.int64))
        start = torch.tensor(atoms.positions, dtype=dtype)
        state = init_state(mlmd.load_model(model_file), start, masses, *inputs, kT=0.025, friction=0.0, seeds=7,
                           velocities=velocities)
        state = INTEGRATORS[scheme](state, mlmd.load_model(model_file), timestep)

        def forces(positions):
            return bare(positions, *inputs)["forces"]

        half = velocities + 0.5 * timestep * forces(start) / masses[:, None]
        positions = start + timestep * half
        after = bare(positions, *inputs)
        expected = {"positions": positions, "velocities": half + 0.5 * timestep * after["forces"] / masses[:, None],
                    "energy": after["energy"], "forces": after["forces"]}
        assert float((positions - start).abs().max()) > 1e-3, "the step does not move the atoms"
        actual = {key: getattr(state, key).detach().numpy() for key in expected}
        assert_engine_agrees(actual, {k: v.detach().numpy() for k, v in expected.items()},
                             f"{scheme} step vs velocity Verlet on the bare contract")

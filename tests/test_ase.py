"""mlmd.ase: the dynamics classes against ASE's own VelocityVerlet and the torch integrators, their
calculator calls, and how ASE finds the calculator by name in a fresh process."""

import subprocess
import sys
from importlib.metadata import entry_points

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.cluster import Icosahedron
from ase.constraints import FixAtoms, FixBondLength
from ase.md.verlet import VelocityVerlet as AseVelocityVerlet

from integrators import INTEGRATORS
from integrators.state import init_state
from mlmd.ase import BAOAB, CSVR, GJF, OBABO, VelocityVerlet
from mlmd.constants import AMU_A2_PER_FS2_EV, KB_EV_PER_K
from mlmd.errors import MLMDError

THERMOSTATTED = [BAOAB, OBABO, GJF, CSVR]
ALL = THERMOSTATTED + [VelocityVerlet]


def cluster(seed=0):
    """13 Cu atoms (EMT), rattled, with Maxwell-Boltzmann velocities at 600 K."""
    atoms = Icosahedron("Cu", 2)
    atoms.rattle(0.05, seed=seed)
    sigma = np.sqrt(600 * units.kB / atoms.get_masses())[:, None]  # Å per ASE time unit
    atoms.set_velocities(sigma * np.random.default_rng(seed).normal(size=(len(atoms), 3)))
    atoms.calc = EMT()
    return atoms


def make(cls, atoms, timestep_fs=2.0, friction_per_fs=0.0, **kwargs):
    if cls is VelocityVerlet:
        return cls(atoms, timestep_fs * units.fs, **kwargs)
    return cls(atoms, timestep_fs * units.fs, temperature_K=600, friction=friction_per_fs / units.fs, **kwargs)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_without_friction_every_scheme_is_ase_velocity_verlet(cls):
    """At zero friction (infinite CSVR τ) each scheme reduces to velocity Verlet: same masses, units, step.
    (ASE's units use CODATA 2014, mlmd's CODATA 2018: masses differ by 8e-9 relative.)"""
    atoms, reference = cluster(), cluster()
    make(cls, atoms).run(25)
    AseVelocityVerlet(reference, timestep=2.0 * units.fs).run(25)
    assert np.abs(reference.positions - cluster().positions).max() > 0.05  # the atoms did move
    np.testing.assert_allclose(atoms.positions, reference.positions, rtol=0, atol=1e-8)
    np.testing.assert_allclose(atoms.get_velocities(), reference.get_velocities(), rtol=0, atol=1e-8)


@pytest.mark.parametrize("cls", THERMOSTATTED, ids=lambda c: c.__name__)
def test_thermostatted_schemes_run_the_torch_step_functions(cls):
    """The same trajectory as INTEGRATORS[scheme] driven directly in Å, fs, eV and eV·fs²/Å² (friction 1/fs),
    with mlmd's constants (the test above checks masses and time step against ASE's own units)."""
    atoms, reference = cluster(1), cluster(1)
    make(cls, atoms, friction_per_fs=0.02, seed=3).run(10)

    def energy_forces(positions, *_):
        reference.set_positions(positions.numpy())
        return {"energy": torch.tensor([reference.get_potential_energy()]),
                "forces": torch.from_numpy(reference.get_forces())}

    n = len(reference)
    state = init_state(energy_forces, torch.from_numpy(reference.get_positions()),
                       torch.from_numpy(reference.get_masses() * AMU_A2_PER_FS2_EV), torch.from_numpy(reference.numbers),
                       torch.zeros(1, 3, 3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.bool),
                       torch.zeros(n, dtype=torch.int64), KB_EV_PER_K * 600, 0.02, 3,
                       velocities=torch.from_numpy(reference.get_velocities() * units.fs))
    for _ in range(10):
        state = INTEGRATORS[cls.scheme](state, energy_forces, 2.0)
    assert np.abs(atoms.positions - cluster(1).positions).max() > 0.02  # the atoms did move
    np.testing.assert_allclose(atoms.positions, state.positions.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(atoms.get_velocities() * units.fs, state.velocities.numpy(), rtol=0, atol=1e-12)


class CountingCalculator(Calculator):
    """EMT that computes only the properties asked for and counts its calculations."""

    implemented_properties = ["energy", "forces"]

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.inner = EMT()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        copy = self.atoms.copy()
        copy.calc = self.inner
        for name in properties:
            self.results[name] = copy.calc.get_property(name, copy)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_each_step_asks_the_calculator_once(cls):
    atoms = cluster()
    atoms.calc = counting = CountingCalculator()
    dynamics = make(cls, atoms, friction_per_fs=0.01)
    seen = []
    dynamics.attach(lambda: seen.append(counting.calls), interval=1)
    dynamics.run(6)
    assert seen[0] == 1  # ASE's own force call before the first step
    assert np.diff(seen).tolist() == [1] * 6


def test_kept_forces_are_dropped_when_the_atoms_move_or_the_calculator_changes():
    """Each change is followed by the trajectory of a fresh dynamics started where the atoms now are."""
    atoms = cluster()
    dynamics = VelocityVerlet(atoms, 2.0 * units.fs)
    dynamics.run(3)
    moved = atoms.get_positions()
    moved[0] += [0.05, -0.03, 0.02]
    atoms.set_positions(moved)
    expected = atoms.copy()
    expected.calc = EMT()
    dynamics.run(3)
    VelocityVerlet(expected, 2.0 * units.fs).run(3)
    np.testing.assert_allclose(atoms.positions, expected.positions, rtol=0, atol=1e-12)

    for epsilon in (0.2, 0.3):  # a new calculator, then new parameters for it
        if epsilon == 0.2:
            atoms.calc = LennardJones(sigma=2.3, epsilon=epsilon, rc=5.0)
        else:
            atoms.calc.set(epsilon=epsilon)
            atoms.calc.reset()  # LennardJones keeps its results on set(); reset() is how ASE is told
        expected = atoms.copy()
        expected.calc = LennardJones(sigma=2.3, epsilon=epsilon, rc=5.0)
        dynamics.run(3)
        VelocityVerlet(expected, 2.0 * units.fs).run(3)
        np.testing.assert_allclose(atoms.positions, expected.positions, rtol=0, atol=1e-12)


def test_fixed_atoms_stay_and_other_constraints_are_refused():
    atoms = cluster()
    start = atoms.get_positions()
    atoms.set_constraint(FixAtoms(indices=[0, 5]))
    make(BAOAB, atoms, friction_per_fs=0.01).run(5)
    np.testing.assert_array_equal(atoms.positions[[0, 5]], start[[0, 5]])
    assert np.abs(atoms.positions[1] - start[1]).max() > 1e-4
    atoms.set_constraint(FixBondLength(0, 1))
    with pytest.raises(MLMDError, match="FixAtoms constraints only, not FixBondLength"):
        make(GJF, atoms, friction_per_fs=0.01)
    with pytest.raises(MLMDError, match="needs temperature_K and friction"):
        CSVR(bulk("Cu"), 1.0 * units.fs)


def _fresh_python(script):
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_fresh_process_finds_the_calculator_by_name_after_importing_mlmd():
    assert _fresh_python(
        "import mlmd\n"
        "from ase.calculators.calculator import get_calculator_class\n"
        "print(get_calculator_class('mlmd').__qualname__)\n"
    ) == ["MLMDCalculator"]


def test_fresh_process_finds_the_calculator_through_ase_plugins_without_importing_mlmd():
    """ASE's plugin collection reads the ``ase.plugins`` entry point; after it, the name lookup works too."""
    pytest.importorskip("ase._4.plugins.plugin")
    if "mlmd" not in {entry.name for entry in entry_points(group="ase.plugins")}:
        pytest.skip("mlmd is not installed (no ase.plugins entry point named mlmd)")
    assert _fresh_python(
        "import sys\n"
        "from ase.calculators.calculator import get_calculator_class\n"
        "assert 'mlmd' not in sys.modules\n"
        "from ase._4.plugins import plugins\n"
        "[plugin] = [p for p in plugins.calculators if p.name == 'mlmd']\n"
        "assert get_calculator_class('mlmd') is plugin.implementation\n"
        "print(plugin.implementation.__module__, plugin.implementation.__qualname__)\n"
    ) == ["mlmd.ase.calculator", "MLMDCalculator"]

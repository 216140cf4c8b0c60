"""What ASE's and i-PI's own client code sees of mlmd's calculator: the name ``mlmd`` in a fresh
process (``mlmd/ase/lookup.py`` and its ``.pth`` line) and stress for systems that are not periodic,
checked against ASE's Lennard-Jones calculator and the virial ``-Σ r_i ⊗ F_i``."""

import functools
import os
import shutil
import site
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.lj import LennardJones
from ase.io import write

import mlmd
from mlmd.model import export_model
from reference_potentials import LennardJonesPotential

ROOT = Path(__file__).resolve().parents[1]
PTH = ROOT / "mlmd" / "ase" / "mlmd_ase_lookup.pth"
SIGMA, EPSILON, CUTOFF = 2.3, 0.2, 5.0

# Run in a fresh interpreter: nothing may have imported mlmd (or torch) before ASE looks the name up.
LOOKUP = (
    "import sys\n"
    "assert 'mlmd' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)\n"
    "from ase.calculators.calculator import get_calculator_class\n"
    "cls = get_calculator_class('mlmd')\n"
    "import mlmd\n"
    "assert cls is mlmd.MLMDCalculator and get_calculator_class('mlmd') is cls\n"
    "print(cls.__module__, cls.__qualname__)\n"
)


def fresh_python(*arguments):
    result = subprocess.run([sys.executable, *arguments], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def with_only_this_pth(script: str, site_dir: Path) -> list:
    """``script`` in ``python -S`` (no .pth file of the environment runs) after the environment's
    site-packages and this checkout are put on the path and ``site_dir`` holding only the source
    ``.pth`` is processed as a site directory."""
    shutil.copy(PTH, site_dir / PTH.name)
    paths = [str(ROOT), *(entry for entry in sys.path if entry)]
    prologue = f"import sys, site\nsys.path[:0] = {paths!r}\nsite.addsitedir({str(site_dir)!r})\n"
    return fresh_python("-S", "-c", prologue + script)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "lj.pt"
    export_model(LennardJonesPotential([1, 6, 8, 29], SIGMA, EPSILON, CUTOFF).double(), path)
    return path


def lennard_jones():
    return LennardJones(sigma=SIGMA, epsilon=EPSILON, rc=CUTOFF, smooth=False)


def ethanol(cell=None):
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=2)
    if cell is not None:
        atoms.cell = cell
        atoms.center()
    return atoms


def test_pth_line_serves_ase_calculators_mlmd_on_demand(tmp_path):
    """The .pth line alone (no other .pth of the environment): nothing loads at start-up, and ASE's
    public lookup then finds the class, which is mlmd's."""
    assert with_only_this_pth(LOOKUP, tmp_path) == ["mlmd.ase.calculator", "MLMDCalculator"]


def test_pth_line_makes_ase_run_work(tmp_path, model_file):
    """``ase run mlmd STRUCTURE -p model=FILE`` (ASE's own command) in a fresh process."""
    structure = tmp_path / "water.xyz"
    write(structure, molecule("H2O"))
    script = ("from ase.cli.main import main\n"
              f"main(args=['run', 'mlmd', {str(structure)!r}, '-p', 'model={model_file}',"
              " '--after', 'print(atoms.get_potential_energy())'])\n")
    reference = molecule("H2O")
    reference.calc = lennard_jones()
    (energy,) = with_only_this_pth(script, tmp_path)
    assert float(energy) == pytest.approx(reference.get_potential_energy(), abs=1e-9)


def test_installed_mlmd_is_found_by_name_in_a_fresh_process():
    """The environment's own start-up (the installed ``mlmd_ase_lookup.pth``) with no help from the test."""
    try:
        distribution("mlmd")
    except PackageNotFoundError:
        pytest.skip("mlmd is not installed in this environment")
    site_dirs = [*site.getsitepackages(), site.getusersitepackages()]
    if not any((Path(folder) / PTH.name).is_file() for folder in site_dirs):
        pytest.fail(f"the installed mlmd has no {PTH.name} in {site_dirs} (installed before setup.py shipped "
                    "it); reinstall it: pip install -e .")
    assert fresh_python("-c", LOOKUP) == ["mlmd.ase.calculator", "MLMDCalculator"]


def _slab():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=3)
    atoms.center(vacuum=6.0, axis=2)
    atoms.pbc = (True, True, False)
    return atoms


@pytest.mark.parametrize("make", [lambda: ethanol([[11.0, 0.0, 0.0], [1.5, 12.0, 0.0], [0.0, 0.8, 13.0]]), _slab],
                         ids=["molecule in a box", "slab with vacuum"])
def test_stress_with_a_cell_is_the_strain_derivative_over_the_volume(model_file, make):
    """Periodic or not, a cell with a volume gives ``(1/V) ∂E/∂ε``, as ASE's own Lennard-Jones."""
    atoms, reference = make(), make()
    atoms.calc, reference.calc = mlmd.MLMDCalculator(model_file), lennard_jones()
    expected = reference.get_stress()
    assert np.abs(expected).max() > 1e-4  # the check can fail
    np.testing.assert_allclose(atoms.get_stress(), expected, rtol=0, atol=1e-10)
    if not atoms.pbc.any():  # a molecule: V σ is the virial -Σ r_i ⊗ F_i, whatever the box
        virial = -atoms.positions.T @ reference.get_forces()
        np.testing.assert_allclose(atoms.get_stress(voigt=False) * atoms.get_volume(), virial, atol=1e-9)


def test_stress_without_a_volume_raises_as_ase_calculators_do(model_file):
    """A molecule without a cell, or a slab without a third lattice vector: no volume, no stress
    (PropertyNotImplementedError, naming the fix), as ASE's Lennard-Jones; energy and forces still work."""
    slab = _slab()
    slab.cell[2] = 0.0
    for atoms in (ethanol(), slab):
        reference = atoms.copy()
        atoms.calc, reference.calc = mlmd.MLMDCalculator(model_file), lennard_jones()
        with pytest.raises(PropertyNotImplementedError):
            reference.get_stress()
        with pytest.raises(PropertyNotImplementedError, match="spans a volume"):
            atoms.get_stress()
        assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), atol=1e-9)


def test_ase_socket_client_runs_a_molecule_in_a_box(model_file):
    """ASE's SocketIOCalculator with its Python client, which always asks for stress and sends
    ``-V σ``; for a molecule in a box (pbc False) the run must go on with energies and forces equal."""
    from ase.calculators.socketio import PySocketIOClient, SocketIOCalculator

    box = [[11.0, 0.0, 0.0], [0.0, 12.0, 0.0], [0.0, 0.0, 13.0]]
    atoms, reference = ethanol(box), ethanol(box)
    reference.calc = lennard_jones()
    factory = functools.partial(mlmd.MLMDCalculator, str(model_file))
    energies = []
    with SocketIOCalculator(launch_client=PySocketIOClient(factory), unixsocket=f"mlmd-test-{os.getpid()}",
                            timeout=120) as calc:
        atoms.calc = calc
        for _ in range(2):
            energies.append(atoms.get_potential_energy())
            np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), atol=1e-8)
            assert energies[-1] == pytest.approx(reference.get_potential_energy(), abs=1e-8)
            atoms.positions[0] += 0.05
            reference.positions[0] += 0.05
    assert energies[0] != energies[1]


def test_ipi_ase_driver_gets_the_virial_of_a_molecule(model_file, tmp_path):
    """i-PI's ASE driver always asks for stress and sends ``-V σ``: for a molecule read without a
    cell i-PI uses its default 1-bohr box, and the virial must still be ``Σ r_i ⊗ F_i``."""
    ase_driver = pytest.importorskip("ipi.pes._ase")
    from ipi.utils.units import unit_to_internal

    template = tmp_path / "ethanol.xyz"
    atoms = ethanol()
    write(template, atoms)

    class Driver(ase_driver.ASEDriver):
        def check_parameters(self):
            super().check_parameters()
            self.ase_calculator = mlmd.MLMDCalculator(model_file)

    driver = Driver(str(template))
    cell_bohr = -np.eye(3)  # i-PI's cell for a structure read without one
    energy, forces, virial, _ = driver(cell_bohr, unit_to_internal("length", "angstrom", atoms.positions))
    atoms.calc = lennard_jones()
    expected = atoms.positions.T @ atoms.get_forces()
    assert np.abs(expected).max() > 1e-3
    assert energy == pytest.approx(unit_to_internal("energy", "electronvolt", atoms.get_potential_energy()), abs=1e-10)
    np.testing.assert_allclose(np.reshape(virial, (3, 3)), unit_to_internal("energy", "electronvolt", expected), atol=1e-10)
    np.testing.assert_allclose(forces, unit_to_internal("force", "ev/ang", atoms.get_forces()), atol=1e-10)

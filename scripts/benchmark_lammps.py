"""LAMMPS with mlmd models: agreement, NVE drift and speed of each route against mlmd's own engines.

A spline model of EMT copper (``--model``, or trained here: ``mlmd generate cu`` frames, a
closed-form fit in float64) is exported with ``mlmd export --format uf3`` and run on fcc Cu
(``--repeat`` conventional cells, rattled, 600 K Maxwell-Boltzmann velocities, 1 fs steps):

- agreement: energy, forces and virial of LAMMPS's ``pair_style uf3`` on 1 and 2 MPI ranks and of the
  ``fix external`` route, relative to mlmd's ASE calculator (largest difference / largest value);
- NVE: total-energy drift (last minus first, eV/atom) and spread (max minus min) over ``--steps``;
- speed: ms per MD step of LAMMPS uf3 on 1 and 2 ranks (LAMMPS's loop time), fix external (1 rank),
  ASE's VelocityVerlet with the calculator, and ``mlmd md`` (torch engine, ``verlet``).

    python scripts/benchmark_lammps.py --repeat 3 --steps 1000
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk

import mlmd
import mlmd.md
from mlmd.constants import FS_NS, SECONDS_PER_DAY
from mlmd.ase.calculator import MLMDCalculator
from mlmd.lammps import run_external, run_uf3
from mlmd.training.export import export


def train_copper(folder: Path) -> Path:
    """A float64 spline (5 Å two-body, 3.5 Å three-body) fitted to 60 ``mlmd generate cu`` frames."""
    from ase.io import write

    from mlmd.generate import generate
    from mlmd.train import export_checkpoint, train

    write(folder / "cu.xyz", generate("cu", frames=60, progress=False), format="extxyz")
    config = {"data": {"path": str(folder / "cu.xyz"), "validation_fraction": 0.1, "test_fraction": 0.1},
              "model": {"family": "spline", "cutoff": 5.0, "cutoff_3body": 3.5},
              "training": {"epochs": 1, "num_threads": 1, "device": "cpu", "dtype": "float64"},
              "output": {"directory": str(folder / "run"), "learning_curve": False}}
    result = train(config, verbose=False, progress=False)
    return export_checkpoint(result.checkpoint, folder / "cu.pt")


def copper(repeat: int, seed: int = 0):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=seed)
    rng = np.random.default_rng(seed)
    masses = atoms.get_masses()[:, None]
    momenta = rng.normal(size=(len(atoms), 3)) * np.sqrt(masses * units.kB * 600.0)
    atoms.set_momenta(momenta - masses * momenta.sum(0) / masses.sum())
    return atoms


def relative_errors(result, model, atoms):
    """Largest |difference| / largest |value| of energy, forces, virial against the ASE calculator."""
    reference = atoms.copy()
    reference.calc = MLMDCalculator(model)
    energy, forces = reference.get_potential_energy(), reference.get_forces()
    virial = -atoms.get_volume() * reference.get_stress(voigt=False)
    return (abs(result.energy - energy) / abs(energy), np.abs(result.forces - forces).max() / np.abs(forces).max(),
            np.abs(result.virial - virial).max() / np.abs(virial).max())


def drift(total, n_atoms):
    return abs(total[-1] - total[0]) / n_atoms, np.ptp(total) / n_atoms


def ase_verlet(model, atoms, steps):
    """ms/step and (drift, spread) of ASE's VelocityVerlet with the calculator."""
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()
    atoms.calc = MLMDCalculator(model)
    dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    totals = [atoms.get_total_energy()]
    started = time.perf_counter()
    for _ in range(steps // 10):
        dynamics.run(10)
        totals.append(atoms.get_total_energy())
    return 1e3 * (time.perf_counter() - started) / steps, drift(np.array(totals), len(atoms))


def mlmd_md(model, atoms, steps):
    """ms/step and (drift, spread) of ``mlmd md`` (torch engine, velocity Verlet, the atoms' velocities)."""
    result = mlmd.md.run(atoms, model=model, integrator="verlet", timestep_fs=1.0, steps=steps, stride=10,
                         plot=False, use_velocities=True, min_distance_A=None, max_energy_jump_eV_per_atom=None)
    header = list(result.header)
    total = result.log[:, header.index("epot_eV")] + result.log[:, header.index("ekin_eV")]
    ms_per_step = 1e3 * 1.0 * FS_NS * SECONDS_PER_DAY / result.ns_per_day  # 1 fs steps
    return ms_per_step, drift(total, len(atoms))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="spline model file (default: train one on EMT copper here)")
    parser.add_argument("--repeat", type=int, default=3, help="conventional fcc cells per side (4 atoms each)")
    parser.add_argument("--steps", type=int, default=1000, help="NVE steps of 1 fs for LAMMPS uf3")
    parser.add_argument("--python-steps", type=int, default=200,
                        help="steps for the Python-driven routes (fix external, ASE, mlmd md)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        model_path = Path(args.model) if args.model else train_copper(folder)
        model = mlmd.load_model(model_path)
        started = time.perf_counter()
        uf3 = export(model_path, folder / "cu.uf3", format="uf3")
        print(f"model {model}; uf3 export (with its LAMMPS check) {time.perf_counter() - started:.1f} s")
        atoms = copper(args.repeat)
        print(f"system: {len(atoms)} Cu atoms, 600 K velocities, 1 fs steps\n")
        print("agreement with mlmd's ASE calculator (max |diff| / max |value|):  energy  forces  virial")
        for label, result in (("LAMMPS uf3, 1 rank", run_uf3(uf3, atoms, nprocs=1)),
                              ("LAMMPS uf3, 2 ranks", run_uf3(uf3, atoms, nprocs=2, processors="2 1 1")),
                              ("LAMMPS fix external, 1 rank", run_external(model, atoms))):
            print(f"  {label:34s} " + "  ".join(f"{e:.1e}" for e in relative_errors(result, model, atoms)))
        print("\nNVE (eV/atom: drift = |last - first|, spread = max - min of the total energy)")
        rows = []
        for nprocs in (1, 2):
            result = run_uf3(uf3, atoms, nprocs=nprocs, steps=args.steps, thermo_every=10)
            rows.append((f"LAMMPS uf3, {nprocs} rank{'s' * (nprocs > 1)}", args.steps, 1e3 * result.seconds_per_step,
                         drift(result.thermo["total_energy"], len(atoms))))
        result = run_external(model, atoms, steps=args.python_steps, thermo_every=10)
        rows.append(("LAMMPS fix external, 1 rank", args.python_steps, 1e3 * result.seconds_per_step,
                     drift(result.thermo["total_energy"], len(atoms))))
        rows.append(("ASE VelocityVerlet + calculator", args.python_steps, *ase_verlet(model, atoms, args.python_steps)))
        rows.append(("mlmd md (torch, verlet)", args.python_steps, *mlmd_md(model, atoms, args.python_steps)))
        print(f"  {'route':34s} {'steps':>6s} {'ms/step':>9s} {'drift':>9s} {'spread':>9s}")
        for label, steps, ms, (change, spread) in rows:
            print(f"  {label:34s} {steps:6d} {ms:9.3f} {change:9.2e} {spread:9.2e}")


if __name__ == "__main__":
    main()

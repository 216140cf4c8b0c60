"""Energy conservation of trained models: NVE (velocity Verlet, ``mlmd md --integrator verlet``) runs of the
same structure, time step and starting temperature with each model, side by side.

For every model and seed (velocities drawn at ``--temperature`` with that seed, whatever the structure file
holds) the total energy
``E = U + K`` is logged every ``--stride`` steps; reported per model, as the median over seeds:

- drift: |slope| of a least-squares line through E(t), in meV/atom/ps;
- spread: max |E(t) - E(0)|, in meV/atom.

A run that a guard stops (energy jump, close contact) is reported as such, not dropped::

    python scripts/nve_drift.py ethanol.xyz MODEL.pt [MODEL.pt ...] [--steps 10000] [--timestep 0.5]
                                [--temperature 300] [--seeds 3]
"""

import argparse
import csv
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def energy_series(log_path: Path):
    """Time (ps) and total energy (eV) columns of an ``mlmd md`` log."""
    with open(log_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    time_ps = np.array([float(row["time_fs"]) for row in rows]) / 1000.0
    total = np.array([float(row["epot_eV"]) + float(row["ekin_eV"]) for row in rows])
    return time_ps, total


def conservation(time_ps, total, n_atoms: int):
    """(|slope| in meV/atom/ps, max |E - E0| in meV/atom) of a total-energy series."""
    slope = np.polyfit(time_ps, total, 1)[0]
    return 1000.0 * abs(slope) / n_atoms, 1000.0 * np.abs(total - total[0]).max() / n_atoms


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("structure")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--temperature", type=float, default=300.0, help="K, of the starting velocities")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--stride", type=int, default=10)
    args = parser.parse_args(argv)

    missing = [path for path in [args.structure, *args.models] if not Path(path).is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")

    from ase.io import read

    from mlmd.dynamics.guards import UnstableRunError
    from mlmd.md import run

    atoms = read(args.structure)
    print(f"NVE (velocity Verlet), {len(atoms)} atoms, {args.steps} steps of {args.timestep:g} fs, start "
          f"{args.temperature:g} K, seeds 0..{args.seeds - 1}")
    print(f"{'model':48s} {'drift meV/atom/ps':>18s} {'max|E-E0| meV/atom':>19s}  per seed (drift/spread)")
    with tempfile.TemporaryDirectory() as workdir:
        for model in args.models:
            drifts, spreads, cells = [], [], []
            for seed in range(args.seeds):
                log = Path(workdir) / f"{Path(model).stem}-{seed}.csv"
                try:
                    run(atoms, model=model, integrator="verlet", temperature_K=args.temperature,
                        timestep_fs=args.timestep, steps=args.steps, seed=seed, log=log, stride=args.stride,
                        plot=False, overwrite=True, threads=1, use_velocities=False)
                except UnstableRunError as exc:  # a guard tripped: part of the result, not a crash
                    cells.append(f"stopped: {str(exc).splitlines()[0][:60]}")
                    continue
                drift, spread = conservation(*energy_series(log), len(atoms))
                drifts.append(drift)
                spreads.append(spread)
                cells.append(f"{drift:.3g}/{spread:.3g}")
            median = (lambda values: f"{statistics.median(values):.3g}" if values else "-")
            print(f"{model[-48:]:48s} {median(drifts):>18s} {median(spreads):>19s}  {'; '.join(cells)}",
                  flush=True)
    return 0


if __name__ == "__main__":
    from mlmd.errors import MLMDError

    try:
        raise SystemExit(main())
    except MLMDError as exc:  # bad model or structure: one line, exit 2
        print(f"nve_drift: {exc}", file=sys.stderr)
        raise SystemExit(2)

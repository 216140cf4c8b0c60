"""Cost of one force call through ASE, side by side: mlmd's families against MACE on a 9-atom molecule, a
100-atom molecule and an 864-atom metal cell.

Each model is called as users call it, an ASE calculator inside ``VelocityVerlet`` (one energy+forces call
per 0.5 fs step, 300 K start; ``_mace_worker.md_step_times``), on one thread. Systems: ethanol (9 atoms,
open), the n-alkane C33H68 (101 atoms, open, all-trans) and a rattled 6x6x6 L1_2 Ni3Al cell (864 atoms,
periodic). Models are untrained (weights do not change the cost) with the hyperparameters the accuracy
benchmark trains (``scripts/benchmark_accuracy.py``: ``model_section``) and MACE with those of
``scripts/benchmark_mace.py`` (32 channels, L = 1, correlation 3, 2 layers, float32, cutoff 5 Å), built by
MACE's own trainer in its venv from a few EMT-labelled frames (only its statistics need labels).

The clock is the CPU time of the calling process (user + system; ``--clock wall`` for wall time), so that
other work on a shared machine biases the comparison less. The sides alternate over ``--rounds`` rounds and
each round's median per step is kept; the report gives the median over rounds, ms per call, and the ratio to
``facet``::

    python scripts/benchmark_force_calls.py [--rounds 3] [--steps 20] [--families facet,facet-product]
                                            [--mace-python /work/mace-venv/bin/python] [--json out.json]
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))
import benchmark_accuracy  # noqa: E402
import benchmark_mace  # noqa: E402
from _mace_worker import md_step_times, write_json  # noqa: E402

DEFAULT_FAMILIES = ("facet", "facet-product", "equivariant", "transformer")


def alkane(carbons: int = 33):
    """All-trans n-alkane C_nH_(2n+2): C-C 1.53 Å, C-H 1.09 Å, about tetrahedral angles, zig-zag in the xy plane."""
    from ase import Atoms

    half_angle = np.radians(109.47) / 2
    step_x, step_y = 1.53 * np.sin(half_angle), 1.53 * np.cos(half_angle)
    carbon = np.array([[i * step_x, (i % 2) * step_y, 0.0] for i in range(carbons)])
    hydrogens = []
    for i, position in enumerate(carbon):
        outward = -1.0 if i % 2 == 0 else 1.0  # away from the chain's neighbours in y
        bonds = [carbon[k] - position for k in (i - 1, i + 1) if 0 <= k < carbons]
        for z in (+1.0, -1.0):  # two H per carbon, above and below the carbon plane
            direction = np.array([0.0, outward * np.cos(half_angle), z * np.sin(half_angle)])
            bonds.append(direction)
            hydrogens.append(position + 1.09 * direction / np.linalg.norm(direction))
        if len(bonds) == 3:  # a chain end: the fourth bond points away from the other three
            unit = sum(bond / np.linalg.norm(bond) for bond in bonds)
            hydrogens.append(position - 1.09 * unit / np.linalg.norm(unit))
    return Atoms(f"C{carbons}H{2 * carbons + 2}", positions=np.vstack([carbon, hydrogens]))


def systems():
    from ase.build import bulk, molecule

    nial = bulk("Ni", "fcc", a=3.57, cubic=True).repeat((6, 6, 6))
    nial.numbers[::4] = 13
    nial.rattle(0.05, seed=0)
    return {"ethanol (9, open)": (molecule("CH3CH2OH"), "ethanol"),
            "C33H68 (101, open)": (alkane(33), "ethanol"),
            "Ni3Al (864, periodic)": (nial, "copper")}


def our_model(family: str, dataset: str, species, path: Path):
    """An untrained model of ``family`` (or of one of the accuracy benchmark's ``VARIANTS``) with that
    benchmark's hyperparameters, exported to ``path``."""
    import torch

    from mlmd.model import export_model
    from mlmd.training.models import build_model

    family, _, model_keys = benchmark_accuracy.VARIANTS.get(family, (family, {}, {}))
    section = {**benchmark_accuracy.model_section(family, dataset), **model_keys}
    family_name = section.pop("family", family)
    torch.manual_seed(0)
    module = build_model(family_name, {**section, "species": sorted(set(int(z) for z in species))})
    export_model(module.float(), path)
    return path


def labelled_frames(atoms, directory: Path, count: int = 5):
    """``count`` rattled copies of ``atoms`` labelled with EMT, as MACE's train and validation files."""
    from ase.calculators.emt import EMT
    from ase.io import write

    frames = []
    for seed in range(count):
        copy = atoms.copy()
        copy.rattle(0.02, seed=seed + 1)
        copy.calc = EMT()
        frames.append(benchmark_mace.plain_frame(copy, {"energy": copy.get_potential_energy(),
                                                         "forces": copy.get_forces()}))
    write(directory / "train.xyz", frames[:-1], format="extxyz")
    write(directory / "valid.xyz", frames[-1:], format="extxyz")
    return directory / "train.xyz", directory / "valid.xyz"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(DEFAULT_FAMILIES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model, system and round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--mace-python", default=benchmark_mace.DEFAULT_MACE_PYTHON,
                        help="python of MACE's venv; MACE is skipped, with a message, when it is missing")
    parser.add_argument("--json", type=Path, help="write the per-round medians here")
    args = parser.parse_args(argv)

    import torch

    import mlmd

    torch.set_num_threads(1)
    # untrained on purpose (cost only): the transformer's "no measured rotation error" warning is expected
    warnings.filterwarnings("ignore", message=".*carries no measured rotation error")
    families = [name for name in args.families.split(",") if name]
    known = benchmark_accuracy.potential_families()
    unknown = [name for name in families if name not in known]
    if unknown:
        parser.error(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
                     f"choose from {', '.join(known)}")
    workdir = Path(tempfile.mkdtemp(prefix="mlmd-force-calls-"))
    try:
        cases = systems()
        structures, calculators = {}, {family: {} for family in families}
        for label, (atoms, dataset) in cases.items():
            slug = label.split()[0]
            structures[label] = workdir / f"{slug}.xyz"
            atoms.write(structures[label], format="extxyz")
            for family in families:
                path = our_model(family, dataset, atoms.numbers, workdir / f"{family}-{slug}.pt")
                calculators[family][label] = mlmd.MLMDCalculator(mlmd.load_model(path))
        mace_models = {}
        if Path(args.mace_python).is_file():
            for label, (atoms, _) in cases.items():
                slug = label.split()[0]
                directory = workdir / f"mace-{slug}"
                directory.mkdir()
                train, valid = labelled_frames(atoms, directory)
                built = benchmark_mace.worker(
                    args.mace_python, "model", "--workdir", str(directory), "--train-xyz", str(train),
                    "--valid-xyz", str(valid), "--mace-args", json.dumps(benchmark_mace.mace_arguments(5.0)),
                    "--threads", "1", workdir=workdir)
                mace_models[label] = built["model"]
        else:
            print(f"no MACE interpreter at {args.mace_python}: MACE skipped (see scripts/benchmark_mace.py)")

        sides = families + (["MACE"] if mace_models else [])
        medians = {side: {label: [] for label in cases} for side in sides}
        timing = dict(steps=args.steps, warmup=args.warmup, timestep_fs=0.5, seed=0, clock=args.clock)
        for round_ in range(args.rounds):
            order = sides if round_ % 2 == 0 else sides[::-1]
            for side in order:
                if side == "MACE":
                    specs = [a for label in cases
                             for a in ("--case", f"{label}={mace_models[label]},{structures[label]}")]
                    result = benchmark_mace.worker(
                        args.mace_python, "speed", *specs, "--steps", str(args.steps), "--warmup",
                        str(args.warmup), "--timestep", "0.5", "--threads", "1", "--clock", args.clock,
                        workdir=workdir)
                    for label, value in result["cases"].items():
                        medians["MACE"][label].append(statistics.median(value["step_times_s"]))
                else:
                    for label in cases:
                        times, _ = md_step_times(cases[label][0], calculators[side][label], **timing)
                        medians[side][label].append(statistics.median(times))
            print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    reference = "facet" if "facet" in sides else sides[0]
    print(f"\nms per force call ({args.clock} clock, one thread, median of {args.rounds} round medians of "
          f"{args.steps} steps); (x) = time / {reference}'s; load average {os.getloadavg()[0]:.1f}")
    print(f"{'model':14s}" + "".join(f"{label:>28s}" for label in cases))
    summary = {}
    for side in sides:
        cells = []
        for label in cases:
            value = statistics.median(medians[side][label])
            ratio = value / statistics.median(medians[reference][label])
            summary.setdefault(side, {})[label] = value
            cells.append(f"{1e3 * value:12.2f} ({ratio:5.2f}x)")
        print(f"{side:14s}" + "".join(f"{cell:>28s}" for cell in cells))
    if args.json:
        write_json(args.json, {"clock": args.clock, "rounds": medians, "median_s": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-call overhead of the ASE calculator over the bare model call.

    python scripts/benchmark_ase_overhead.py [--repeats 200] [--model MODEL.pt]

Times, interleaved call by call so that machine noise hits both alike:
(a) the exported (TorchScript) model called on ready tensors, and (b)
``atoms.get_forces()`` through :class:`mlmd.MLMDCalculator` after moving one
atom (so ASE really recomputes). Systems: 108-atom periodic fcc Cu and a
100-atom open Cu cluster with an untrained ``equivariant`` model of the default
size (or ``--model``), float32, 2 threads. Prints medians and the overhead
``(t_ase - t_model) / t_model``; the target is under 10 % at ~100 atoms.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk

import mlmd
from mlmd.model import export_model
from potentials import FAMILIES


def systems():
    crystal = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    block = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(4)
    distance = np.linalg.norm(block.positions - block.positions.mean(axis=0), axis=1)
    cluster = block[np.argsort(distance)[:100]]  # the 100 atoms nearest the centre: a compact cluster
    cluster.pbc = False
    cluster.cell = np.zeros((3, 3))
    for atoms in (crystal, cluster):
        atoms.rattle(0.02, seed=0)
    return {"Cu bulk (periodic)": crystal, "Cu cluster (open)": cluster}


def measure(model, atoms, repeats):
    atoms = atoms.copy()
    atoms.calc = mlmd.MLMDCalculator(model)
    tensors = (torch.as_tensor(atoms.positions), torch.as_tensor(atoms.numbers),
               torch.as_tensor(atoms.cell.array).unsqueeze(0), torch.as_tensor(atoms.pbc).unsqueeze(0),
               torch.zeros(len(atoms), dtype=torch.int64))
    bare, through_ase = [], []
    for step in range(repeats + 10):
        start = time.perf_counter()
        model(*tensors)
        middle = time.perf_counter()
        atoms.positions[0, 0] += 1e-4 * (-1) ** step
        atoms.get_forces()
        end = time.perf_counter()
        if step >= 10:  # warm-up: TorchScript's profiling runs
            bare.append(middle - start)
            through_ase.append(end - middle)
    return statistics.median(bare), statistics.median(through_ase)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--model", type=Path, help="exported model (default: untrained equivariant, Cu)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as folder:
        path = args.model
        if path is None:
            path = Path(folder) / "cu.pt"
            export_model(FAMILIES["equivariant"](species=[29]), path)
        model = mlmd.load_model(path)
        print(f"model: {model}")
        print(f"{'system':<22} {'atoms':>5} {'bare model ms':>14} {'through ASE ms':>15} {'overhead':>9}")
        for name, atoms in systems().items():
            bare, through_ase = measure(model, atoms, args.repeats)
            print(f"{name:<22} {len(atoms):>5} {1e3 * bare:>14.2f} {1e3 * through_ase:>15.2f} "
                  f"{100 * (through_ase - bare) / bare:>8.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

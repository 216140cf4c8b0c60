"""Time one energy+forces call of untrained models of each family and variant, side by side.

Every model is compiled with TorchScript and called on ethanol (9 atoms, open
boundaries) and on rattled fcc copper cells (4x4x4 = 256 atoms, optionally
8x8x8 = 2048); the models alternate within each of ``--rounds`` rounds and the
median per call is printed, with the ratio to the first model. Weights do not
change the cost, so untrained models suffice. Each model is timed twice: building
a fresh neighbour list inside the call ("before"), and with the list carried
between calls (``potentials.neighbors.VerletList`` with a 1 Å skin, between
rebuilds: "after", what MD steps cost once the list is reused).

    python scripts/benchmark_model_calls.py --threads 1 [--rounds 5] [--cu2048] [--nial864] [--models "spline,facet 2 layers"]
"""

import argparse
import statistics
import time

import torch
from ase.build import bulk, molecule

from potentials import FAMILIES
from potentials.neighbors import VerletList

SPECIES = [1, 6, 8, 13, 28, 29]
VARIANTS = {
    "equivariant 2 layers": ("equivariant", dict(channels=32, lmax=2, num_layers=2)),
    "equivariant 3 layers": ("equivariant", dict(channels=32, lmax=2, num_layers=3)),
    "facet 2 layers": ("facet", dict(channels=32, lmax=2, num_layers=2)),
    "facet 3 layers, gaunt": ("facet", dict(channels=32, lmax=2, num_layers=3, tensor_product="gaunt")),
    "facet 3 layers, cg": ("facet", dict(channels=32, lmax=2, num_layers=3, tensor_product="cg")),
    "facet 2 layers, product": ("facet", dict(channels=32, lmax=2, num_layers=2, mixing="product")),
    "transformer 2 layers": ("transformer", dict(channels=64, num_heads=4, num_layers=2)),
    "spline": ("spline", dict()),
}


def inputs(atoms):
    return (torch.tensor(atoms.positions, dtype=torch.float32), torch.tensor(atoms.numbers),
            torch.tensor(atoms.cell.array if atoms.pbc.all() else 20.0 * torch.eye(3).numpy(),
                         dtype=torch.float32)[None],
            torch.tensor(atoms.pbc)[None], torch.zeros(len(atoms), dtype=torch.int64))


def nickel_aluminium():
    """864 atoms: a 6x6x6 fcc Ni cell with every fourth site Al (L1_2 Ni3Al), rattled 0.05 Å."""
    atoms = bulk("Ni", "fcc", a=3.57, cubic=True).repeat((6, 6, 6))
    atoms.numbers[::4] = 13
    atoms.rattle(0.05, seed=0)
    return atoms


def copper(repeat: int):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((repeat, repeat, repeat))
    atoms.rattle(0.05, seed=0)
    return atoms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cu2048", action="store_true", help="also the 2048-atom copper cell (slow)")
    parser.add_argument("--nial864", action="store_true", help="also an 864-atom Ni3Al cell (slow)")
    parser.add_argument("--models", help="comma-separated subset of the variants (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    systems = {"ethanol": (inputs(molecule("CH3CH2OH")), 10), "cu256": (inputs(copper(4)), 1)}
    if args.cu2048:
        systems["cu2048"] = (inputs(copper(8)), 1)
    if args.nial864:
        systems["nial864"] = (inputs(nickel_aluminium()), 1)
    variants = {name: VARIANTS[name] for name in (args.models.split(",") if args.models else VARIANTS)}
    torch.manual_seed(0)
    scripted = {name: torch.jit.script(FAMILIES[family](SPECIES, **kwargs).eval())
                for name, (family, kwargs) in variants.items()}
    carried = {}
    for system, (system_inputs, _) in systems.items():
        positions, _, cell, pbc, batch = system_inputs
        carried[system] = VerletList(5.0, 1.0)(positions, cell, pbc, batch)
    models = {}
    for name, model in scripted.items():
        models[f"{name}, before"] = lambda system, model=model: model(*systems[system][0])
        models[f"{name}, after"] = lambda system, model=model: model(*systems[system][0], True, False,
                                                                    *carried[system])
    times = {name: {system: [] for system in systems} for name in models}
    for name, call in models.items():  # warm-up: TorchScript optimises on the first calls
        for system in systems:
            for _ in range(3):
                call(system)
    for _ in range(args.rounds):
        for name, call in models.items():
            for system, (_, calls) in systems.items():
                start = time.perf_counter()
                for _ in range(calls):
                    call(system)
                times[name][system].append((time.perf_counter() - start) / calls)
    first = next(iter(models))
    print(f"median ms per energy+forces call, {args.threads} thread(s), {args.rounds} rounds; (x) = speed-up "
          f"over {first!r}")
    print(f"{'model':32s}" + "".join(f"{system:>20s}" for system in systems))
    for name in models:
        cells = []
        for system in systems:
            median = statistics.median(times[name][system])
            speedup = statistics.median(times[first][system]) / median
            cells.append(f"{median * 1e3:10.2f} ({speedup:5.2f}x)")
        print(f"{name:32s}" + "".join(f"{c:>20s}" for c in cells))
    print("after/before speed-up per model:")
    for name in scripted:
        median = lambda label, system: statistics.median(times[f"{name}, {label}"][system])
        ratios = [median("before", system) / median("after", system) for system in systems]
        print(f"{name:32s}" + "".join(f"{ratio:19.2f}x" for ratio in ratios))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

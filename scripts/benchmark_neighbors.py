"""Time neighbour-list construction: ours (eager and TorchScript) against vesin-torch and ASE.

Periodic FCC boxes at copper-like density (~0.085 atoms/Å^3, lattice constant 3.61 Å,
rattled by 0.1 Å) of several sizes; for each method the median build time over
``--repeats`` runs after a warm-up (none for ASE), the number of pairs (ours must equal vesin's), and
the scaling exponent fitted as the least-squares slope of log(time) against log(N).
A second table compares one batched call on 64 copies of a 9-atom molecule in open
boundaries with a loop of 64 single-system calls.

    python scripts/benchmark_neighbors.py --sizes 100,1000,10000 --cutoff 5 --repeats 5
"""

import argparse
import statistics
import time

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list

from potentials.neighbors import neighbor_list

try:  # newer vesin releases ship the torch bindings as `vesin_torch`
    from vesin_torch import NeighborList as VesinNeighborList
except ImportError:
    from vesin.torch import NeighborList as VesinNeighborList

FCC_LATTICE = 3.61  # Å; 4 / 3.61^3 = 0.085 atoms/Å^3


def fcc_box(n_target, rng):
    """Orthorhombic FCC supercell with a number of atoms close to ``n_target`` and a nearly
    cubic shape (repeats differ by at most two), rattled; returns ase.Atoms."""
    n = (n_target / 4) ** (1 / 3)
    candidates = range(max(1, int(n) - 1), int(n) + 3)
    reps = min(((a, b, c) for a in candidates for b in candidates for c in candidates if a <= b <= c),
               key=lambda r: (abs(4 * r[0] * r[1] * r[2] - n_target), r[2] - r[0]))
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.array([(i, j, k) for i in range(reps[0]) for j in range(reps[1]) for k in range(reps[2])])
    frac = (grid[:, None, :] + basis[None, :, :]).reshape(-1, 3)
    positions = frac * FCC_LATTICE + rng.normal(scale=0.1, size=frac.shape)
    cell = np.diag(np.array(reps, dtype=float) * FCC_LATTICE)
    return Atoms(numbers=np.full(len(positions), 29), positions=positions, cell=cell, pbc=True)


def median_ms(fn, repeats, warmup, sync):
    """Median wall time of ``fn()`` in ms after ``warmup`` untimed calls; returns (ms, last result)."""
    result = None
    for _ in range(warmup):
        result = fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        sync()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times), result


def scaling_exponent(sizes, times):
    """Least-squares slope of log(time) against log(N) over the measured sizes."""
    pairs = [(n, t) for n, t in zip(sizes, times) if t is not None]
    if len(pairs) < 2:
        return float("nan")
    n, t = np.array(pairs, dtype=float).T
    return float(np.polyfit(np.log(n), np.log(t), 1)[0])


def fmt(value, width=11, digits=2):
    return f"{'skipped':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,300,1000,3000,10000,20000",
                        help="comma-separated target atom counts (default: %(default)s)")
    parser.add_argument("--cutoff", type=float, default=5.0, help="cutoff radius in Å (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per method and size (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads(N); default: leave torch's default")
    parser.add_argument("--ase-max-atoms", type=int, default=10000,
                        help="skip ASE for requested sizes above this, it takes seconds per build there "
                             "(default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device for ours and vesin (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    rng = np.random.default_rng(args.seed)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    cutoff = args.cutoff
    scripted = torch.jit.script(neighbor_list)
    vesin = VesinNeighborList(cutoff=cutoff, full_list=True)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; cutoff {cutoff} Å; "
          f"median of {args.repeats} runs after warm-up; times in ms")
    print(f"FCC boxes, lattice constant {FCC_LATTICE} Å ({4 / FCC_LATTICE**3:.4f} atoms/Å^3), rattled 0.1 Å; "
          f"ASE skipped for sizes above {args.ase_max_atoms} (too slow)")
    header = f"{'atoms':>7} {'pairs':>9} {'ours eager':>11} {'ours script':>11} {'vesin':>11} {'ase':>11}  pairs==vesin"
    print(header)
    print("-" * len(header))

    names = ["ours eager", "ours script", "vesin", "ase"]
    times = {name: [] for name in names}
    atom_counts = []
    all_match = True
    for n_target in sizes:
        atoms = fcc_box(n_target, rng)
        n_atoms = len(atoms)
        atom_counts.append(n_atoms)
        positions = torch.tensor(atoms.positions, dtype=torch.float64, device=device)
        cell = torch.tensor(np.array(atoms.cell), dtype=torch.float64, device=device)
        pbc = torch.ones(1, 3, dtype=torch.bool, device=device)
        batch = torch.zeros(n_atoms, dtype=torch.int64, device=device)

        t_eager, (edge_index, _) = median_ms(
            lambda: neighbor_list(positions, cell[None], pbc, batch, cutoff), args.repeats, 1, sync)
        t_script, _ = median_ms(lambda: scripted(positions, cell[None], pbc, batch, cutoff), args.repeats, 3, sync)
        t_vesin, (vi, _, _) = median_ms(
            lambda: vesin.compute(positions, cell, periodic=True, quantities="ijS"), args.repeats, 1, sync)
        t_ase = None
        if n_target <= args.ase_max_atoms:  # plain NumPy: no warm-up needed
            t_ase, (ai, _, _) = median_ms(lambda: ase_neighbor_list("ijS", atoms, cutoff), args.repeats, 0, sync)
        n_pairs = edge_index.shape[1]
        match = n_pairs == vi.shape[0]
        check = "yes" if match else f"NO (vesin {vi.shape[0]})"
        if t_ase is not None:
            check += ", = ase" if len(ai) == n_pairs else f", NO (ase {len(ai)})"
            match &= len(ai) == n_pairs
        all_match &= match
        for name, t in zip(names, (t_eager, t_script, t_vesin, t_ase)):
            times[name].append(t)
        print(f"{n_atoms:>7} {n_pairs:>9} {fmt(t_eager)} {fmt(t_script)} {fmt(t_vesin)} {fmt(t_ase)}  {check}")

    print(f"{'exponent':>17} " + " ".join(fmt(scaling_exponent(atom_counts, times[name])) for name in names)
          + "  (least-squares slope of log time vs log N)")

    # Batched small molecules: one call for 64 systems against 64 calls.
    n_copies = 64
    base = molecule("CH3CH2OH")
    copies = []
    for k in range(n_copies):
        mol = base.copy()
        mol.rattle(stdev=0.05, seed=args.seed + k)
        copies.append(torch.tensor(mol.positions, dtype=torch.float64, device=device))
    n_mol = len(base)
    positions = torch.cat(copies)
    cell = torch.zeros(n_copies, 3, 3, dtype=torch.float64, device=device)
    pbc = torch.zeros(n_copies, 3, dtype=torch.bool, device=device)
    batch = torch.arange(n_copies, device=device).repeat_interleave(n_mol)
    one_cell, one_pbc = cell[:1], pbc[:1]
    one_batch = torch.zeros(n_mol, dtype=torch.int64, device=device)

    print()
    print(f"batched: {n_copies} copies of a {n_mol}-atom molecule (ethanol), open boundaries, zero cell; "
          f"cutoff {cutoff} Å")
    print(f"{'method':>12} {'one batched call':>17} {f'loop of {n_copies} calls':>17} {'speed-up':>9} {'pairs':>7}")
    for name, fn in (("ours eager", neighbor_list), ("ours script", scripted)):
        t_batched, (edge_index, _) = median_ms(
            lambda: fn(positions, cell, pbc, batch, cutoff), args.repeats, 3, sync)
        t_loop, per_copy = median_ms(
            lambda: [fn(x, one_cell, one_pbc, one_batch, cutoff) for x in copies], args.repeats, 3, sync)
        loop_pairs = sum(e.shape[1] for e, _ in per_copy)
        all_match &= loop_pairs == edge_index.shape[1]
        print(f"{name:>12} {t_batched:>17.2f} {t_loop:>17.2f} {t_loop / t_batched:>8.1f}x {edge_index.shape[1]:>7}")

    if not all_match:
        raise SystemExit("pair counts disagree between methods")


if __name__ == "__main__":
    main()

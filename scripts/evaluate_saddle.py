"""Evaluate the saddle searches: GP-dimer, OT-GP-dimer, our classical dimer and ASE's dimer.

Cases (all run here in seconds per search):

- ``mb``   Müller-Brown (x 0.01 eV), start (-0.7, 0.9), mode (1, -1)
- ``leps`` LEPS H + H2, collinear start r_AB = 1.05, r_BC = 0.95 Å, asymmetric-stretch mode
- ``al``, ``cu``  EMT adatom on a 3x3x3 fcc(100) slab (two bottom layers fixed), adatom pushed
  0.6 Å towards the bridge site, mode along the push
- ``hcn``  HCN -> HNC with GFN2-xTB (tblite), H rotated 65° about C, mode tangential to the rotation

Each case runs from ``--starts`` starts: the base start plus a seeded Gaussian displacement
(``--sigma`` Å) of the free atoms; every method starts from the same structures and mode.
Success = converged and a confirmed first-order saddle: the central-difference Hessian of
the free coordinates has exactly one eigenvalue below -max(0.01, 0.02 |lowest|) eV/Å².
Force calls are true energy+force evaluations (Hessian and relaxation calls not counted).

``--prune CALLS`` also times a long OT-GP-dimer search (Al adatom from its minimum, fmax
1e-5 eV/Å) unpruned with a budget of CALLS, then pruned with exactly the force calls the
unpruned run used.

    python scripts/evaluate_saddle.py                      # everything, prints tables
    python scripts/evaluate_saddle.py --cases mb,al --starts 3 --json eval.json
"""

import argparse
import json
import statistics
import time

import numpy as np
from ase import Atoms
from ase.build import add_adsorbate, fcc100
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.optimize import BFGS

from mlmd.saddle import search
from mlmd.saddle.start import free_atoms
from mlmd.saddle.surfaces import (LEPS, MullerBrown, ase_dimer_search, leps_atoms, muller_brown_atoms,
                                       numerical_hessian)

METHODS = ("gp-dimer", "ot-gp-dimer", "dimer", "ase-dimer")


def _adatom(metal):
    slab = fcc100(metal, size=(3, 3, 3), vacuum=8.0)
    add_adsorbate(slab, metal, 1.7, "hollow")
    slab.set_constraint(FixAtoms(mask=slab.get_tags() >= 2))
    slab.calc = EMT()
    BFGS(slab, logfile=None).run(fmax=0.005)
    start = slab.copy()
    start.calc = None
    start.positions[-1, 0] += 0.6
    mode = np.zeros((len(start), 3))
    mode[-1, 0] = 1.0
    return start, EMT, mode


def _hcn():
    from mlmd.calculators import get_calculator

    angle = np.radians(65)
    start = Atoms("CNH", positions=[[0, 0, 0], [1.18, 0, 0], [1.15 * np.cos(angle), 1.15 * np.sin(angle), 0]])
    mode = np.zeros((3, 3))
    mode[2] = [np.sin(angle), -np.cos(angle), 0]
    return start, lambda: get_calculator("gfn2"), mode


def make_case(name):
    """(start atoms, calculator factory, mode [n_atoms, 3])."""
    if name == "mb":
        return muller_brown_atoms(-0.7, 0.9), MullerBrown, np.array([[1.0, -1.0, 0.0]])
    if name == "leps":
        return leps_atoms(1.05, 0.95), LEPS, np.array([[1.0, 0, 0], [-1.0, 0, 0], [1.0, 0, 0]])
    if name == "al":
        return _adatom("Al")
    if name == "cu":
        return _adatom("Cu")
    if name == "hcn":
        return _hcn()
    raise SystemExit(f"unknown case {name}")


def first_order(atoms, calculator, free):
    eigenvalues = np.linalg.eigvalsh(numerical_hessian(atoms, calculator, indices=free))
    lowest = eigenvalues[0]
    return bool(lowest < -1e-3 and eigenvalues[1] > -max(0.01, 0.02 * abs(lowest))), float(lowest)


def run_case(name, starts, sigma, fmax, max_calls):
    base, factory, mode = make_case(name)
    free = free_atoms(base)
    rows = []
    for seed in range(starts):
        start = base.copy()
        start.calc = None
        noise = np.random.default_rng(seed).normal(scale=sigma, size=(len(free), 3))
        if name == "mb":
            noise[:, 2] = 0.0
        start.positions[free] += noise
        for method in METHODS:
            began = time.perf_counter()
            if method == "ase-dimer":
                converged, calls, energy, final = ase_dimer_search(start, factory(), mode, fmax=fmax,
                                                                   max_steps=max_calls)
                gp_s = 0.0
            else:
                result = search(start, calculator=factory(), method=method, mode=mode, fmax=fmax,
                                max_calls=max_calls)
                converged, calls, energy, final, gp_s = (result.converged, result.force_calls, result.energy,
                                                         result.atoms, result.gp_s)
            wall = time.perf_counter() - began
            ok, lowest = first_order(final, factory(), free) if converged else (False, float("nan"))
            rows.append({"case": name, "seed": seed, "method": method, "converged": converged,
                         "success": bool(converged and ok), "force_calls": calls, "energy": energy,
                         "lowest_eigenvalue": lowest, "wall_s": wall, "gp_s": gp_s})
            print(f"{name:5s} seed {seed} {method:12s} conv {converged!s:5s} first-order {ok!s:5s} "
                  f"calls {calls:4d}  E {energy: .5f}  wall {wall:6.2f} s", flush=True)
    return rows


def table(rows):
    lines = ["| case | method | success | median calls | median E (eV) | median wall (s) | median GP (s) |",
             "|---|---|---|---|---|---|---|"]
    cases = list(dict.fromkeys(r["case"] for r in rows))
    for case in cases:
        for method in METHODS:
            sel = [r for r in rows if r["case"] == case and r["method"] == method]
            if not sel:
                continue
            ok = [r for r in sel if r["success"]]
            energy = statistics.median(r["energy"] for r in ok) if ok else float("nan")
            lines.append(f"| {case} | {method} | {len(ok)}/{len(sel)} | "
                         f"{statistics.median(r['force_calls'] for r in sel):.0f} | {energy:.4f} | "
                         f"{statistics.median(r['wall_s'] for r in sel):.2f} | "
                         f"{statistics.median(r['gp_s'] for r in sel):.2f} |")
    return "\n".join(lines)


def pruning(calls):
    """A long OT-GP-dimer search to a fixed budget, pruned and unpruned: wall and GP time."""
    start, factory, mode = make_case("al")
    start = start.copy()
    start.positions[-1, 0] -= 0.6  # from the minimum: a longer search
    out = {}
    budget = calls
    for prune in (False, True):  # the pruned run gets exactly the force calls the unpruned one used
        result = search(start, calculator=factory(), method="ot-gp-dimer", mode=mode, fmax=1e-5,
                        max_calls=budget, prune=prune, seed=1)
        budget = result.force_calls
        out["pruned" if prune else "unpruned"] = {"force_calls": result.force_calls, "wall_s": result.wall_s,
                                                  "gp_s": result.gp_s, "converged": result.converged,
                                                  "fmax": result.fmax}
        print(f"pruning={prune}: calls {result.force_calls}  wall {result.wall_s:.1f} s  GP {result.gp_s:.1f} s  "
              f"best fmax {result.fmax:.2e}", flush=True)
    out["speedup_wall"] = out["unpruned"]["wall_s"] / out["pruned"]["wall_s"]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="mb,leps,al,cu,hcn")
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--sigma", type=float, default=0.05, help="start displacement, Å")
    parser.add_argument("--fmax", type=float, default=0.01)
    parser.add_argument("--max-calls", type=int, default=500)
    parser.add_argument("--prune", type=int, default=0, metavar="CALLS",
                        help="also time a pruned vs unpruned search of CALLS force calls")
    parser.add_argument("--json", help="write all rows here")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    rows = []
    for name in args.cases.split(","):
        rows += run_case(name, args.starts, args.sigma, args.fmax, args.max_calls)
    print()
    print(table(rows))
    report = {"rows": rows}
    if args.prune:
        report["pruning"] = pruning(args.prune)
    if args.json:
        from mlmd.io import atomic_write

        with atomic_write(args.json) as stream:
            json.dump(report, stream, indent=1)


if __name__ == "__main__":
    main()

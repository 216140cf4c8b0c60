"""The GP's own cost per force call in the GP-dimer and OT-GP-dimer, against the plain dimer.

Cases (EMT, so a force call costs milliseconds and the GP's own cost shows):

- ``pt-adatom``    Pt adatom on a 3x3x3 Pt(111) slab (top two layers and the adatom free:
  57 coordinates), adatom in the fcc hollow pushed 0.6 Å towards the bridge, mode along the push
- ``pt-heptamer``  Pt heptamer island on a 5x5x3 Pt(111) slab (top layer and the island free:
  96 coordinates), one edge atom pushed 0.6 Å outwards, mode along the push

Every method starts from the same structures and mode: the base start, then seeded Gaussian
displacements (``--sigma`` Å) of the free atoms. Per search it prints force calls (the search's,
verification apart), the status (``verified`` = converged and the checks of mlmd.saddle.verify
passed), wall and process CPU time, the CPU time inside the force calls (the calculator is
wrapped) and the GP's own CPU time per force call = (process CPU - CPU in force calls) / calls.
``--policy old`` reproduces the GP policy before issue 17 (refit with up to 60 L-BFGS iterations
at every outer iteration, full refactorisation, every free atom in the kernel); ``new`` uses
the defaults of SaddleSettings.

    OMP_NUM_THREADS=1 python scripts/benchmark_gp_overhead.py --cases pt-adatom --starts 3
    OMP_NUM_THREADS=1 python scripts/benchmark_gp_overhead.py --policy old,new --json gp_cost.json
    python scripts/benchmark_gp_overhead.py --devices cpu,cuda --methods gp-dimer --cases pt-heptamer

``--devices``: where the GP and its inner dimer loop run (the force calls stay EMT on the CPU); on a GPU the
"own CPU" figure counts the host's share only, so compare wall times there.

The break-even force-call cost t* (ms) above which a GP method beats the dimer in wall time:
calls_gp t + overhead_gp = calls_dimer t + overhead_dimer, with medians over the searches.
"""

import argparse
import json
import statistics
import time

import numpy as np
from ase.build import add_adsorbate, fcc111
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.optimize import BFGS

from mlmd.io import atomic_write
from mlmd.saddle import search

#: GP settings of each policy ("new": the defaults)
POLICIES = {
    "old": {"gp_refit_every": 1, "gp_refit_iterations": 60, "gp_refit_error_factor": 0.0,
            "gp_incremental": False},
    "new": {},
}


class TimedEMT(EMT):
    """EMT that adds the process CPU time of each calculation to ``cpu_s``."""

    cpu_s = 0.0

    def calculate(self, *args, **kwargs):
        start = time.process_time()
        try:
            super().calculate(*args, **kwargs)
        finally:
            TimedEMT.cpu_s += time.process_time() - start


def _relaxed(slab):
    slab.calc = EMT()
    BFGS(slab, logfile=None).run(fmax=0.005)
    start = slab.copy()
    start.calc = None
    return start


def pt_adatom():
    slab = fcc111("Pt", size=(3, 3, 3), vacuum=8.0)
    add_adsorbate(slab, "Pt", 2.0, "fcc")
    slab.set_constraint(FixAtoms(mask=slab.get_tags() == 3))  # bottom layer fixed
    start = _relaxed(slab)
    a = slab.cell[0, 0] / 3  # nearest-neighbour distance
    push = np.array([0.5 * a, np.sqrt(3) / 6 * a, 0.0])  # fcc hollow -> bridge direction
    push /= np.linalg.norm(push)
    start.positions[-1] += 0.6 * push
    mode = np.zeros((len(start), 3))
    mode[-1] = push
    return start, mode


def pt_heptamer():
    slab = fcc111("Pt", size=(5, 5, 3), vacuum=8.0)
    a = slab.cell[0, 0] / 5
    centre = slab.positions[slab.get_tags() == 1].mean(0)
    top = slab.positions[slab.get_tags() == 1]
    site = top[np.argmin(np.linalg.norm(top[:, :2] - centre[:2], axis=1))]
    hollow = np.array([0.5 * a, np.sqrt(3) / 6 * a, 0.0])
    offsets = [np.zeros(3)] + [a * np.array([np.cos(t), np.sin(t), 0.0]) for t in np.arange(6) * np.pi / 3]
    for offset in offsets:
        p = site + hollow + offset
        add_adsorbate(slab, "Pt", 2.0, position=(p[0], p[1]))
    slab.set_constraint(FixAtoms(mask=slab.get_tags() >= 2))  # two bottom layers fixed
    start = _relaxed(slab)
    edge = len(start) - 6  # island atom at offset angle 0
    push = np.array([1.0, 0.0, 0.0])
    start.positions[edge] += 0.6 * push
    mode = np.zeros((len(start), 3))
    mode[edge] = push
    return start, mode


CASES = {"pt-adatom": pt_adatom, "pt-heptamer": pt_heptamer}


def run_one(start, mode, method, seed, sigma, policy, max_calls, fmax, device="cpu"):
    TimedEMT.cpu_s = 0.0
    wall, cpu = time.perf_counter(), time.process_time()
    result = search(start, calculator=TimedEMT(), method=method, mode=mode, seed=seed,
                    displace_A=sigma if seed > 0 else 0.0, fmax=fmax, max_calls=max_calls, device=device,
                    **(POLICIES[policy] if method != "dimer" else {}))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    calls = result.force_calls
    all_calls = calls + result.verify_calls
    own = cpu - TimedEMT.cpu_s  # everything but the force calls (verification's few ms included)
    return {"method": method, "policy": policy if method != "dimer" else "-", "device": device, "seed": seed,
            "calls": calls,
            "status": result.status, "wall_s": wall, "cpu_s": cpu, "force_cpu_s": TimedEMT.cpu_s,
            "force_ms_per_call": 1e3 * TimedEMT.cpu_s / max(all_calls, 1),
            "own_cpu_per_call_s": own / max(calls, 1), "gp_s": result.gp_s}


def median(rows, key):
    return statistics.median(r[key] for r in rows) if rows else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="pt-adatom,pt-heptamer")
    parser.add_argument("--methods", default="gp-dimer,ot-gp-dimer,dimer")
    parser.add_argument("--policy", default="new", help="comma-separated: old, new")
    parser.add_argument("--starts", type=int, default=2)
    parser.add_argument("--sigma", type=float, default=0.05)
    parser.add_argument("--max-calls", type=int, default=200)
    parser.add_argument("--fmax", type=float, default=0.01)
    parser.add_argument("--devices", default="cpu", help="comma-separated torch devices of the GP: cpu, cuda")
    parser.add_argument("--json")
    args = parser.parse_args()
    # one small search first, so that no row pays for importing scipy, torch's optimizers and the like
    from mlmd.saddle.surfaces import MullerBrown, muller_brown_atoms

    search(muller_brown_atoms(-0.7, 0.9), calculator=MullerBrown(), method="ot-gp-dimer",
           mode=np.array([[1.0, -1.0, 0.0]]), device="cpu")
    rows = []
    for case in args.cases.split(","):
        start, mode = CASES[case]()
        for method in args.methods.split(","):
            for policy in (args.policy.split(",") if method != "dimer" else ["-"]):
                for seed, device in [(seed, device) for seed in range(args.starts)
                                     for device in args.devices.split(",")]:
                    row = run_one(start, mode, method, seed, args.sigma, policy if policy != "-" else "new",
                                  args.max_calls, args.fmax, device)
                    row["case"] = case
                    rows.append(row)
                    print(f"{case:12s} {method:12s} {row['policy']:4s} {device:5s} seed {seed}  "
                          f"calls {row['calls']:4d}  "
                          f"{row['status']:14s} wall {row['wall_s']:7.2f} s  cpu {row['cpu_s']:7.2f} s  "
                          f"force {row['force_ms_per_call']:5.2f} ms/call  GP own {row['own_cpu_per_call_s']:.3f}"
                          f" CPU-s/call", flush=True)
    print("\nmedians per case, method, policy and device")
    print(f"{'case':12s} {'method':12s} {'pol':4s} {'dev':5s} {'ok':>5s} {'calls':>6s} {'wall s':>8s} "
          f"{'own s/call':>10s}")
    groups = {}
    for r in rows:
        groups.setdefault((r["case"], r["method"], r["policy"], r["device"]), []).append(r)
    for (case, method, policy, device), group in groups.items():
        ok = sum(r["status"] == "verified" for r in group)
        print(f"{case:12s} {method:12s} {policy:4s} {device:5s} {ok:2d}/{len(group):<2d} {median(group, 'calls'):6.1f} "
              f"{median(group, 'wall_s'):8.2f} {median(group, 'own_cpu_per_call_s'):10.4f}")
    print("\nbreak-even force-call cost t* (GP method faster than the dimer in wall time when a call costs more)")
    for (case, method, policy, device), group in groups.items():
        dimer = groups.get((case, "dimer", "-", device))
        if method == "dimer" or not dimer:
            continue
        saved = median(dimer, "calls") - median(group, "calls")
        # overhead = process CPU outside the force calls per search (CPU, not wall: robust to a busy machine)
        over_gp = median(group, "own_cpu_per_call_s") * median(group, "calls")
        over_dimer = median(dimer, "own_cpu_per_call_s") * median(dimer, "calls")
        text = (f"{1e3 * (over_gp - over_dimer) / saved:9.1f} ms per call" if saved > 0
                else "never (saves no calls)")
        print(f"{case:12s} {method:12s} {policy:4s} {device:5s} saves {saved:5.1f} calls, overhead {over_gp:7.2f} s vs "
              f"{over_dimer:5.2f} s: t* = {text}")
    if args.json:
        with atomic_write(args.json) as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()

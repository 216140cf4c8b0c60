"""Evaluate the saddle searches: every method in ``mlmd.saddle.METHODS``, Sella and ASE's dimer, on the
reactions of ``scripts/saddle_cases.py`` (5 molecular with GFN2-xTB, 3 surface with EMT; ``mb`` and ``leps``
are quick analytic checks).

Every method starts from the same structures along the same mode: the relaxed reactant plus a seeded
Gaussian displacement (``--sigma`` Å, seed 0 .. ``--starts``-1) of the free atoms (on slabs only those
within ``saddle_cases.DISPLACE_RADIUS_A`` of the moving atoms), mode = the case's guess
(unit product - reactant on the moving atoms, or a chemical guess). Same ``--fmax`` and ``--max-calls``
for all. Sella: ``order=1``, internal coordinates for molecules, Cartesian for slabs, the mode given as its
initial eigenvector guess; ASE's dimer: ``mlmd.saddle.surfaces.ase_dimer_search``. Force calls are true
energy+force evaluations counted by a wrapper calculator (ours: the search's calls; the verification's
calls are reported apart); a search is stopped after ``--max-wall`` s.

Judge (``saddle_cases.judge``): *intended* = converged, the central-difference Hessian of the free
coordinates (rigid motions projected out for molecules) has exactly one eigenvalue below -0.01 eV/Å²,
energy within 0.05 eV and RMSD within 0.15 Å of the reference saddle (molecules: after rotation/translation
and the best same-element assignment; slabs: plain RMSD of the free atoms); *wrong-saddle* = converged but
not that; *not-converged*. The reference saddle of each case is a climbing-image NEB (7 images, IDPP or a
rotation path, FIRE to 0.03 eV/Å), cached in ``OUT/references/``; for ours, whether the search's own
verification flagged a wrong saddle (status ``unverified``) is recorded.

    OMP_NUM_THREADS=1 nice -n 5 python scripts/evaluate_saddle.py --out out        # everything
    python scripts/evaluate_saddle.py --cases mb,hcn --methods p-rfo,sella --starts 1
    python scripts/evaluate_saddle.py --out out --resume     # after a crash: reruns only what is missing
                                                             # (a search that killed the process is not rerun)
"""

import argparse
import os
import signal
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import json  # noqa: E402

import numpy as np  # noqa: E402
from ase.calculators.calculator import CalculationFailed, Calculator, all_changes  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from saddle_cases import CASES, build_case, judge, reference_saddle  # noqa: E402

from mlmd.saddle import METHODS, search  # noqa: E402
from mlmd.saddle.surfaces import ase_dimer_search  # noqa: E402

DEFAULT_CASES = ("hcn", "ethanol-torsion", "malonaldehyde", "vinyl-alcohol", "cyclobutene", "pt111-hop",
                 "cu100-exchange", "cu100-vacancy")
OTHER_METHODS = ("sella", "ase-dimer")


class BudgetSpent(Exception):
    """A search used its budget of force calls."""


class SearchTimeout(Exception):
    """A search ran past --max-wall."""


class Counter(Calculator):
    """Counts energy+force evaluations of ``inner`` in ``calls``; raises BudgetSpent past ``limit`` (if set)."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, inner, limit=None):
        super().__init__()
        self.inner, self.limit, self.calls = inner, limit, 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self.limit is not None and self.calls >= self.limit:
            raise BudgetSpent
        self.calls += 1
        if not np.all(np.isfinite(self.atoms.positions)):  # tblite aborts the whole process on NaN positions
            raise CalculationFailed(f"non-finite positions given to the calculator (call {self.calls})")
        work = self.atoms.copy()
        work.calc = self.inner
        energy = work.get_potential_energy()
        self.results = {"energy": energy, "free_energy": energy, "forces": work.get_forces(apply_constraint=False)}


def run_ours(method, start, case, fmax, max_calls, relax=False):
    counter = Counter(case.factory())
    result = search(start, calculator=counter, method=method, mode=case.mode, fmax=fmax, max_calls=max_calls,
                    device="cpu", relax=relax, product=case.product if relax else None)
    return {"converged": bool(result.converged), "atoms": result.atoms, "force_calls": int(result.force_calls),
            "verify_calls": int(result.verify_calls), "relax_calls": int(result.relax_calls),
            "gp_s": float(result.gp_s), "status": result.status, "verified": result.verified,
            "warnings": result.warnings, "message": result.message}


def sella_mode(optimizer, mode):
    """The Cartesian mode [n, 3] as Sella's initial eigenvector guess in its free (internal) coordinates."""
    pes = optimizer.pes
    vector = np.asarray(mode, dtype=float).ravel()
    if getattr(pes, "int", None) is not None:  # internal coordinates: dq = B dx, dummy atoms padded with zeros
        jacobian = pes.int.jacobian()
        vector = jacobian @ np.r_[vector, np.zeros(jacobian.shape[1] - len(vector))]
    return vector @ pes.get_Ufree()


def run_sella(start, case, fmax, max_calls):
    from sella import Sella

    if len(start) < 2:  # Sella's rotation constraints assert at least two atoms
        return {"converged": False, "atoms": start, "force_calls": 0, "error": "Sella needs at least two atoms"}
    work = start.copy()
    counter = Counter(case.factory(), limit=max_calls)
    work.calc = counter
    optimizer = Sella(work, order=1, internal=case.kind == "molecule", trajectory=None, logfile=None)
    optimizer.pes.v0 = sella_mode(optimizer, case.mode)
    converged, error = False, ""
    try:
        converged = bool(optimizer.run(fmax=fmax, steps=max_calls))
    except BudgetSpent:
        pass
    except CalculationFailed as exc:  # Sella has no recovery from a failed evaluation (SCF): recorded, not hidden
        error = f"CalculationFailed: {exc}"
    final = start.copy()
    final.positions = work.positions
    return {"converged": converged, "atoms": final, "force_calls": counter.calls, "error": error}


def run_ase_dimer(start, case, fmax, max_calls):
    counter = Counter(case.factory(), limit=max_calls)
    error = ""
    try:
        converged, _, _, final = ase_dimer_search(start, counter, case.mode, fmax=fmax, max_steps=max_calls)
    except BudgetSpent:
        converged, final = False, start
    except CalculationFailed as exc:  # ASE's dimer stops at a failed evaluation (SCF): recorded, not hidden
        converged, final, error = False, start, f"CalculationFailed: {exc}"
    return {"converged": bool(converged), "atoms": final, "force_calls": counter.calls, "error": error}


RUNNERS = {"sella": run_sella, "ase-dimer": run_ase_dimer}


def timeout(signum, frame):
    raise SearchTimeout


def one_search(method, start, case, args):
    signal.signal(signal.SIGALRM, timeout)
    signal.setitimer(signal.ITIMER_REAL, args.max_wall)
    began = time.perf_counter()
    try:
        if method in RUNNERS:
            out = RUNNERS[method](start, case, args.fmax, args.max_calls)
        else:
            out = run_ours(method, start, case, args.fmax, args.max_calls, args.relax)
        out["timed_out"] = False
    except SearchTimeout:
        out = {"converged": False, "atoms": start, "force_calls": -1, "timed_out": True}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    out["wall_s"] = time.perf_counter() - began
    return out


def energy_of(atoms, case) -> float:
    work = atoms.copy()
    work.calc = case.factory()
    return float(work.get_potential_energy())


def run_case(name, methods, args, folder, done):
    """Rows of case ``name``; searches already in ``done`` (case, seed, method) -> row are not rerun; each new row
    is appended to ``folder/rows.jsonl`` as soon as it is judged."""
    began = time.perf_counter()
    case = build_case(name)
    reference = reference_saddle(case, folder / "references")
    print(f"== {name}: {case.summary}; {len(case.free)} free atoms; reference {reference['source']} "
          f"E-E_reactant {reference['barrier']:.3f} eV, Hessian index {reference['hessian_index']} "
          f"(set-up {time.perf_counter() - began:.0f} s)", flush=True)
    rows = []
    displaced = case.displaced
    for seed in range(args.starts):
        start = case.reactant.copy()
        noise = np.random.default_rng(seed).normal(scale=args.sigma, size=(len(displaced), 3))
        if case.kind == "analytic" and name == "mb":
            noise[:, 2] = 0.0
        start.positions[displaced] += noise
        lift = energy_of(start, case) - energy_of(case.reactant, case)
        print(f"   seed {seed}: {len(displaced)} atoms displaced, start {lift:.3f} eV above the reactant", flush=True)
        for method in methods:
            if (name, seed, method) in done:
                rows.append(done[(name, seed, method)])
                continue
            # a search that kills the process is skipped on --resume
            with open(folder / "started.jsonl", "a") as stream:
                stream.write(json.dumps({"case": name, "seed": seed, "method": method}) + "\n")
            out = one_search(method, start, case, args)
            verdict = judge(out.pop("atoms"), out["converged"], case, reference)
            row = {"case": name, "seed": seed, "method": method, "start_above_reactant_eV": lift, **out, **verdict}
            rows.append(row)
            with open(folder / "rows.jsonl", "a") as stream:  # append-only log, so a crash loses one search at most
                stream.write(json.dumps(row, default=float) + "\n")
            flag = f" status {row['status']}" if "status" in row else ""
            flag += f" ({row['error'][:60]})" if row.get("error") else ""
            print(f"{name:15s} seed {seed} {method:12s} {verdict['outcome']:13s} calls {out['force_calls']:4d} "
                  f"wall {out['wall_s']:7.2f} s  dE {verdict['energy_minus_reference']: .3f} eV  "
                  f"rmsd {verdict['rmsd_to_reference']:.3f} Å  index {verdict['hessian_index']}{flag}", flush=True)
    return rows, reference


def crashed_searches(folder, done) -> list:
    """(case, seed, method) of the searches started but never judged: the process died during them (a
    calculator's native abort, say)."""
    path = folder / "started.jsonl"
    if not path.exists():
        return []
    started = [json.loads(line) for line in path.read_text().splitlines()]
    keys = [(s["case"], s["seed"], s["method"]) for s in started]
    return [key for key in dict.fromkeys(keys) if key not in done]


def median(values):
    values = list(values)
    return statistics.median(values) if values else float("nan")


def table(rows, methods):
    lines = ["| case | method | intended | wrong (same-E index-1) | not conv. | median calls | median wall (s) | median GP (s) | "
             "wrong reported converged (flagged by our verification) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for case in dict.fromkeys(r["case"] for r in rows):
        for method in methods:
            sel = [r for r in rows if r["case"] == case and r["method"] == method]
            if not sel:
                continue
            count = {k: sum(r["outcome"] == k for r in sel) for k in ("intended", "wrong-saddle", "not-converged")}
            wrong = [r for r in sel if r["outcome"] == "wrong-saddle"]
            same = sum(r["same_energy_saddle"] for r in wrong)
            flagged = sum(r.get("status") == "unverified" for r in wrong)
            note = f"{len(wrong)} ({flagged} flagged)" if "status" in sel[0] else f"{len(wrong)}"
            calls = [r["force_calls"] for r in sel if r["force_calls"] >= 0]
            lines.append(f"| {case} | {method} | {count['intended']}/{len(sel)} | {count['wrong-saddle']} ({same}) | "
                         f"{count['not-converged']} | {median(calls):.0f} | {median(r['wall_s'] for r in sel):.2f} | "
                         f"{median(r.get('gp_s', 0.0) for r in sel):.2f} | {note} |")
    return "\n".join(lines)


def totals(rows, methods):
    lines = ["| method | intended | wrong saddles reported converged | of those flagged by our verification | "
             "false 'verified' | intended but flagged (false alarm) | timed out |", "|---|---|---|---|---|---|---|"]
    for method in methods:
        sel = [r for r in rows if r["method"] == method]
        wrong = [r for r in sel if r["outcome"] == "wrong-saddle"]
        ours = "status" in sel[0] if sel else False
        flagged = sum(r.get("status") == "unverified" for r in wrong)
        alarms = sum(r["success"] and r.get("status") == "unverified" for r in sel)
        lines.append(f"| {method} | {sum(r['success'] for r in sel)}/{len(sel)} | {len(wrong)} | "
                     f"{flagged if ours else '-'} | {len(wrong) - flagged if ours else '-'} | "
                     f"{alarms if ours else '-'} | {sum(r['timed_out'] for r in sel)} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--methods", default=",".join(list(METHODS) + list(OTHER_METHODS)))
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--sigma", type=float, default=0.05, help="start displacement, Å")
    parser.add_argument("--fmax", type=float, default=0.01, help="eV/Å, every method")
    parser.add_argument("--max-calls", type=int, default=300)
    parser.add_argument("--max-wall", type=float, default=120.0, help="s per search")
    parser.add_argument("--relax", action="store_true",
                        help="our methods relax both sides of a converged saddle and are given the case's "
                        "product, so that their verification also checks that it connects to the start's "
                        "minimum and to the product (relax_calls reported apart; the wall time includes them)")
    parser.add_argument("--out", default="out", help="folder for the references, table and JSON")
    parser.add_argument("--resume", action="store_true",
                        help="keep the searches already in OUT/rows.jsonl (same settings assumed)")
    parser.add_argument("--report-only", action="store_true", help="print the tables of OUT/rows.jsonl and stop")
    parser.add_argument("--json", help="write all rows here (default OUT/evaluate_saddle.json)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from mlmd.io import atomic_write

    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS and m not in RUNNERS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}: use {', '.join(list(METHODS) + list(RUNNERS))}")
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    if args.report_only:  # tables from OUT/rows.jsonl as they stand (e.g. of a run still going)
        rows = [json.loads(line) for line in (folder / "rows.jsonl").read_text().splitlines()]
        print(table(rows, methods) + "\n\n" + totals(rows, methods))
        return
    rows, references, done = [], {}, {}
    if args.resume and (folder / "rows.jsonl").exists():
        for line in (folder / "rows.jsonl").read_text().splitlines():
            row = json.loads(line)
            done[(row["case"], row["seed"], row["method"])] = row
        for key in crashed_searches(folder, done):
            row = {"case": key[0], "seed": key[1], "method": key[2], "converged": False, "force_calls": -1,
                   "timed_out": False, "wall_s": float("nan"), "error": "the process died during this search",
                   "outcome": "not-converged", "success": False, "same_energy_saddle": False,
                   "hessian_index": None, "energy_minus_reference": float("nan"),
                   "rmsd_to_reference": float("nan")}
            done[key] = row
            with open(folder / "rows.jsonl", "a") as stream:
                stream.write(json.dumps(row, default=float) + "\n")
            print(f"{key[0]} seed {key[1]} {key[2]}: the process died during this search last time; "
                  "recorded as not converged", flush=True)
    else:
        for log in ("rows.jsonl", "started.jsonl"):
            if (folder / log).exists():
                (folder / log).unlink()
    began = time.perf_counter()
    for name in args.cases.split(","):
        case_rows, references[name] = run_case(name, methods, args, folder, done)
        rows += case_rows
    text = table(rows, methods) + "\n\n" + totals(rows, methods)
    text += (f"\n\n{len(rows)} searches in {time.perf_counter() - began:.0f} s; fmax {args.fmax} eV/Å, "
             f"max calls {args.max_calls}, {args.starts} starts, sigma {args.sigma} Å\n")
    print()
    print(text)
    with atomic_write(folder / "evaluate_saddle.md") as stream:
        stream.write(text)
    settings = {k: v for k, v in vars(args).items()}
    report = {"settings": settings, "rows": rows,
              "references": {k: {key: v[key] for key in ("energy", "barrier", "hessian_index", "lowest_eigenvalue",
                                                         "source")} for k, v in references.items()}}
    with atomic_write(args.json or folder / "evaluate_saddle.json") as stream:
        json.dump(report, stream, indent=1, default=float)


if __name__ == "__main__":
    main()

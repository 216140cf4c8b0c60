"""``mlmd saddle``: saddle-point searches from the command line.

One START runs in this process and prints a progress line per outer
iteration; several STARTs run as a batch on local processes (``--workers``)
or a Dask cluster (``--scheduler``) and write one summary table. Exit status
(:data:`mlmd.saddle.search.EXIT_STATUS`): 0 converged and verified (or
converged with ``--no-verify``), 1 not converged (the best structure is still
written), 2 bad input, 3 converged but the saddle is NOT verified (a check of
:mod:`mlmd.saddle.verify` failed; the warnings name it). A batch exits with
the worst of its searches.
"""

import sys
import time
from pathlib import Path

import numpy as np

from ..cli import Command
from ..errors import MLMDError


EPILOG = """exit status: 0 converged and verified (or converged with --no-verify), 1 not converged within
the budget (the best structure is still written), 2 bad input, 3 converged but the saddle is NOT verified
(a verification check failed: wrong Hessian index, fragmentation, a stretched bond, an energy above
--max-barrier, a move beyond --max-displacement, or a final mode far from the given one); warnings name
each failed check on stderr."""


def _add_arguments(parser) -> None:
    import argparse

    from .settings import COORDINATE_CHOICES, SaddleSettings

    defaults = SaddleSettings()
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("start", nargs="+", help="starting structure file(s) (any format ASE reads)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="an exported mlmd model (MODEL.pt)")
    source.add_argument("--calculator", help="emt, lj, morse, gfn2 or any calculator registered with ASE")
    from .methods import AUTO, METHODS

    parser.add_argument("--method", default=AUTO, choices=[AUTO, *METHODS],
                        help="search method (default auto: gp-p-rfo for a free molecule, else p-rfo): " + "; ".join(
                            f"{name}: {method.summary}" for name, method in METHODS.items() if method.summary))
    parser.add_argument("--mode", default="random",
                        help="initial mode: FILE (N x 3, numpy.loadtxt), 'random' or 'displacement' (default random)")
    parser.add_argument("--displace", type=float, default=0.0, metavar="SIGMA_A",
                        help="seeded Gaussian displacement of the free atoms, standard deviation in Å (default 0)")
    parser.add_argument("--displace-atoms", help="comma-separated atom indices to displace (default all free atoms)")
    parser.add_argument("--fix", help="comma-separated indices of atoms to hold fixed, besides the file's FixAtoms")
    parser.add_argument("--fmax", type=float, default=0.01, help="converged when max per-atom |F| < FMAX eV/Å "
                        "(default 0.01)")
    parser.add_argument("--max-calls", type=int, default=defaults.max_calls,
                        help=f"budget of true force calls of the search (default {defaults.max_calls}; the "
                        "verification's calls come on top)")
    parser.add_argument("--max-failures", type=int, default=defaults.max_failures,
                        help="stop after this many failed evaluations (SCF) in a row; each one sends the search "
                        f"back to its last good point with a shorter step (default {defaults.max_failures})")
    parser.add_argument("--max-step", type=float, help="largest translation step in Å (default 0.1 GP, 0.2 dimer)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the mode and displacement (default 0)")
    parser.add_argument("--relax", action="store_true", help="relax down both sides to the minima; report the barrier")
    parser.add_argument("--product", metavar="FILE",
                        help="the intended end state (same atoms, same order; implies --relax): a saddle whose "
                        "sides do not relax to the start and to this product is reported NOT verified")
    parser.add_argument("--device", default="auto", help="torch device for the GP and model: auto, cpu, cuda")
    parser.add_argument("--initial-rotations", type=int, help="GP rotations checked by true image evaluations before "
                        "the first step (default 5 for a random or displacement mode, 0 for a mode file)")
    parser.add_argument("--coordinates", default=defaults.coordinates, choices=COORDINATE_CHOICES,
                        help="p-rfo, gp-p-rfo: internal (molecules only), cartesian, or auto: internal for a "
                        "molecule with every atom free and no periodic cell, else cartesian (default auto)")
    parser.add_argument("--no-prune", action="store_true", help="ot-gp-dimer: fit hyperparameters on all data")
    cost = parser.add_argument_group("cost of the GP (gp-dimer, ot-gp-dimer)")
    cost.add_argument("--refit-every", type=int, default=defaults.gp_refit_every, metavar="K",
                      help="refit the GP hyperparameters every K new points (1: every outer iteration; default "
                      f"{defaults.gp_refit_every})")
    cost.add_argument("--refit-iterations", type=int, default=defaults.gp_refit_iterations, metavar="N",
                      help="L-BFGS iterations of a warm-started refit (the first fit takes 60; default "
                      f"{defaults.gp_refit_iterations})")
    cost.add_argument("--refit-error-factor", type=float, default=defaults.gp_refit_error_factor, metavar="F",
                      help="refit sooner when the GP's energy error at the newest point exceeds F x the median "
                      f"earlier error (0: never; default {defaults.gp_refit_error_factor})")
    cost.add_argument("--no-incremental", action="store_true",
                      help="refactorise the GP's covariance for every new point instead of appending block rows")
    verify = parser.add_argument_group("verification of a converged saddle (exit status 3 when a check fails)")
    verify.add_argument("--no-verify", action="store_true", help="skip the verification")
    verify.add_argument("--verify-calls", type=int, default=defaults.verify_max_calls, metavar="N",
                        help="most true calls for the Hessian-index check (default "
                        f"{defaults.verify_max_calls}; a full Hessian when the free directions are fewer)")
    verify.add_argument("--curvature-tolerance", type=float, default=defaults.curvature_tolerance,
                        metavar="EV_A2", help="curvatures within +-this count as zero (default "
                        f"{defaults.curvature_tolerance} eV/Å²)")
    verify.add_argument("--bond-factor", type=float, default=defaults.bond_factor,
                        help=f"bonded: closer than this x the covalent bond length (default {defaults.bond_factor})")
    verify.add_argument("--max-bond-stretch", type=float, default=defaults.max_bond_stretch,
                        help="each atom bonded at the start keeps a neighbour within this x the covalent bond "
                        f"length (default {defaults.max_bond_stretch})")
    verify.add_argument("--max-barrier", type=float, default=defaults.max_barrier_eV, metavar="EV",
                        help=f"largest plausible energy above the start (default {defaults.max_barrier_eV} eV)")
    verify.add_argument("--max-displacement", type=float, default=defaults.max_displacement_A, metavar="A",
                        help=f"largest atom displacement from the start (default {defaults.max_displacement_A} Å)")
    verify.add_argument("--connect-tolerance", type=float, default=defaults.connect_tolerance_A, metavar="A",
                        help="with --relax: one side of the saddle must relax to within this of the start's "
                        f"minimum (largest atom displacement, default {defaults.connect_tolerance_A} Å)")
    verify.add_argument("--min-mode-overlap", type=float, default=defaults.min_mode_overlap,
                        help="smallest |cos| between the final mode and a given --mode FILE before a warning "
                        f"(default {defaults.min_mode_overlap})")
    parser.add_argument("-o", "--output", help="saddle structure file (default START_saddle.xyz)")
    parser.add_argument("--mode-output", help="mode file (default START_saddle_mode.txt)")
    parser.add_argument("--json", help="JSON summary file")
    parser.add_argument("--plot", help="PNG of energy and gradient against force calls (default START_saddle.png)")
    parser.add_argument("--table", help="batch: CSV summary table (default saddle_summary.csv)")
    parser.add_argument("--workers", type=int, default=1, help="batch: local processes (default 1)")
    parser.add_argument("--scheduler", help="batch: Dask scheduler address, e.g. tcp://host:8786")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--frame", metavar="N", type=int,
                        help="frame of a START file with several frames (-1: the last); required for such files")
    from ..cli import add_overwrite_option, add_threads_option

    add_overwrite_option(parser)
    add_threads_option(parser)


def _indices(text, option):
    if not text:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise MLMDError(f"{option} takes comma-separated atom indices, e.g. 0,3,7; got {text!r}") from None


def _load_mode(text):
    if text in ("random", "displacement"):
        return text
    from ..io import require_file

    path = require_file(text, "mode file")
    try:
        return np.atleast_2d(np.loadtxt(path))
    except ValueError as exc:
        raise MLMDError(f"could not read mode file {path}: {exc}; give N rows of 3 numbers (numpy.loadtxt)") from exc


def _load_product(args):
    """The --product file's positions, checked against the (first) start: same elements in the same order."""
    if args.product is None:
        return None
    from ..io import read_frames, read_structure

    frames = read_frames(args.product, index=":")
    if len(frames) != 1:
        raise MLMDError(f"product file {args.product} holds {len(frames)} frames; give a file with the product "
                        "structure alone")
    product = read_structure(args.product, use_velocities=False)
    start = read_structure(args.start[0], args.frame, use_velocities=False)
    if list(product.numbers) != list(start.numbers):
        raise MLMDError(f"product {args.product} does not hold the start's atoms in the start's order "
                        f"({product.get_chemical_formula()} against {start.get_chemical_formula()}); write the "
                        "product with the same atoms, same order")
    return product.positions


def _settings(args):
    """The search settings from the options, validated before any work."""
    from .settings import SaddleSettings

    if args.model is None and args.calculator is None:
        raise MLMDError("no potential: give --model MODEL.pt or --calculator NAME (emt, lj, morse, gfn2, ...)")
    if args.calculator is not None:
        from ..calculators import get_calculator

        get_calculator(args.calculator)  # an unknown name fails here, before any work
    settings = SaddleSettings(method=args.method, mode=_load_mode(args.mode), fmax=args.fmax,
                              max_calls=args.max_calls, fixed=_indices(args.fix, "--fix"), displace_A=args.displace,
                              displace_atoms=_indices(args.displace_atoms, "--displace-atoms"), seed=args.seed,
                              max_step_A=args.max_step, relax=args.relax, product=_load_product(args),
                              device=args.device,
                              initial_rotations=args.initial_rotations, prune=False if args.no_prune else None,
                              max_failures=args.max_failures, verify=not args.no_verify,
                              verify_max_calls=args.verify_calls, curvature_tolerance=args.curvature_tolerance,
                              bond_factor=args.bond_factor, max_bond_stretch=args.max_bond_stretch,
                              max_barrier_eV=args.max_barrier, max_displacement_A=args.max_displacement,
                              min_mode_overlap=args.min_mode_overlap, connect_tolerance_A=args.connect_tolerance,
                              gp_refit_every=args.refit_every,
                              gp_refit_iterations=args.refit_iterations,
                              gp_refit_error_factor=args.refit_error_factor, gp_incremental=not args.no_incremental,
                              coordinates=args.coordinates)
    return settings.validate()


def _run(args) -> int:
    from ..model import check_device, torch_threads

    check_device(args.device, auto=True)
    settings = _settings(args)
    with torch_threads(args.threads):
        try:
            return _search(args, settings)
        except (MLMDError, KeyboardInterrupt):
            raise
        except Exception as exc:  # whatever a user's calculator or model raises, at its first call or later
            from ..dynamics.engine import one_line

            raise MLMDError(f"the search stopped: the potential failed ({one_line(exc)}); check that it supports "
                            "these elements and this structure") from exc


def _search(args, settings) -> int:
    from ..io import check_destination, read_structure
    from . import report
    from .batch import run_batch, write_table
    from .search import EXIT_STATUS, search_with_settings

    if len(args.start) > 1:
        if args.output or args.json or args.mode_output or args.plot:
            raise MLMDError("with several STARTs the outputs are named START_saddle.*; use --table for the summary")
        tasks = []
        for start in args.start:
            stem = Path(start).with_suffix("")
            tasks.append({"start": start, "calculator": args.calculator, "model": args.model, "settings": settings,
                          "structure": f"{stem}_saddle.xyz", "mode": f"{stem}_saddle_mode.txt",
                          "plot": f"{stem}_saddle.png", "json": f"{stem}_saddle.json"})
            for kind in ("structure", "mode", "plot", "json"):
                check_destination(tasks[-1][kind], f"saddle {kind} file", args.overwrite)
        check_destination(args.table or "saddle_summary.csv", "summary table", args.overwrite)

        def done(row):
            if not args.quiet:
                print(f"{row['start']}: {row.get('status', 'error')}  "
                      f"calls {row.get('force_calls')}  E {row.get('energy')}  {row.get('message', '')}")

        rows = run_batch(tasks, workers=args.workers, scheduler=args.scheduler, on_done=done)
        table = args.table or "saddle_summary.csv"
        write_table(rows, table)
        n_ok = sum(bool(r.get("converged")) for r in rows)
        n_unverified = sum(r.get("status") == "unverified" for r in rows)
        print(f"{n_ok} of {len(rows)} searches converged ({n_unverified} NOT verified); summary table {table}")
        return 1 if n_ok < len(rows) else (EXIT_STATUS["unverified"] if n_unverified else 0)

    start = args.start[0]
    stem = Path(start).with_suffix("")
    atoms = read_structure(start, args.frame)
    output = args.output or f"{stem}_saddle.xyz"
    mode_output = args.mode_output or f"{stem}_saddle_mode.txt"
    plot = args.plot or f"{stem}_saddle.png"
    for path, what in ((output, "saddle structure file"), (mode_output, "mode file"), (plot, "plot"),
                       (args.json, "JSON summary")):
        check_destination(path, what, args.overwrite)
    began = time.perf_counter()
    result = search_with_settings(atoms, settings, calculator=args.calculator, model=args.model,
                                  log=None if args.quiet else print)
    report.write_structure(result, output)
    report.write_mode(result, mode_output)
    report.write_plot(result, plot, title=f"{Path(start).name}: {result.method}")
    summary = result.summary()
    if args.json:
        report.write_summary(summary, args.json)
    for warning in result.warnings:
        print(warning, file=sys.stderr)
    print(f"{result.message}")
    line = (f"E {result.energy:.6f} eV  curvature {result.curvature:.4f} eV/Å²  fmax {result.fmax:.4f} eV/Å  "
            f"force calls {result.force_calls} (+{result.verify_calls} verification)  wall {time.perf_counter() - began:.1f} s  (GP {result.gp_s:.1f} s)")
    if result.barrier is not None:
        line += f"  barrier {result.barrier:.4f} eV (reverse {result.reverse_barrier:.4f} eV)"
    print(line)
    print(f"wrote {output}, {mode_output}, {plot}" + (f", {args.json}" if args.json else ""))
    return EXIT_STATUS[result.status]


COMMAND = Command(name="saddle", add_arguments=_add_arguments, run=_run,
                  example="mlmd saddle start.xyz --calculator emt --method ot-gp-dimer --json saddle.json --relax",
                  help="find a saddle point (GP-dimer, OT-GP-dimer, dimer, P-RFO or GP-P-RFO) from a starting structure")

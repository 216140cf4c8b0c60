"""``mlmd generate``: labelled frames or reference trajectories of a named system."""

import time
from pathlib import Path
from typing import List, Optional

from ..cli import Command
from ..errors import MLMDError
from ..io import check_destination
from .frames import generate
from .systems import EMT_METALS, MOLECULE_ALIASES, SYSTEMS

# --- command line ------------------------------------------------------------


def _add_arguments(parser) -> None:
    parser.add_argument("system", nargs="?", help="system to generate (see --list), e.g. ethanol, cu, argon")
    parser.add_argument("-o", "--output", help="output extended XYZ file (default: SYSTEM.xyz)")
    parser.add_argument("--frames", type=int, default=1000, help="number of labelled frames (default 1000)")
    parser.add_argument("--calculator", help="reference calculator: emt, lj, morse, gfn2 or an ASE calculator name "
                        "(default: the system's own)")
    parser.add_argument("--temperatures", help="comma-separated MD temperatures in K (default: the system's own)")
    parser.add_argument("--timestep", type=float, help="MD time step in fs")
    parser.add_argument("--stride", type=int, help="MD steps between sampled frames")
    parser.add_argument("--equilibration", type=int,
                        help="MD steps before sampling (default 200; 1000 with --trajectory)")
    parser.add_argument("--displaced-fraction", type=float, default=0.1,
                        help="fraction of frames that are random displacements (default 0.1)")
    parser.add_argument("--displacement", type=float, help="standard deviation of the displacements in Å")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    robust = parser.add_argument_group(
        "frames off the MD distribution",
        "further kinds of frame, sharing --frames evenly with the MD frames of each configuration and temperature; "
        "every frame's info key config_type names its kind (md, displaced-A, displaced-md-A, strained-S, "
        "surface-HKL), e.g. for errors per kind")
    robust.add_argument("--displacements", help="comma-separated amplitudes in Å, e.g. 0.03,0.07,0.15: one kind per "
                        "amplitude, every coordinate displaced by a Gaussian of that standard deviation")
    robust.add_argument("--displace-from", choices=("minimum", "md"),
                        help="displace the relaxed minimum (default) or sampled MD frames")
    robust.add_argument("--strain", type=float, help="random symmetric strains of MD frames, every component up "
                        "to ± this fraction (0.03: ±3 %%); periodic systems only")
    robust.add_argument("--surface", action="append", default=[], metavar="HKL",
                        help="add MD frames of a slab cut along (HKL) from the system's bulk, with vacuum, "
                        "e.g. 111 or -1,1,0; repeat for several")
    parser.add_argument("--list", action="store_true", help="list the systems and exit")
    group = parser.add_argument_group(
        "reference trajectories (--trajectory)",
        "write RUNS independent CSVR runs with positions and velocities every --stride steps (default 1) into the "
        "folder -o (default SYSTEM-trajectories/), one file per run; see mlmd.trajectories")
    group.add_argument("--trajectory", action="store_true", help="write reference trajectories instead of frames")
    group.add_argument("--runs", type=int, default=4, help="independent runs (default 4)")
    group.add_argument("--steps", type=int, default=20000, help="recorded MD steps per run (default 20000)")
    group.add_argument("--temperature", type=float, default=300.0, help="temperature in K (default 300)")
    group.add_argument("--friction", type=float, default=1.0,
                       help="CSVR rate 1/tau in 1/ps (default 1; 0 runs NVE velocity Verlet)")
    group.add_argument("--config", help="starting configuration of the system (default its first, e.g. bulk)")
    group.add_argument("--format", default="h5", choices=("h5", "xyz"), help="file format per run (default h5)")
    parser.add_argument("--structure", action="store_true",
                        help="write only the system's starting structure (one frame, no velocities, no labels) to "
                        "-o, e.g. the START of `mlmd md`; --config picks the configuration")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    from ..cli import add_overwrite_option

    add_overwrite_option(parser)


def _parse_amplitudes(text: Optional[str]) -> List[float]:
    if text is None:
        return []
    try:
        return [float(a) for a in text.split(",") if a.strip()]
    except ValueError:
        raise MLMDError(f"--displacements must be comma-separated amplitudes in Å, got {text!r}") from None


def _check_frame_options(args) -> None:
    """The off-distribution options make labelled frames only; --displace-from needs --displacements."""
    given = [name for name, value in (("--displacements", args.displacements), ("--strain", args.strain),
                                      ("--surface", args.surface), ("--displace-from", args.displace_from))
             if value]
    mode = "--trajectory" if args.trajectory else "--structure" if args.structure else None
    if given and mode:
        raise MLMDError(f"{given[0]} makes labelled frames and does not combine with {mode}; drop one of them")
    if args.displace_from and not args.displacements:
        raise MLMDError("--displace-from says where --displacements start; add --displacements, e.g. 0.07")


def _parse_temperatures(text: Optional[str]) -> Optional[List[float]]:
    if text is None:
        return None
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise MLMDError(f"--temperatures must be comma-separated numbers in K, got {text!r}") from None


def _run(args) -> int:
    from ..io import write_frames

    if args.list:
        named = [n for n in SYSTEMS if n in MOLECULE_ALIASES or n in ("argon", "lj", "al-liquid", "cuau")
                 or n.capitalize() in EMT_METALS]
        for name in named:
            print(f"{name:15s} {SYSTEMS[name].description}")
        print(f"... and the {len(SYSTEMS) - len(named)} molecules of ASE's g2 collection by formula (e.g. ch3cooh)")
        return 0
    if not args.system:
        raise MLMDError("name a system to generate, e.g. `mlmd generate ethanol`; `mlmd generate --list` lists them")
    start = time.perf_counter()
    _check_frame_options(args)
    if args.structure:
        return _write_structure(args)
    if args.trajectory:
        from .trajectories import generate_trajectories

        output = args.output or f"{args.system.lower()}-trajectories"
        if Path(output).is_dir():
            for k in range(max(args.runs, 0)):
                check_destination(Path(output) / f"run-{k:03d}.{args.format}", "trajectory", args.overwrite)
        paths = generate_trajectories(
            args.system, output, runs=args.runs, steps=args.steps, timestep_fs=args.timestep,
            temperature_K=args.temperature, stride=args.stride or 1,
            equilibration_steps=1000 if args.equilibration is None else args.equilibration,
            friction_per_ps=args.friction, calculator=args.calculator, config=args.config, seed=args.seed,
            fmt=args.format, progress=not args.quiet)
        elapsed = time.perf_counter() - start
        print(f"wrote {len(paths)} trajectories of {args.system} ({args.steps // (args.stride or 1) + 1} frames each) "
              f"to {output}/ in {elapsed:.1f} s")
        return 0
    output = check_destination(args.output or f"{args.system.lower()}.xyz", "output file", args.overwrite)
    frames = generate(
        args.system,
        frames=args.frames,
        calculator=args.calculator,
        temperatures_K=_parse_temperatures(args.temperatures),
        timestep_fs=args.timestep,
        stride=args.stride,
        equilibration_steps=200 if args.equilibration is None else args.equilibration,
        displaced_fraction=args.displaced_fraction,
        displacement_A=args.displacement,
        seed=args.seed,
        progress=not args.quiet,
        displacements_A=_parse_amplitudes(args.displacements),
        displace_from=args.displace_from or "minimum",
        strain=args.strain or 0.0,
        surfaces=args.surface,
    )
    write_frames(output, frames)
    elapsed = time.perf_counter() - start
    print(f"wrote {len(frames)} frames of {args.system} to {output} in {elapsed:.1f} s")
    return 0


def _write_structure(args) -> int:
    """``--structure``: the system's starting configuration as one extended XYZ frame."""
    from ..io import drop_velocities, write_frames

    key = args.system.lower()
    if key not in SYSTEMS:
        raise MLMDError(f"unknown system {args.system!r}; run `mlmd generate --list` for the systems")
    configs = SYSTEMS[key].build()
    chosen = [atoms for name, atoms in configs if args.config in (None, name)]
    if not chosen:
        raise MLMDError(f"the system has no configuration {args.config!r}; choose one of {[n for n, _ in configs]}")
    output = check_destination(args.output or f"{key}.xyz", "output file", args.overwrite)
    atoms = chosen[0].copy()
    atoms.calc = None
    drop_velocities(atoms)
    write_frames(output, [atoms])
    print(f"wrote the starting structure of {args.system} ({len(atoms)} atoms) to {output}")
    return 0


COMMAND = Command(name="generate", add_arguments=_add_arguments, run=_run,
                  example="mlmd generate ethanol --frames 1000 -o ethanol-data.xyz",
                  help="make a labelled reference dataset with an ASE calculator")

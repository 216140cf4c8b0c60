"""Command-line options every dynamics command shares (outputs, restarts, guards, progress)."""

from .guards import DEFAULT_MIN_DISTANCE_A


def add_run_options(parser, unit: str, default_stride: int, log_columns: str, trajectory_flags=("--trajectory",)):
    """Add --log, the trajectory option, --stride, --restart, --restart-file, --restart-every,
    --min-distance, --max-temperature, --quiet, --frame, --use-velocities, --overwrite and --threads;
    ``unit`` is what one step is (``steps``, ``intervals``)."""
    add = parser.add_argument
    add("--log", metavar="FILE.csv", help=f"CSV log: {log_columns}")
    add(*trajectory_flags, dest="trajectory", metavar="FILE",
        help="trajectory, format from the extension: .dcd, .xtc (with FILE_topology.pdb beside them), .h5 "
             "(mdtraj), .h5md (H5MD), .xyz/.extxyz or .traj (ASE, with energies and forces)")
    add("--stride", metavar="N", type=int, default=default_stride,
        help=f"{unit} between log rows and frames (default {default_stride})")
    add("--restart", metavar="FILE", help="continue from this restart file (bit for bit)")
    add("--restart-file", metavar="FILE",
        help="where to save restart files (default: the log's, trajectory's or structure's name with .restart)")
    add("--restart-every", metavar="N", type=int, default=1000, help=f"{unit} between restart files (default 1000)")
    add("--min-distance", metavar="A", type=float, default=DEFAULT_MIN_DISTANCE_A,
        help=f"stop when two atoms come closer than this (Å, default {DEFAULT_MIN_DISTANCE_A:g}; 0: off)")
    add("--max-temperature", metavar="K", type=float,
        help="stop when a replica gets hotter than this (default: max(3 T, canonical 1e-9 tail))")
    add("--quiet", action="store_true", help="no progress bar")
    add("--frame", metavar="N", type=int,
        help="frame of a structure file with several frames to start from (-1: the last); required for such files")
    add("--use-velocities", action="store_true",
        help="start from the velocities stored in the structure file (default: draw them at --temperature)")
    from ..cli import add_overwrite_option, add_threads_option

    add_overwrite_option(parser)
    add_threads_option(parser)


def run_options(args) -> dict:
    """The keyword arguments of ``run()`` that :func:`add_run_options` parsed."""
    from . import default_restart_file

    return dict(log=args.log, trajectory=args.trajectory, stride=args.stride, restart=args.restart,
                restart_file=args.restart_file or default_restart_file(args.log, args.trajectory, args.structure),
                restart_every=args.restart_every, min_distance_A=args.min_distance,
                max_temperature_K=args.max_temperature, progress=not args.quiet, frame=args.frame,
                use_velocities=args.use_velocities, overwrite=args.overwrite, threads=args.threads)

"""The ``mlmd train`` and ``mlmd export`` commands (:class:`mlmd.cli.Command` objects)."""

import os

from ..cli import Command, add_overwrite_option, add_threads_option
from ..errors import MLMDError


def add_train_arguments(parser) -> None:
    parser.add_argument("config", help="training config (.json or .toml); see `python -m pydoc mlmd.train`")
    parser.add_argument("--resume", action="store_true",
                        help="continue from checkpoint.pt in the output directory, exactly where it stopped")
    parser.add_argument("--epochs", type=int, help="total number of epochs (overrides training.epochs)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines and no progress bar")
    add_threads_option(parser)


def run_train(args) -> int:
    from ..model import check_threads
    from .config import load_config
    from .trainer import train

    if args.epochs is not None and args.epochs < 1:
        raise MLMDError(f"--epochs must be at least 1, got {args.epochs}")
    config = args.config
    if args.threads is not None:  # the trainer applies training.num_threads; --threads overrides it
        threads = check_threads(args.threads)
        config = load_config(config)
        config["training"]["num_threads"] = threads
    result = train(config, resume=args.resume, epochs=args.epochs, verbose=not args.quiet,
                   progress=False if args.quiet else None)
    if int(os.environ.get("RANK", "0")) == 0:
        if not args.quiet:
            print(f"checkpoint: {result.checkpoint}\nbest weights (epoch {result.best_epoch}): {result.best_checkpoint}")
        # The summary line, also with --quiet: why training stopped.
        print(f"training stopped after epoch {result.epoch} ({result.stop_reason}); best epoch {result.best_epoch}")
    return 0


def add_export_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="checkpoint.pt (or best.pt, or the output folder) of `mlmd train`; "
                        "for --format other than torchscript also an exported model file or a shipped model name")
    parser.add_argument("-o", "--output", required=True, help="file to write, e.g. model.pt")
    parser.add_argument("--format", default="torchscript",
                        help="torchscript (mlmd's model file, default), metatomic (every metatomic engine: "
                             "LAMMPS, i-PI, TorchSim, ASE) or uf3 (spline models: LAMMPS pair_style uf3)")
    parser.add_argument("--best", action="store_true",
                        help="export the EMA weights of the best validation epoch instead of the last")
    add_overwrite_option(parser)


def run_export(args) -> int:
    from .export import export

    path = export(args.checkpoint, args.output, format=args.format, best=args.best, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


COMMAND = Command(name="train", add_arguments=add_train_arguments, run=run_train,
                  example="mlmd train train.toml   (then: mlmd export training/best.pt -o model.pt)",
                  help="train a model family on a labelled dataset from a JSON/TOML config")

EXPORT_COMMAND = Command(name="export", add_arguments=add_export_arguments, run=run_export,
                         example="mlmd export training/best.pt -o model.pt",
                         help="turn a training checkpoint into a model file every engine loads")

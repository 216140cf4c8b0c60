"""The ``mlmd`` command line.

Subcommands are :class:`Command` objects published under the ``mlmd.commands``
entry-point group (see pyproject.toml), so a new command, ours or a plugin's,
plugs in without editing this file. Errors meant for the user
(:class:`mlmd.errors.MLMDError`) print one line and exit with status 2.
"""

import argparse
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable, List, Optional


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    example: str = ""  # one command line shown at the end of the command's help


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: replace existing output files (refused otherwise, before any work)."""
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files (without it an existing file stops the command "
                        "before any work)")


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: torch CPU threads (default :data:`mlmd.model.DEFAULT_THREADS`)."""
    from .model import DEFAULT_THREADS

    parser.add_argument("--threads", metavar="N", type=int,
                        help=f"torch CPU threads (default {DEFAULT_THREADS}: fastest for small systems and on "
                        "shared cores; more can help a large system on a quiet machine)")


def _commands() -> List[Command]:
    found = []
    for entry in sorted(entry_points(group="mlmd.commands"), key=lambda e: e.name):
        command = entry.load()
        if not isinstance(command, Command):
            raise TypeError(f"entry point mlmd.commands:{entry.name} is not an mlmd.cli.Command")
        found.append(command)
    return found


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="mlmd",
        description="Molecular simulation with learned models: datasets, training, export, MD, saddle searches.",
    )
    parser.add_argument("--version", action="version", version=f"mlmd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in _commands():
        epilog = f"example:\n  {command.example}" if command.example else None
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help, epilog=epilog,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        command.add_arguments(sub)
        sub.set_defaults(_run=command.run)
    return parser


def one_prefix(message: str, command: str) -> str:
    """The message without a leading ``mlmd COMMAND:`` (the error line adds it once), on one line."""
    prefix = f"mlmd {command}: "
    while message.startswith(prefix):
        message = message[len(prefix):]
    return " ".join(message.split("\n"))


def main(argv: Optional[List[str]] = None) -> int:
    from .errors import MLMDError

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except MLMDError as exc:
        print(f"mlmd {args.command}: error: {one_prefix(str(exc), args.command)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mlmd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run as ``python -m mlmd.cli``: use the importable module, whose Command class the entry points share.
    from mlmd.cli import main as package_main

    sys.exit(package_main())

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
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(_run=command.run)
    return parser


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
        print(f"mlmd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mlmd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

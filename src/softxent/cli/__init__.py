"""The ``softxent`` command line: ``softxent demo``, ``softxent bench``, ``softxent score``.

Each subcommand lives in its own module that exposes ``register(subparsers)``; the
registered parser sets ``func(args) -> int``. This module only dispatches, so the CLI
calls nothing but the public API.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from softxent._version import __version__

_SUBCOMMANDS = ("demo", "bench", "score")


class CLIError(Exception):
    """A user error: printed as one line to stderr, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="softxent",
        description="Softmax and cross-entropy done right, for NumPy and PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"softxent {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMANDS:
        try:
            module = importlib.import_module(f"softxent.cli._{name}")
        except ModuleNotFoundError as error:  # a subcommand not built yet
            if error.name != f"softxent.cli._{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CLIError as error:
        print(f"softxent {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as error:
        # Bad input reaching the library: the library's message names the argument.
        print(f"softxent {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

"""The ``softxent`` command line: ``softxent demo``, ``softxent bench``, ``softxent score``.

Each subcommand lives in its own module that exposes ``register(subparsers)``; the
registered parser sets ``func(args) -> int``. This module only dispatches. A user error is a
:class:`CLIError` (one line on stderr, exit status 2); the library's own input errors become
one through :func:`user_input`, which names the flag or file to fix. Any other exception is
a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from softxent._version import __version__

_SUBCOMMANDS = ("demo", "bench", "score")


class CLIError(Exception):
    """A user error: printed as one line to stderr, exit status 2."""


@contextmanager
def user_input(names: Mapping[str, str | None]) -> Iterator[None]:
    """Re-raise the library's ``ValueError``/``TypeError`` as a :class:`CLIError`.

    Wrap only calls of the public API on the user's input: their messages name the
    argument at fault (``target[1] = 3 is out of range ...``). ``names`` maps the library's
    argument names to what the user typed (``{"target": "--targets"}``, or a file name);
    the one the message mentions first prefixes the error. A ``ValueError`` raised outside
    such a block is a bug and keeps its traceback.
    """
    try:
        yield
    except (ValueError, TypeError) as error:
        message = " ".join(str(error).split())  # one line
        found = [(message.find(arg), name) for arg, name in names.items() if name]
        named = sorted((position, name) for position, name in found if position >= 0)
        raise CLIError(f"{named[0][1]}: {message}" if named else message) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="softxent",
        description="Softmax and cross-entropy done right, for NumPy and PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"softxent {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMANDS:
        importlib.import_module(f"softxent.cli._{name}").register(subparsers)
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
    except KeyboardInterrupt:
        return 130

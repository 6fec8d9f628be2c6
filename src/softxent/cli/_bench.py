"""``softxent bench``: softxent against torch, JAX, scipy.special and plain NumPy.

Parses the flags into :class:`softxent._bench.session.Settings`, runs the selected suites
(``numpy``, the default; ``linear``; ``torch``; ``distributed``) under a progress bar on
stderr, and prints each suite's tables (:mod:`softxent._bench.render`) or, with ``--json``,
the results as JSON; writes the JSON and plot files when asked. How to read the tables and
the JSON schema: ``docs/bench.md``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import softxent as sx
from softxent._bench.linear import DEFAULT_LINEAR_SHAPE, QUICK_LINEAR_SHAPE
from softxent._bench.render import format_report
from softxent._bench.report import json_text, write_json
from softxent._bench.session import DEFAULT_SHAPE, QUICK_SHAPE, SUITES, Settings, run_suites
from softxent._bench.suites import DTYPES, OPS, QUICK_SWEEP_LOGITS, sweep_groups
from softxent.cli import CLIError
from softxent.cli._progress import Progress


def register(subparsers: Any) -> None:
    """Add the ``bench`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "bench",
        help="time softxent against torch, JAX, scipy.special and plain NumPy",
        description=(
            "Time softxent and its peers side by side in one process on the same inputs and "
            "print medians, the ratio of each peer's time to softxent's (above 1: softxent "
            "is faster), softxent's time over the memory-bandwidth floor measured in the same "
            "run, and the peak extra memory of the NumPy-based implementations. Peers that "
            "are not installed are skipped with a note. See docs/bench.md."
        ),
    )
    _add_selection_flags(parser)
    _add_run_flags(parser)
    parser.set_defaults(func=run)


def _add_selection_flags(parser: argparse.ArgumentParser) -> None:
    """What to measure: the suites, shapes, dtypes and operations."""
    parser.add_argument(
        "--suite",
        action="append",
        metavar="SUITE",
        help=(
            "what to run, comma-separated or repeatable (default: numpy): numpy (the NumPy "
            "API against torch, JAX, scipy, NumPy), linear (the NumPy fused linear layer "
            "against its three matmuls), torch (softxent.torch against torch's losses), "
            "distributed (vocab-parallel loss at world sizes 1, 2, 4), or all"
        ),
    )
    parser.add_argument(
        "--shape",
        action="append",
        metavar="NxC",
        help="logits shape, rows x classes, for the numpy suite and torch's cross_entropy; "
        "repeatable or comma-separated (default: 4096x32000)",
    )
    parser.add_argument(
        "--linear-shape",
        action="append",
        metavar="NxDxV",
        help="tokens x hidden x vocabulary for the linear layer (linear and torch suites; "
        "the distributed suite when given); repeatable or comma-separated "
        "(default: 4096x512x32000)",
    )
    parser.add_argument(
        "--dtype",
        action="append",
        metavar="DTYPE",
        help=(
            f"logits dtype, one of {', '.join(DTYPES)}; repeatable or comma-separated; "
            "every operation runs at every dtype (default: float32)"
        ),
    )
    parser.add_argument(
        "--ops",
        action="append",
        metavar="OP",
        help=f"numpy-suite operations to run, comma-separated (default: all): {', '.join(OPS)}",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help=(
            f"run the numpy suite over the shapes {_sweep_text()} and print ns per logit; "
            "every operation but the 3x3 demo ones unless --ops names them; adds the "
            "softxent_numpy column; not with --shape or --dtype"
        ),
    )
    parser.add_argument(
        "--with-fallback",
        action="store_true",
        help=(
            "also time softxent on its NumPy fallback kernels (as with SOFTXENT_NATIVE=0), "
            "as the column softxent_numpy (always on with --sweep)"
        ),
    )


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    """How to measure, and where the results go."""
    parser.add_argument(
        "--repeat",
        default="5",
        metavar="N",
        help="timed runs per measurement after one warm-up run; the median is reported "
        "(default: 5)",
    )
    parser.add_argument(
        "--threads",
        metavar="N",
        help="threads for softxent and torch (default: softxent.get_num_threads())",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the results as JSON to stdout instead of the tables (schema: docs/bench.md)",
    )
    parser.add_argument(
        "--json-out", metavar="FILE", help="also write the results as JSON to FILE"
    )
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw the ratios as a bar chart; with --sweep, ns per logit against the "
        "number of classes, one panel per operation (needs matplotlib: softxent[plot])",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=(
            f"tiny default shapes ({QUICK_SHAPE[0]}x{QUICK_SHAPE[1]}, "
            f"{'x'.join(map(str, QUICK_LINEAR_SHAPE))}, world sizes 1 and 2; with --sweep, "
            f"its class counts at about {QUICK_SWEEP_LOGITS:,} logits a shape) for a smoke "
            "test"
        ),
    )


# --------------------------------------------------------------------------- flags


def _sweep_text() -> str:
    """The sweep's shapes and dtypes, as the help text and error messages say them."""
    groups: dict[tuple[int, int], list[str]] = {}
    for shape, dtype in sweep_groups(quick=False):
        groups.setdefault(shape, []).append(dtype)
    return ", ".join(f"{n}x{c} ({'/'.join(dtypes)})" for (n, c), dtypes in groups.items())


def _items(values: Sequence[str] | None) -> list[str]:
    """Repeated and comma-separated flag values, flattened, blanks dropped."""
    return [v.strip() for value in values or () for v in value.split(",") if v.strip()]


def parse_shape(text: str) -> tuple[int, int]:
    """``"4096x32000"`` -> ``(4096, 32000)``; CLIError naming ``--shape`` otherwise."""
    parts = text.lower().split("x")
    try:
        n, c = (int(p) for p in parts)
    except ValueError:
        raise CLIError(
            f"--shape must be ROWSxCLASSES with positive integers, like 4096x32000, got {text!r}"
        ) from None
    if n < 1 or c < 1:
        raise CLIError(f"--shape must have positive rows and classes, got {text!r}")
    return n, c


def parse_linear_shape(text: str) -> tuple[int, int, int]:
    """``"4096x512x32000"`` -> ``(4096, 512, 32000)``; CLIError naming ``--linear-shape``."""
    try:
        n, d, v = (int(p) for p in text.lower().split("x"))
    except ValueError:
        raise CLIError(
            "--linear-shape must be TOKENSxHIDDENxVOCAB with positive integers, like "
            f"4096x512x32000, got {text!r}"
        ) from None
    if min(n, d, v) < 1:
        raise CLIError(f"--linear-shape must have positive sizes, got {text!r}")
    return n, d, v


def parse_suites(values: Sequence[str] | None) -> list[str]:
    """The suites in run order; ``all`` is every suite; CLIError naming ``--suite``."""
    names = _items(values) or ["numpy"]
    for name in names:
        if name != "all" and name not in SUITES:
            raise CLIError(f"--suite: unknown suite {name!r}; known: {', '.join(SUITES)}, all")
    return [s for s in SUITES if s in names or "all" in names]


def parse_ops(values: Sequence[str] | None, *, sweep: bool) -> list[str]:
    """The numpy-suite operations, in the order given; CLIError naming ``--ops``.

    By default every operation; with ``sweep`` every one but the demo's 3x3 cases, whose
    size does not change with the sweep's shapes (they run when ``--ops`` names them).
    """
    ops = _items(values) or [name for name, op in OPS.items() if not (sweep and op.demo)]
    for op in ops:
        if op not in OPS:
            raise CLIError(f"--ops: unknown operation {op!r}; known: {', '.join(OPS)}")
    return ops


def _check_sweep(args: argparse.Namespace, suites: Sequence[str]) -> None:
    """CLIError naming both flags when --sweep comes with a flag it replaces."""
    given_flags = (
        ("--shape", args.shape),
        ("--dtype", args.dtype),
        ("--linear-shape", args.linear_shape),
    )
    for flag, given in given_flags:
        if _items(given):
            raise CLIError(
                f"--sweep and {flag} cannot be combined: --sweep runs its own shapes and "
                f"dtypes ({_sweep_text()}); drop one of them"
            )
    if list(suites) != ["numpy"]:
        raise CLIError(
            f"--sweep and --suite {','.join(suites)} cannot be combined: --sweep runs the "
            "numpy suite only; drop one of them"
        )


def _positive_int(text: str, flag: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise CLIError(f"{flag} must be a positive integer, got {text!r}") from None
    if value < 1:
        raise CLIError(f"{flag} must be a positive integer, got {text!r}")
    return value


def _check_output(path: str, flag: str) -> None:
    # Checked before the run: a long benchmark should not end in "cannot write".
    if os.path.isdir(path):
        raise CLIError(f"{flag} {path!r} is a directory; give a file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise CLIError(f"{flag} {path!r}: directory {directory!r} is missing or not writable")


def _check_numpy_suite_flags(args: argparse.Namespace, suites: Sequence[str]) -> None:
    """CLIError naming the flag when a numpy-suite flag comes without that suite (it would
    change nothing)."""
    if "numpy" in suites:
        return
    given = [
        flag
        for flag, used in (("--ops", _items(args.ops)), ("--with-fallback", args.with_fallback))
        if used
    ]
    if given:
        raise CLIError(
            f"{given[0]} applies to the numpy suite, which this run leaves out (--suite "
            f"{','.join(suites)}): add numpy to --suite, or drop {given[0]}"
        )


def parse_flags(args: argparse.Namespace) -> Settings:
    """Validated settings from the parsed flags; CLIError naming the flag otherwise."""
    suites = parse_suites(args.suite)
    default = QUICK_SHAPE if args.quick else DEFAULT_SHAPE
    shapes = [parse_shape(s) for s in _items(args.shape)] or [default]
    linear_default = QUICK_LINEAR_SHAPE if args.quick else DEFAULT_LINEAR_SHAPE
    given_linear = [parse_linear_shape(s) for s in _items(args.linear_shape)]
    dtypes = _items(args.dtype) or ["float32"]
    for dtype in dtypes:
        if dtype not in DTYPES:
            raise CLIError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if args.sweep:
        _check_sweep(args, suites)
    _check_numpy_suite_flags(args, suites)
    ops = parse_ops(args.ops, sweep=args.sweep)
    if args.sweep and args.plot is not None and all(OPS[op].demo for op in ops):
        raise CLIError(
            "--plot with --sweep draws ns per logit against the classes, which the 3x3 demo "
            "operations do not have: add another operation to --ops, or drop --plot"
        )
    repeat = _positive_int(args.repeat, "--repeat")
    if args.threads is None:
        threads = sx.get_num_threads()
    else:
        threads = _positive_int(args.threads, "--threads")
    for path, flag in ((args.json_out, "--json-out"), (args.plot, "--plot")):
        if path is not None:
            _check_output(path, flag)
    if args.plot is not None:
        from softxent._bench.plot import require_matplotlib  # matplotlib only when asked

        try:
            require_matplotlib()
        except ImportError:
            raise CLIError("--plot needs matplotlib: pip install 'softxent[plot]'") from None
    return Settings(
        suites=suites,
        quick=bool(args.quick),
        shapes=list(dict.fromkeys(shapes)),  # duplicates dropped, order kept
        linear_shapes=list(dict.fromkeys(given_linear)) or [linear_default],
        distributed_shape=given_linear[0] if given_linear else None,
        dtypes=list(dict.fromkeys(dtypes)),
        ops=list(dict.fromkeys(ops)),
        repeat=repeat,
        threads=threads,
        sweep=bool(args.sweep),
        with_fallback=bool(args.with_fallback),
    )


def run(args: argparse.Namespace) -> int:
    """Run the selected suites and print their tables (or JSON); write the requested files."""
    settings = parse_flags(args)
    report = run_suites(settings, _progress)
    if args.json:
        print(json_text(report), end="")
    else:
        print(format_report(report))
    if args.json_out is not None:
        write_json(report, args.json_out)
    if args.plot is not None:
        from softxent._bench.plot import plot_ratios, plot_sweep

        (plot_sweep if report.sweep else plot_ratios)(report, args.plot)
    return 0


@contextmanager
def _progress(total: int, suite: str) -> Iterator[Callable[[int], object]]:
    with Progress(total, desc=f"softxent bench {suite}") as bar:
        yield bar.update

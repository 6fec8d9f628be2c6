"""``softxent bench``: softxent against torch, JAX, scipy.special and plain NumPy.

Parses the flags, runs the cases (:mod:`softxent._bench`) under a progress bar, prints the
time table and the memory table, and writes the JSON and plot files when asked. How to
read the tables and the JSON schema: ``docs/bench.md``.
"""

from __future__ import annotations

import argparse
import os
import textwrap
from collections.abc import Sequence
from typing import Any

import softxent as sx
from softxent._bench.peers import load_peers
from softxent._bench.runner import SOFTXENT, Report, Row, count_jobs, run_bench
from softxent._bench.suites import DTYPES, OPS, build_cases
from softxent.cli import CLIError
from softxent.cli._progress import Progress

DEFAULT_SHAPE = (4096, 32000)
QUICK_SHAPE = (64, 512)  # --quick: seconds, not minutes (used by the tests)


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
    parser.add_argument(
        "--shape",
        action="append",
        metavar="NxC",
        help="logits shape, rows x classes; repeatable or comma-separated (default: 4096x32000)",
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
        help=f"operations to run, comma-separated (default: all): {', '.join(OPS)}",
    )
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
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw the ratios as a bar chart (needs matplotlib: softxent[plot])",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny default shape ({QUICK_SHAPE[0]}x{QUICK_SHAPE[1]}) for a smoke test",
    )
    parser.set_defaults(func=run)


# --------------------------------------------------------------------------- flags


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


def parse_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Validated settings from the parsed flags; CLIError naming the flag otherwise."""
    default = QUICK_SHAPE if args.quick else DEFAULT_SHAPE
    shapes = [parse_shape(s) for s in _items(args.shape)] or [default]
    dtypes = _items(args.dtype) or ["float32"]
    for dtype in dtypes:
        if dtype not in DTYPES:
            raise CLIError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    ops = _items(args.ops) or list(OPS)
    for op in ops:
        if op not in OPS:
            raise CLIError(f"--ops: unknown operation {op!r}; known: {', '.join(OPS)}")
    repeat = _positive_int(args.repeat, "--repeat")
    if args.threads is None:
        threads = sx.get_num_threads()
    else:
        threads = _positive_int(args.threads, "--threads")
    for path, flag in ((args.json, "--json"), (args.plot, "--plot")):
        if path is not None:
            _check_output(path, flag)
    if args.plot is not None:
        from softxent._bench.plot import require_matplotlib  # matplotlib only when asked

        try:
            require_matplotlib()
        except ImportError:
            raise CLIError("--plot needs matplotlib: pip install 'softxent[plot]'") from None
    return {
        "shapes": list(dict.fromkeys(shapes)),  # duplicates dropped, order kept
        "dtypes": list(dict.fromkeys(dtypes)),
        "ops": list(dict.fromkeys(ops)),
        "repeat": repeat,
        "threads": threads,
    }


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the tables, write the requested files; return 0."""
    settings = parse_flags(args)
    cases = build_cases(settings["ops"], settings["shapes"], settings["dtypes"])
    peers, skipped = load_peers()
    with Progress(count_jobs(cases, peers), desc="softxent bench") as bar:
        report = run_bench(
            cases,
            peers,
            skipped,
            repeat=settings["repeat"],
            threads=settings["threads"],
            progress=bar.update,
        )
    print(format_report(report))
    if args.json is not None:
        from softxent._bench.report import write_json

        write_json(report, args.json)
    if args.plot is not None:
        from softxent._bench.plot import plot_ratios

        plot_ratios(report, args.plot)
    return 0


# --------------------------------------------------------------------------- tables


def format_seconds(seconds: float) -> str:
    """Three significant digits in s, ms or us: ``0.0231`` -> ``'23.1 ms'``."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale or unit == "us":
            value = seconds / scale
            digits = 2 if value < 10 else 1 if value < 100 else 0
            return f"{value:.{digits}f} {unit}"
    raise AssertionError("unreachable")


def format_bytes(n: int) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1000:  # at most three digits before the point: 1000 MiB -> 0.98 GiB
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"


def _table(header: list[str], rows: list[list[str]], *, left: int = 3) -> list[str]:
    """Columns padded to their widest cell; the first ``left`` columns left-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _case(row: Row) -> list[str]:
    return [row.op, f"{row.shape[0]}x{row.shape[1]}", row.dtype]


def _time_cell(row: Row, name: str) -> str:
    if name in row.errors:
        return "error"
    if name not in row.times:
        return "-"
    cell = format_seconds(row.times[name])
    if name != SOFTXENT and name in row.ratios:
        cell += f" {row.ratios[name]:6.2f}x"
    return cell


def _floor_cell(row: Row) -> str:
    ratio = row.floor_ratio
    return "-" if ratio is None else f"{ratio:.2f}x {row.floor}"


def time_table(report: Report) -> list[str]:
    header = ["operation", "shape", "dtype", SOFTXENT, *report.peers, "vs floor"]
    rows = [
        [*_case(r), *(_time_cell(r, n) for n in [SOFTXENT, *report.peers]), _floor_cell(r)]
        for r in report.rows
    ]
    return _table(header, rows)


def memory_table(report: Report) -> list[str]:
    names = [SOFTXENT, *(n for n in report.peers if n in ("scipy", "numpy"))]
    rows = []
    for r in report.rows:
        logits = r.shape[0] * r.shape[1] * _itemsize(r.dtype)
        cells = []
        for name in names:
            extra = r.memory.get(name)
            if extra is None:
                cells.append("-")
            elif r.floor is None:  # the 3x3 demo: a percentage of 36 bytes says nothing
                cells.append(format_bytes(extra))
            else:
                cells.append(f"{format_bytes(extra)} ({100 * extra / logits:.0f}%)")
        rows.append([*_case(r), format_bytes(logits), *cells])
    return _table(["operation", "shape", "dtype", "logits", *names], rows)


def _itemsize(dtype: str) -> int:
    return {"float16": 2, "float32": 4, "float64": 8}[dtype]


def notes(report: Report) -> list[str]:
    runs = f"{report.repeat} run" + ("s" if report.repeat > 1 else "")
    lines = [
        f"Medians of {runs} after 1 warm-up, {report.threads} threads "
        f"(softxent, torch); JAX uses its own pool. Peer columns: time and peer time / "
        f"softxent time (above 1: softxent is faster). vs floor: softxent time / one read "
        f"pass (x.sum()) or one copy pass (numpy.copyto) of the logits, measured in this run.",
    ]
    for f in report.floors:
        lines.append(
            f"Floors {f.shape[0]}x{f.shape[1]} {f.dtype}: read {format_seconds(f.read)}, "
            f"copy {format_seconds(f.copy)}."
        )
    for name, why in report.skipped.items():
        lines.append(f"Peer {name} skipped: {why}.")
    for r in report.rows:
        for name, error in r.errors.items():
            lines.append(f"{name} failed on {' '.join(_case(r))}: {error}")
    return lines


def format_report(report: Report) -> str:
    """The time table, the memory table and the notes, as printed by ``softxent bench``."""
    lines = ["Time (median)", *time_table(report), ""]
    lines += [
        "Peak extra memory (beyond inputs and outputs, tracemalloc; torch and JAX: n/a, "
        "their allocators are invisible to it)",
        *memory_table(report),
        "",
        *(wrapped for note in notes(report) for wrapped in textwrap.wrap(note, 99)),
    ]
    return "\n".join(lines)

"""``softxent bench``: softxent against torch, JAX, scipy.special and plain NumPy.

Parses the flags, runs the selected suites (:mod:`softxent._bench`: ``numpy``, the default;
``linear``; ``torch``; ``distributed``) under a progress bar, prints each suite's tables,
and writes the JSON and plot files when asked. How to read the tables and the JSON schema:
``docs/bench.md``.
"""

from __future__ import annotations

import argparse
import os
import textwrap
from collections.abc import Sequence
from typing import Any

import softxent as sx
from softxent._bench.linear import DEFAULT_LINEAR_SHAPE, QUICK_LINEAR_SHAPE
from softxent._bench.peers import load_peers
from softxent._bench.results import ImplRow, WorldRow
from softxent._bench.runner import SOFTXENT, Report, Row, count_jobs, machine_info, run_bench
from softxent._bench.suites import DTYPES, OPS, build_cases
from softxent.cli import CLIError
from softxent.cli._progress import Progress

DEFAULT_SHAPE = (4096, 32000)
QUICK_SHAPE = (64, 512)  # --quick: seconds, not minutes (used by the tests)
SUITES = ("numpy", "linear", "torch", "distributed")


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
        help=(
            f"tiny default shapes ({QUICK_SHAPE[0]}x{QUICK_SHAPE[1]}, "
            f"{'x'.join(map(str, QUICK_LINEAR_SHAPE))}, world sizes 1 and 2) for a smoke test"
        ),
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
    suites = parse_suites(args.suite)
    default = QUICK_SHAPE if args.quick else DEFAULT_SHAPE
    shapes = [parse_shape(s) for s in _items(args.shape)] or [default]
    linear_default = QUICK_LINEAR_SHAPE if args.quick else DEFAULT_LINEAR_SHAPE
    given_linear = [parse_linear_shape(s) for s in _items(args.linear_shape)]
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
        "suites": suites,
        "quick": bool(args.quick),
        "linear_shapes": list(dict.fromkeys(given_linear)) or [linear_default],
        "distributed_shape": given_linear[0] if given_linear else None,
        "shapes": list(dict.fromkeys(shapes)),  # duplicates dropped, order kept
        "dtypes": list(dict.fromkeys(dtypes)),
        "ops": list(dict.fromkeys(ops)),
        "repeat": repeat,
        "threads": threads,
    }


def run(args: argparse.Namespace) -> int:
    """Run the selected suites, print their tables, write the requested files; return 0."""
    settings = parse_flags(args)
    suites = settings["suites"]
    if "numpy" in suites:
        report = _run_numpy(settings)
    else:  # no peers to load (importing JAX alone takes seconds)
        report = Report(
            threads=settings["threads"],
            repeat=settings["repeat"],
            warmup=1,
            machine=machine_info(),
            versions={SOFTXENT: sx.__version__, "numpy": _numpy_version()},
            peers=[],
            skipped={},
            floors=[],
            rows=[],
        )
    report.suites = ["numpy"] if "numpy" in suites else []
    for suite in suites[1:] if "numpy" in suites else suites:
        _run_suite(suite, report, settings)
    print(format_report(report))
    if args.json is not None:
        from softxent._bench.report import write_json

        write_json(report, args.json)
    if args.plot is not None:
        from softxent._bench.plot import plot_ratios

        plot_ratios(report, args.plot)
    return 0


def _numpy_version() -> str:
    import numpy

    return numpy.__version__


def _run_numpy(settings: dict[str, Any]) -> Report:
    cases = build_cases(settings["ops"], settings["shapes"], settings["dtypes"])
    peers, skipped = load_peers()
    with Progress(count_jobs(cases, peers), desc="softxent bench numpy") as bar:
        return run_bench(
            cases,
            peers,
            skipped,
            repeat=settings["repeat"],
            threads=settings["threads"],
            progress=bar.update,
        )


def _torch_version() -> str | None:
    """torch's version, or None when it cannot be imported (the suite is then skipped)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def _run_suite(suite: str, report: Report, settings: dict[str, Any]) -> None:
    """Run one of the linear, torch and distributed suites into ``report``."""
    repeat, threads, quick = settings["repeat"], settings["threads"], settings["quick"]
    if suite == "linear":
        from softxent._bench.linear import count_jobs as linear_jobs
        from softxent._bench.linear import run_linear

        shapes, dtypes = settings["linear_shapes"], settings["dtypes"]
        with Progress(linear_jobs(shapes, dtypes), desc="softxent bench linear") as bar:
            rows = run_linear(shapes, dtypes, repeat=repeat, threads=threads, progress=bar.update)
        report.settings[suite] = {"shapes": [list(s) for s in shapes]}
    elif _torch_version() is None:
        report.skipped_suites[suite] = "torch is not installed (pip install 'softxent[torch]')"
        return
    elif suite == "torch":
        from softxent._bench import torch_suite

        report.versions["torch"] = _torch_version()
        layout = torch_suite.plan(
            settings["shapes"], settings["linear_shapes"], settings["dtypes"]
        )
        # --quick is a smoke test: its tiny processes may share the CPUs.
        parallel = min(4, os.cpu_count() or 1) if quick else 1
        with Progress(torch_suite.count_jobs(layout), desc="softxent bench torch") as bar:
            rows = torch_suite.run_torch(
                settings["shapes"],
                settings["linear_shapes"],
                settings["dtypes"],
                repeat=repeat,
                threads=threads,
                parallel=parallel,
                progress=bar.update,
            )
        report.skipped.update(torch_suite.skipped_peers())
        report.settings[suite] = {"parallel_processes": parallel}
    else:
        from softxent._bench import distributed

        report.versions["torch"] = _torch_version()
        worlds = distributed.QUICK_WORLD_SIZES if quick else distributed.DEFAULT_WORLD_SIZES
        sizes = dict(distributed.QUICK_SIZES if quick else distributed.DEFAULT_SIZES)
        if settings["distributed_shape"] is not None:
            sizes["tokens"], sizes["hidden"], sizes["vocab"] = settings["distributed_shape"]
        with Progress(len(worlds), desc="softxent bench distributed") as bar:
            rows = distributed.run_distributed(worlds, **sizes, progress=bar.update)
        report.settings[suite] = {"world_sizes": list(worlds), **sizes}
    report.suites.append(suite)
    report.suite_rows[suite] = rows


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
    """The numpy suite's notes: settings, floors, skipped peers, failures."""
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
        if name in report.peers or name in ("torch", "jax", "scipy", "numpy"):
            lines.append(f"Peer {name} skipped: {why}.")
    for r in report.rows:
        for name, error in r.errors.items():
            lines.append(f"{name} failed on {' '.join(_case(r))}: {error}")
    return lines


# --------------------------------------------------------------------------- other suites

IMPL_TITLES = {
    "linear": "Linear suite: NumPy fused linear layer + cross-entropy, forward + backward",
    "torch": "Torch suite: softxent.torch against torch, forward + backward",
}
FLOOR_LABEL = "matmuls (floor)"


def _shape(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def _logits_bytes(row: ImplRow) -> int:
    n, v = row.shape[0], row.shape[-1]
    return n * v * _itemsize(row.dtype)


def impl_table(rows: Sequence[ImplRow]) -> list[str]:
    """One line per (computation, implementation): time, ratios and peak extra memory."""
    header = ["operation", "shape", "dtype", "implementation", "time", "vs softxent"]
    header += ["vs floor", "extra memory"]
    lines = []
    for row in rows:
        case = [row.op, _shape(row.shape), row.dtype]
        logits = _logits_bytes(row)
        for name in [*row.times, *row.errors]:
            if name in row.errors:
                lines.append([*case, name, "error", "-", "-", "-"])
                continue
            extra = row.memory.get(name)
            memory = (
                "-" if extra is None else f"{format_bytes(extra)} ({100 * extra / logits:.0f}%)"
            )
            ratio = (
                "-" if name == SOFTXENT or name not in row.ratios else f"{row.ratios[name]:.2f}x"
            )
            floor = row.floor_ratios.get(name)
            lines.append(
                [
                    *case,
                    name,
                    format_seconds(row.times[name]),
                    ratio,
                    "-" if floor is None else f"{floor:.2f}x",
                    memory,
                ]
            )
        if row.floor_seconds is not None:
            base = row.times.get(SOFTXENT)
            ratio = "-" if not base else f"{row.floor_seconds / base:.2f}x"
            seconds = format_seconds(row.floor_seconds)
            lines.append([*case, FLOOR_LABEL, seconds, ratio, "1.00x", "-"])
    return _table(header, lines, left=4)


def world_table(rows: Sequence[WorldRow]) -> list[str]:
    header = ["world size", "tokens x hidden x vocab", "time", "vs world 1", "collectives"]
    header += ["bytes", "vectors/token", "loss"]
    lines = [
        [
            str(r.world_size),
            _shape((r.tokens, r.hidden, r.vocab)),
            format_seconds(r.seconds),
            "-" if r.ratio is None else f"{r.ratio:.2f}x",
            str(r.collectives),
            str(r.bytes),
            f"{r.per_token_vectors:.2f}",
            f"{r.loss:.6f}",
        ]
        for r in rows
    ]
    return _table(header, lines, left=2)


def suite_notes(report: Report, suite: str) -> list[str]:
    runs = f"{report.repeat} run" + ("s" if report.repeat > 1 else "")
    if suite == "distributed":
        steps = report.settings.get(suite, {}).get("steps")
        return [
            f"Median of {steps} calls after 1 warm-up per world size; gloo on 127.0.0.1, one "
            "thread per rank; world size 1 runs without torch.distributed. vs world 1: time "
            "/ world size 1's. collectives and bytes: one forward + backward as seen by "
            "rank 0; vectors/token: bytes beyond the (N, D) input gradient / (4 * tokens)."
        ]
    lines = [
        f"Medians of {runs} after 1 warm-up, {report.threads} threads. vs softxent: time / "
        "softxent time (above 1: softxent is faster). vs floor: time / the three matmuls "
        "alone (x @ W.T, g @ W, g.T @ x into preallocated outputs), measured in this run."
    ]
    if suite == "linear":
        lines.append(
            "Extra memory: tracemalloc peak beyond the inputs and the returned loss and "
            "gradients (% of the (N, V) logits' size)."
        )
    else:
        parallel = report.settings.get(suite, {}).get("parallel_processes", 1)
        together = f", {parallel} at a time (--quick)" if parallel > 1 else ", one at a time"
        lines.append(
            "Every implementation runs in a fresh process" + together + ". Extra memory: "
            "growth of the process's peak resident set size (ru_maxrss) from after the "
            "inputs exist to after all calls, gradients included (% of the (N, V) logits' "
            "size). softxent_inplace: inplace_backward=True on a copy of the logits made "
            "untimed before each call. torch_lce: F.linear_cross_entropy with its default "
            "options=None (the reference path); torch_chunked: "
            "options=LinearCrossEntropyOptions() (chunking 'auto'); torch_chunked_ar1: "
            "chunking_method='aspect_ratio'."
        )
        if "cce" in report.skipped:
            lines.append(f"Peer cce skipped: {report.skipped['cce']}.")
    for row in report.suite_rows.get(suite, []):
        for name, error in row.errors.items():
            lines.append(f"{name} failed on {row.op} {_shape(row.shape)} {row.dtype}: {error}")
    return lines


def _wrap(lines: Sequence[str]) -> list[str]:
    return [wrapped for note in lines for wrapped in textwrap.wrap(note, 99)]


def format_report(report: Report) -> str:
    """Each suite's tables and notes, as printed by ``softxent bench``.

    The numpy suite: the time table, the memory table and the notes. The linear and torch
    suites: one table each (time, ratios and memory per implementation); distributed: one
    row per world size.
    """
    sections = []
    if "numpy" in report.suites:
        lines = ["Time (median)", *time_table(report), ""]
        lines += [
            "Peak extra memory (beyond inputs and outputs, tracemalloc; torch and JAX: n/a, "
            "their allocators are invisible to it)",
            *memory_table(report),
            "",
            *_wrap(notes(report)),
        ]
        sections.append("\n".join(lines))
    for suite in report.suites:
        rows = report.suite_rows.get(suite)
        if suite == "numpy" or rows is None:
            continue
        if suite == "distributed":
            title = "Distributed suite: vocab_parallel_linear_cross_entropy, forward + backward"
            table = world_table(rows)
        else:
            title, table = IMPL_TITLES[suite], impl_table(rows)
        sections.append("\n".join([title, *table, "", *_wrap(suite_notes(report, suite))]))
    for suite, why in report.skipped_suites.items():
        sections.append(f"Suite {suite} skipped: {why}.")
    return "\n\n".join(sections)

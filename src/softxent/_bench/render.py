"""The tables and notes that ``softxent bench`` prints, from a :class:`Report`.

The numpy suite: a time table (softxent and every peer, with ratios and the bandwidth
floor), a memory table and notes. The linear and torch suites: one line per implementation;
distributed: one line per world size. How to read them: ``docs/bench.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

from softxent._bench.peers import FALLBACK, PEER_NAMES
from softxent._bench.results import SOFTXENT, ImplRow, WorldRow
from softxent._bench.runner import Report, Row
from softxent._bench.timing import NOISY_SPREAD
from softxent._text import paragraph, table


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


def _case(row: Row) -> list[str]:
    return [row.op, f"{row.shape[0]}x{row.shape[1]}", row.dtype]


def format_ns(ns: float) -> str:
    """Nanoseconds with about three significant digits: ``0.4123`` -> ``'0.412'``."""
    digits = 3 if ns < 1 else 2 if ns < 10 else 1 if ns < 100 else 0
    return f"{ns:.{digits}f}"


def _time_cell(row: Row, name: str, *, per_logit: bool) -> str:
    """The median (time, or ns per logit), ``!`` when noisy, then the ratio to softxent."""
    if name in row.errors:
        return "error"
    if name not in row.times:
        return "-"
    figure = format_ns(row.ns_per_logit[name]) if per_logit else format_seconds(row.times[name])
    cell = figure + ("!" if row.noisy.get(name) else " ")
    if name != SOFTXENT and name in row.ratios:
        cell += f" {row.ratios[name]:6.2f}x"
    return cell


def _floor_cell(row: Row) -> str:
    ratio = row.floor_ratio
    return "-" if ratio is None else f"{ratio:.2f}x {row.floor}"


def time_table(report: Report) -> list[str]:
    """One row per case: softxent's median and each peer's with its ratio, and softxent
    against the floor. Times, with softxent's ns per logit beside them; in a sweep, ns per
    logit everywhere (the times would not compare across shapes)."""
    per_logit = report.sweep
    ns_column = [] if per_logit else ["ns/logit"]  # softxent's, beside its time
    header = ["operation", "shape", "dtype", SOFTXENT, *ns_column, *report.peers, "vs floor"]
    rows = []
    for r in report.rows:
        ns_cell = [] if per_logit else [_ns_cell(r)]
        peers = [_time_cell(r, n, per_logit=per_logit) for n in report.peers]
        softxent = _time_cell(r, SOFTXENT, per_logit=per_logit)
        rows.append([*_case(r), softxent, *ns_cell, *peers, _floor_cell(r)])
    return table(header, rows, left=3)


def _ns_cell(row: Row) -> str:
    ns = row.ns_per_logit.get(SOFTXENT)
    return "-" if ns is None else format_ns(ns)


def time_title(report: Report) -> str:
    """The time table's title; a sweep's names the kernels softxent ran (the machine line
    at the end names them too, but a sweep table is often quoted without it)."""
    if not report.sweep:
        return "Time (median)"
    kernels = report.machine.get("kernels")
    ran = "the NumPy fallback" if kernels == "numpy" else f"native, {kernels}"
    return f"Sweep: ns per logit (median time / (rows x classes)); softxent kernels: {ran}" + (
        f"; {FALLBACK}: the NumPy fallback" if FALLBACK in report.peers else ""
    )


def noisy_notes(report: Report) -> list[str]:
    """What ``!`` means, and each flagged figure's fastest and slowest sample."""
    flagged = [
        f"{name} on {' '.join(_case(r))}: {format_seconds(r.spread[name][0])} to "
        f"{format_seconds(r.spread[name][1])}"
        for r in report.rows
        for name, noisy in r.noisy.items()
        if noisy
    ]
    if not flagged:
        return []
    return [
        f"!: noisy figure, the slowest of the {report.repeat} timed runs took over "
        f"{NOISY_SPREAD}x the fastest (a busy machine, or a call whose speed varies); "
        "compare it with care. Fastest to slowest: " + "; ".join(flagged) + "."
    ]


def memory_table(report: Report) -> list[str]:
    names = [SOFTXENT, *(n for n in report.peers if n in (FALLBACK, "scipy", "numpy"))]
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
    return table(["operation", "shape", "dtype", "logits", *names], rows, left=3)


def _itemsize(dtype: str) -> int:
    return {"float16": 2, "float32": 4, "float64": 8}[dtype]


def notes(report: Report) -> list[str]:
    """The numpy suite's notes: settings, floors, skipped peers, failures."""
    runs = f"{report.repeat} run" + ("s" if report.repeat > 1 else "")
    figure = "ns per logit (median time / (rows x classes))" if report.sweep else "time"
    lines = [
        f"Medians of {runs} after 1 warm-up, {report.threads} threads "
        f"(softxent, torch); JAX uses its own pool. Peer columns: {figure} and peer time / "
        f"softxent time (above 1: softxent is faster). vs floor: softxent time / one read "
        f"pass or one copy pass (numpy.copyto) of the logits on {report.threads} threads, "
        f"measured in this run.",
    ]
    if FALLBACK in report.peers:
        lines.append(
            f"{FALLBACK}: softxent's same calls on its NumPy fallback kernels (what runs "
            "without a C compiler at install, or with SOFTXENT_NATIVE=0), in this process."
        )
    lines += noisy_notes(report)
    for f in report.floors:
        lines.append(
            f"Floors {f.shape[0]}x{f.shape[1]} {f.dtype}: read {format_seconds(f.read)}, "
            f"copy {format_seconds(f.copy)}."
        )
    for name, why in report.skipped.items():
        if name in PEER_NAMES:
            lines.append(f"Peer {name} skipped: {why}.")
        elif name == FALLBACK:
            lines.append(f"{name} skipped: {why}.")
    for r in report.rows:
        for name, error in r.errors.items():
            lines.append(f"{name} failed on {' '.join(_case(r))}: {error}")
    return lines


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
    return table(header, lines, left=4)


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
    return table(header, lines, left=2)


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
    return [wrapped for text in lines for wrapped in paragraph(text, width=99)]


def format_report(report: Report) -> str:
    """Each suite's tables and notes, as printed by ``softxent bench``.

    The numpy suite: the time table, the memory table and the notes. The linear and torch
    suites: one table each (time, ratios and memory per implementation); distributed: one
    row per world size.
    """
    sections = []
    if "numpy" in report.suites:
        lines = [time_title(report), *time_table(report), ""]
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
            body = world_table(rows)
        else:
            title, body = IMPL_TITLES[suite], impl_table(rows)
        sections.append("\n".join([title, *body, "", *_wrap(suite_notes(report, suite))]))
    for suite, why in report.skipped_suites.items():
        sections.append(f"Suite {suite} skipped: {why}.")
    sections.append(machine_line(report.machine))
    return "\n\n".join(sections)


def machine_line(machine: dict[str, object]) -> str:
    """Where the run was measured and which softxent kernels ran: the native instruction
    set (e.g. ``x86-64-v4``: AVX-512) or ``numpy`` (the fallback kernels)."""
    return (
        f"Machine: {machine.get('platform')}, {machine.get('usable_cpus')} usable CPUs, "
        f"Python {machine.get('python')}; softxent kernels: {machine.get('kernels')}; "
        f"BLAS: {machine.get('blas', 'unknown')}."
    )

"""The benchmark's charts (need matplotlib, the ``plot`` extra): a bar chart of the ratios,
or, for a sweep, ns per logit against the number of classes."""

from __future__ import annotations

import io
import math
from types import ModuleType
from typing import Any

from softxent._bench.report import write_atomically
from softxent._bench.results import SOFTXENT
from softxent._bench.runner import Report, Row
from softxent._bench.suites import SWEEP_DTYPE


def _pyplot() -> ModuleType:
    """matplotlib's pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib  # optional (the plot extra): imported only for --plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def require_matplotlib() -> None:
    """Raise ImportError now, before the benchmark runs, if matplotlib is missing."""
    _pyplot()


def plot_ratios(report: Report, path: str) -> None:
    """Write a PNG with two panels sharing one row per case.

    Left: one bar per peer, ``peer time / softxent time`` on a log scale; the line at 1
    separates "softxent is faster" (right of it) from "the peer is faster". Right:
    ``softxent time / bandwidth floor`` (1 would be the memory-bandwidth limit; lower is
    better). The two are kept apart because they read in opposite directions.
    """
    plt = _pyplot()
    rows = [r for r in report.rows if r.ratios or r.floor_ratio]
    labels = [f"{r.op} {r.shape[0]}x{r.shape[1]} {r.dtype}" for r in rows]
    peers = report.peers or ["(no peers)"]
    height = 0.8 / len(peers)
    fig, (left, right) = plt.subplots(
        1,
        2,
        sharey=True,
        figsize=(11, 1.2 + 0.2 * len(peers) * max(len(rows), 1)),
        gridspec_kw={"width_ratios": [3, 1]},
    )
    for k, name in enumerate(peers):
        values = [r.ratios.get(name) for r in rows]
        ys = [i - 0.4 + (k + 0.5) * height for i, v in enumerate(values) if v]
        left.barh(ys, [v for v in values if v], height=height, label=name)
    left.set_xscale("log")
    left.axvline(1.0, color="black", linewidth=0.8)
    left.set_yticks(range(len(rows)), labels, fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("peer time / softxent time (above 1: softxent is faster)")
    left.legend(fontsize=8, loc="best")
    floors = [(i, r.floor_ratio) for i, r in enumerate(rows) if r.floor_ratio]
    right.barh([i for i, _ in floors], [v for _, v in floors], height=0.5, color="gray")
    right.set_xscale("log")
    right.axvline(1.0, color="black", linewidth=0.8)
    right.set_xlabel("softxent time / bandwidth floor")
    fig.suptitle(f"softxent bench, {report.threads} threads, medians of {report.repeat} runs")
    fig.tight_layout()
    _save(plt, fig, path)


def _save(plt: ModuleType, fig: Any, path: str) -> None:
    """Write ``fig`` as a PNG to ``path`` atomically (never a partial file), then free it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_atomically(path, buffer.getvalue())


#: How the sweep's other dtypes are drawn: one unconnected marker per implementation.
OTHER_DTYPE_MARKERS = {"float16": "^", "float64": "s"}
PANEL_COLUMNS = 3


def plot_sweep(report: Report, path: str) -> None:
    """Write a PNG of ns per logit against the number of classes C, log-log, one panel
    per operation, one line per implementation (softxent, softxent_numpy, each peer).

    The lines join the float32 cases; the float16 and float64 cases (one shape) are
    separate markers in the same colours; a red ring marks a noisy figure (its slowest
    run took over 1.5x its fastest). Lower is better: a flat line costs the same per
    logit at every layout.
    """
    plt = _pyplot()
    ops = list(dict.fromkeys(r.op for r in report.rows if r.floor is not None))
    names = [SOFTXENT, *report.peers]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {name: colors[k % len(colors)] for k, name in enumerate(names)}
    rows_grid = max(1, math.ceil(len(ops) / PANEL_COLUMNS))
    fig, axes = plt.subplots(
        rows_grid,
        PANEL_COLUMNS,
        figsize=(4.2 * PANEL_COLUMNS, 3.3 * rows_grid + 1.2),
        squeeze=False,
    )
    for k, ax in enumerate(axes.flat):
        if k >= len(ops):
            ax.set_visible(False)
            continue
        _sweep_panel(ax, ops[k], [r for r in report.rows if r.op == ops[k]], names, color)
    handles = [plt.Line2D([], [], color=color[n], marker="o", label=n) for n in names]
    others = {r.dtype: r.shape for r in report.rows if r.dtype in OTHER_DTYPE_MARKERS}
    handles += [
        plt.Line2D(
            [],
            [],
            color="gray",
            marker=OTHER_DTYPE_MARKERS[d],
            linestyle="none",
            label=f"{d}, {shape[0]}x{shape[1]}",
        )
        for d, shape in others.items()
    ]
    handles.append(
        plt.Line2D(
            [],
            [],
            color="red",
            marker="o",
            markerfacecolor="none",
            linestyle="none",
            markersize=10,
            label="noisy (max/min > 1.5)",
        )
    )
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8)
    machine = report.machine
    fig.suptitle(
        f"softxent bench --sweep: ns per logit against classes C ({SWEEP_DTYPE} lines), "
        f"medians of {report.repeat} runs\n{machine.get('cpu')}, {report.threads} threads, "
        f"softxent kernels: {machine.get('kernels')}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    _save(plt, fig, path)


def _sweep_panel(
    ax: Any, op: str, rows: list[Row], names: list[str], color: dict[str, str]
) -> None:
    """One operation: a line per implementation over the float32 shapes, markers for the
    other dtypes, red rings on noisy figures."""
    for name in names:
        points = sorted(
            (r.shape[1], r.ns_per_logit[name])
            for r in rows
            if r.dtype == SWEEP_DTYPE and name in r.times
        )
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, color=color[name])
        for r in rows:
            if name not in r.times:
                continue
            c, ns = r.shape[1], r.ns_per_logit[name]
            if r.dtype in OTHER_DTYPE_MARKERS:
                ax.plot(
                    [c],
                    [ns],
                    marker=OTHER_DTYPE_MARKERS[r.dtype],
                    color=color[name],
                    linestyle="none",
                    markersize=5,
                )
            if r.noisy.get(name):
                ax.plot(
                    [c],
                    [ns],
                    marker="o",
                    markerfacecolor="none",
                    markeredgecolor="red",
                    linestyle="none",
                    markersize=9,
                )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(op, fontsize=9)
    ax.set_xlabel("classes C", fontsize=8)
    ax.set_ylabel("ns per logit", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, which="major", linewidth=0.3)

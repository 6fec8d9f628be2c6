"""A bar chart of the benchmark's ratios (needs matplotlib, the ``plot`` extra)."""

from __future__ import annotations

import io
from types import ModuleType

from softxent._bench.report import write_atomically
from softxent._bench.runner import Report


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
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_atomically(path, buffer.getvalue())

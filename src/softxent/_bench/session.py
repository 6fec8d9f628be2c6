"""One ``softxent bench`` run: the settings, and the suites run one after the other.

The command line parses its flags into :class:`Settings` and passes a progress factory;
:func:`run_suites` runs the numpy suite (:mod:`~softxent._bench.runner`) and then the
linear, torch and distributed suites into one :class:`~softxent._bench.runner.Report`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np

import softxent as sx
from softxent._bench.peers import FALLBACK, PEER_NAMES, load_peers
from softxent._bench.results import SOFTXENT
from softxent._bench.runner import Report, count_jobs, machine_info, run_bench
from softxent._bench.suites import build_cases, cases_for, sweep_groups

DEFAULT_SHAPE = (4096, 32000)
QUICK_SHAPE = (64, 512)  # --quick: seconds, not minutes (used by the tests)
SUITES = ("numpy", "linear", "torch", "distributed")

#: ``progress(total, suite)`` opens a progress display for ``total`` jobs of ``suite``; what
#: it yields is called with the number of jobs just finished.
ProgressFactory = Callable[[int, str], AbstractContextManager[Callable[[int], object]]]


@dataclass(frozen=True)
class Settings:
    """What to run, validated by the command line."""

    suites: list[str]  # in run order, a subset of SUITES
    quick: bool
    shapes: list[tuple[int, int]]  # the numpy suite's and torch's cross_entropy's
    linear_shapes: list[tuple[int, int, int]]
    distributed_shape: tuple[int, int, int] | None  # None: the suite's own default sizes
    dtypes: list[str]
    ops: list[str]
    repeat: int
    threads: int
    sweep: bool = False  # the numpy suite runs the sweep's shapes instead of shapes x dtypes
    with_fallback: bool = False  # also time softxent on its NumPy kernels (always in a sweep)


def run_suites(settings: Settings, progress: ProgressFactory) -> Report:
    """Run every suite of ``settings`` into one report."""
    if "numpy" in settings.suites:
        report = _run_numpy(settings, progress)
    else:  # no peers to load (importing JAX alone takes seconds)
        report = Report(
            threads=settings.threads,
            repeat=settings.repeat,
            warmup=1,
            machine=machine_info(),
            versions={SOFTXENT: sx.__version__, "numpy": np.__version__},
            peers=[],
            skipped={},
            floors=[],
            rows=[],
            suites=[],
        )
    for suite in settings.suites:
        if suite == "numpy":
            continue
        if suite != "linear" and torch_version() is None:
            report.skipped_suites[suite] = "torch is not installed (pip install 'softxent[torch]')"
            continue
        _SUITE_RUNNERS[suite](report, settings, progress)
        report.suites.append(suite)
    return report


def torch_version() -> str | None:
    """torch's version, or None when it cannot be imported (its suites are then skipped)."""
    try:
        import torch
    except ImportError:
        return None
    return str(torch.__version__)


def _run_numpy(settings: Settings, progress: ProgressFactory) -> Report:
    if settings.sweep:
        cases = cases_for(settings.ops, sweep_groups(quick=settings.quick))
    else:
        cases = build_cases(settings.ops, settings.shapes, settings.dtypes)
    fallback = settings.sweep or settings.with_fallback
    peers, skipped = load_peers((FALLBACK, *PEER_NAMES) if fallback else PEER_NAMES)
    with progress(count_jobs(cases, peers), "numpy") as update:
        report = run_bench(
            cases,
            peers,
            skipped,
            repeat=settings.repeat,
            threads=settings.threads,
            sweep=settings.sweep,
            progress=update,
        )
    return report


def _run_linear(report: Report, settings: Settings, progress: ProgressFactory) -> None:
    from softxent._bench.linear import count_jobs as linear_jobs
    from softxent._bench.linear import run_linear

    shapes, dtypes = settings.linear_shapes, settings.dtypes
    with progress(linear_jobs(shapes, dtypes), "linear") as update:
        report.suite_rows["linear"] = run_linear(
            shapes, dtypes, repeat=settings.repeat, threads=settings.threads, progress=update
        )
    report.settings["linear"] = {"shapes": [list(s) for s in shapes]}


def _run_torch(report: Report, settings: Settings, progress: ProgressFactory) -> None:
    from softxent._bench import torch_suite

    report.versions["torch"] = str(torch_version())
    layout = torch_suite.plan(settings.shapes, settings.linear_shapes, settings.dtypes)
    # --quick is a smoke test: its tiny processes may share the CPUs.
    parallel = min(4, os.cpu_count() or 1) if settings.quick else 1
    with progress(torch_suite.count_jobs(layout), "torch") as update:
        report.suite_rows["torch"] = torch_suite.run_torch(
            settings.shapes,
            settings.linear_shapes,
            settings.dtypes,
            repeat=settings.repeat,
            threads=settings.threads,
            parallel=parallel,
            progress=update,
        )
    report.skipped.update(torch_suite.skipped_peers())
    report.settings["torch"] = {"parallel_processes": parallel}


def _run_distributed(report: Report, settings: Settings, progress: ProgressFactory) -> None:
    from softxent._bench import distributed

    report.versions["torch"] = str(torch_version())
    quick = settings.quick
    worlds = distributed.QUICK_WORLD_SIZES if quick else distributed.DEFAULT_WORLD_SIZES
    sizes = dict(distributed.QUICK_SIZES if quick else distributed.DEFAULT_SIZES)
    if settings.distributed_shape is not None:
        sizes["tokens"], sizes["hidden"], sizes["vocab"] = settings.distributed_shape
    with progress(len(worlds), "distributed") as update:
        report.suite_rows["distributed"] = distributed.run_distributed(
            worlds, **sizes, progress=update
        )
    report.settings["distributed"] = {"world_sizes": list(worlds), **sizes}


_SUITE_RUNNERS: dict[str, Callable[[Report, Settings, ProgressFactory], None]] = {
    "linear": _run_linear,
    "torch": _run_torch,
    "distributed": _run_distributed,
}

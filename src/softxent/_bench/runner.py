"""Run the cases: softxent and every peer side by side, in one process, same inputs.

For each (shape, dtype) the logits are made once and the two bandwidth floors measured on
them; then every case of that group times softxent and each peer that implements it, and
measures the peak extra memory of the NumPy-based implementations.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

import softxent as sx
from softxent import _native
from softxent._bench.peers import FALLBACK, Peer
from softxent._bench.results import SOFTXENT, MeasuredRow
from softxent._bench.suites import (
    Case,
    Timed,
    floor_calls,
    make_inputs,
    make_logits,
    softxent_call,
)
from softxent._bench.timing import (
    SLOW_CALL_SECONDS,
    Timing,
    is_noisy,
    peak_extra_bytes,
    sample_seconds,
)


@dataclass
class Floor:
    """The bandwidth floors of one (shape, dtype): one read pass and one copy pass."""

    shape: tuple[int, int]
    dtype: str
    read: float  # seconds, one read pass (suites.floor_calls)
    copy: float  # seconds, one copy pass


@dataclass
class Row(MeasuredRow):
    """A row of the ``numpy`` suite: ``floor`` is ``"read"``, ``"copy"`` or None.

    ``spread`` holds, per implementation, the fastest and slowest of the timed samples
    whose median is in ``times``.
    """

    spread: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def logits(self) -> int:
        """How many logits one call reads: rows x classes."""
        return math.prod(self.shape)

    @property
    def ns_per_logit(self) -> dict[str, float]:
        """``median seconds * 1e9 / (rows * classes)`` per implementation: the cost of one
        logit, comparable across shapes."""
        return {k: t * 1e9 / self.logits for k, t in self.times.items()}

    @property
    def noisy(self) -> dict[str, bool]:
        """Per implementation, whether its slowest sample took over ``NOISY_SPREAD`` times
        its fastest (the median is then not to be trusted)."""
        return {k: is_noisy(*span) for k, span in self.spread.items()}


@dataclass
class Report:
    """Everything one run measured, plus what is needed to reproduce and judge it."""

    threads: int
    repeat: int
    warmup: int
    machine: dict[str, object]
    versions: dict[str, str]
    peers: list[str]
    skipped: dict[str, str]
    floors: list[Floor]
    rows: list[Row]  # the numpy suite's
    suites: list[str] = field(default_factory=lambda: ["numpy"])  # the suites that ran
    skipped_suites: dict[str, str] = field(default_factory=dict)  # suite -> why not
    # The other suites' rows: "linear" and "torch" -> ImplRow, "distributed" -> WorldRow.
    suite_rows: dict[str, list] = field(default_factory=dict)
    settings: dict[str, dict] = field(default_factory=dict)  # suite -> its sizes
    sweep: bool = False  # the numpy suite ran the sweep's shapes (``--sweep``)


def cpu_model() -> str:
    """The CPU's model name (Linux: ``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model") and value.strip():
                    return value.strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine()


def blas_info(environ: Mapping[str, str] = os.environ) -> str:
    """The BLAS libraries loaded (NumPy's first), each with its version and the kernel it
    picked at run time (OpenBLAS chooses one per CPU, or the one ``OPENBLAS_CORETYPE``
    names: matmul speed differs up to 2x between them), as threadpoolctl reports them; the
    variables of ``environ`` that steer the choice are named when set."""
    try:
        from threadpoolctl import threadpool_info  # optional (the test extra)
    except ImportError:
        return "unknown (pip install threadpoolctl to record it)"
    libraries = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    libraries.sort(key=lambda i: _blas_owner(i) != "numpy")
    parts = [
        f"{_blas_owner(i)}: {i.get('internal_api')} {i.get('version')}"
        + (f", {i['architecture']} kernel" if i.get("architecture") else "")
        for i in libraries
    ]
    steering = [
        f"{name}={environ[name]}"
        for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
        if name in environ
    ]
    text = "; ".join(parts) or "none loaded"
    return f"{text} ({', '.join(steering)})" if steering else text


def _blas_owner(info: Mapping[str, object]) -> str:
    """Who loaded a BLAS library: ``"numpy"`` when it is NumPy's own (threadpoolctl names
    the library NumPy's extension modules link to), else the folder that ships it
    (``.../scipy.libs/libopenblas.so`` -> scipy)."""
    if info.get("user_api") == "blas" and _is_numpys(str(info.get("filepath", ""))):
        return "numpy"
    folder = os.path.basename(os.path.dirname(str(info.get("filepath", ""))))
    return folder.removesuffix(".libs") or "?"


def _is_numpys(path: str) -> bool:
    """Whether ``path`` lies in NumPy's installation (its package or its wheel's
    ``numpy.libs``), or is the BLAS NumPy's ``show_config`` names (conda, distributions)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(np.__file__)))
    folder = os.path.dirname(os.path.abspath(path))
    if folder in (os.path.join(root, "numpy.libs"), os.path.join(root, "numpy", ".dylibs")):
        return True
    try:
        config = np.show_config(mode="dicts")
    except (TypeError, ValueError):  # a NumPy without the dict mode
        return False
    deps = config.get("Build Dependencies", {}) if isinstance(config, dict) else {}
    blas = deps.get("blas", {}) if isinstance(deps, dict) else {}
    lib = str(blas.get("lib directory", "")) if isinstance(blas, dict) else ""
    return bool(lib) and folder == os.path.abspath(lib)


def machine_info() -> dict[str, object]:
    """The machine a report was measured on, and which of softxent's kernels ran there."""
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu": cpu_model(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        # The native instruction set picked at import ("x86-64-v4": AVX-512, ...) or
        # "numpy" for the fallback kernels (not built, or SOFTXENT_NATIVE=0).
        "kernels": _native.kernels(),
        "blas": blas_info(),
    }


def count_jobs(cases: Sequence[Case], peers: Sequence[Peer]) -> int:
    """How many measurements :func:`run_cases` makes (for the progress bar)."""
    groups = {(c.shape, c.dtype) for c in cases if not c.op.demo}
    impls = sum(1 + sum(c.op.kernel in p.ops for p in peers) for c in cases)
    return 2 * len(groups) + impls


def _describe(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _measure(
    timed: Timed, inputs: list[np.ndarray], *, repeat: int, memory: bool
) -> tuple[Timing, int | None]:
    samples = sample_seconds(
        timed.fn, repeat=repeat, setup=timed.setup, slow_call_seconds=SLOW_CALL_SECONDS
    )
    timing = Timing.of(samples)
    extra = None
    if memory:
        extra = peak_extra_bytes(timed.fn, inputs=[*inputs, *timed.buffers], setup=timed.setup)
    return timing, extra


def run_cases(
    cases: Sequence[Case],
    peers: Sequence[Peer],
    *,
    repeat: int,
    threads: int,
    progress: Callable[[int], object] = lambda n: None,
) -> tuple[list[Floor], list[Row]]:
    """Measure every case with softxent and the peers that implement it.

    A failure of one implementation (a dtype a peer does not support, say) is recorded in
    the row's ``errors`` and the run goes on.
    """
    floors: list[Floor] = []
    rows: list[Row] = []
    previous_threads = sx.get_num_threads()
    with contextlib.ExitStack() as stack:
        sx.set_num_threads(threads)
        stack.callback(sx.set_num_threads, previous_threads)
        for peer in peers:
            stack.enter_context(peer.threads(threads))
        floor_pool = stack.enter_context(ThreadPoolExecutor(max_workers=max(1, threads)))
        # The textbook NumPy softmax overflows in exp (float16 especially); that is its result.
        stack.enter_context(np.errstate(all="ignore"))

        groups: dict[tuple, list[Case]] = {}
        for case in cases:
            groups.setdefault((case.shape, case.dtype, case.op.demo), []).append(case)
        for (shape, dtype, demo), group in groups.items():
            x, y = make_logits(shape, dtype)
            floor = None
            if not demo:
                calls = floor_calls(x, floor_pool, threads=threads)
                # A floor is a lower bound: the fastest sample, since a busy machine only
                # slows a pass down (a slow median floor would flatter every ratio to it).
                read = min(sample_seconds(calls["read"].fn, repeat=repeat))
                progress(1)
                copy = min(sample_seconds(calls["copy"].fn, repeat=repeat))
                progress(1)
                del calls  # the copy buffer
                floor = Floor(shape, dtype, read=read, copy=copy)
                floors.append(floor)
            for case in group:
                rows.append(_run_case(case, x, y, floor, peers, repeat=repeat, progress=progress))
            del x, y
    return floors, rows


def _run_case(
    case: Case,
    x: np.ndarray,
    y: np.ndarray,
    floor: Floor | None,
    peers: Sequence[Peer],
    *,
    repeat: int,
    progress: Callable[[int], object],
) -> Row:
    op = case.op
    floor_seconds = getattr(floor, op.floor) if floor is not None and op.floor else None
    row = Row(op.name, case.shape, case.dtype, op.floor, floor_seconds)
    inputs = make_inputs(op, x, y)
    impls: list[tuple[str, Callable[[], Timed], bool]] = [
        (SOFTXENT, lambda: softxent_call(op, inputs), True)
    ]
    impls += [
        (p.name, functools.partial(p.call, op, inputs), p.measures_memory)
        for p in peers
        if op.kernel in p.ops
    ]
    for name, make, memory in impls:
        try:
            timing, extra = _measure(make(), inputs.arrays(), repeat=repeat, memory=memory)
        except Exception as error:  # one implementation failing must not stop the others
            row.errors[name] = _describe(error)
        else:
            row.times[name] = timing.median
            row.spread[name] = (timing.fastest, timing.slowest)
            row.memory[name] = extra
        progress(1)
    return row


def run_bench(
    cases: Sequence[Case],
    peers: Sequence[Peer],
    skipped: dict[str, str],
    *,
    repeat: int,
    threads: int,
    sweep: bool = False,
    progress: Callable[[int], object] = lambda n: None,
) -> Report:
    """Run ``cases`` (see :func:`run_cases`) and wrap the results with the run's context;
    ``sweep``: the cases are the sweep's (the report then reads in ns per logit)."""
    floors, rows = run_cases(cases, peers, repeat=repeat, threads=threads, progress=progress)
    versions = {SOFTXENT: sx.__version__, "numpy": np.__version__}
    # Libraries only: softxent_numpy is softxent.
    versions.update({p.name: p.version for p in peers if p.name not in ("numpy", FALLBACK)})
    return Report(
        threads=threads,
        repeat=repeat,
        warmup=1,
        machine=machine_info(),
        versions=versions,
        peers=[p.name for p in peers],
        skipped=dict(skipped),
        floors=floors,
        rows=rows,
        sweep=sweep,
    )

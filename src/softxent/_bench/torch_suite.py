"""The ``torch`` suite: ``softxent.torch`` against torch 2.13's own losses, on CPU.

Every implementation runs in a fresh process (:func:`softxent._bench.child.run_job`) that
times it and measures its peak extra memory as the growth of ``ru_maxrss``; see
:mod:`softxent._bench.torch_impls` for what each implementation is. The processes run one
after another, so that their timings do not disturb one another, except in ``--quick``
mode, a smoke test, where up to ``parallel`` run at once.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import multiprocessing.context
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from softxent._bench.child import run_job
from softxent._bench.results import ImplRow

CROSS_ENTROPY = ("softxent", "softxent_inplace", "torch")
LINEAR = ("softxent", "torch_reference", "torch_lce", "torch_chunked", "torch_chunked_ar1")
CCE = "cce"
FLOOR = "matmuls"  # the name torch_impls builds the three matmuls under
TINY = {"cross_entropy": (4, 16), "linear_cross_entropy": (4, 8, 16)}


def cce_available() -> bool:
    """Whether Cut Cross-Entropy is installed (checked without importing it)."""
    return importlib.util.find_spec("cut_cross_entropy") is not None


def skipped_peers() -> dict[str, str]:
    """``{peer: why}`` for the torch suite's optional peers that are not installed."""
    if cce_available():
        return {}
    return {CCE: "not installed (Cut Cross-Entropy: pip install cut-cross-entropy)"}


def plan(
    ce_shapes: Sequence[tuple[int, int]],
    linear_shapes: Sequence[tuple[int, int, int]],
    dtypes: Sequence[str],
) -> list[tuple[str, tuple[int, ...], str, list[str]]]:
    """``(op, shape, dtype, implementations)`` per row; the floor, if any, comes first."""
    linear = [FLOOR, *LINEAR, *([CCE] if cce_available() else [])]
    rows: list[tuple[str, tuple[int, ...], str, list[str]]]
    rows = [("cross_entropy", s, t, list(CROSS_ENTROPY)) for s in ce_shapes for t in dtypes]
    rows += [("linear_cross_entropy", s, t, linear) for s in linear_shapes for t in dtypes]
    return rows


def count_jobs(rows: Sequence[tuple]) -> int:
    return sum(len(impls) for *_, impls in rows)


def _context() -> multiprocessing.context.BaseContext:
    """forkserver (with torch imported once, before any torch thread exists) where it exists.

    Each job still gets a process of its own that has run nothing else: a fork of the
    server, which only imported modules. So the children start in milliseconds instead of
    seconds of importing torch. Elsewhere (Windows): spawn.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "softxent.torch", "softxent._bench.torch_impls"])
    return context


def _describe(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def run_child(job: dict) -> dict:
    """Run one job in a fresh process; its result, or ``{"error": what failed}``."""
    with ProcessPoolExecutor(max_workers=1, mp_context=_context()) as pool:
        try:
            return pool.submit(run_job, job).result()
        except Exception as error:  # the job's own error, or a child killed (out of memory)
            return {"error": _describe(error)}


def run_torch(
    ce_shapes: Sequence[tuple[int, int]],
    linear_shapes: Sequence[tuple[int, int, int]],
    dtypes: Sequence[str],
    *,
    repeat: int,
    threads: int,
    parallel: int = 1,
    progress: Callable[[int], object] = lambda n: None,
) -> list[ImplRow]:
    """One row per (operation, shape, dtype); every implementation in its own process."""
    layout = plan(ce_shapes, linear_shapes, dtypes)
    jobs = [
        {
            "op": op,
            "impl": impl,
            "shape": list(shape),
            "dtype": dtype,
            "repeat": repeat,
            "threads": threads,
            "memory": impl != FLOOR,  # the floor's buffers are preallocated: nothing to see
            "tiny": list(TINY[op]),
        }
        for op, shape, dtype, impls in layout
        for impl in impls
    ]

    def run(job):
        result = run_child(job)
        progress(1)
        return result

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        results = iter(list(pool.map(run, jobs)))
    rows = []
    for op, shape, dtype, impls in layout:
        row = ImplRow(
            op, tuple(shape), dtype, None, None, suite="torch", memory_method="ru_maxrss"
        )
        for impl in impls:
            result = next(results)
            if "error" in result:
                row.errors[impl] = result["error"]
            elif impl == FLOOR:
                row.floor, row.floor_seconds = FLOOR, result["seconds"]
            else:
                row.times[impl] = result["seconds"]
                row.memory[impl] = result["memory_bytes"]
        rows.append(row)
    return rows

"""The worker threads that run row blocks in parallel.

NumPy releases the GIL inside its loops, so Python threads give real parallelism on blocks
large enough that the NumPy calls dominate. Each call hands out its blocks dynamically
(the next free thread takes the next block) but every block writes only its own rows and
all reductions across rows happen afterwards in a fixed order, so results are bitwise the
same for any thread count and under concurrent calls.
"""

from __future__ import annotations

import itertools
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_executor_size = 0


def _default_num_threads() -> int:
    """``SOFTXENT_NUM_THREADS`` if it is a positive integer, else the CPUs we may use.

    Called once, at import: an invalid value must not make ``import softxent`` fail, so it
    is reported by one ``RuntimeWarning`` and the default is used.
    """
    cpus = _available_cpus()
    env = os.environ.get("SOFTXENT_NUM_THREADS")
    if not env:  # unset or empty
        return cpus
    try:
        value = int(env)
    except ValueError:
        value = 0
    if value >= 1:
        return value
    warnings.warn(
        f"environment variable SOFTXENT_NUM_THREADS={env!r} is not a positive integer "
        f"(allowed: 1, 2, 3, ...); using the default, {cpus} thread(s) (the CPUs this "
        "process may run on)",
        RuntimeWarning,
        stacklevel=2,
    )
    return cpus


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


_num_threads = _default_num_threads()


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (``n >= 1``) for the kernels of later calls.

    The default is the number of CPUs this process may run on, or the environment
    variable ``SOFTXENT_NUM_THREADS``. Results do not depend on it.
    """
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int >= 1, got {n!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _num_threads = n


def get_num_threads() -> int:
    """The number of threads the kernels use (see :func:`set_num_threads`)."""
    return _num_threads


def _pool(workers: int) -> ThreadPoolExecutor:
    global _executor, _executor_size
    with _lock:
        if _executor is None or _executor_size < workers:
            # Grow by replacing; the old pool finishes what it was given.
            old = _executor
            _executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="softxent")
            _executor_size = workers
            if old is not None:
                old.shutdown(wait=False)
        return _executor


def run_parallel(work: Callable[[Iterable[T]], None], tasks: Sequence[T]) -> None:
    """Call ``work(tasks_subset)`` until every task is done, on up to ``num_threads`` threads.

    ``work`` receives an iterable of tasks (lazily drawn): it should iterate over it (each worker
    allocates its scratch buffers once and then processes the tasks it draws).
    """
    threads = min(_num_threads, len(tasks))
    if threads <= 1:
        work(tasks)
        return
    counter = itertools.count()  # next() on a count is atomic under the GIL

    def draw() -> Iterable[T]:
        return _Drawn(tasks, counter)

    pool = _pool(threads - 1)
    futures = [pool.submit(work, draw()) for _ in range(threads - 1)]
    error: BaseException | None = None
    try:
        work(draw())  # the calling thread works too instead of waiting idle
    except BaseException as exc:  # still wait for the workers: they use our buffers
        error = exc
    for future in futures:
        try:
            future.result()
        except BaseException as exc:
            error = error or exc
    if error is not None:
        raise error


class _Drawn(Generic[T]):
    """An iterable that hands out the shared tasks one at a time."""

    def __init__(self, tasks: Sequence[T], counter: itertools.count) -> None:
        self._tasks = tasks
        self._counter = counter

    def __iter__(self) -> Iterator[T]:
        while True:
            i = next(self._counter)
            if i >= len(self._tasks):
                return
            yield self._tasks[i]

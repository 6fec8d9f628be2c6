"""Wall-clock time (median and spread) and peak extra memory of one call.

Both measurements take a zero-argument callable (and an optional untimed ``setup`` run
before every call, e.g. to restore logits that the call overwrites in place).
"""

from __future__ import annotations

import math
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

#: A call whose warm-up took longer than this many seconds is timed by that call alone
#: (some peers take tens of seconds on float16: a sweep must still end within the hour).
SLOW_CALL_SECONDS = 2.0

#: A figure whose slowest timed sample took more than this many times its fastest is
#: flagged as noisy: the machine was busy, or the call's speed varies from call to call.
NOISY_SPREAD = 1.5


@dataclass(frozen=True)
class Timing:
    """Seconds per call over the timed samples: the median and the spread (min, max)."""

    median: float
    fastest: float
    slowest: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Timing:
        return cls(statistics.median(samples), min(samples), max(samples))


def is_noisy(fastest: float, slowest: float) -> bool:
    """``slowest > NOISY_SPREAD * fastest``: the median is not to be trusted."""
    return slowest > NOISY_SPREAD * fastest


def sample_seconds(
    fn: Callable[[], object],
    *,
    repeat: int,
    warmup: int = 1,
    setup: Callable[[], object] | None = None,
    min_sample_seconds: float = 0.01,
    slow_call_seconds: float | None = None,
) -> list[float]:
    """``repeat`` samples of the wall-clock seconds per call of ``fn``, after ``warmup``.

    The warm-up pays one-off costs (JIT compilation, first-touch page faults of freshly
    allocated outputs, thread-pool start-up) that a steady-state training loop never sees.

    With ``slow_call_seconds`` (the numpy suite passes :data:`SLOW_CALL_SECONDS`), a call
    whose warm-up takes longer is not repeated: its one sample is the warm-up's time (a
    figure with no spread; one-off costs are a small part of so long a call).

    A call faster than ``min_sample_seconds`` is timed as a loop of enough calls to fill
    that time, divided by their number (as :mod:`timeit` does): a single call of a few
    microseconds mostly measures cold caches and the timer. With ``setup`` (run before
    every call, untimed) each sample is one call.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    for _ in range(warmup):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        warm = time.perf_counter() - start
        if slow_call_seconds is not None and warm > slow_call_seconds:  # repeats: minutes
            return [warm]
    number = 1
    if setup is None:
        start = time.perf_counter()
        fn()
        once = time.perf_counter() - start
        if once < min_sample_seconds:
            number = min(100_000, math.ceil(min_sample_seconds / max(once, 1e-9)))
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return times


def median_seconds(
    fn: Callable[[], object],
    *,
    repeat: int,
    warmup: int = 1,
    setup: Callable[[], object] | None = None,
    min_sample_seconds: float = 0.01,
) -> float:
    """Median of :func:`sample_seconds` (same arguments).

    The median, not the mean, because a shared machine adds rare, large outliers.
    """
    samples = sample_seconds(
        fn, repeat=repeat, warmup=warmup, setup=setup, min_sample_seconds=min_sample_seconds
    )
    return statistics.median(samples)


def result_arrays(result: object) -> list[np.ndarray]:
    """The NumPy arrays in a result: an array, a NumPy scalar, or a (named) tuple of them."""
    if isinstance(result, np.ndarray):
        return [result]
    if isinstance(result, np.generic):
        return [np.asarray(result)]
    if isinstance(result, tuple):
        return [a for item in result for a in result_arrays(item)]
    return []


def peak_extra_bytes(
    fn: Callable[[], object],
    *,
    inputs: Iterable[np.ndarray] = (),
    setup: Callable[[], object] | None = None,
) -> int:
    """Peak bytes ``fn`` allocates beyond its outputs, seen by :mod:`tracemalloc`.

    .. math::

        \\text{extra} = \\max(0,\\ \\text{peak traced} - \\text{traced before}
        - \\text{bytes of the returned arrays that are not views of } \\texttt{inputs})

    Notes
    -----
    NumPy reports its array buffers to :mod:`tracemalloc`, so this sees every temporary a
    NumPy implementation creates, in any thread. Allocators that do not report to it (torch,
    XLA) are invisible: their memory cannot be measured this way. An output written into one
    of ``inputs`` (``out=logits``) costs nothing. The call runs once, untimed; tracing slows
    it down a little.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.ones((100, 1000))
    >>> peak_extra_bytes(lambda: np.exp(x).sum(axis=1), inputs=[x]) >= x.nbytes
    True
    >>> peak_extra_bytes(lambda: np.exp(x, out=x), inputs=[x]) < 10_000
    True
    """
    inputs = list(inputs)
    if setup is not None:
        setup()
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if started:
            tracemalloc.stop()
    outputs = sum(
        a.nbytes
        for a in result_arrays(result)
        if not any(np.may_share_memory(a, i) for i in inputs)
    )
    return max(0, peak - before - outputs)

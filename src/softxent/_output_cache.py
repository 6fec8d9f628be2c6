"""Large outputs whose memory is kept when they are freed, for the next call of their size.

A large array NumPy allocates is a fresh mapping from the OS, which zeroes each page on its
first write: at 4096 x 32000 float32, ``softmax`` into a fresh output took 0.55-0.6 ns per
logit against 0.27-0.33 into memory written before (2 threads). A training loop drops the
last step's gradient just before it asks for the next one of the same size, so the outputs
of :func:`empty_like` come from the native core's buffers (``softxent._core.buffer``):
arrays like any other, whose memory, once the array and every view of it are gone, is kept
for the next output of exactly that many bytes (at most two blocks, the limit set here in
all; kept memory stays resident until it is handed out again, pushed out by a newer block,
or released by ``set_output_cache(0)``). Outputs under 4 MiB, strided layouts, and the
NumPy fallback (no native core) use ``numpy.empty_like``.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
from numpy.typing import DTypeLike

from softxent import _native

#: Outputs smaller than this many bytes are NumPy's own: the core keeps no smaller blocks
#: (and glibc's free lists already reuse them).
MIN_BYTES = 1 << 22 if _native.core is None else _native.core.BUFFER_MIN_BYTES

_ENV = "SOFTXENT_OUTPUT_CACHE"


def _default_limit() -> int:
    """``SOFTXENT_OUTPUT_CACHE`` (bytes) when set, else an eighth of the physical memory."""
    setting = os.environ.get(_ENV, "").strip()
    if setting:
        try:
            limit = int(setting)
        except ValueError:
            limit = -1
        if limit < 0:
            raise ValueError(
                f"environment variable {_ENV} must be a number of bytes >= 0 (0 keeps no "
                f"freed output), got {setting!r}"
            )
        return limit
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 8
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): keep nothing
        return 0


_limit = _default_limit()
if _native.core is not None:
    _native.core.set_buffer_cache(_limit)


def set_output_cache(max_bytes: int) -> None:
    """Keep at most ``max_bytes`` of the memory of freed large outputs for later calls.

    softxent's large outputs (a gradient, a softmax: 4 MiB and more) come from memory that
    an earlier output of the same size left behind, when there is some: a fresh array's
    pages are zeroed by the OS on first touch, which at language-model sizes costs a third
    to a half of the call (``softmax`` at 4096 x 32000 float32, 2 threads: 1.5-2x faster
    into kept memory). At most two freed blocks are kept, ``max_bytes`` in all (default:
    an eighth of the physical memory, or the environment variable ``SOFTXENT_OUTPUT_CACHE``
    in bytes), and they stay in memory until reused, pushed out by newer ones, or
    released: ``0`` keeps nothing and frees what is kept now. When memory runs short, an
    output of another size frees what is kept before it fails. Such outputs are ordinary
    writable arrays whose ``base`` is the block (so, as for any view, ``ndarray.resize``
    refuses them).

    Parameters
    ----------
    max_bytes : int
        The most bytes kept, ``>= 0``.

    Examples
    --------
    >>> import softxent as sx
    >>> previous = sx.get_output_cache()
    >>> sx.set_output_cache(0)  # free what is kept, keep nothing from now on
    >>> sx.get_output_cache()
    0
    >>> sx.set_output_cache(previous)
    """
    global _limit
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)):
        raise TypeError(
            f"max_bytes must be an int (a number of bytes), got {type(max_bytes).__name__}"
        )
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0 (0 keeps nothing), got {max_bytes}")
    _limit = int(max_bytes)
    if _native.core is not None:
        _native.core.set_buffer_cache(_limit)


def get_output_cache() -> int:
    """The most bytes of freed outputs kept for later calls (see :func:`set_output_cache`)."""
    return _limit


def empty_like(a: np.ndarray, dtype: DTypeLike | None = None) -> np.ndarray:
    """An uninitialized array of ``a``'s shape and layout and of ``dtype`` (default:
    ``a``'s), as ``numpy.empty_like``; from a kept block when it is large and ``a`` C- or
    Fortran-contiguous (and the native core is on: with the NumPy kernels forced, as the
    benchmark times them, outputs are NumPy's)."""
    core = _native.core
    dt = a.dtype if dtype is None else np.dtype(dtype)
    if core is None or a.size * dt.itemsize < MIN_BYTES or _limit == 0:
        return np.empty_like(a, dt)
    order: Literal["C", "F"]
    if a.flags.c_contiguous:
        order = "C"
    elif a.flags.f_contiguous:
        order = "F"
    else:  # numpy.empty_like keeps the strides' order
        return np.empty_like(a, dt)
    flat = np.frombuffer(core.buffer(a.size * dt.itemsize), dtype=dt)
    return flat.reshape(a.shape, order=order)

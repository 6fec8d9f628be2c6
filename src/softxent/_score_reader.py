"""Read the logits of :func:`softxent.score` in batches of whole rows of bounded size.

A batch is a view of the caller's array (an in-memory array or a memory-mapped ``.npy``),
never a copy, so what is in memory at a time is one batch, however large the file. Once
the caller is done with a batch of a read-only memory map, its pages are given back to
the operating system, so the resident set does not grow to the file's size.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Iterator
from typing import Any

import numpy as np


def row_batches(
    xm: np.ndarray, t: np.ndarray, batch_bytes: int
) -> Iterator[tuple[np.ndarray, Any]]:
    """:func:`_slices`, each batch's pages released (:func:`release_pages`) once the
    caller asks for the next one."""
    for batch, target in _slices(xm, t, batch_bytes):
        yield batch, target
        release_pages(batch)


def _slices(xm: np.ndarray, t: np.ndarray, batch_bytes: int) -> Iterator[tuple[np.ndarray, Any]]:
    """``(logits batch (b, *rest, C), target batch (b, *rest))`` in C order of the batch.

    ``xm`` holds the classes last and ``t`` its shape without them. Batches are slices
    along the first batch axis whose trailing rows fit in ``batch_bytes``; axes in front
    of it are looped over one index at a time.
    """
    batch_shape = xm.shape[:-1]
    row_bytes = xm.shape[-1] * xm.itemsize
    if not batch_shape:  # a single row
        yield xm[np.newaxis], np.reshape(t, (1,))
        return
    depth = len(batch_shape) - 1
    for d in range(len(batch_shape)):
        if math.prod(batch_shape[d + 1 :]) * row_bytes <= batch_bytes:
            depth = d
            break
    inner = math.prod(batch_shape[depth + 1 :]) * row_bytes
    step = max(1, batch_bytes // max(1, inner))
    for outer in np.ndindex(*batch_shape[:depth]):
        for a in range(0, batch_shape[depth], step):
            index = (*outer, slice(a, a + step))
            yield xm[index], t[index]


def release_pages(batch: np.ndarray) -> None:
    """Drop the pages of a batch read from a read-only file mapping from our resident set.

    The data stays in the OS page cache; without this a scan of a memory-mapped file
    would count the whole file as our memory. Only read-only shared mappings are touched,
    so no data can be lost; any failure just leaves the pages mapped.
    """
    base: Any = batch  # walked down to the buffer that owns the memory
    while isinstance(base, np.ndarray):
        if isinstance(base, np.memmap) and getattr(base, "mode", None) != "r":
            return
        base = base.base
    if not isinstance(base, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        start = np.frombuffer(base, np.uint8).__array_interface__["data"][0]
        low, high = _byte_bounds(batch)
        page = mmap.PAGESIZE
        first = -(-(low - start) // page) * page  # whole pages inside the batch only
        last = (high - start) // page * page
        if last > first:
            base.madvise(mmap.MADV_DONTNEED, first, last - first)
    except (ValueError, OSError, TypeError, AttributeError):  # pragma: no cover
        pass


def _byte_bounds(a: np.ndarray) -> tuple[int, int]:
    try:
        from numpy.lib.array_utils import byte_bounds
    except ImportError:  # pragma: no cover - NumPy < 2.0
        byte_bounds = getattr(np, "byte_bounds")  # noqa: B009 - gone in NumPy 2
    return byte_bounds(a)

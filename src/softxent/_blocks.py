"""Row blocks: any N-d array seen as a sequence of ``(rows, C)`` views, classes last.

The kernels work on blocks of whole rows (one row = the C entries along the class axis)
small enough to stay in the core's cache, so every pass after the first reads from cache
instead of memory. A block is a strided *view* of the caller's array, never a copy of the
whole array, so Fortran-ordered, transposed and sliced inputs take the same path as
C-contiguous ones.

Several arrays of the same shape (logits, probability targets, the gradient output) are
split into the same blocks: their batch dimensions are merged only where all of them allow
it, and what cannot be merged becomes an outer loop.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

#: Bytes of one block in the compute dtype. 2 MiB: measured fastest on 2 threads for
#: (4096, 32000) float32 (blocks live in L2/L3 while exp, which dominates, runs); the tests
#: monkeypatch it to tiny values to exercise ragged block boundaries.
BLOCK_BYTES = 2 * 1024 * 1024


def rows_per_block(num_classes: int, itemsize: int, block_bytes: int | None = None) -> int:
    """How many rows of ``num_classes`` entries of ``itemsize`` bytes fill one block
    of ``block_bytes`` (default :data:`BLOCK_BYTES`)."""
    budget = BLOCK_BYTES if block_bytes is None else block_bytes
    return max(1, budget // max(1, num_classes * itemsize))


class Task(NamedTuple):
    """One block: rows ``[start, stop)`` of the inner run at outer position ``outer``."""

    outer: tuple[int, ...]
    start: int
    stop: int
    row0: int  # index of the block's first row in the flattened batch (C order)


class RowBlocks:
    """Split same-shaped arrays into ``(rows, C)`` blocks along ``axis``.

    Parameters
    ----------
    arrays : sequence of ndarray
        Arrays of one shape; the first is the logits.
    axis : int
        The class axis (non-negative).

    Attributes
    ----------
    batch_shape : tuple of int
        The shape without the class axis; per-row results are laid out in its C order.
    num_rows, num_classes : int
    """

    def __init__(self, arrays: Sequence[np.ndarray], axis: int) -> None:
        moved = [a if axis == a.ndim - 1 else np.moveaxis(a, axis, -1) for a in arrays]
        shape = moved[0].shape
        self.batch_shape = shape[:-1]
        self.num_classes = shape[-1]
        self.num_rows = math.prod(self.batch_shape)
        if len(shape) == 2:  # already (rows, C): the common case costs nothing more
            self._views = moved
            self._outer_shape: tuple[int, ...] = ()
            self._inner = shape[0]
            return
        if len(shape) == 1:
            self._views = [m[np.newaxis] for m in moved]
            self._outer_shape = ()
            self._inner = 1
            return
        # Merge batch dimensions from the innermost outwards while, for every array, the
        # outer dimension steps exactly over the inner one; drop length-1 dimensions.
        groups: list[tuple[int, list[int]]] = []  # (length, strides per array), inner last
        for dim in reversed(range(len(shape) - 1)):
            length = shape[dim]
            strides = [m.strides[dim] for m in moved]
            if length == 1:
                continue
            if groups and all(
                s == gs * groups[-1][0] for s, gs in zip(strides, groups[-1][1], strict=True)
            ):
                groups[-1] = (groups[-1][0] * length, groups[-1][1])
            else:
                groups.append((length, strides))
        if not groups:
            groups = [(1, [0] * len(moved))]
        groups.reverse()  # outer first
        lengths = tuple(g[0] for g in groups)
        self._outer_shape = lengths[:-1]
        self._inner = lengths[-1]
        self._views = [
            as_strided(
                m,
                shape=(*lengths, self.num_classes),
                strides=(*(g[1][i] for g in groups), m.strides[-1]),
                writeable=m.flags.writeable,
            )
            for i, m in enumerate(moved)
        ]

    def tasks(self, block_rows: int) -> list[Task]:
        """The blocks of at most ``block_rows`` rows, in batch order."""
        if not self._outer_shape and self._inner <= block_rows:
            return [Task((), 0, self._inner, 0)]  # one block: skip the loops
        out = []
        row0 = 0
        for outer in itertools.product(*(range(n) for n in self._outer_shape)):
            for start in range(0, self._inner, block_rows):
                stop = min(start + block_rows, self._inner)
                out.append(Task(outer, start, stop, row0 + start))
            row0 += self._inner
        return out

    def block(self, index: int, task: Task) -> np.ndarray:
        """The ``(rows, C)`` view of array ``index`` for ``task``."""
        view = self._views[index]
        if task.outer:
            view = view[task.outer]
        return view[task.start : task.stop]

    def iter_blocks(self, index: int, block_rows: int) -> Iterator[tuple[Task, np.ndarray]]:
        for task in self.tasks(block_rows):
            yield task, self.block(index, task)

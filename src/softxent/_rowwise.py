"""Drive a block kernel over every row block of a call, on the worker threads."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import overload

import numpy as np

from softxent import _blocks
from softxent._blocks import RowBlocks, Task
from softxent._kernels import Consts, make_consts
from softxent._threads import run_parallel

_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)


def compute_dtype(*dtypes: np.dtype) -> np.dtype:
    """float64 if any of ``dtypes`` is float64, else float32 (float16 is computed in float32)."""
    return _FLOAT64 if _FLOAT64 in dtypes else _FLOAT32


class Scratch(Sequence[np.ndarray]):
    """A worker's scratch buffers, each a C-contiguous ``(rows, C)`` array of the compute
    dtype allocated on first use.

    A native block kernel takes most blocks without the NumPy kernels' scratch, so a buffer
    nobody indexes is never allocated (the extra memory of a call stays one or two blocks
    per thread). ``scratch[i:j]`` is the same kind of view of buffers ``i`` to ``j - 1``.
    """

    def __init__(
        self,
        store: list[np.ndarray | None],
        shape: tuple[int, int],
        ct: np.dtype,
        *,
        rows: int | None = None,
        first: int = 0,
        stop: int | None = None,
    ) -> None:
        self._store = store  # shared by the views of one worker: allocated once per worker
        self._shape = shape  # (block rows, C): the size each buffer is allocated at
        self._ct = ct
        self._rows = shape[0] if rows is None else rows
        self._first = first
        self._stop = len(store) if stop is None else stop

    def rows(self, rows: int) -> Scratch:
        """The same buffers, each seen as its first ``rows`` rows (a shorter last block)."""
        return Scratch(
            self._store, self._shape, self._ct, rows=rows, first=self._first, stop=self._stop
        )

    def __len__(self) -> int:
        return self._stop - self._first

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, index: slice) -> Scratch: ...
    def __getitem__(self, index: int | slice) -> np.ndarray | Scratch:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("Scratch slices take every buffer: scratch[i:j]")
            first = self._first + start
            return Scratch(
                self._store, self._shape, self._ct, rows=self._rows, first=first,
                stop=max(first, self._first + stop),
            )  # fmt: skip
        if not 0 <= index < len(self):
            raise IndexError(f"scratch buffer {index} of {len(self)}")
        k = self._first + index
        buffer = self._store[k]
        if buffer is None:
            buffer = self._store[k] = np.empty(self._shape, self._ct)
        return buffer[: self._rows]


def for_each_block(
    blocks: RowBlocks,
    ct: np.dtype,
    body: Callable[[Task, Sequence[np.ndarray], Consts], None],
    num_scratch: int,
    *,
    block_bytes: int | None = None,
) -> None:
    """Call ``body(task, scratch, consts)`` for every block, in parallel.

    ``scratch`` holds ``num_scratch`` C-contiguous ``(rows, C)`` buffers of ``ct`` owned by
    the calling worker (a :class:`Scratch`: each allocated once per worker, when first
    indexed). A block holds at most ``block_bytes`` of ``ct`` (default
    ``_blocks.BLOCK_BYTES``), or one row.
    """
    per_block = _blocks.rows_per_block(blocks.num_classes, ct.itemsize, block_bytes)
    block_rows = min(per_block, max(1, blocks.num_rows))
    tasks = blocks.tasks(block_rows)
    consts = make_consts(ct, blocks.num_classes, block_rows)

    def work(my_tasks: Iterable[Task]) -> None:
        scratch = Scratch([None] * num_scratch, (block_rows, blocks.num_classes), ct)
        # NaN and inf results are the documented semantics, not something to warn about;
        # errstate is per thread, so each worker sets it.
        with np.errstate(all="ignore"):
            for task in my_tasks:
                body(task, scratch.rows(task.stop - task.start), consts)

    if len(tasks) == 1:  # small input: no thread hand-off
        work(tasks)
        return
    run_parallel(work, tasks)


def work_buffer(
    ob: np.ndarray | None, scratch: np.ndarray, ct: np.dtype, in_place: bool = False
) -> np.ndarray:
    """The output block itself when it can hold the intermediate values, else ``scratch``.

    Not when computing in place: the kernels may need to reread the input after the
    exponentials (rows redone with a shift, see ``exp_block``).
    """
    if ob is not None and not in_place and ob.dtype == ct and ob.flags.c_contiguous:
        return ob
    return scratch

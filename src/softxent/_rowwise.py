"""Drive a block kernel over every row block of a call, on the worker threads."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from softxent import _blocks
from softxent._blocks import RowBlocks, Task
from softxent._kernels import Consts, make_consts
from softxent._threads import run_parallel

_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)


def compute_dtype(*dtypes: np.dtype) -> np.dtype:
    """float64 if any of ``dtypes`` is float64, else float32 (float16 is computed in float32)."""
    return _FLOAT64 if _FLOAT64 in dtypes else _FLOAT32


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
    the calling worker (allocated once per worker, not per block). A block holds at most
    ``block_bytes`` of ``ct`` (default ``_blocks.BLOCK_BYTES``), or one row.
    """
    per_block = _blocks.rows_per_block(blocks.num_classes, ct.itemsize, block_bytes)
    block_rows = min(per_block, max(1, blocks.num_rows))
    tasks = blocks.tasks(block_rows)
    consts = make_consts(ct, blocks.num_classes, block_rows)
    if len(tasks) == 1:  # small input: no thread hand-off
        task = tasks[0]
        shape = (task.stop - task.start, blocks.num_classes)
        with np.errstate(all="ignore"):
            body(task, [np.empty(shape, ct) for _ in range(num_scratch)], consts)
        return

    def work(my_tasks) -> None:
        buffers = [np.empty((block_rows, blocks.num_classes), ct) for _ in range(num_scratch)]
        # NaN and inf results are the documented semantics, not something to warn about;
        # errstate is per thread, so each worker sets it.
        with np.errstate(all="ignore"):
            for task in my_tasks:
                rows = task.stop - task.start
                body(task, [b[:rows] for b in buffers], consts)

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

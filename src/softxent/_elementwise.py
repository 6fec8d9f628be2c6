"""The driver of the elementwise losses (mse_loss, binary cross-entropy, kl_div).

An elementwise loss is one formula applied to every entry of the input and its operands
(target, weights, upstream gradient), all of the input's shape or broadcast to it. The
input is viewed as ``(rows, L)`` blocks of whole rows of its last axis (``_blocks``,
strided and broadcast views without copies) of about :data:`BLOCK_BYTES`, so the several
NumPy passes of one formula read the block from cache; the blocks run on the worker
threads. Each block's loss is summed in float64 where it lies, and the per-block sums are
added in block order afterwards: results never depend on the number of threads.

A block kernel (``_elementwise_kernels``) has the signature
``kernel(operands, g, loss, grad, scratch)``: ``operands`` the block views of the input
and its operands, ``g`` the upstream gradient (a float, or a block view for
``reduction='none'``), ``loss`` a C-contiguous ``(R, L)`` buffer of the compute dtype to
fill, ``grad`` one to fill with the gradient (None: loss only), ``scratch`` more such
buffers. A native kernel can replace it one to one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from softxent import _native
from softxent._blocks import RowBlocks, Task
from softxent._cross_entropy import LossAndGrad
from softxent._kernels import Consts
from softxent._output_cache import empty_like
from softxent._reduction import mean_scale, reduce_block_sums
from softxent._rowwise import compute_dtype, for_each_block
from softxent._validation import check_grad_output

#: Bytes of one block in the compute dtype: 1 MiB keeps a block and its few scratch
#: buffers in L2/L3 while the formula's passes run over it.
BLOCK_BYTES = 1024 * 1024

#: ``kernel(operands, g, loss, grad, scratch)``, see the module's docstring.
Kernel = Callable[
    [Sequence[Any], Any, np.ndarray, Any, Sequence[np.ndarray]],
    None,
]


def result_dtype(values: Sequence[Any], arrays: Sequence[np.ndarray | None]) -> np.dtype:
    """The loss dtype: the promotion of the float arguments given as NumPy arrays or scalars
    (``arrays[i]`` is ``values[i]`` converted); lists follow the first (the input)."""
    dtypes = [arrays[0].dtype] if arrays[0] is not None else []
    for value, array in zip(values[1:], arrays[1:], strict=True):
        if isinstance(value, np.ndarray | np.generic) and array is not None:
            if array.dtype.kind == "f":
                dtypes.append(array.dtype)
    return np.result_type(*dtypes)


def as_operand(value: Any, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """An operand converted by the validation (``array``) in the loss ``dtype`` unless it was
    given as a float NumPy array (then it took part in :func:`result_dtype`, and is used as
    is: no copy)."""
    if isinstance(value, np.ndarray | np.generic) and array.dtype.kind == "f":
        return array
    return array.astype(dtype)


def run(
    kernel: Kernel,
    operands: Sequence[np.ndarray | None],
    g: float | np.ndarray,
    *,
    ct: np.dtype,
    loss_out: np.ndarray | None,
    grad_out: np.ndarray | None,
    num_scratch: int,
) -> np.ndarray:
    """Run ``kernel`` over every block of the input ``operands[0]``.

    ``operands[1:]`` have the input's shape (or are broadcast views of it) or are None.
    Writes the per-element loss into ``loss_out`` when given (``reduction='none'``) and the
    gradient into ``grad_out`` when given (both of the input's shape). Returns the float64
    sum of the loss per block, in block order (empty for an empty input).
    """
    x = operands[0]
    assert x is not None
    present = [i for i, a in enumerate(operands) if a is not None]
    arrays: list[np.ndarray] = [a for a in operands if a is not None]
    g_index = loss_index = grad_index = -1
    if isinstance(g, np.ndarray):
        g_index = len(arrays)
        arrays.append(np.broadcast_to(g, x.shape) if g.shape != x.shape else g)
    if loss_out is not None:
        loss_index = len(arrays)
        arrays.append(loss_out)
    if grad_out is not None:
        grad_index = len(arrays)
        arrays.append(grad_out)
    if x.ndim == 0:
        arrays = [a.reshape(1) for a in arrays]
    blocks = RowBlocks(arrays, arrays[0].ndim - 1)
    if x.size == 0:
        return np.zeros(0)
    sums: dict[int, float] = {}

    def body(task: Task, scratch: Sequence[np.ndarray], consts: Consts) -> None:
        views: list[np.ndarray | None] = [None] * len(operands)
        for j, i in enumerate(present):
            view = blocks.block(j, task)
            if view.dtype != ct:
                # float16 (or float32 beside float64) entries are converted once per block:
                # the kernels then compute in ct throughout, as torch's CPU kernels do
                # (NumPy's float16 loops would round every intermediate to float16, at 50x
                # the time), and the native kernel takes the block.
                converted = scratch[2 + num_scratch + j]
                _store(view, converted)
                view = converted
            views[i] = view
        gb = blocks.block(g_index, task) if g_index >= 0 else g
        loss = scratch[0]
        grad = None
        if grad_out is not None:
            out = blocks.block(grad_index, task)
            grad = out if out.dtype == ct and out.flags.c_contiguous else scratch[1]
        kernel(views, gb, loss, grad, scratch[2 : 2 + num_scratch])
        if grad is not None and grad is not out:
            _store(grad, out)
        if loss_out is not None:
            _store(loss, blocks.block(loss_index, task))
        else:
            sums[task.row0] = block_sum(loss)

    # Scratch: the loss, the gradient, the kernel's own, one per operand to convert (each
    # allocated only when used).
    num_buffers = 2 + num_scratch + len(present)
    for_each_block(blocks, ct, body, num_buffers, block_bytes=BLOCK_BYTES)
    return np.array([sums[k] for k in sorted(sums)], dtype=np.float64)


def _store(src: np.ndarray, dst: np.ndarray) -> None:
    """``dst[...] = src``, float16 <-> float32 by the native conversions where they apply."""
    if not _native.convert_block(src, dst):
        np.copyto(dst, src, casting="unsafe")


#: Entries of one float32 partial sum in :func:`block_sum`.
PARTIAL = 1024


def block_sum(loss: np.ndarray) -> float:
    """The sum of a C-contiguous block of losses, in float64.

    float32 blocks are summed in runs of :data:`PARTIAL` entries by ``einsum`` (SIMD lanes,
    4x faster than a float64 sum, which converts every entry; the error of a run is a few
    float32 ulps of its sum), then the runs in float64. Fixed runs of a fixed block: the
    result does not depend on the threads.
    """
    flat = loss.reshape(-1)
    if flat.dtype != np.float32:
        return float(flat.sum())
    whole = flat.size - flat.size % PARTIAL
    runs = np.einsum("ij->i", flat[:whole].reshape(-1, PARTIAL))  # (runs,) float32
    return float(runs.sum(dtype=np.float64) + flat[whole:].sum(dtype=np.float64))


def evaluate(
    kernel: Kernel,
    operands: Sequence[np.ndarray | None],
    *,
    reduction: str,
    denominator: float,
    dtype: np.dtype,
    num_scratch: int,
    with_grad: bool = False,
    grad_output: Any = None,
) -> Any:
    """A validated elementwise loss call: the loss (and with ``with_grad`` the
    :class:`~softxent.LossAndGrad`).

    ``reduction``: ``"none"``, ``"sum"`` or ``"mean"`` (the sum divided by ``denominator``);
    ``dtype``: the loss dtype; the gradient has the input's shape and dtype.
    """
    x = operands[0]
    assert x is not None
    ct = compute_dtype(dtype, x.dtype)
    loss_out = empty_like(x, dtype) if reduction == "none" else None
    grad_out = empty_like(x) if with_grad else None
    g: float | np.ndarray = 1.0
    if with_grad:
        g = check_grad_output(grad_output, reduction, x.shape)
        if isinstance(g, np.ndarray):
            g = g.astype(ct, copy=False)
        else:
            g = g * mean_scale("mean" if reduction == "mean" else "sum", denominator)
    sums = run(
        kernel, operands, g, ct=ct, loss_out=loss_out, grad_out=grad_out,
        num_scratch=num_scratch,
    )  # fmt: skip
    if loss_out is not None:
        loss = loss_out
    else:
        loss = reduce_block_sums(sums, reduction, denominator, dtype)
    if grad_out is None:
        return loss
    return LossAndGrad(loss, grad_out)

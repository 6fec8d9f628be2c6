"""softmax, log_softmax and logsumexp along one axis (logsumexp: several)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from softxent import _kernels, _native
from softxent._blocks import RowBlocks
from softxent._output_cache import empty_like
from softxent._rowwise import compute_dtype, for_each_block
from softxent._validation import as_float_array, normalize_axis

__all__ = ["log_softmax", "logsumexp", "softmax"]


def _zero_dim_axis(axis: Any) -> None:
    # Like torch, a 0-d array is a single class: axis 0 or -1 name it.
    normalize_axis(axis, 1)


def softmax(x: ArrayLike, axis: int = -1) -> np.ndarray:
    r"""Softmax along ``axis``: scores to probabilities.

    .. math::

        \operatorname{softmax}(x)_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}},
        \qquad m = \max_j x_j

    Subtracting the max changes nothing mathematically and keeps ``exp`` from overflowing
    (a naive ``exp(x) / sum(exp(x))`` returns NaN once a float32 logit exceeds about 88).

    Parameters
    ----------
    x : array_like of float16, float32 or float64
        Scores (logits), any shape.
    axis : int, default -1
        The class axis along which the result sums to 1.

    Returns
    -------
    ndarray
        The probabilities, in ``x``'s shape and dtype.

    Raises
    ------
    TypeError
        If ``x`` is not floating point.
    ValueError
        If ``axis`` is out of range.

    Notes
    -----
    Special values follow torch: a row holding NaN or ``+inf`` is all NaN; an all ``-inf``
    row is all NaN; ``-inf`` entries of an otherwise finite row get probability 0. A 0-d
    input gives 1; an empty class axis gives an empty result. float16 is computed in
    float32 and rounded once. Equivalent to ``torch.softmax(torch.from_numpy(x), axis)``.

    Examples
    --------
    >>> import softxent as sx
    >>> sx.softmax([1000.0, 1.0, -1000.0])  # no overflow
    array([1., 0., 0.])
    >>> sx.softmax([[0.3, 0.1, 0.3]]).round(8)
    array([[0.35476961, 0.29046079, 0.35476961]])
    """
    return _map_rows(x, axis, "softmax")


def log_softmax(x: ArrayLike, axis: int = -1) -> np.ndarray:
    r"""Logarithm of :func:`softmax` along ``axis``, computed without forming the softmax.

    .. math::

        \operatorname{log\_softmax}(x)_i = (x_i - m) - \log \sum_j e^{x_j - m},
        \qquad m = \max_j x_j

    Parameters
    ----------
    x : array_like of float16, float32 or float64
    axis : int, default -1

    Returns
    -------
    ndarray
        The log-probabilities (``<= 0``), in ``x``'s shape and dtype.

    Raises
    ------
    TypeError, ValueError
        As :func:`softmax`.

    Notes
    -----
    The two terms are evaluated in torch's order, ``(x - m) - log s``, so the most likely
    class gets exactly ``-log s``. Rows with NaN, ``+inf`` or only ``-inf`` are all NaN;
    ``-inf`` entries of a finite row give ``-inf``. A 0-d input gives 0.
    Equivalent to ``torch.log_softmax(torch.from_numpy(x), axis)``.

    Examples
    --------
    >>> import softxent as sx
    >>> sx.log_softmax([1000.0, 1.0])  # the naive log(softmax) gives [nan, -inf]
    array([   0., -999.])
    """
    return _map_rows(x, axis, "log_softmax")


def _map_rows(x: ArrayLike, axis: int, op: str) -> np.ndarray:
    array = as_float_array(x, "x")
    if array.ndim == 0:
        _zero_dim_axis(axis)
        return np.full_like(array, 1.0 if op == "softmax" else 0.0)
    axis = normalize_axis(axis, array.ndim)
    out = empty_like(array)  # same memory layout as x
    if out.size == 0:
        return out
    ct = compute_dtype(array.dtype)
    blocks = RowBlocks([array, out], axis)

    log = op == "log_softmax"
    native = _native.takes(array, out)  # then the NumPy kernels' scratch is not needed

    def body(task, scratch, consts):
        xb, ob = blocks.block(0, task), blocks.block(1, task)
        if native and _native.softmax_block(xb, ob, log=log):
            return
        if not log:
            _kernels.softmax_block(xb, ob, scratch[0], scratch[1], consts)
        else:
            _kernels.log_softmax_block(xb, ob, scratch[0], scratch[1], consts)

    for_each_block(blocks, ct, body, num_scratch=0 if native else 2)
    return out


def logsumexp(
    x: ArrayLike, axis: int | tuple[int, ...] = -1, keepdims: bool = False
) -> np.ndarray | np.floating[Any]:
    r"""Log of the sum of exponentials along ``axis``, without overflow.

    .. math::

        \operatorname{logsumexp}(x) = m' + \log \sum_j e^{x_j - m'},
        \qquad m' = \begin{cases} \max_j x_j & \text{if finite} \\ 0 & \text{otherwise}
        \end{cases}

    Parameters
    ----------
    x : array_like of float16, float32 or float64
    axis : int or tuple of int, default -1
        Axis or axes to reduce (a tuple reduces them together, as in NumPy).
    keepdims : bool, default False
        Keep the reduced axes with length 1.

    Returns
    -------
    ndarray or NumPy scalar
        ``x``'s dtype; a NumPy scalar when the result is 0-d.

    Raises
    ------
    TypeError
        If ``x`` is not floating point or ``axis`` is not an int or tuple of ints.
    ValueError
        If an axis is out of range, repeated, or the tuple is empty.

    Notes
    -----
    Special values follow torch: all ``-inf`` gives ``-inf``, any ``+inf`` gives ``+inf``
    (also with ``-inf`` present), NaN gives NaN, and reducing an empty axis gives ``-inf``.
    See Blanchard, Higham and Higham, "Accurately computing the log-sum-exp and softmax
    functions", IMA J. Numer. Anal. 41 (2021). Equivalent to ``torch.logsumexp(x, axis)``.

    Examples
    --------
    >>> import softxent as sx
    >>> float(sx.logsumexp([1e38, 1e38], axis=0))  # exp(1e38) would overflow
    1e+38
    >>> sx.logsumexp([[0.3, 0.1, 0.3], [0.9, 0.2, 0.9]]).round(7)
    array([1.3362867, 1.8149239])
    """
    array = as_float_array(x, "x")
    if array.ndim == 0:
        for a in axis if isinstance(axis, tuple) else (axis,):
            _zero_dim_axis(a)
        return array[()]
    axes = _normalize_axes(axis, array.ndim)
    kept_shape = tuple(1 if d in axes else n for d, n in enumerate(array.shape))
    # Move the reduced axes last and merge them into one class axis.
    moved = np.moveaxis(array, axes, range(array.ndim - len(axes), array.ndim))
    batch_shape = moved.shape[: array.ndim - len(axes)]
    num_classes = int(np.prod(moved.shape[array.ndim - len(axes) :], dtype=np.int64))
    rows = moved.reshape(*batch_shape, num_classes) if len(axes) > 1 else moved
    ct = compute_dtype(array.dtype)
    result = np.empty(batch_shape, ct)
    if num_classes == 0:
        result.fill(-np.inf)  # log of an empty sum
    elif result.size:
        blocks = RowBlocks([rows], rows.ndim - 1)
        flat = result.reshape(-1)

        native = _native.takes(rows)

        def body(task, scratch, consts):
            xb = blocks.block(0, task)
            result_rows = flat[task.row0 : task.row0 + xb.shape[0]]
            if not (native and _native.logsumexp_block(xb, result_rows)):
                result_rows[...] = _kernels.logsumexp_block(xb, scratch[0], consts)

        for_each_block(blocks, ct, body, num_scratch=0 if native else 1)
    result = result.astype(array.dtype, copy=False)
    if keepdims:
        result = result.reshape(kept_shape)
    return result[()] if result.ndim == 0 else result


def _normalize_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    if isinstance(axis, (tuple, list)):
        if len(axis) == 0:
            raise ValueError("axis must name at least one axis, got an empty tuple")
        axes = tuple(normalize_axis(a, ndim) for a in axis)
        if len(set(axes)) != len(axes):
            raise ValueError(f"axis must not repeat an axis, got {tuple(axis)!r}")
        return axes
    return (normalize_axis(axis, ndim),)

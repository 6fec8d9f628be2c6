"""The reductions of per-sample losses: torch's rules, written once.

* ``"none"``: the per-sample losses.
* ``"sum"``: their sum (0 for no samples).
* ``"mean"``: their sum divided by a denominator that depends on the target kind: the sum
  of the target classes' weights over non-ignored samples for class indices (the count
  when unweighted), the number of samples for probability targets. The division is
  IEEE's, as torch's: a zero denominator gives NaN for a zero sum (the mean of nothing)
  and an infinity of the sum's sign otherwise (only possible with negative class
  weights); a negative denominator (negative weights) simply divides.

Sums over samples are taken in float64 whatever the dtype, then rounded once.
"""

from __future__ import annotations

import math
from typing import Any, TypeAlias

import numpy as np

from softxent._validation import Reduction

#: A loss as the public functions return it: an ndarray for ``reduction="none"``, else a
#: NumPy scalar of the loss dtype.
Loss: TypeAlias = "np.ndarray | np.floating[Any]"


def reduce_losses(
    losses: np.ndarray, reduction: Reduction, denominator: float, dtype: np.dtype, shape: tuple
) -> Loss:
    """Reduce the flat per-sample ``losses``; 'none' is reshaped to ``shape``."""
    if reduction == "none":
        return cast_losses(losses, dtype).reshape(shape)
    # fsum (exactly rounded) is also the cheaper call on the few losses of a small input.
    total = (
        math.fsum(losses.tolist()) if losses.size <= 64 else float(losses.sum(dtype=np.float64))
    )
    if reduction == "sum":
        return _round(total, dtype)
    return _round(ieee_divide(total, denominator), dtype)


def cast_losses(losses: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``losses`` as ``dtype`` (no copy when it already is): a loss beyond float16's range
    becomes ``inf`` silently, as in torch, instead of with NumPy's overflow warning."""
    if losses.dtype == dtype or dtype.itemsize >= losses.dtype.itemsize:
        return losses.astype(dtype, copy=False)  # exact, or a widening that cannot overflow
    with np.errstate(over="ignore"):
        return losses.astype(dtype)


def _round(total: float, dtype: np.dtype) -> np.floating[Any]:
    """A reduced loss (a Python float) as a NumPy scalar of ``dtype``: beyond the dtype's
    range it is ``inf``, silently (torch's result), not with NumPy's overflow warning."""
    if abs(total) <= _LARGEST.get(dtype.itemsize, math.inf) or not math.isfinite(total):
        return dtype.type(total)
    with np.errstate(over="ignore"):
        return dtype.type(total)


#: The largest finite float16 and float32, by item size: smaller values never overflow.
_LARGEST = {2: float(np.finfo(np.float16).max), 4: float(np.finfo(np.float32).max)}


def ieee_divide(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` with IEEE semantics (torch's): ``x / 0`` is ``±inf``,
    ``0 / 0`` NaN, instead of Python's ZeroDivisionError."""
    if denominator != 0:  # Python's float division is IEEE's then (overflow gives inf)
        return numerator / denominator
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero denominator only
        return float(np.float64(numerator) / np.float64(denominator))


def mean_scale(reduction: Reduction, denominator: float) -> float:
    """d(reduced loss) / d(per-sample loss): 1 for sum, ``1 / denominator`` for mean
    (``inf`` for a zero denominator, as torch's gradient: non-finite)."""
    if reduction != "mean":
        return 1.0
    return ieee_divide(1.0, denominator)


def target_weights(
    y: np.ndarray,
    valid: np.ndarray | None,
    class_weight: np.ndarray | None,
    dtype: np.dtype,
    gathered: np.ndarray | None = None,
) -> tuple[np.ndarray | None, float]:
    """Each sample's target weight (0 if ignored; None: all ones) and the "mean" denominator.

    The denominator of class-index targets: ``sum_n valid_n w[y_n]`` (the count of valid
    samples when unweighted). ``gathered``: those weights already computed (the native
    preparation of the targets), used as they are.
    """
    if class_weight is not None:
        wy = class_weight[y] if gathered is None else gathered  # (rows,)
        if valid is not None and gathered is None:
            wy[~valid] = 0
        return wy, float(np.sum(wy, dtype=np.float64))
    if valid is not None:
        return valid.astype(dtype), float(np.count_nonzero(valid))
    return None, float(y.size)


def mean_denominator(
    rows: int,
    y: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    class_weight: np.ndarray | None = None,
) -> float:
    """The "mean" denominator of ``rows`` validated samples.

    ``y`` None means probability targets: torch divides by the number of rows, whatever the
    class weights. Class indices ``y``: the :func:`target_weights` sum.
    """
    if y is None:
        return float(rows)
    return target_weights(y, valid, class_weight, np.dtype(np.float64))[1]


def reduce_block_sums(block_sums: np.ndarray, reduction: str, denominator: float, dtype: np.dtype):
    """The ``"sum"`` or ``"mean"`` of a loss given as float64 partial sums, one per block in
    a fixed order (so the result does not depend on the threads): added exactly rounded,
    divided by ``denominator`` for ``"mean"`` (IEEE's division, as :func:`reduce_losses`)."""
    total = math.fsum(block_sums.tolist())
    if reduction == "sum":
        return _round(total, dtype)
    return _round(ieee_divide(total, denominator), dtype)

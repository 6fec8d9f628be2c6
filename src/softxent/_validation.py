"""Argument checks shared by the public functions: validate once, at the entry.

Every message says which argument, what was expected and what was got, so a user can fix
the call without reading the source.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Literal

import numpy as np

#: How per-sample losses are combined: kept (``"none"``), averaged (``"mean"``, torch's
#: weighted mean) or added (``"sum"``).
Reduction = Literal["none", "mean", "sum"]
REDUCTIONS: tuple[Reduction, ...] = ("none", "mean", "sum")
_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def as_array(value: Any, name: str, *, native: bool = True) -> np.ndarray:
    """``value`` (an array argument named ``name``) as an ndarray of native byte order.

    * A masked array (``numpy.ma``) is refused: computing on its data would silently drop
      the mask.
    * A ragged nested list is a ValueError naming the argument (NumPy's own message
      names neither the argument nor the fix).
    * Byte-swapped data (e.g. ``dtype('>f4')`` on a little-endian machine) is converted to
      the native dtype of the same kind and size, so results have that dtype; with
      ``native=False`` it is left as is (for callers that convert block by block and
      give results in :func:`native_dtype`).
    """
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array (numpy.ma): softxent would drop its mask and compute "
            f"the masked entries too; pass {name}.filled(value) with the value you mean, or "
            "for targets mark the samples to skip with ignore_index"
        )
    if isinstance(value, np.ndarray) and type(value) is np.ndarray:
        array = value
    else:
        try:
            array = np.asarray(value)
        except ValueError as error:
            if "inhomogeneous" not in str(error) and "sequence" not in str(error):
                raise
            raise ValueError(
                f"{name} is a ragged nested sequence (its rows have different lengths); "
                f"every row of {name} must have the same length"
            ) from None
    if native and not array.dtype.isnative:
        array = array.astype(native_dtype(array.dtype))
    return array


def native_dtype(dtype: np.dtype) -> np.dtype:
    """``dtype`` in the machine's byte order (the same kind and size)."""
    return dtype if dtype.isnative else dtype.newbyteorder("=")


def as_float_array(value: Any, name: str, *, native: bool = True) -> np.ndarray:
    """``value`` as a float16/32/64 ndarray; integer, bool and complex input is a TypeError.

    ``native``: as in :func:`as_array`.
    """
    array = as_array(value, name, native=native)
    if not native and not array.dtype.isnative:
        if native_dtype(array.dtype) in _FLOAT_DTYPES:
            return array
    if array.dtype not in _FLOAT_DTYPES:
        if array.dtype.kind == "f":  # longdouble and friends: exotic, compute in float64
            return array.astype(np.float64)
        raise TypeError(
            f"{name} must be a floating-point array (float16, float32 or float64), "
            f"got dtype {array.dtype}"
        )
    return array


def normalize_axis(axis: Any, ndim: int, name: str = "axis") -> int:
    """``axis`` as a non-negative int in ``[0, ndim)``."""
    if type(axis) is int and -ndim <= axis < ndim:  # the common case, checked cheaply
        return axis % ndim
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {axis!r}")
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"{name}={axis} is out of range for an array of {ndim} dimension(s); "
            f"allowed: {-ndim} to {ndim - 1}"
        )
    return axis % ndim


def check_reduction(reduction: Any) -> Reduction:
    for allowed in REDUCTIONS:
        if reduction == allowed and isinstance(reduction, str):
            return allowed
    raise ValueError(f"reduction must be one of 'none', 'mean', 'sum'; got {reduction!r}")


def check_label_smoothing(label_smoothing: Any) -> float:
    if type(label_smoothing) is float and 0.0 <= label_smoothing <= 1.0:
        return label_smoothing
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real):
        raise TypeError(f"label_smoothing must be a float in [0, 1], got {label_smoothing!r}")
    value = float(label_smoothing)
    # torch silently ignores NaN and negative values; we refuse them (see README).
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return value


def check_ignore_index(ignore_index: Any) -> int:
    if type(ignore_index) is int:
        return ignore_index
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    return int(ignore_index)


def class_axis(x: np.ndarray, axis: Any, name: str) -> tuple[int, int]:
    """The class axis of the logits ``x`` (named ``name``) as a non-negative int, and the
    number of classes; a 0-d array or an empty class axis is a ValueError."""
    if x.ndim == 0:
        raise ValueError(
            f"{name} must have at least 1 dimension (the class axis), got a 0-d array"
        )
    axis = normalize_axis(axis, x.ndim)
    num_classes = x.shape[axis]
    if num_classes == 0:
        raise ValueError(
            f"{name} has an empty class axis (axis={axis}, shape {x.shape}); "
            "at least one class is needed"
        )
    return axis, num_classes


def check_loss_options(
    reduction: Any, label_smoothing: Any, ignore_index: Any
) -> tuple[Reduction, float, int]:
    """The scalar options of a cross-entropy call, checked: ``(reduction, label_smoothing,
    ignore_index)``."""
    return (
        check_reduction(reduction),
        check_label_smoothing(label_smoothing),
        check_ignore_index(ignore_index),
    )


def as_class_weight(
    weight: Any, num_classes: int, dtype: np.dtype, name: str = "weight"
) -> np.ndarray | None:
    """The per-class weight as a 1-D array of ``dtype``; None stays None."""
    if weight is None:
        return None
    array = as_array(weight, name)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real numeric array, got dtype {array.dtype}")
    if array.shape != (num_classes,):
        raise ValueError(
            f"{name} must have shape ({num_classes},), one entry per class, "
            f"got shape {array.shape}"
        )
    array = array.astype(dtype, copy=False)
    # Negative weights are computed as torch computes them; non-finite ones are refused
    # (torch gives NaN for the whole reduced loss, see README "Differences from PyTorch").
    if not np.isfinite(array).all():
        raise ValueError(
            f"{name} must be finite (negative values are allowed), "
            f"got {_first_bad(array, ~np.isfinite(array))}"
        )
    return array


def _first_bad(array: np.ndarray, bad: np.ndarray) -> str:
    position = np.unravel_index(int(np.argmax(bad)), array.shape)
    index = ", ".join(str(int(i)) for i in position)
    return f"{array[position]!r} at [{index}]"


def class_index_error(
    name: str, position: tuple[Any, ...], value: int, num_classes: int, ignore_index: int
) -> ValueError:
    """The one error of an out-of-range class index, for every entry point (NumPy, torch,
    distributed): names the argument, the entry's position and value, and what is allowed."""
    where = "[" + ", ".join(str(int(i)) for i in position) + "]"
    return ValueError(
        f"{name}{where} = {value} is out of range: class indices must be in "
        f"[0, {num_classes}) or equal ignore_index={ignore_index}"
    )


def as_class_indices(
    target: np.ndarray, num_classes: int, ignore_index: int, name: str = "target"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Flat int64 class ids with ignored entries replaced by 0, and the validity mask.

    The mask is None when nothing is ignored (the common case, which then costs nothing).
    Raises ValueError naming the first out-of-range entry and its position.
    """
    flat = target.reshape(-1)
    if flat.dtype == np.uint64 and flat.size and flat.max() > np.iinfo(np.int64).max:
        flat = flat.astype(np.float64)  # keeps the huge value for the message below
    flat = flat.astype(np.int64, copy=False) if flat.dtype.kind in "iu" else flat
    if flat.size == 0:
        return flat.astype(np.int64), None
    if flat.size <= 32:  # two NumPy reductions cost more than the list on tiny inputs
        values = flat.tolist()
        low, high = min(values), max(values)
    else:
        low, high = flat.min(), flat.max()
    if low >= 0 and high < num_classes and not (0 <= ignore_index < num_classes):
        return flat, None  # every id in range and none can be the ignored one
    valid = flat != ignore_index
    bad = valid & ((flat < 0) | (flat >= num_classes))
    if bad.any():
        first = int(np.argmax(bad))
        position = np.unravel_index(first, target.shape)
        raise class_index_error(name, position, int(flat[first]), num_classes, ignore_index)
    if valid.all():
        return flat, None
    return np.where(valid, flat, 0).astype(np.int64, copy=False), valid


def check_chunk_size(chunk_size: Any) -> int | None:
    """``chunk_size`` of the linear layers: None (the default rule) or an int >= 1 (Python
    or NumPy integer; bool is refused)."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
        raise TypeError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")
    return int(chunk_size)


def is_class_index_target(
    target: np.ndarray,
    ignore_index: int,
    *,
    index_shape: tuple[int, ...],
    index_note: str,
    prob_shape: tuple[int, ...],
    prob_note: str,
) -> bool:
    """Whether ``target`` holds class indices (integer dtype) or probabilities (floating), and
    that its shape fits that kind: ``index_shape`` or ``prob_shape`` (the logits').

    ``index_note`` and ``prob_note`` say where each shape comes from, for the messages.
    ``ignore_index`` must be negative with probabilities (torch's rule). A dtype that
    contradicts the shape (integer probabilities, floating class indices) is a TypeError.
    """
    kind = target.dtype.kind
    if kind not in "iuf":
        raise TypeError(
            f"target must hold integer class indices (shape {index_shape}) or floating-point "
            f"probabilities (shape {prob_shape}), got dtype {target.dtype}"
        )
    is_index = kind != "f"
    # (what, shape, where the shape comes from, the dtype it needs)
    index = ("class indices", index_shape, index_note, "integers (use target.astype(int))")
    prob = ("probabilities", prob_shape, prob_note, "floating point")
    own, other = (index, prob) if is_index else (prob, index)
    if target.shape == other[1]:  # the dtype contradicts the shape
        kind_name = "integer" if is_index else "floating"
        raise TypeError(
            f"target has shape {other[1]} ({other[2]}) but {kind_name} dtype {target.dtype}: "
            f"{other[0]} must be {other[3]}; "
            f"{own[0]} must have shape {own[1]} ({own[2]})"
        )
    if target.shape != own[1]:
        raise ValueError(
            f"target of {own[0]} must have shape {own[1]} ({own[2]}), got shape {target.shape}"
        )
    if is_index:
        return True
    if ignore_index >= 0:
        raise ValueError(
            f"ignore_index={ignore_index} cannot be used with probability targets "
            "(floating-point target); leave it negative (the default -100)"
        )
    return False


def probability_target(
    target: Any, t: np.ndarray, weight: Any, logits_dtype: np.dtype
) -> tuple[np.ndarray, np.dtype]:
    """Probability targets ``t`` (``target`` as an array) and the dtype of their loss.

    NumPy arrays and scalars take part in type promotion: the loss dtype is the logits'
    dtype promoted with the target's and a floating class weight's. A list (or other
    non-array) has no dtype of its own: it is converted to the logits' dtype.
    """
    dtypes = [logits_dtype]
    if isinstance(target, np.ndarray | np.generic):
        dtypes.append(t.dtype)
    else:
        t = t.astype(logits_dtype)
    if isinstance(weight, np.ndarray | np.generic) and weight.dtype.kind == "f":
        dtypes.append(weight.dtype)
    return t, np.result_type(*dtypes)


def as_grad_output(
    grad_output: Any, reduction: Reduction, loss_shape: tuple[int, ...]
) -> np.ndarray | None:
    """The upstream gradient checked: None when not given, else a real array shaped like
    the loss for ``reduction='none'`` and 0-d for the reduced losses."""
    if grad_output is None:
        return None
    g = as_array(grad_output, "grad_output")
    if g.dtype.kind not in "fiu":
        raise TypeError(f"grad_output must be a real number or array, got dtype {g.dtype}")
    if reduction == "none" and g.shape != loss_shape:
        raise ValueError(
            f"grad_output must have the shape of the loss {loss_shape} for reduction='none', "
            f"got shape {g.shape}"
        )
    if reduction != "none" and g.ndim != 0:
        raise ValueError(
            f"grad_output must be a scalar for reduction={reduction!r}, got shape {g.shape}"
        )
    return g


# --------------------------------------------------------------------------- elementwise losses
# The rules of the elementwise losses (mse_loss, binary cross-entropy, kl_div): operands that
# must have, or broadcast to, the input's shape; probabilities in [0, 1]; their reductions.

#: kl_div's reductions: torch's three and ``"batchmean"`` (the sum over the first axis' size).
KlReduction = Literal["none", "mean", "sum", "batchmean"]
KL_REDUCTIONS: tuple[KlReduction, ...] = ("none", "mean", "sum", "batchmean")


def check_kl_reduction(reduction: Any) -> KlReduction:
    for allowed in KL_REDUCTIONS:
        if reduction == allowed and isinstance(reduction, str):
            return allowed
    raise ValueError(
        f"reduction must be one of 'none', 'mean', 'sum', 'batchmean'; got {reduction!r}"
    )


def check_bool(value: Any, name: str) -> bool:
    """A flag: Python or NumPy bool only (an int would hide a misplaced argument)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {value!r}")


def operand_shape_error(
    name: str, got: tuple[int, ...], shape: tuple[int, ...], of: str, *, broadcast: bool
) -> ValueError:
    """The one error of an operand whose shape does not fit argument ``of`` (of ``shape``),
    for the NumPy API and the torch drop-ins: it must equal it, or (``broadcast``) broadcast
    to it."""
    if not broadcast:
        return ValueError(f"{name} must have the shape of {of} {shape}, got shape {got}")
    return ValueError(
        f"{name} of shape {got} does not broadcast to the shape of {of} {shape}; "
        f"allowed: {of}'s shape, or one that broadcasts to it (e.g. {shape[-1:]})"
    )


def check_same_shape(array: np.ndarray, name: str, shape: tuple[int, ...], of: str) -> None:
    """``array`` must have exactly ``shape`` (the shape of argument ``of``)."""
    if array.shape != shape:
        raise operand_shape_error(name, array.shape, shape, of, broadcast=False)


def broadcast_operand(array: np.ndarray, name: str, shape: tuple[int, ...], of: str) -> np.ndarray:
    """``array`` as a read-only view broadcast to ``shape`` (the shape of argument ``of``).

    Only ``array`` is broadcast: an operand that would enlarge ``of`` is a ValueError (the
    loss and the gradient have the shape of ``of``).
    """
    if array.shape == shape:
        return array
    try:
        return np.broadcast_to(array, shape)
    except ValueError:
        raise operand_shape_error(name, array.shape, shape, of, broadcast=True) from None


def as_real_array(value: Any, name: str) -> np.ndarray:
    """``value`` as an ndarray of a real (integer or floating) dtype; bool and complex are a
    TypeError."""
    array = as_array(value, name)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real number or array, got dtype {array.dtype}")
    return array


def check_unit_interval(array: np.ndarray, name: str) -> None:
    """Every entry of ``array`` in [0, 1] (NaN is refused too), as torch's binary
    cross-entropy requires; the message names the first offending value and its position."""
    if array.size == 0:
        return
    with np.errstate(invalid="ignore"):
        inside = (array >= 0) & (array <= 1)
    if not inside.all():
        raise ValueError(
            f"{name} must hold probabilities in [0, 1], got {_first_bad(array, ~inside)}"
        )


def check_grad_output(
    grad_output: Any, reduction: str, loss_shape: tuple[int, ...]
) -> np.ndarray | float:
    """The upstream gradient of a ``*_with_grad`` call (:func:`as_grad_output`'s rules): an
    array of the loss' shape for ``reduction='none'``, a float otherwise (default 1).
    ``reduction`` may also be kl_div's ``"batchmean"`` (a reduced loss)."""
    g = as_grad_output(grad_output, "none" if reduction == "none" else "sum", loss_shape)
    if g is None:
        return 1.0
    return g if reduction == "none" else float(g)

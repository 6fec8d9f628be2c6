"""one_hot: class indices to one-hot vectors."""

from __future__ import annotations

import numbers

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from softxent._validation import as_array

__all__ = ["one_hot"]


def one_hot(
    target: ArrayLike, num_classes: int | None = None, *, dtype: DTypeLike = np.float32
) -> np.ndarray:
    r"""One-hot encoding of integer class indices.

    .. math::

        \operatorname{one\_hot}(y)_{\ldots, k} = \delta_{k, y_{\ldots}}

    Parameters
    ----------
    target : array_like of int
        Class indices, any shape, each in ``[0, num_classes)``.
    num_classes : int, optional
        Number of classes ``K``; default ``max(target) + 1``.
    dtype : dtype, default float32
        dtype of the result.

    Returns
    -------
    ndarray
        Shape ``target.shape + (K,)``.

    Raises
    ------
    TypeError
        If ``target`` is not integer or ``num_classes`` is not an int.
    ValueError
        A negative index, an index ``>= num_classes`` (the position is named), a negative
        ``num_classes``, or an empty ``target`` without ``num_classes``.

    Notes
    -----
    Like ``torch.nn.functional.one_hot(torch.from_numpy(target), num_classes)`` (which
    returns int64 and spells "infer" as ``-1``).

    Examples
    --------
    >>> import softxent as sx
    >>> sx.one_hot([1, 2, 0])
    array([[0., 1., 0.],
           [0., 0., 1.],
           [1., 0., 0.]], dtype=float32)
    """
    t = as_array(target, "target")
    if t.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    if num_classes is None:
        if t.size == 0:
            raise ValueError(
                "num_classes must be given for an empty target (it cannot be inferred)"
            )
        num_classes = int(t.max()) + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise TypeError(f"num_classes must be an int or None, got {num_classes!r}")
    elif num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    if t.size:
        bad = (t < 0) | (t >= num_classes)
        if bad.any():
            position = np.unravel_index(int(np.argmax(bad)), t.shape)
            where = "[" + ", ".join(str(int(i)) for i in position) + "]"
            value = int(t[position])
            if value < 0:
                raise ValueError(
                    f"target{where} = {value} is negative: class indices must be >= 0 "
                    f"(one_hot has no ignore_index; drop or replace those entries first)"
                )
            raise ValueError(
                f"target{where} = {value} is out of range: class indices must be "
                f"in [0, {num_classes})"
            )
    return (t[..., np.newaxis] == np.arange(num_classes)).astype(dtype)

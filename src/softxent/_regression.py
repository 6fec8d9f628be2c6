"""mse_loss and mse_loss_with_grad: the mean squared error (NumPy, torch 2.13 semantics)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from softxent import _elementwise
from softxent._cross_entropy import LossAndGrad
from softxent._elementwise_kernels import mse_block
from softxent._validation import (
    as_float_array,
    as_real_array,
    broadcast_operand,
    check_reduction,
    check_same_shape,
)

__all__ = ["mse_loss", "mse_loss_with_grad"]


def _operands(input: Any, target: Any, weight: Any) -> tuple[list[np.ndarray | None], np.dtype]:
    x = as_float_array(input, "input")
    t = as_float_array(target, "target")
    w = None if weight is None else as_real_array(weight, "weight")
    dtype = _elementwise.result_dtype([input, target, weight], [x, t, w])
    t = broadcast_operand(_elementwise.as_operand(target, t, dtype), "target", x.shape, "input")
    if w is not None:
        check_same_shape(w, "weight", x.shape, "input")  # torch: "the same size"
        w = _elementwise.as_operand(weight, w, dtype)
    return [x, t, w], dtype


def _evaluate(input, target, weight, reduction, with_grad: bool, grad_output: Any = None):
    operands, dtype = _operands(input, target, weight)
    reduction = check_reduction(reduction)
    x, _, w = operands
    assert x is not None
    denominator = float(x.size) if w is None else float(np.sum(w, dtype=np.float64))
    return _elementwise.evaluate(
        mse_block, operands, reduction=reduction, denominator=denominator, dtype=dtype,
        num_scratch=0, with_grad=with_grad, grad_output=grad_output,
    )  # fmt: skip


def mse_loss(
    input: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
) -> Any:
    r"""Mean squared error between ``input`` and ``target``, entry by entry.

    .. math::

        \ell_i = w_i\,(x_i - t_i)^2, \qquad
        \text{mean} = \frac{\sum_i \ell_i}{\sum_i w_i}

    (``w`` ones by default, so the mean is over all entries).

    Parameters
    ----------
    input : array_like of float16, float32 or float64
        Predictions, any shape.
    target : array_like of float
        The values to predict: the shape of ``input``, or one that broadcasts to it.
    weight : array_like, optional
        A weight per entry, of exactly the shape of ``input`` (as torch requires).
    reduction : {'mean', 'sum', 'none'}, default 'mean'

    Returns
    -------
    ndarray or NumPy scalar
        ``'none'``: the losses, shape of ``input``; else a scalar. dtype: the promotion of
        the arguments given as NumPy arrays (lists follow ``input``).

    Raises
    ------
    TypeError
        Integer, bool or complex ``input`` or ``target``; bool or complex ``weight``.
    ValueError
        A ``target`` that does not broadcast to ``input``'s shape, a ``weight`` of another
        shape, an unknown ``reduction``.

    Notes
    -----
    Equal to ``torch.nn.functional.mse_loss(input, target, reduction=reduction,
    weight=weight)`` (torch 2.13, whose weighted ``'mean'`` divides by ``sum(weight)``).
    An empty input gives NaN for ``'mean'`` (0 / 0) and 0 for ``'sum'``. float16 is
    computed in float32 and rounded once. Computed in cache-sized blocks on the worker
    threads; the sums are taken in float64.

    Examples
    --------
    >>> import softxent as sx
    >>> float(sx.mse_loss([0.5, 2.0, -1.0], [1.0, 2.0, 1.0]))
    1.4166666666666667
    >>> float(sx.mse_loss([0.5, 2.0], [1.0, 0.0], weight=[3.0, 1.0]))  # (0.75 + 4) / 4
    1.1875
    """
    return _evaluate(input, target, weight, reduction, with_grad=False)


def mse_loss_with_grad(
    input: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
    grad_output: ArrayLike | None = None,
) -> LossAndGrad:
    r""":func:`mse_loss` and its gradient with respect to ``input``, in one pass.

    .. math::

        \frac{\partial L}{\partial x_i} = 2\, g_i\, w_i\, (x_i - t_i)

    with ``g`` the upstream gradient divided by ``sum(w)`` (the number of entries when
    unweighted) for ``'mean'``.

    Parameters
    ----------
    input, target, weight, reduction
        As in :func:`mse_loss`.
    grad_output : array_like, optional
        The upstream gradient: for ``reduction='none'`` an array of ``input``'s shape (the
        result is the gradient of ``sum(grad_output * loss)``), otherwise a scalar.
        Default 1.

    Returns
    -------
    LossAndGrad
        ``(loss, grad)``: the loss as :func:`mse_loss` returns it; the gradient, of the
        shape and dtype of ``input``.

    Raises
    ------
    TypeError, ValueError
        As :func:`mse_loss`; also a ``grad_output`` of the wrong shape.

    Notes
    -----
    Equal to torch's autograd gradient of ``F.mse_loss`` with the same arguments.

    Examples
    --------
    >>> import softxent as sx
    >>> loss, grad = sx.mse_loss_with_grad([0.5, 2.0], [1.0, 0.0])
    >>> float(loss), grad.tolist()  # grad = 2 (x - t) / 2
    (2.125, [-0.5, 2.0])
    """
    return _evaluate(input, target, weight, reduction, True, grad_output)

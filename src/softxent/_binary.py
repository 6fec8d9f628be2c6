"""Binary cross-entropy, on logits and on probabilities (NumPy, torch 2.13 semantics):
one independent two-class problem per entry (multi-label classification)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from softxent import _elementwise
from softxent._cross_entropy import LossAndGrad
from softxent._elementwise_kernels import bce_block, bce_with_logits_block
from softxent._validation import (
    as_float_array,
    as_real_array,
    broadcast_operand,
    check_reduction,
    check_same_shape,
    check_unit_interval,
)

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_grad",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_with_grad",
]


def _operands(
    input: Any, name: str, target: Any, weights: dict[str, Any], *, target_dtype: bool = False
) -> tuple[list[np.ndarray | None], np.dtype]:
    """The input, its target (same shape, as torch requires) and the ``weights`` (None, or
    broadcast to the input's shape), and the loss dtype: the promotion of the NumPy
    arrays, or with ``target_dtype`` the target's (the input's for a list)."""
    x = as_float_array(input, name)
    t = as_float_array(target, "target")
    check_same_shape(t, "target", x.shape, name)
    ws = {k: None if v is None else as_real_array(v, k) for k, v in weights.items()}
    if target_dtype:
        # torch's loss of logits has the target's dtype (ATen computes it in place there)
        dtype = t.dtype if isinstance(target, np.ndarray | np.generic) else x.dtype
    else:
        dtype = _elementwise.result_dtype([input, target, *weights.values()], [x, t, *ws.values()])
    operands: list[np.ndarray | None] = [x, _elementwise.as_operand(target, t, dtype)]
    for (key, value), array in zip(weights.items(), ws.values(), strict=True):
        if array is not None:
            array = _elementwise.as_operand(value, array, dtype)
            array = broadcast_operand(array, key, x.shape, name)
        operands.append(array)
    return operands, dtype


def _evaluate_logits(logits, target, weight, pos_weight, reduction, with_grad, grad_output=None):
    operands, dtype = _operands(
        logits, "logits", target, {"weight": weight, "pos_weight": pos_weight}, target_dtype=True
    )
    reduction = check_reduction(reduction)
    return _elementwise.evaluate(
        bce_with_logits_block, operands, reduction=reduction,
        denominator=float(operands[0].size),  # type: ignore[union-attr]
        dtype=dtype, num_scratch=3, with_grad=with_grad, grad_output=grad_output,
    )  # fmt: skip


def _evaluate_probs(probs, target, weight, reduction, with_grad, grad_output=None):
    operands, dtype = _operands(probs, "probs", target, {"weight": weight})
    reduction = check_reduction(reduction)
    q, t = operands[0], operands[1]
    assert q is not None and t is not None
    check_unit_interval(q, "probs")
    check_unit_interval(t, "target")  # torch checks both
    return _elementwise.evaluate(
        bce_block, operands, reduction=reduction, denominator=float(q.size), dtype=dtype,
        num_scratch=2, with_grad=with_grad, grad_output=grad_output,
    )  # fmt: skip


def binary_cross_entropy_with_logits(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    reduction: str = "mean",
) -> Any:
    r"""Binary cross-entropy between ``sigmoid(logits)`` and ``target``, entry by entry.

    With weight ``w`` and positive-class weight ``p`` (ones by default):

    .. math::

        \ell_i = -w_i\,\big[p_i\, t_i \log\sigma(x_i) + (1 - t_i) \log(1 - \sigma(x_i))\big]
               = w_i\,\big[(1 - t_i)\, x_i + (1 + (p_i - 1)\, t_i)\, \mathrm{sp}(-x_i)\big]

    computed with :math:`\mathrm{sp}(-x) = -\log\sigma(x) = \log(1 + e^{-|x|}) + \max(-x, 0)`,
    which never overflows (without ``pos_weight``: ``max(x, 0) - x t + log1p(exp(-|x|))``).

    Parameters
    ----------
    logits : array_like of float16, float32 or float64
        One score per entry, any shape.
    target : array_like of float
        Shape of ``logits``: 1 for positive, 0 for negative, or soft labels in [0, 1].
    weight : array_like, optional
        A weight per entry, broadcast to ``logits``' shape (e.g. one per sample, shape
        ``(N, 1)``).
    pos_weight : array_like, optional
        The weight of the positive term, broadcast to ``logits``' shape: typically one per
        class (last axis), e.g. ``negatives / positives`` to balance a rare label.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        ``'mean'`` divides by the number of entries (whatever the weights).

    Returns
    -------
    ndarray or NumPy scalar
        ``'none'``: the losses, shape of ``logits``; else a scalar. dtype: the target's, as
        torch's (the logits' when the target is a list).

    Raises
    ------
    TypeError
        Integer, bool or complex ``logits`` or ``target``; bool or complex weights.
    ValueError
        A ``target`` of another shape; a weight that does not broadcast to ``logits``'
        shape; an unknown ``reduction``.

    Notes
    -----
    Equal to ``torch.nn.functional.binary_cross_entropy_with_logits(logits, target, weight,
    reduction=reduction, pos_weight=pos_weight)``. Targets outside [0, 1] are computed by
    the formula, as torch does. Saturated logits stay exact: ``x = -80, t = 1`` gives 80,
    where ``-log(sigmoid(-80))`` in float32 would be ``inf``. float16 is computed in
    float32 and rounded once.

    Examples
    --------
    >>> import softxent as sx
    >>> sx.binary_cross_entropy_with_logits([[2.0, -1.0]], [[1.0, 0.0]], reduction="none")
    array([[0.12692801, 0.31326169]])
    >>> float(sx.binary_cross_entropy_with_logits([-80.0], [1.0]))  # no overflow
    80.0
    """
    return _evaluate_logits(logits, target, weight, pos_weight, reduction, False)


def binary_cross_entropy_with_logits_with_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    reduction: str = "mean",
    grad_output: ArrayLike | None = None,
) -> LossAndGrad:
    r""":func:`binary_cross_entropy_with_logits` and its gradient with respect to
    ``logits``, in one pass.

    .. math::

        \frac{\partial L}{\partial x_i} = g_i\, w_i\,
        \big[(1 + (p_i - 1)\, t_i)\, \sigma(x_i) - p_i\, t_i\big]

    (``g_i w_i (sigmoid(x_i) - t_i)`` without ``pos_weight``), ``g`` the upstream gradient
    divided by the number of entries for ``'mean'``.

    Parameters
    ----------
    logits, target, weight, pos_weight, reduction
        As in :func:`binary_cross_entropy_with_logits`.
    grad_output : array_like, optional
        For ``reduction='none'`` an array of ``logits``' shape, otherwise a scalar.
        Default 1.

    Returns
    -------
    LossAndGrad
        The loss, and the gradient (shape and dtype of ``logits``).

    Raises
    ------
    TypeError, ValueError
        As :func:`binary_cross_entropy_with_logits`; also a ``grad_output`` of the wrong
        shape.

    Notes
    -----
    Equal to torch's autograd gradient of ``F.binary_cross_entropy_with_logits``.

    Examples
    --------
    >>> import softxent as sx
    >>> loss, grad = sx.binary_cross_entropy_with_logits_with_grad([0.0, 0.0], [1.0, 0.0])
    >>> grad.tolist()  # (sigmoid(0) - t) / 2
    [-0.25, 0.25]
    """
    return _evaluate_logits(logits, target, weight, pos_weight, reduction, True, grad_output)


def binary_cross_entropy(
    probs: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
) -> Any:
    r"""Binary cross-entropy between probabilities ``probs`` and ``target``, entry by entry.

    .. math::

        \ell_i = -w_i\,\big[t_i \max(\log q_i, -100) + (1 - t_i) \max(\log(1 - q_i), -100)\big]

    The logarithms are clamped at -100 as torch does, so ``q = 0`` or ``1`` gives a loss of
    at most ``100 w`` instead of ``inf``. Prefer :func:`binary_cross_entropy_with_logits`
    on the logits: it is exact where ``sigmoid`` rounds to 0 or 1.

    Parameters
    ----------
    probs : array_like of float16, float32 or float64
        Probabilities in [0, 1], any shape.
    target : array_like of float
        Shape of ``probs``, values in [0, 1] (soft labels allowed).
    weight : array_like, optional
        A weight per entry, broadcast to ``probs``' shape.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        ``'mean'`` divides by the number of entries.

    Returns
    -------
    ndarray or NumPy scalar
        ``'none'``: the losses, shape of ``probs``; else a scalar. dtype: the promotion of
        the arguments given as NumPy arrays (lists follow ``probs``).

    Raises
    ------
    TypeError
        Integer, bool or complex ``probs`` or ``target``; bool or complex ``weight``.
    ValueError
        ``probs`` or ``target`` outside [0, 1] or NaN (the message names the first such
        value and its position); a ``target`` of another shape; a ``weight`` that does not
        broadcast; an unknown ``reduction``.

    Notes
    -----
    Equal to ``torch.nn.functional.binary_cross_entropy(probs, target, weight,
    reduction=reduction)``, whose ``log(1 - q)`` is ``log1p(-q)``.

    Examples
    --------
    >>> import softxent as sx
    >>> sx.binary_cross_entropy([0.9, 0.0], [1.0, 1.0], reduction="none")
    array([  0.10536052, 100.        ])
    """
    return _evaluate_probs(probs, target, weight, reduction, False)


def binary_cross_entropy_with_grad(
    probs: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
    grad_output: ArrayLike | None = None,
) -> LossAndGrad:
    r""":func:`binary_cross_entropy` and its gradient with respect to ``probs``.

    .. math::

        \frac{\partial L}{\partial q_i} = g_i\, w_i\, \frac{q_i - t_i}{\max(q_i (1 - q_i),
        10^{-12})}

    torch's formula, whose floor keeps the gradient finite (``±1e12 g w``) at 0 and 1.

    Parameters
    ----------
    probs, target, weight, reduction
        As in :func:`binary_cross_entropy`.
    grad_output : array_like, optional
        For ``reduction='none'`` an array of ``probs``' shape, otherwise a scalar.

    Returns
    -------
    LossAndGrad
        The loss, and the gradient (shape and dtype of ``probs``).

    Raises
    ------
    TypeError, ValueError
        As :func:`binary_cross_entropy`; also a ``grad_output`` of the wrong shape.

    Examples
    --------
    >>> import softxent as sx
    >>> sx.binary_cross_entropy_with_grad([0.5, 0.8], [1.0, 0.0], reduction="sum").grad
    array([-2.,  5.])
    """
    return _evaluate_probs(probs, target, weight, reduction, True, grad_output)

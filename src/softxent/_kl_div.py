"""kl_div and kl_div_with_grad: the Kullback-Leibler divergence (NumPy, torch 2.13
semantics), e.g. of a student's log-probabilities from a teacher's probabilities."""

from __future__ import annotations

from typing import Any

from numpy.typing import ArrayLike

from softxent import _elementwise
from softxent._cross_entropy import LossAndGrad
from softxent._elementwise_kernels import kl_div_block, kl_div_log_target_block
from softxent._validation import as_float_array, broadcast_operand, check_bool, check_kl_reduction

__all__ = ["kl_div", "kl_div_with_grad"]


def _evaluate(log_probs, target, reduction, log_target, with_grad, grad_output=None):
    x = as_float_array(log_probs, "log_probs")
    t = as_float_array(target, "target")
    dtype = _elementwise.result_dtype([log_probs, target], [x, t])
    t = broadcast_operand(
        _elementwise.as_operand(target, t, dtype), "target", x.shape, "log_probs"
    )
    reduction = check_kl_reduction(reduction)
    kernel = kl_div_log_target_block if check_bool(log_target, "log_target") else kl_div_block
    if reduction == "batchmean":
        # torch divides the sum by the size of the first axis (a 0-d input: by 1)
        denominator = float(x.shape[0]) if x.ndim else 1.0
        reduction = "mean"
    else:
        denominator = float(x.size)
    return _elementwise.evaluate(
        kernel, [x, t], reduction=reduction, denominator=denominator, dtype=dtype,
        num_scratch=1, with_grad=with_grad, grad_output=grad_output,
    )  # fmt: skip


def kl_div(
    log_probs: ArrayLike,
    target: ArrayLike,
    *,
    reduction: str = "mean",
    log_target: bool = False,
) -> Any:
    r"""Kullback-Leibler divergence of ``target`` from the distribution with log-probabilities
    ``log_probs``, entry by entry.

    .. math::

        \ell_i = t_i\,(\log t_i - x_i) \quad (\text{0 log 0 = 0}), \qquad
        \ell_i = e^{t_i}\,(t_i - x_i) \quad (\texttt{log\_target=True})

    Summed over a row (``reduction='none'`` then ``.sum(-1)``), this is
    :math:`\mathrm{KL}(t \,\|\, e^{x}) = \sum_c t_c \log(t_c / p_c)`.

    Parameters
    ----------
    log_probs : array_like of float16, float32 or float64
        The model's log-probabilities (e.g. :func:`log_softmax`), any shape.
    target : array_like of float
        Probabilities (log-probabilities with ``log_target=True``), the shape of
        ``log_probs`` or one that broadcasts to it.
    reduction : {'mean', 'batchmean', 'sum', 'none'}, default 'mean'
        ``'batchmean'`` divides the sum by the size of the first axis (the batch): the
        mathematical KL divergence averaged over samples. ``'mean'`` divides by the
        number of entries (torch's default, which it warns about).
    log_target : bool, default False

    Returns
    -------
    ndarray or NumPy scalar
        ``'none'``: the losses, shape of ``log_probs``; else a scalar. dtype: the promotion
        of the arguments given as NumPy arrays (lists follow ``log_probs``).

    Raises
    ------
    TypeError
        Integer, bool or complex ``log_probs`` or ``target``; a non-bool ``log_target``.
    ValueError
        A ``target`` that does not broadcast to ``log_probs``' shape; an unknown
        ``reduction``.

    Notes
    -----
    Equal to ``torch.nn.functional.kl_div(log_probs, target, reduction=reduction,
    log_target=log_target)`` (torch computes ``xlogy(t, t) - t x``), special values
    included: a zero target contributes 0 for a finite ``x`` but NaN for ``x = -inf``
    (``0 * inf``), a negative target gives NaN, and with ``log_target=True`` a ``-inf``
    target gives NaN. No warning is given for ``'mean'``.

    Examples
    --------
    >>> import numpy as np, softxent as sx
    >>> teacher = np.array([[0.5, 0.5, 0.0]])
    >>> student = sx.log_softmax(np.array([[1.0, 1.0, -1.0]]))
    >>> float(sx.kl_div(student, teacher, reduction="batchmean"))
    0.06547649511956821
    """
    return _evaluate(log_probs, target, reduction, log_target, False)


def kl_div_with_grad(
    log_probs: ArrayLike,
    target: ArrayLike,
    *,
    reduction: str = "mean",
    log_target: bool = False,
    grad_output: ArrayLike | None = None,
) -> LossAndGrad:
    r""":func:`kl_div` and its gradient with respect to ``log_probs``, in one pass.

    .. math::

        \frac{\partial L}{\partial x_i} = -g_i\, t_i \quad\text{or}\quad -g_i\, e^{t_i}
        \;(\texttt{log\_target=True})

    with ``g`` the upstream gradient divided by the reduction's denominator.

    Parameters
    ----------
    log_probs, target, reduction, log_target
        As in :func:`kl_div`.
    grad_output : array_like, optional
        For ``reduction='none'`` an array of ``log_probs``' shape, otherwise a scalar.

    Returns
    -------
    LossAndGrad
        The loss, and the gradient (shape and dtype of ``log_probs``).

    Raises
    ------
    TypeError, ValueError
        As :func:`kl_div`; also a ``grad_output`` of the wrong shape.

    Examples
    --------
    >>> import softxent as sx
    >>> sx.kl_div_with_grad([[-0.1, -2.0]], [[0.75, 0.25]], reduction="batchmean").grad
    array([[-0.75, -0.25]])
    """
    return _evaluate(log_probs, target, reduction, log_target, True, grad_output)

"""Block kernels of the elementwise losses: every pass of one formula over one block.

Each kernel is ``kernel(operands, g, loss, grad, scratch)`` (see ``_elementwise``):
``operands`` are ``(R, L)`` views in the caller's dtypes (possibly strided or broadcast);
``loss``, ``grad`` and every ``scratch`` buffer are C-contiguous ``(R, L)`` buffers of the
compute dtype; ``g`` is the upstream gradient, already scaled by the reduction (a float, or
an ``(R, L)`` view for ``reduction='none'``). ``grad`` None: the loss only. The formulas are
torch's (ATen's decompositions), written so that no intermediate overflows. Where the
native extension takes the block (``_native.elementwise_loss_block``) it computes the same
formulas in one fused pass instead, and the NumPy passes below do not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from softxent import _native

#: torch's floor of ``q (1 - q)`` in binary_cross_entropy's gradient: ATen's ``1e-12`` is a
#: float32 constant, so float64 gradients at q = 0 or 1 are divided by 9.99999996e-13.
BCE_GRAD_EPSILON = float(np.float32(1e-12))
#: torch clamps binary_cross_entropy's logarithms at this value (a loss of at most 100).
BCE_LOG_FLOOR = -100.0


def _scale(grad: np.ndarray, weight: np.ndarray | None, g: Any) -> None:
    """``grad *= weight * g`` in place (weight None: ones)."""
    if weight is not None:
        np.multiply(grad, weight, out=grad)
    if isinstance(g, np.ndarray) or g != 1.0:
        np.multiply(grad, g, out=grad)


def mse_block(ops: Sequence[Any], g: Any, loss: np.ndarray, grad: Any, scratch: Sequence) -> None:
    """``loss = w (x - t)^2``; ``grad = 2 w (x - t) g``. ``ops = (x, t, w or None)``."""
    x, t, w = ops
    if _native.elementwise_loss_block(_native.MSE, x, t, w, None, g, loss, grad):
        return
    np.subtract(x, t, out=loss)  # (R, L) d = x - t
    if grad is not None:
        np.multiply(loss, 2.0, out=grad)  # (R, L) 2 d
        _scale(grad, w, g)
    np.multiply(loss, loss, out=loss)  # (R, L) d^2
    if w is not None:
        np.multiply(loss, w, out=loss)


def log1p_into(y: np.ndarray, out: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``out = log1p(y)`` for ``y > -1`` (``u``: a scratch buffer), by Kahan's trick
    ``log(1 + y) * y / ((1 + y) - 1)``, within a few ulps.

    NumPy's ``log1p`` is a scalar loop, about 12x slower than the SIMD ``log`` and the
    arithmetic passes used here. Where ``1 + y`` rounds to 1 the quotient is NaN; there
    ``log1p(y)`` rounds to ``y``, and since ``log1p(y) <= y`` everywhere, ``fmin(., y)``
    (which skips the NaN) gives exactly that without a masked pass.
    """
    np.add(y, 1.0, out=u)  # (R, L) u = fl(1 + y)
    np.subtract(u, 1.0, out=out)  # u - 1, exact
    np.divide(y, out, out=out)  # y / (u - 1): corrects the rounding of 1 + y
    np.log(u, out=u)
    np.multiply(u, out, out=out)
    return np.fmin(out, y, out=out)


def bce_with_logits_block(
    ops: Sequence[Any], g: Any, loss: np.ndarray, grad: Any, scratch: Sequence
) -> None:
    """Binary cross-entropy on logits ``x``, ``ops = (x, t, w or None, p or None)``.

    ``loss = w [(1 - t) x + (1 + (p - 1) t) softplus(-x)]`` with
    ``softplus(-x) = log1p(exp(-|x|)) + max(-x, 0)`` (no exp of a positive number, so no
    overflow); ``grad = w g [(1 + (p - 1) t) sigmoid(x) - p t]`` (``sigmoid(x) - t``
    without ``pos_weight``), ``sigmoid(x) = 1 / (1 + exp(-x))`` (relatively exact: an
    overflowing ``exp(-x)`` gives 0, the value rounded). Three scratch buffers.
    """
    x, t, w, p = ops
    if _native.elementwise_loss_block(_native.BCE_WITH_LOGITS, x, t, w, p, g, loss, grad):
        return
    e, b, c = scratch[0], scratch[1], scratch[2]
    if grad is not None:
        np.negative(x, out=b)
        np.exp(b, out=b)
        np.add(b, 1.0, out=b)
        np.divide(1.0, b, out=b)  # (R, L) sigmoid(x)
        if p is None:
            np.subtract(b, t, out=grad)  # (R, L) sigmoid(x) - t
        else:
            np.subtract(p, 1.0, out=grad)
            np.multiply(grad, t, out=grad)
            np.add(grad, 1.0, out=grad)  # (R, L) 1 + (p - 1) t
            np.multiply(grad, b, out=grad)
            np.multiply(p, t, out=b)  # (R, L) p t
            np.subtract(grad, b, out=grad)
        _scale(grad, w, g)
    np.absolute(x, out=c)  # (R, L) |x|
    np.negative(c, out=e)
    np.exp(e, out=e)  # (R, L) exp(-|x|), in [0, 1]
    log1p_into(e, b, loss)  # (R, L) log1p(exp(-|x|)); loss as scratch
    np.subtract(c, x, out=c)
    np.multiply(c, 0.5, out=c)  # (R, L) max(-x, 0) = (|x| - x) / 2, exact
    np.add(b, c, out=e)  # (R, L) softplus(-x) = -log sigmoid(x)
    if p is not None:
        np.subtract(p, 1.0, out=b)
        np.multiply(b, t, out=b)
        np.add(b, 1.0, out=b)  # (R, L) 1 + (p - 1) t
        np.multiply(e, b, out=e)
    np.subtract(1.0, t, out=loss)
    np.multiply(loss, x, out=loss)  # (R, L) (1 - t) x
    np.add(loss, e, out=loss)
    if w is not None:
        np.multiply(loss, w, out=loss)


def bce_block(ops: Sequence[Any], g: Any, loss: np.ndarray, grad: Any, scratch: Sequence) -> None:
    """Binary cross-entropy on probabilities ``q``, ``ops = (q, t, w or None)``.

    ``loss = w [(t - 1) max(log1p(-q), -100) - t max(log q, -100)]``;
    ``grad = w g (q - t) / max(q (1 - q), 1e-12)``. Two scratch buffers.
    """
    q, t, w = ops
    if _native.elementwise_loss_block(_native.BCE, q, t, w, None, g, loss, grad):
        return
    a, b = scratch[0], scratch[1]
    if grad is not None:
        np.subtract(1.0, q, out=a)
        np.multiply(a, q, out=a)
        np.maximum(a, BCE_GRAD_EPSILON, out=a)  # (R, L) max(q (1 - q), eps)
        np.subtract(q, t, out=grad)
        np.divide(grad, a, out=grad)
        _scale(grad, w, g)
    np.negative(q, out=b)
    log1p_into(b, a, loss)
    np.maximum(a, BCE_LOG_FLOOR, out=a)  # (R, L) max(log(1 - q), -100)
    np.subtract(t, 1.0, out=loss)
    np.multiply(loss, a, out=loss)
    np.log(q, out=a)
    np.maximum(a, BCE_LOG_FLOOR, out=a)  # (R, L) max(log q, -100)
    np.multiply(a, t, out=a)
    np.subtract(loss, a, out=loss)
    if w is not None:
        np.multiply(loss, w, out=loss)


def kl_div_block(
    ops: Sequence[Any], g: Any, loss: np.ndarray, grad: Any, scratch: Sequence
) -> None:
    """KL divergence of probability targets, ``ops = (x, t)`` (``x`` log-probabilities).

    ``loss = xlogy(t, t) - t x`` (``xlogy(0, 0) = 0``: a zero target adds ``-0 x``, 0 for a
    finite ``x``); ``grad = -t g``. One scratch buffer.
    """
    x, t = ops
    if _native.elementwise_loss_block(_native.KL_DIV, x, t, None, None, g, loss, grad):
        return
    a = scratch[0]
    if grad is not None:
        np.multiply(t, g, out=grad)
        np.negative(grad, out=grad)  # (R, L) -t g
    np.log(t, out=a)
    # xlogy(0, 0) = 0: log 0 = -inf becomes the most negative finite number, so that
    # 0 * it is 0, while the NaN of a negative or NaN target stays (maximum keeps NaN).
    np.maximum(a, -np.finfo(a.dtype).max, out=a)
    np.multiply(a, t, out=a)  # (R, L) t log t
    np.multiply(t, x, out=loss)
    np.subtract(a, loss, out=loss)


def kl_div_log_target_block(
    ops: Sequence[Any], g: Any, loss: np.ndarray, grad: Any, scratch: Sequence
) -> None:
    """KL divergence of log-probability targets: ``loss = exp(t) (t - x)``;
    ``grad = -exp(t) g``. One scratch buffer."""
    x, t = ops
    if _native.elementwise_loss_block(_native.KL_DIV_LOG_TARGET, x, t, None, None, g, loss, grad):
        return
    a = scratch[0]
    np.exp(t, out=a)  # (R, L) the target probabilities
    if grad is not None:
        np.multiply(a, g, out=grad)
        np.negative(grad, out=grad)
    np.subtract(t, x, out=loss)
    np.multiply(loss, a, out=loss)

"""``mse_loss``, ``binary_cross_entropy_with_logits`` and ``kl_div``: torch's functions with
the gradient fused into the forward.

As for ``cross_entropy``: the forward computes the loss and ``d loss / d input`` (for an
upstream gradient of 1) in one pass and saves that gradient as the only input-sized
tensor; ``backward`` scales it. CPU tensors run softxent's NumPy functions zero-copy;
other devices (and bfloat16) the same formulas in torch, without host synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

import softxent as _sx
from softxent._validation import (
    KlReduction,
    Reduction,
    check_bool,
    check_kl_reduction,
    check_reduction,
)
from softxent.torch._autograd import keep_graph, refuse_double_backward, scale_saved_gradient
from softxent.torch._options import LossOptions, use_numpy_kernels
from softxent.torch._reduction import reduce_losses
from softxent.torch._validation import check_elementwise_operand, check_float_tensor, compute_dtype

__all__ = [
    "ElementwiseCall",
    "binary_cross_entropy_with_logits",
    "elementwise_loss",
    "kl_div",
    "mse_loss",
]

LossName = Literal["mse_loss", "binary_cross_entropy_with_logits", "kl_div"]


@dataclass(frozen=True)
class ElementwiseCall:
    """The validated scalar options of one call."""

    loss: LossName
    reduction: KlReduction  # "batchmean" for kl_div only
    log_target: bool = False


def mse_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: Reduction = "mean",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Mean squared error: ``torch.nn.functional.mse_loss`` with its gradient computed in
    the forward.

    .. math:: \ell_i = w_i (x_i - t_i)^2, \qquad \text{mean} = \sum_i \ell_i / \sum_i w_i

    Parameters
    ----------
    input : Tensor, float16, bfloat16, float32 or float64
    target : Tensor
        Floating, the input's shape or one that broadcasts to it; not differentiated.
    reduction : {'mean', 'sum', 'none'}
    weight : Tensor, optional
        One weight per entry, of the input's shape (torch 2.13's ``weight=``).

    Returns
    -------
    Tensor
        ``'none'``: the input's shape; else a scalar. dtype: torch's promotion.

    Raises
    ------
    TypeError
        Non-floating tensors.
    ValueError
        A target that does not broadcast to the input, a weight of another shape, a target
        or weight that requires grad, an unknown reduction.

    Notes
    -----
    Equal to ``torch.nn.functional.mse_loss(input, target, reduction=reduction,
    weight=weight)``, except that a target that would broadcast the input to a larger
    shape is refused (torch warns that it "will likely lead to incorrect results"). float16
    is computed in float32 and rounded once.

    Examples
    --------
    >>> import torch
    >>> from softxent.torch import mse_loss
    >>> x = torch.tensor([0.5, 2.0], requires_grad=True)
    >>> loss = mse_loss(x, torch.tensor([1.0, 0.0]))
    >>> loss.backward()
    >>> loss.item(), x.grad.tolist()
    (2.125, [-0.5, 2.0])
    """
    call = ElementwiseCall("mse_loss", check_reduction(reduction))
    return elementwise_loss(call, input, target, weight, None)


def binary_cross_entropy_with_logits(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Binary cross-entropy on logits: ``torch.nn.functional.binary_cross_entropy_with_logits``
    with its gradient computed in the forward.

    .. math::

        \ell_i = w_i\,\big[(1 - t_i)\, x_i + (1 + (p_i - 1)\, t_i)
                 (\log(1 + e^{-|x_i|}) + \max(-x_i, 0))\big]

    Parameters
    ----------
    input : Tensor, float16, bfloat16, float32 or float64
        Logits, any shape.
    target : Tensor
        Floating, the input's shape (hard or soft labels); not differentiated.
    weight : Tensor, optional
        Broadcast to the input's shape.
    reduction : {'mean', 'sum', 'none'}
    pos_weight : Tensor, optional
        The positive term's weight, broadcast to the input's shape (one per class, last dim).

    Returns
    -------
    Tensor
        ``'none'``: the input's shape; else a scalar. dtype: the target's, as torch's.

    Raises
    ------
    TypeError, ValueError
        As :func:`mse_loss`; the target must have the input's shape (as in torch).

    Notes
    -----
    Equal to ``torch.nn.functional.binary_cross_entropy_with_logits(input, target, weight,
    reduction=reduction, pos_weight=pos_weight)``.

    Examples
    --------
    >>> import torch
    >>> from softxent.torch import binary_cross_entropy_with_logits
    >>> x = torch.tensor([0.0, 0.0], requires_grad=True)
    >>> binary_cross_entropy_with_logits(x, torch.tensor([1.0, 0.0])).backward()
    >>> x.grad.tolist()  # (sigmoid(x) - t) / 2
    [-0.25, 0.25]
    """
    call = ElementwiseCall("binary_cross_entropy_with_logits", check_reduction(reduction))
    return elementwise_loss(call, input, target, weight, pos_weight)


def kl_div(
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: KlReduction = "mean",
    log_target: bool = False,
) -> torch.Tensor:
    r"""Kullback-Leibler divergence: ``torch.nn.functional.kl_div`` with its gradient
    computed in the forward.

    .. math::

        \ell_i = t_i (\log t_i - x_i) \;(0 \text{ where } t_i = 0), \qquad
        \ell_i = e^{t_i} (t_i - x_i) \;(\texttt{log\_target})

    Parameters
    ----------
    input : Tensor, float16, bfloat16, float32 or float64
        Log-probabilities.
    target : Tensor
        Probabilities (log-probabilities with ``log_target``), the input's shape or one
        that broadcasts to it; not differentiated.
    reduction : {'mean', 'batchmean', 'sum', 'none'}
    log_target : bool

    Returns
    -------
    Tensor
        ``'none'``: the input's shape; else a scalar. dtype: torch's promotion.

    Raises
    ------
    TypeError, ValueError
        As :func:`mse_loss`; also a non-bool ``log_target``.

    Notes
    -----
    Equal to ``torch.nn.functional.kl_div(input, target, reduction=reduction,
    log_target=log_target)`` (without its warning about ``'mean'``).

    Examples
    --------
    >>> import torch
    >>> from softxent.torch import kl_div
    >>> x = torch.tensor([[-0.1, -2.0]], requires_grad=True)
    >>> kl_div(x, torch.tensor([[0.75, 0.25]]), reduction="batchmean").backward()
    >>> x.grad.tolist()
    [[-0.75, -0.25]]
    """
    call = ElementwiseCall(
        "kl_div", check_kl_reduction(reduction), check_bool(log_target, "log_target")
    )
    return elementwise_loss(call, input, target, None, None)


def elementwise_loss(
    call: ElementwiseCall,
    input: Any,
    target: Any,
    weight: Any,
    pos_weight: Any,
    backend: str = "auto",
) -> torch.Tensor:
    """The loss of a validated ``call``; ``backend`` forces a path (tests), as for
    :func:`softxent.torch._cross_entropy.cross_entropy_with_options`."""
    input = check_float_tensor(input, "input", min_ndim=0)
    bce = call.loss == "binary_cross_entropy_with_logits"
    target = check_elementwise_operand(target, "target", input, "input", broadcast=not bce)
    weight = check_elementwise_operand(
        weight, "weight", input, "input", broadcast=call.loss != "mse_loss"
    )
    pos_weight = check_elementwise_operand(
        pos_weight, "pos_weight", input, "input", broadcast=True
    )
    use_numpy = use_numpy_kernels(backend, LossOptions(), [input, target, weight, pos_weight])
    if not (torch.is_grad_enabled() and input.requires_grad):
        ops = _Operands(input, target, weight, pos_weight)
        return _forward(call, ops, use_numpy, need_grad=False)[0]
    return _ElementwiseFunction.apply(input, target, weight, pos_weight, call, use_numpy)


_Result = tuple[torch.Tensor, torch.Tensor | None]  # the loss, and the gradient or None


class _Operands(NamedTuple):
    """The validated tensors of one call (weights None when not given)."""

    input: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor | None
    pos_weight: torch.Tensor | None


def _forward(
    call: ElementwiseCall, ops: _Operands, use_numpy: bool, *, need_grad: bool
) -> _Result:
    if use_numpy:
        return _forward_numpy(call, ops, need_grad)
    return _forward_torch(call, ops, need_grad)


_NUMPY_FUNCTIONS: dict[str, tuple[Callable[..., Any], Callable[..., _sx.LossAndGrad]]] = {
    "mse_loss": (_sx.mse_loss, _sx.mse_loss_with_grad),
    "binary_cross_entropy_with_logits": (
        _sx.binary_cross_entropy_with_logits,
        _sx.binary_cross_entropy_with_logits_with_grad,
    ),
    "kl_div": (_sx.kl_div, _sx.kl_div_with_grad),
}


def _forward_numpy(call: ElementwiseCall, ops: _Operands, need_grad: bool) -> _Result:
    input, target, weight, pos_weight = ops
    kwargs: dict[str, Any] = {"reduction": call.reduction}
    if call.loss == "kl_div":
        kwargs["log_target"] = call.log_target
    else:
        kwargs["weight"] = None if weight is None else weight.detach().numpy()
    if pos_weight is not None:
        kwargs["pos_weight"] = pos_weight.detach().numpy()
    x, t = input.detach().numpy(), target.detach().numpy()  # zero-copy views
    plain, with_grad = _NUMPY_FUNCTIONS[call.loss]
    if not need_grad:
        return torch.from_numpy(np.asarray(plain(x, t, **kwargs))), None
    loss, grad = with_grad(x, t, **kwargs)
    return torch.from_numpy(np.asarray(loss)), torch.from_numpy(grad)


def _loss_dtype(
    call: ElementwiseCall, input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None
) -> torch.dtype:
    """torch's: the promotion of the operands (of input, target and weight for mse_loss,
    of input and target for kl_div); the target's for binary_cross_entropy_with_logits."""
    if call.loss == "binary_cross_entropy_with_logits":
        return target.dtype
    dtype = torch.promote_types(input.dtype, target.dtype)
    return dtype if weight is None else torch.promote_types(dtype, weight.dtype)


def _forward_torch(call: ElementwiseCall, ops: _Operands, need_grad: bool) -> _Result:
    """The same formulas as softxent's NumPy kernels, in torch, on any device: no host sync
    (every value, the mean's denominator included, stays a tensor)."""
    input, target, weight, pos_weight = ops
    out_dtype = _loss_dtype(call, input, target, weight)
    ct = torch.promote_types(compute_dtype(out_dtype), compute_dtype(input.dtype))
    x = input.detach().to(ct)
    t = target.detach().to(ct)
    w = None if weight is None else weight.detach().to(ct)
    if call.loss == "mse_loss":
        d = x - t
        loss, grad = d * d, 2.0 * d
    elif call.loss == "kl_div":
        if call.log_target:
            probs = torch.exp(t)
            loss, grad = probs * (t - x), -probs
        else:
            loss, grad = torch.special.xlogy(t, t) - t * x, -t
        grad = grad.expand(x.shape)
    else:
        p = None if pos_weight is None else pos_weight.detach().to(ct)
        softplus = torch.log1p(torch.exp(-x.abs())) + torch.clamp_min(-x, 0)  # -log sigmoid(x)
        if p is None:
            loss, grad = (1 - t) * x + softplus, torch.sigmoid(x) - t
        else:
            coefficient = 1 + (p - 1) * t
            loss = (1 - t) * x + coefficient * softplus
            grad = coefficient * torch.sigmoid(x) - p * t
    if w is not None:
        loss, grad = loss * w, grad * w
    reduction: Reduction = "mean" if call.reduction == "batchmean" else call.reduction
    denominator = _denominator(call, x, w)
    loss = reduce_losses(loss.reshape(-1), reduction, denominator, out_dtype, tuple(x.shape))
    if not need_grad:
        return loss, None
    if reduction == "mean":
        grad = grad * (1.0 / denominator).to(ct)
    return loss, grad.to(input.dtype)


def _denominator(call: ElementwiseCall, x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """The 0-d denominator of ``'mean'`` (``'batchmean'``): the number of entries, the sum
    of ``mse_loss``'s weights, or the first dim's size."""
    if call.loss == "mse_loss" and w is not None:
        accumulate = torch.float64 if x.device.type != "mps" else w.dtype
        return w.sum(dtype=accumulate)
    count = x.numel() if call.reduction != "batchmean" else (x.shape[0] if x.ndim else 1)
    return torch.tensor(
        float(count), dtype=torch.float64 if x.device.type != "mps" else x.dtype, device=x.device
    )


class _ElementwiseFunction(torch.autograd.Function):
    """Forward: loss and gradient in one pass; backward: scale the saved gradient."""

    @staticmethod
    def forward(ctx, input, target, weight, pos_weight, call: ElementwiseCall, use_numpy: bool):
        ops = _Operands(input, target, weight, pos_weight)
        loss, grad = _forward(call, ops, use_numpy, need_grad=True)
        ctx.save_for_backward(grad)
        ctx.loss_name = call.loss
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        refuse_double_backward(ctx.loss_name)
        (grad,) = ctx.saved_tensors
        grad_input = scale_saved_gradient(grad, grad_output, keep=keep_graph())
        return grad_input, None, None, None, None, None

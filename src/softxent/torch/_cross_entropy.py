"""``cross_entropy``: torch's ``F.cross_entropy`` with the gradient fused into the forward.

The forward computes the loss and ``d loss / d input`` in one pass (for an upstream
gradient of 1, or of 1 per element for ``reduction='none'``) and saves that gradient as
the only logits-sized tensor; ``backward`` just scales it by the upstream gradient. On CPU
the pass runs in softxent's NumPy kernels, zero-copy (``Tensor.numpy()`` shares memory);
elsewhere (and for bfloat16, z-loss and softcap) it is the pure-torch kernel of
:mod:`softxent.torch._algebra` (shared with tensor parallelism), which never
synchronises with the host. Small CPU calls whose result torch defines run
``F.cross_entropy`` itself, the faster there (:mod:`softxent.torch._torch_kernel`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from softxent._cross_entropy import (
    CrossEntropyCall,
    cross_entropy_targets,
)
from softxent._output_cache import empty_like
from softxent._validation import Reduction
from softxent.torch._algebra import make_plan, rows_pass
from softxent.torch._autograd import keep_graph, refuse_double_backward, scale_saved_gradient
from softxent.torch._options import LossOptions, make_options, use_numpy_kernels
from softxent.torch._reduction import grad_row_scale, mean_denominator, reduce_losses
from softxent.torch._torch_kernel import (
    plain_small_call,
    runs_torch_kernel,
    torch_cross_entropy,
)
from softxent.torch._validation import (
    check_class_weight,
    check_float_tensor,
    check_grad_free,
    check_target,
    check_values_on_cpu,
    compute_dtype,
    loss_dtype,
)

__all__ = ["cross_entropy", "cross_entropy_with_options"]


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    *,
    z_loss: float = 0.0,
    softcap: float | None = None,
    inplace_backward: bool = False,
) -> torch.Tensor:
    r"""Cross-entropy between logits and targets: ``torch.nn.functional.cross_entropy``,
    with its gradient computed in the forward, plus z-loss and logit soft-capping.

    For class indices :math:`y_n`, class weights :math:`w`, smoothing :math:`\varepsilon`
    and :math:`\mathrm{lse}_n = \log\sum_c e^{x_{n,c}}`:

    .. math::

        \ell_n = (1-\varepsilon)\, w_{y_n} (\mathrm{lse}_n - x_{n,y_n})
            + \frac{\varepsilon}{C}\sum_c w_c (\mathrm{lse}_n - x_{n,c})
            + z\,\mathrm{lse}_n^2

    (0 for ignored samples); ``'mean'`` is :math:`\sum_n \ell_n / \sum_n w_{y_n}` over the
    non-ignored samples. For probability targets :math:`t`,
    :math:`\ell_n = -\sum_c w_c q_{n,c} \log\mathrm{softmax}(x)_{n,c} + z\,\mathrm{lse}_n^2`
    with :math:`q = (1-\varepsilon)t + \varepsilon/C`, and ``'mean'`` divides by the number
    of samples. With ``softcap=s`` the logits are first replaced by :math:`s\tanh(x/s)`.

    Parameters
    ----------
    input : Tensor, float16, bfloat16, float32 or float64
        Logits of shape (C,), (N, C) or (N, C, d1, ..., dk): classes on dim 1 (dim 0 for
        1-D input), as in torch.
    target : Tensor
        Class indices (any integer dtype) of the input's shape without the class dim, or
        probabilities (floating) of the input's shape.
    weight : Tensor (C,), optional
        Finite rescaling weight per class, negative values too (not differentiated).
    ignore_index : int
        Samples whose target equals it are left out (class indices only). Default -100.
    reduction : {'mean', 'sum', 'none'}
    label_smoothing : float in [0, 1]
    z_loss : float >= 0, keyword-only
        Adds ``z_loss * lse**2`` to each non-ignored sample's loss (PaLM's auxiliary loss),
        before the reduction (so ``'mean'`` divides it by the same denominator).
    softcap : float > 0, optional, keyword-only
        Caps the logits to ``softcap * tanh(input / softcap)`` first (Gemma 2).
    inplace_backward : bool, keyword-only
        Write the gradient into the input's storage: no logits-sized allocation at all, but
        the input is **consumed** (after the call it holds the gradient, not the logits).
        Only for an intermediate result (e.g. the output of the last ``Linear``), never a
        leaf tensor; another op that saved the input for its own backward then raises
        torch's "modified by an inplace operation" error.

    Returns
    -------
    Tensor
        Shape of the target (indices) / of the input without the class dim for
        ``'none'``, else a scalar. dtype of the input (class indices) or torch's promotion
        of input, target and weight (probabilities).

    Raises
    ------
    TypeError
        Non-floating input or weight, integer probability targets, floating class indices.
    ValueError
        Shapes that do not match, bad option values, a weight or a probability target
        that requires grad, ``inplace_backward=True`` on a leaf that requires grad, and, on
        CPU, a class index outside ``[0, C)`` that is not ``ignore_index`` or a non-finite
        class weight.

    Notes
    -----
    Exactly ``torch.nn.functional.cross_entropy(input, target, weight, ignore_index=...,
    reduction=..., label_smoothing=...)`` for ``z_loss=0, softcap=None``, computed in
    float32 for half inputs. Differences from torch: an ignored sample's gradient row is 0
    even when its logits are NaN or infinite (torch: NaN); ``label_smoothing`` outside
    [0, 1] or NaN raises (torch silently ignores negative values and NaN); out-of-range
    class indices raise ``ValueError`` on CPU (torch: ``IndexError``) and, off CPU, give a
    NaN loss, because checking them there would synchronise with the host.

    Memory: the saved gradient is the only logits-sized tensor kept between forward and
    backward (none with ``inplace_backward``). ``backward`` scales it in place unless the
    graph is retained (``retain_graph=True``), so a second backward is still correct.
    Double backward (``create_graph=True``) is not supported and raises, except on the
    small CPU calls that run ``F.cross_entropy`` itself because it is the faster there
    (float32/float64 input of at most 65,536 logits, int64 class indices or probabilities
    of the input's dtype, positive finite class weights of the input's dtype, none of the
    options beyond torch's): their graph is torch's.

    Examples
    --------
    >>> import torch
    >>> from softxent.torch import cross_entropy
    >>> pred = torch.tensor([[0.3, 0.1, 0.3], [0.9, 0.2, 0.9], [0.5, 0.4, 0.2]],
    ...                     requires_grad=True)
    >>> loss = cross_entropy(pred, torch.tensor([1, 2, 0]))
    >>> round(loss.item(), 6)
    1.041377
    >>> loss.backward()
    >>> pred.grad[0]  # (softmax - one_hot) / 3
    tensor([ 0.1183, -0.2365,  0.1183])
    """
    options = make_options(
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        inplace_backward=inplace_backward,
    )
    return cross_entropy_with_options(input, target, weight, options)


def cross_entropy_with_options(
    input: Any, target: Any, weight: Any, options: LossOptions, backend: str = "auto"
) -> torch.Tensor:
    """:func:`cross_entropy` with validated options; ``backend`` forces a path (tests).

    ``backend``: ``'auto'`` (NumPy kernels for CPU tensors they support, else torch),
    ``'numpy'`` (raise if unsupported) or ``'torch'`` (the generic path, any device).
    """
    if backend == "auto":
        loss = plain_small_call(input, target, weight, options)
        if loss is not None:
            return loss
    input = check_float_tensor(input, "input")
    class_dim = 0 if input.ndim == 1 else 1
    num_classes = input.shape[class_dim]
    if num_classes == 0:
        raise ValueError(
            f"input has no classes (dim {class_dim} of shape {tuple(input.shape)} is 0)"
        )
    prob = check_target(target, tuple(input.shape), class_dim, options.ignore_index, input.device)
    weight = check_class_weight(
        weight, num_classes, input.device, logits_dtype=input.dtype, soft=prob
    )
    check_grad_free(weight, "weight")
    check_grad_free(target if prob else None, "target")
    use_numpy = use_numpy_kernels(backend, options, [input, target, weight])
    needs_grad = torch.is_grad_enabled() and input.requires_grad
    if (
        use_numpy
        and backend == "auto"
        and runs_torch_kernel(input, target, weight, options, prob, need_grad=needs_grad)
    ):  # a small CPU call whose result torch defines: torch's own kernel is the cheaper
        return torch_cross_entropy(input, target, weight, options)
    if not needs_grad:  # no_grad / inference_mode / constant input: forward only
        return _forward(input, target, weight, options, prob, use_numpy, need_grad=False)[0]
    if options.inplace_backward and input.is_leaf:
        raise ValueError(
            "inplace_backward=True overwrites the input with its gradient, so the input "
            "must be an intermediate result, not a leaf tensor that requires grad "
            f"(shape {tuple(input.shape)}); use inplace_backward=False"
        )
    return _CrossEntropyFunction.apply(input, target, weight, options, (prob, use_numpy))


def _forward(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    options: LossOptions,
    prob: bool,
    use_numpy: bool,
    *,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The loss and (if ``need_grad``) d(loss)/d(input) for an upstream gradient of 1."""
    if use_numpy:
        return _forward_numpy(input, target, weight, options, need_grad)
    return _forward_torch(input, target, weight, options, prob, need_grad)


def _forward_numpy(input, target, weight, options, need_grad):
    """The NumPy core's row kernels on the tensors' memory (``.numpy()`` shares it).

    The tensors' kinds, shapes, dtypes and the options were checked at the entry, so the
    NumPy layer's own validation of the same facts is skipped: only the targets are built
    (class indices range-checked, class weights checked finite, as in
    ``softxent.cross_entropy_with_grad``), then the rows are run and reduced.
    """
    x = input.detach().numpy()
    axis = 0 if input.ndim == 1 else 1
    t = target.detach().numpy()
    w = None if weight is None else weight.detach().numpy()
    checked = (options.reduction, options.label_smoothing, options.ignore_index)
    is_index = t.shape != x.shape  # torch's dispatch, checked by check_target
    p = cross_entropy_targets(t, t, is_index, w, x.dtype, x.shape[axis], checked)
    call = CrossEntropyCall.of(x, axis, p)
    if not need_grad:
        return _loss_tensor(call.loss()), None
    inplace = options.inplace_backward
    grad = x if inplace else empty_like(x)
    loss = _loss_tensor(call.loss(grad))
    if inplace:
        # NumPy wrote into the input behind torch's back: bump its version counter so that
        # any other op that saved the input notices (torch's in-place check).
        torch.autograd.graph.increment_version(input)
        return loss, input.detach()
    return loss, torch.from_numpy(grad)


def _loss_tensor(loss) -> torch.Tensor:
    return torch.from_numpy(np.asarray(loss))  # a NumPy scalar becomes a 0-d tensor


def _forward_torch(input, target, weight, options, prob, need_grad):
    class_dim = 0 if input.ndim == 1 else 1
    num_classes = input.shape[class_dim]
    out_dtype = loss_dtype(input.dtype, target, weight, prob)
    ct = compute_dtype(out_dtype)
    moved = input.detach().movedim(class_dim, -1)  # (..., C), a view
    batch_shape = tuple(moved.shape[:-1])
    x = moved.reshape(-1, num_classes)  # (R, C); a copy only when needed
    rows = x.shape[0]
    w = None if weight is None else weight.detach().to(ct)
    if prob:
        t = target.detach().movedim(class_dim, -1).reshape(-1, num_classes).to(ct)  # (R, C)
    else:
        t = target.reshape(-1).long()  # (R,)
        if input.device.type == "cpu":
            check_values_on_cpu(t, w, num_classes, options.ignore_index)
    plan = make_plan(options, num_classes, prob, ct)
    rows_result = rows_pass(x, t, w, plan)
    stats = rows_result.stats
    denominator = mean_denominator(stats.valid, stats.target_weight, rows, ct, x.device)
    loss = reduce_losses(stats.loss, options.reduction, denominator, out_dtype, batch_shape)
    if not need_grad:
        return loss, None
    row_scale = grad_row_scale(options.reduction, denominator, rows, ct)
    grad_rows = rows_result.gradient_(row_scale)  # (R, C)
    grad = grad_rows.reshape(moved.shape).movedim(-1, class_dim)  # input's layout
    if options.inplace_backward:
        input.detach().copy_(grad)  # (bumps the shared version counter)
        return loss, input.detach()
    return loss, grad.to(input.dtype)


class _CrossEntropyFunction(torch.autograd.Function):
    """Forward: loss and gradient in one pass; backward: scale the saved gradient."""

    @staticmethod
    def forward(ctx, input, target, weight, options: LossOptions, path: tuple[bool, bool]):
        prob, use_numpy = path
        loss, grad = _forward(input, target, weight, options, prob, use_numpy, need_grad=True)
        ctx.save_for_backward(grad)
        ctx.per_sample = options.reduction == "none" and input.ndim > 1
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        refuse_double_backward("cross_entropy")
        (grad,) = ctx.saved_tensors
        grad_input = scale_saved_gradient(
            grad, grad_output, keep=keep_graph(), per_sample=ctx.per_sample
        )
        return grad_input, None, None, None, None

"""``linear_cross_entropy``: the output layer and the cross-entropy fused and chunked.

``loss = cross_entropy(input @ linear_weight.T + linear_bias, target)`` without ever
holding the ``(N, V)`` logits: the tokens go through in chunks of ``chunk_size`` rows.
Per chunk ``[i, j)``::

    logits   = input[i:j] @ linear_weight.T + linear_bias   # (c, V)
    d_logits = gradient of the chunk's losses                # (c, V), same pass
    d_input[i:j]   = d_logits @ linear_weight                # (c, D)
    d_weight      += d_logits.T @ input[i:j]                 # (V, D), float32 for half
    d_bias        += d_logits.sum(0)                         # (V,)

For ``'mean'``/``'sum'`` this runs in the forward (with an upstream gradient of 1) and
the three gradients (input-, weight- and bias-sized, never logits-sized) are saved;
``backward`` scales them. For ``'none'`` each token's upstream gradient is needed inside
the sum over tokens that makes ``d_weight``, so the forward computes only the loss, saves
the inputs, and ``backward`` runs the chunks again with the real upstream gradient (one
extra logits matmul per chunk).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import softxent as _sx
from softxent._linear_cross_entropy import CHUNK_BYTES, default_chunk_rows
from softxent._validation import Reduction
from softxent.torch._algebra import class_targets, make_plan, rows_pass
from softxent.torch._autograd import keep_graph, refuse_double_backward, scale_saved_gradient
from softxent.torch._options import LossOptions, make_options, use_numpy_kernels
from softxent.torch._reduction import grad_row_scale, mean_denominator, reduce_losses
from softxent.torch._validation import (
    check_class_weight,
    check_float_tensor,
    check_grad_free,
    check_linear_layer,
    check_target,
    check_values_on_cpu,
    compute_dtype,
    loss_dtype,
)

__all__ = [
    "CHUNK_BYTES",
    "default_chunk_size",
    "linear_cross_entropy",
    "linear_cross_entropy_with_options",
]


def default_chunk_size(
    num_classes: int, dtype: torch.dtype = torch.float32, *, num_rows: int | None = None
) -> int:
    """Rows per chunk by default: as many as keep one chunk's logits within
    :data:`CHUNK_BYTES` (128 MiB) in the compute dtype (float32 for half inputs) and, given
    the ``num_rows`` tokens of the batch, within a quarter of the whole logits, but not
    fewer than 256 rows (each chunk reads the whole weight again).

    >>> default_chunk_size(32000)  # 128 MiB / (32000 classes * 4 bytes)
    1048
    >>> default_chunk_size(32000, num_rows=4096)  # a quarter of 4096 tokens
    1024
    """
    return default_chunk_rows(num_classes, compute_dtype(dtype).itemsize, num_rows)


def linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""Cross-entropy of a linear layer's output without materialising the logits:
    ``torch.nn.functional.linear_cross_entropy`` plus z-loss, softcap and chunk control.

    .. math::

        L = \mathrm{CE}\big(X W^\top + b,\; y\big)

    with :math:`\mathrm{CE}` exactly :func:`softxent.torch.cross_entropy` (classes last),
    computed ``chunk_size`` tokens at a time.

    Parameters
    ----------
    input : Tensor (N, D) or (..., D), float16, bfloat16, float32 or float64
        The layer's input, one row per token (leading dims are flattened into N).
    linear_weight : Tensor (V, D), input's dtype
        The layer's weight, in ``torch.nn.Linear`` layout.
    target : Tensor
        Class indices (integer) of shape (N,) (or the input's leading shape), or
        probabilities (floating) of shape (N, V) (or ``(..., V)``).
    linear_bias : Tensor (V,), input's dtype, optional
    weight : Tensor (V,), optional
        Finite rescaling weight per class, negative values too (not differentiated).
    reduction : {'mean', 'sum', 'none'}
    ignore_index : int or None
        Tokens whose target equals it are left out. None means -100, as in torch.
    label_smoothing : float in [0, 1]
    z_loss : float >= 0
        Adds ``z_loss * lse**2`` per non-ignored token (see :func:`cross_entropy`).
    softcap : float > 0, optional
        Logits become ``softcap * tanh(logits / softcap)`` first.
    chunk_size : int, optional
        Tokens per chunk. Default :func:`default_chunk_size`: a chunk's logits take at most
        :data:`CHUNK_BYTES` = 128 MiB in the compute dtype, and at most a quarter of the
        whole logits from 1024 tokens on.

    Returns
    -------
    Tensor
        Scalar, or the per-token losses (the input's leading shape) for ``'none'``.

    Raises
    ------
    TypeError
        Non-floating tensors, mixed layer dtypes, integer probabilities.
    ValueError
        Mismatched shapes or devices, bad options, a class weight or probability target
        that requires grad, and (CPU only) out-of-range class indices.

    Notes
    -----
    The exact torch equivalent (up to rounding; torch 2.13 has no ``z_loss``/``softcap``)::

        F.cross_entropy(F.linear(input, linear_weight, linear_bias), target,
                        weight=weight, ignore_index=ignore_index, reduction=reduction,
                        label_smoothing=label_smoothing)

    Memory rule: the largest temporaries are one chunk's logits and its gradient, a few
    ``(chunk_size, V)`` arrays of the compute dtype. Example: V = 32000 float32 classes, D =
    512, N = 4096 tokens: the default chunk is a quarter of the tokens, 1024 (the 128 MiB
    cap, 128 MiB / (32000 * 4 B), would allow 1048), so the working set is a few times 125
    MiB instead of the 500 MiB of logits plus 500 MiB of their gradient. For
    ``'mean'``/``'sum'`` the forward saves the three gradients (the sizes of input,
    linear_weight and linear_bias); for ``'none'`` it saves nothing new and the backward
    recomputes the chunks with the per-token upstream gradient. No host synchronisation off
    CPU (a bad class index gives a NaN loss there). Under ``torch.no_grad()`` or when
    nothing requires grad only the loss is computed.
    Half inputs, the same on CPU (NumPy kernels) and every other device: the logits are
    the layer's output in its dtype (like ``F.linear``), the cross-entropy is computed in
    float32, the input gradient is ``d_logits`` rounded to the input dtype times
    ``linear_weight`` (like ``F.linear``'s backward), and the weight and bias gradients are
    accumulated in float32 over the chunks and rounded once.

    Not supported (raise): torch's K-dimensional ``linear_weight`` (V, d1, ..., D) and its
    ``options``; gradients for ``weight`` or probability ``target``; double backward.

    Examples
    --------
    >>> import torch
    >>> from softxent.torch import linear_cross_entropy
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    >>> w = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    >>> y = torch.tensor([0, 3, 1, 1, 2])
    >>> loss = linear_cross_entropy(x, w, y, chunk_size=2)
    >>> ref = torch.nn.functional.cross_entropy(x @ w.T, y)
    >>> bool(torch.allclose(loss, ref, rtol=1e-13, atol=0))
    True
    """
    options = make_options(
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        chunk_size=chunk_size,
    )
    return linear_cross_entropy_with_options(
        input, linear_weight, target, linear_bias, weight, options
    )


def linear_cross_entropy_with_options(
    input: Any,
    linear_weight: Any,
    target: Any,
    linear_bias: Any,
    weight: Any,
    options: LossOptions,
    backend: str = "auto",
) -> torch.Tensor:
    """:func:`linear_cross_entropy` with validated options; ``backend`` forces a path.

    ``backend``: ``'auto'`` (NumPy kernels for supported CPU tensors), ``'numpy'`` or
    ``'torch'`` (the generic chunked path, any device).
    """
    input = check_float_tensor(input, "input")
    num_classes = check_linear_layer(input, linear_weight, linear_bias)
    lw, dim = linear_weight, input.shape[-1]
    lead_shape = tuple(input.shape[:-1])
    logits_shape = (*lead_shape, num_classes)
    prob = check_target(target, logits_shape, len(lead_shape), options.ignore_index, input.device)
    weight = check_class_weight(
        weight, num_classes, input.device, logits_dtype=input.dtype, soft=prob
    )
    check_grad_free(weight, "weight")
    check_grad_free(target if prob else None, "target")
    use_numpy = use_numpy_kernels(backend, options, [input, target, weight])
    hidden = input.reshape(-1, dim)  # (N, D), a view when possible
    rows = target.reshape(-1, num_classes) if prob else target.reshape(-1)
    path = (prob, use_numpy)
    layer = (hidden, lw, linear_bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in layer):
        loss = _LinearCrossEntropyFunction.apply(*layer, rows, weight, options, path)
    else:  # no_grad / inference_mode / nothing to differentiate: forward only
        loss = _run(*layer, rows, weight, options, path, needs=(False,) * 3)[0]
    return loss.reshape(lead_shape) if options.reduction == "none" else loss


def _run(
    hidden: torch.Tensor,
    linear_weight: torch.Tensor,
    linear_bias: torch.Tensor | None,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    options: LossOptions,
    path: tuple[bool, bool],
    *,
    needs: tuple[bool, bool, bool],
    grad_output: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Loss (flat for 'none') and the gradients flagged in ``needs`` (input, weight, bias).

    ``grad_output``: None for an upstream gradient of 1 (or 1 per token for 'none'), else
    the (N,) per-token upstream gradient of ``reduction='none'``.
    """
    prob, use_numpy = path
    if use_numpy:
        return _run_numpy(
            hidden, linear_weight, linear_bias, target, weight, options, needs, grad_output
        )
    return _run_torch(
        hidden, linear_weight, linear_bias, target, weight, options, prob, needs, grad_output
    )


def _run_numpy(hidden, lw, bias, target, weight, options, needs, grad_output):
    arrays = [t.detach().numpy() for t in (hidden, lw, target)]  # zero-copy views
    kwargs = dict(
        bias=None if bias is None else bias.detach().numpy(),
        class_weight=None if weight is None else weight.detach().numpy(),
        ignore_index=options.ignore_index,
        reduction=options.reduction,
        label_smoothing=options.label_smoothing,
        chunk_size=options.chunk_size,
    )
    if not any(needs):
        loss = _sx.linear_cross_entropy(*arrays, **kwargs)
        return torch.from_numpy(np.asarray(loss)), None, None, None
    g = None if grad_output is None else grad_output.detach().reshape(-1).numpy()
    loss, d_hidden, d_weight, d_bias = _sx.linear_cross_entropy_with_grad(
        *arrays, grad_output=g, **kwargs
    )
    grads = [None if a is None else torch.from_numpy(a) for a in (d_hidden, d_weight, d_bias)]
    grads = [grad if need else None for grad, need in zip(grads, needs, strict=True)]
    return (torch.from_numpy(np.asarray(loss)), *grads)


def _run_torch(hidden, lw, bias, target, weight, options, prob, needs, grad_output):
    n, dim = hidden.shape
    num_classes = lw.shape[0]
    dtype = hidden.dtype
    hidden, lw = hidden.detach(), lw.detach()
    bias = None if bias is None else bias.detach()
    out_dtype = loss_dtype(hidden.dtype, target, weight, prob)
    ct = compute_dtype(out_dtype)  # of the chunk's cross-entropy
    acc = compute_dtype(dtype)  # of the weight and bias gradient accumulators
    device = hidden.device
    w = None if weight is None else weight.detach().to(ct)
    plan = make_plan(options, num_classes, prob, ct)
    if prob:
        t = target.detach().to(ct)  # (N, V)
        valid, target_weight = None, None
    else:
        t = target.long()  # (N,)
        if device.type == "cpu":
            check_values_on_cpu(t, w, num_classes, options.ignore_index)
        targets = class_targets(t, plan, w)
        valid, target_weight = targets.valid, targets.weight
    denominator = mean_denominator(valid, target_weight, n, ct, device)
    if grad_output is not None:
        row_coef = grad_output.detach().reshape(-1).to(ct)  # (N,) upstream, per token
    else:
        row_coef = grad_row_scale(options.reduction, denominator, n, ct)  # (N,)
    chunk = options.chunk_size or default_chunk_size(num_classes, out_dtype, num_rows=n)
    losses = torch.empty(n, dtype=ct, device=device)  # (N,)
    d_hidden = torch.empty((n, dim), dtype=dtype, device=device) if needs[0] else None
    d_weight = torch.zeros((num_classes, dim), dtype=acc, device=device) if needs[1] else None
    d_bias = torch.zeros(num_classes, dtype=acc, device=device) if needs[2] else None
    for i in range(0, n, chunk):  # shapes only: no host sync
        j = min(n, i + chunk)
        h = hidden[i:j]  # (c, D)
        # The layer's own dtype first, as F.linear would round it, then the compute dtype.
        chunk_pass = rows_pass(F.linear(h, lw, bias), t[i:j], w, plan)
        losses[i:j] = chunk_pass.stats.loss
        if not any(needs):
            continue
        d_logits = chunk_pass.gradient_(row_coef[i:j])  # (c, V)
        del chunk_pass
        if d_hidden is not None:
            d_hidden[i:j] = d_logits.to(dtype) @ lw  # (c, D)
        if d_weight is not None:
            if valid is not None:  # padding may hold NaN: 0 * NaN must not reach d_weight
                h = h.masked_fill(~valid[i:j, None], 0)  # (c, D), 1/V of the matmuls' work
            d_weight.addmm_(d_logits.to(acc).T, h.to(acc))  # (V, D) += (V, c) @ (c, D)
        if d_bias is not None:
            d_bias += d_logits.sum(0).to(acc)  # (V,)
        del d_logits
    loss = reduce_losses(losses, options.reduction, denominator, out_dtype, (n,))
    return (
        loss,
        d_hidden,
        None if d_weight is None else d_weight.to(dtype),
        None if d_bias is None else d_bias.to(dtype),
    )


class _LinearCrossEntropyFunction(torch.autograd.Function):
    """'mean'/'sum': gradients in the forward; 'none': recomputed in the backward."""

    @staticmethod
    def forward(ctx, hidden, linear_weight, linear_bias, target, weight, options, path):
        ctx.options, ctx.path = options, path
        ctx.needs = tuple(ctx.needs_input_grad[:3])
        layer = (hidden, linear_weight, linear_bias, target, weight)
        if options.reduction == "none":
            ctx.save_for_backward(*layer)
            return _run(*layer, options, path, needs=(False,) * 3)[0]
        loss, *grads = _run(*layer, options, path, needs=ctx.needs)
        ctx.save_for_backward(*grads)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        refuse_double_backward("linear_cross_entropy")
        if ctx.options.reduction == "none":
            layer = ctx.saved_tensors
            _, *grads = _run(
                *layer, ctx.options, ctx.path, needs=ctx.needs, grad_output=grad_output
            )
        else:
            keep = keep_graph()
            grads = [scale_saved_gradient(g, grad_output, keep=keep) for g in ctx.saved_tensors]
        return (*grads, None, None, None, None)

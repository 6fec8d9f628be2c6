"""Vocab-parallel cross-entropy fused with this rank's slice of the output layer, chunked."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from softxent._validation import Reduction
from softxent.torch._algebra import (
    LocalSums,
    accumulate,
    class_targets,
    combine,
    logits_grad_,
    probabilities,
    softcapped,
)
from softxent.torch._linear_cross_entropy import default_chunk_size
from softxent.torch._reduction import grad_row_scale, mean_denominator, reduce_losses
from softxent.torch._validation import check_float_tensor, check_linear_layer
from softxent.torch.distributed._comm import all_reduce_
from softxent.torch.distributed._setup import Call, prepare

_WHAT = "vocab_parallel_linear_cross_entropy"


def _chunks(n: int, chunk: int):
    return (slice(start, min(start + chunk, n)) for start in range(0, n, chunk))


class _VocabParallelLinearCrossEntropy(torch.autograd.Function):
    """Forward: one pass over token chunks for the per-token sums, two collectives, the loss.

    Backward: a second pass recomputes each chunk's logits and turns them into the gradients
    of the input (then SUM all-reduced: every rank's classes contribute), of this rank's
    weight rows and bias. Only (chunk, V_r) logits ever exist.
    """

    @staticmethod
    def forward(ctx, inp, lin_weight, lin_bias, target, class_weight, call: Call, chunk: int):
        plan, n = call.plan, inp.shape[0]  # inp (N, H), lin_weight (V_r, H), lin_bias (V_r,)
        targets = None
        if not plan.soft:
            targets = class_targets(target, plan, class_weight)
        sums = LocalSums.empty(n, plan, inp.device)
        for rows in _chunks(n, chunk):
            x = softcapped(F.linear(inp[rows], lin_weight, lin_bias), plan)  # (n, V_r)
            soft = target[rows] if plan.soft else None
            accumulate(sums, rows, x, plan, targets, class_weight, soft)
        stats = combine(sums, plan, targets, class_weight)
        cdt = plan.compute_dtype
        denominator = mean_denominator(stats.valid, stats.target_weight, n, cdt, inp.device)
        ctx.save_for_backward(inp, lin_weight, lin_bias, target, class_weight)
        ctx.call, ctx.chunk, ctx.stats, ctx.targets = call, chunk, stats, targets
        ctx.row_scale = grad_row_scale(call.options.reduction, denominator, n, cdt)
        return reduce_losses(stats.loss, call.options.reduction, denominator, call.out_dtype, (n,))

    @staticmethod
    def backward(ctx, grad_output):
        inp, lin_weight, lin_bias, target, class_weight = ctx.saved_tensors
        call, stats, targets = ctx.call, ctx.stats, ctx.targets
        plan = call.plan
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        cdt = plan.compute_dtype
        coef = ctx.row_scale * grad_output.to(cdt)  # (N,): reduction share x upstream
        weight_c = lin_weight.to(cdt)  # (V_r, H)
        grad_input = torch.zeros(inp.shape, dtype=cdt, device=inp.device) if need_input else None
        grad_weight = torch.zeros_like(weight_c) if need_weight else None
        grad_bias = (
            torch.zeros(lin_weight.shape[0], dtype=cdt, device=inp.device) if need_bias else None
        )
        for rows in _chunks(inp.shape[0], ctx.chunk):
            x = softcapped(F.linear(inp[rows], lin_weight, lin_bias), plan)  # (n, V_r)
            soft = target[rows] if plan.soft else None
            probs = probabilities(x, rows, stats)  # (n, V_r)
            grad = logits_grad_(
                probs, rows, x, plan, stats, targets, class_weight, soft, coef[rows]
            )  # (n, V_r): d loss / d this chunk's local logits
            if grad_input is not None:
                grad_input[rows] = grad @ weight_c  # (n, H), this rank's classes only
            if grad_weight is not None:
                h = inp[rows].to(cdt)  # (n, H)
                if targets is not None:  # padding may hold NaN: 0 * NaN must not reach it
                    h = h.masked_fill(~targets.valid[rows, None], 0)
                grad_weight.addmm_(grad.T, h)  # (V_r, H)
            if grad_bias is not None:
                grad_bias += grad.sum(dim=0)  # (V_r,)
        if grad_input is not None:
            all_reduce_(
                grad_input, dist.ReduceOp.SUM, call.group, call.what, "input-gradient all-reduce"
            )
            grad_input = grad_input.to(inp.dtype)
        if grad_weight is not None:
            grad_weight = grad_weight.to(lin_weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(lin_bias.dtype)
        return grad_input, grad_weight, grad_bias, None, None, None, None


def vocab_parallel_linear_cross_entropy(
    input: torch.Tensor,
    local_linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    local_linear_bias: torch.Tensor | None = None,
    group: dist.ProcessGroup | None = None,
    vocab_start: int | None = None,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""Cross-entropy of ``input @ W.T + b`` with ``W`` split by rows (classes) across ranks.

    The loss is :func:`vocab_parallel_cross_entropy` of the local logits
    ``x = input @ local_linear_weight.T + local_linear_bias``, without ever holding them:
    tokens are processed ``chunk_size`` at a time, in the forward for the per-token sums and
    again in the backward for the gradients.

    .. math::

        \ell_n = -\sum_{c=0}^{C-1} w_c\, q_{n,c}
                 \log \operatorname{softmax}(\operatorname{cap}(h_n W^\top + b))_c
                 + z \operatorname{logsumexp}(\cdot)^2

    Parameters
    ----------
    input : torch.Tensor
        ``(..., H)`` hidden states, identical on every rank (float16/bfloat16/32/64).
    local_linear_weight : torch.Tensor
        ``(V_r, H)`` this rank's rows of the output layer, dtype of ``input``.
    target : torch.Tensor
        ``(...)`` integer global class ids, identical on every rank; or ``(..., V_r)``
        floating probabilities (this rank's slice).
    local_linear_bias : torch.Tensor, optional
        ``(V_r,)`` this rank's slice of the output bias.
    group, vocab_start, weight, ignore_index, reduction, label_smoothing, z_loss, softcap
        As in :func:`vocab_parallel_cross_entropy`.
    chunk_size : int, optional
        Tokens per chunk (a Python or NumPy int). Default: as many as keep one chunk's
        ``(chunk, V_r)`` logits within 128 MiB in the compute dtype, the rule of every
        softxent linear layer.

    Returns
    -------
    torch.Tensor
        0-d, or ``(...)`` for ``reduction='none'``.

    Raises
    ------
    TypeError, ValueError, RuntimeError
        As in :func:`vocab_parallel_cross_entropy`; also for mismatched ``H`` or dtypes of
        the linear layer, and a ``chunk_size`` that is not a positive int.

    Notes
    -----
    The gradient with respect to ``input`` is the sum over ranks of each rank's
    contribution: one SUM all-reduce of ``N H`` values in the compute dtype, in backward.
    Every rank must therefore run backward (and agree on whether ``input`` needs a
    gradient). Forward communication is that of :func:`vocab_parallel_cross_entropy`.

    Equivalent single-process code::

        F.cross_entropy(F.linear(input, torch.cat(all W_r), torch.cat(all b_r)), target, ...)

    Examples
    --------
    >>> import torch
    >>> import torch.nn.functional as F
    >>> g = torch.Generator().manual_seed(0)
    >>> h = torch.randn(5, 4, generator=g, dtype=torch.float64)
    >>> w = torch.randn(7, 4, generator=g, dtype=torch.float64)
    >>> y = torch.tensor([0, 6, 3, 3, 1])
    >>> loss = vocab_parallel_linear_cross_entropy(h, w, y, chunk_size=2)
    >>> bool(torch.isclose(loss, F.cross_entropy(h @ w.T, y)))
    True
    """
    check_float_tensor(input, "input")  # features last
    names = ("local_linear_weight", "local_linear_bias")
    local_classes = check_linear_layer(
        input, local_linear_weight, local_linear_bias, names=names, min_classes=0
    )
    hidden = input.shape[-1]
    leading = tuple(input.shape[:-1])
    call, target2d, class_weight = prepare(
        _WHAT,
        input.dtype,
        input.device,
        (*leading, local_classes),
        target,
        weight,
        group=group,
        vocab_start=vocab_start,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        chunk_size=chunk_size,
    )
    n = math.prod(leading)
    chunk = call.options.chunk_size or default_chunk_size(
        local_classes, call.plan.compute_dtype, num_rows=n
    )
    input2d = input.reshape(n, hidden)  # (N, H)
    loss = _VocabParallelLinearCrossEntropy.apply(
        input2d, local_linear_weight, local_linear_bias, target2d, class_weight, call, chunk
    )
    return loss.reshape(leading) if call.options.reduction == "none" else loss

"""Vocab-parallel cross-entropy fused with this rank's slice of the output layer, chunked."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from softxent._linear_cross_entropy import default_chunk_rows
from softxent._validation import check_chunk_size
from softxent.torch._validation import check_class_index_range
from softxent.torch.distributed import _kernel as K
from softxent.torch.distributed import _validation as V
from softxent.torch.distributed._comm import all_reduce_, resolve_shard

_WHAT = "vocab_parallel_linear_cross_entropy"


def default_chunk_size(num_tokens: int, local_classes: int, dtype: torch.dtype) -> int:
    """Tokens per chunk: the rule of every linear layer (``softxent.CHUNK_BYTES`` = 128 MiB
    of this rank's logits in the compute dtype ``dtype``), at most ``num_tokens``.

    Examples
    --------
    >>> default_chunk_size(10_000, 50_000, torch.float32)  # 128 MiB // (50000 * 4 bytes)
    671
    >>> default_chunk_size(10, 50_000, torch.float32)
    10
    """
    return max(1, min(num_tokens, default_chunk_rows(local_classes, dtype.itemsize)))


def _chunks(n: int, chunk: int):
    return (slice(start, min(start + chunk, n)) for start in range(0, n, chunk))


class _VocabParallelLinearCrossEntropy(torch.autograd.Function):
    """Forward: one pass over token chunks for the per-token sums, two collectives, the loss.

    Backward: a second pass recomputes each chunk's logits and turns them into the gradients
    of the input (then SUM all-reduced: every rank's classes contribute), of this rank's
    weight rows and bias. Only (chunk, V_r) logits ever exist.
    """

    @staticmethod
    def forward(ctx, inp, lin_weight, lin_bias, target, class_weight, plan: K.Plan, chunk: int):
        n = inp.shape[0]  # inp (N, H), lin_weight (V, H), lin_bias (V,) or None
        targets = None
        if not plan.soft:
            targets = K.class_targets(target, plan, class_weight)
        sums = K.LocalSums.empty(n, plan, inp.device)
        for rows in _chunks(n, chunk):
            x = K.softcapped(F.linear(inp[rows], lin_weight, lin_bias), plan)  # (n, V)
            soft = target[rows] if plan.soft else None
            K.accumulate(sums, rows, x, plan, targets, class_weight, soft)
        comb = K.combine(sums, plan, targets, class_weight)
        ctx.save_for_backward(inp, lin_weight, lin_bias, target, class_weight)
        ctx.plan, ctx.chunk, ctx.comb, ctx.targets = plan, chunk, comb, targets
        return comb.loss

    @staticmethod
    def backward(ctx, grad_output):
        inp, lin_weight, lin_bias, target, class_weight = ctx.saved_tensors
        plan, comb, targets = ctx.plan, ctx.comb, ctx.targets
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        cdt = plan.compute_dtype
        n = inp.shape[0]
        coef = comb.row_scale * grad_output.to(cdt)  # (N,): reduction share x upstream
        weight_c = lin_weight.to(cdt)  # (V, H)
        grad_input = torch.zeros(inp.shape, dtype=cdt, device=inp.device) if need_input else None
        grad_weight = torch.zeros_like(weight_c) if need_weight else None
        grad_bias = (
            torch.zeros(lin_weight.shape[0], dtype=cdt, device=inp.device) if need_bias else None
        )
        for rows in _chunks(n, ctx.chunk):
            x = K.softcapped(F.linear(inp[rows], lin_weight, lin_bias), plan)  # (n, V)
            soft = target[rows] if plan.soft else None
            probs = K.probabilities(x, rows, comb)  # (n, V)
            grad = K.logits_grad_(
                probs, rows, x, plan, comb, targets, class_weight, soft, coef[rows]
            )  # (n, V): d loss / d this chunk's local logits
            if grad_input is not None:
                grad_input[rows] = grad @ weight_c  # (n, H), this rank's classes only
            if grad_weight is not None:
                grad_weight.addmm_(grad.T, inp[rows].to(cdt))  # (V, H)
            if grad_bias is not None:
                grad_bias += grad.sum(dim=0)  # (V,)
        if grad_input is not None:
            all_reduce_(
                grad_input, dist.ReduceOp.SUM, plan.group, plan.what, "input-gradient all-reduce"
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
    reduction: str = "mean",
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
    V.check_float(input, "input")
    V.check_float(local_linear_weight, "local_linear_weight")
    if input.ndim < 1:
        raise ValueError("input must have at least 1 dimension (features last), got 0-d")
    hidden = input.shape[-1]
    if local_linear_weight.ndim != 2 or local_linear_weight.shape[1] != hidden:
        raise ValueError(
            f"local_linear_weight must have shape (V_local, {hidden}) to match input's last "
            f"dimension, got {tuple(local_linear_weight.shape)}"
        )
    if local_linear_weight.dtype != input.dtype:
        raise TypeError(
            f"local_linear_weight must have input's dtype {input.dtype}, "
            f"got {local_linear_weight.dtype}"
        )
    local_classes = local_linear_weight.shape[0]
    if local_linear_bias is not None:
        V.check_float(local_linear_bias, "local_linear_bias")
        if tuple(local_linear_bias.shape) != (local_classes,):
            raise ValueError(
                f"local_linear_bias must have shape ({local_classes},), "
                f"got {tuple(local_linear_bias.shape)}"
            )
        if local_linear_bias.dtype != input.dtype:
            raise TypeError(
                f"local_linear_bias must have input's dtype {input.dtype}, "
                f"got {local_linear_bias.dtype}"
            )
    reduction, eps, z, cap, ignore_index = V.check_options(
        reduction=reduction,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        ignore_index=ignore_index,
        vocab_start=vocab_start,
    )
    leading = tuple(input.shape[:-1])
    soft = V.check_targets(target, leading, local_classes, ignore_index)
    weight = V.check_local_class_weight(weight, local_classes, input.device, input.dtype, soft)
    n = math.prod(leading)
    chunk_option = check_chunk_size(chunk_size)
    dtypes = [input.dtype]
    if soft:
        dtypes += [target.dtype] + ([weight.dtype] if weight is not None else [])
    out_dtype = input.dtype
    for dtype in dtypes[1:]:
        out_dtype = torch.promote_types(out_dtype, dtype)
    cdt = V.compute_dtype(*dtypes)
    chunk = chunk_option or default_chunk_size(n, local_classes, cdt)
    shard = resolve_shard(group, local_classes, vocab_start, input.device, _WHAT)
    if not soft:
        check_class_index_range(target, shard.num_classes, ignore_index)
    plan = K.Plan(_WHAT, group, shard, reduction, eps, z, cap, soft, ignore_index, cdt, out_dtype)
    input2d = input.reshape(n, hidden)  # (N, H)
    target2d = target.reshape(n, local_classes).to(cdt) if soft else target.reshape(n)
    class_weight = weight.to(cdt) if weight is not None else None
    loss = _VocabParallelLinearCrossEntropy.apply(
        input2d, local_linear_weight, local_linear_bias, target2d, class_weight, plan, chunk
    )
    return loss.reshape(leading) if reduction == "none" else loss

"""Vocab-parallel cross-entropy of logits that are split by class across ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist

from softxent._validation import Reduction
from softxent.torch._algebra import class_targets, rows_pass
from softxent.torch._reduction import grad_row_scale, mean_denominator, reduce_losses
from softxent.torch._validation import check_float_tensor
from softxent.torch.distributed._setup import Call, prepare

_WHAT = "vocab_parallel_cross_entropy"


class _VocabParallelCrossEntropy(torch.autograd.Function):
    """Forward computes the loss *and* d(loss)/d(local logits); backward only scales it."""

    @staticmethod
    def forward(ctx, logits, target, class_weight, call: Call):  # logits (N, V_r)
        plan, n = call.plan, logits.shape[0]
        targets = None
        if not plan.soft:
            targets = class_targets(target, plan, class_weight)
        rows = rows_pass(logits, target, class_weight, plan, targets)  # the collectives
        stats = rows.stats
        cdt = plan.compute_dtype
        denominator = mean_denominator(stats.valid, stats.target_weight, n, cdt, logits.device)
        if ctx.needs_input_grad[0]:
            grad = rows.gradient_(grad_row_scale(call.options.reduction, denominator, n, cdt))
            ctx.save_for_backward(grad.to(logits.dtype))  # (N, V_r), unscaled by grad_output
        ctx.reduction = call.options.reduction
        return reduce_losses(stats.loss, call.options.reduction, denominator, call.out_dtype, (n,))

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        if ctx.reduction == "none":
            grad = grad * grad_output[:, None].to(grad.dtype)  # one upstream value per row
        else:
            grad = grad * grad_output.to(grad.dtype)
        return grad, None, None, None


def vocab_parallel_cross_entropy(
    local_logits: torch.Tensor,
    target: torch.Tensor,
    *,
    group: dist.ProcessGroup | None = None,
    vocab_start: int | None = None,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
) -> torch.Tensor:
    r"""Cross-entropy over classes split across the ranks of ``group``, exactly as on one device.

    Rank ``r`` holds the logits of classes ``[v_r, v_r + V_r)``; with ``x`` the logits of all
    ``C = sum_r V_r`` classes (soft-capped first: ``x <- s tanh(x / s)``), ``w`` the class
    weights (1 if None) and ``q = (1 - eps) onehot(y) + eps / C``, the loss of a sample is

    .. math::

        \ell_n = -\sum_{c=0}^{C-1} w_c\, q_{n,c} \log \operatorname{softmax}(x_n)_c
                 + z \operatorname{logsumexp}(x_n)^2

    reduced as torch does ('mean' divides by the sum of the target weights of non-ignored
    samples, or by ``N`` for probability targets). Every rank returns the same loss; the
    gradient flows to this rank's ``local_logits`` only.

    Parameters
    ----------
    local_logits : torch.Tensor
        ``(..., V_r)`` float16/bfloat16/float32/float64: this rank's classes, last.
    target : torch.Tensor
        ``(...)`` integer global class ids, identical on every rank; or ``(..., V_r)``
        floating probabilities: this rank's slice of the target distribution.
    group : torch.distributed.ProcessGroup, optional
        The ranks that share the vocabulary (default: the world). When torch.distributed is
        not initialized, the call acts on a world of one process.
    vocab_start : int, optional
        This rank's first class ``v_r``. None on every rank: the shards follow each other in
        rank order (their sizes are all-gathered once per group and local size, then cached).
    weight : torch.Tensor, optional
        ``(V_r,)`` this rank's slice of the class weights (no gradient).
    ignore_index : int
        Class-id targets equal to it contribute nothing (must be < 0 for probabilities).
    reduction : {'mean', 'sum', 'none'}
    label_smoothing : float
        ``eps`` in ``[0, 1]``, spread over the *global* class count ``C``.
    z_loss : float
        ``z >= 0``, weight of ``logsumexp^2`` added to every non-ignored sample.
    softcap : float, optional
        ``s > 0``: logits become ``s tanh(x / s)`` before anything else.

    Returns
    -------
    torch.Tensor
        0-d, or ``(...)`` for ``reduction='none'``; dtype of ``local_logits`` for class ids,
        the promotion of logits, target and weight for probabilities.

    Raises
    ------
    TypeError
        Non-float logits or weight, non-integer class ids, weight dtype differing from the
        logits' with class ids.
    ValueError
        Shapes, option values, shards that do not tile ``[0, C)``, a target or weight that
        requires grad, a non-finite class weight (CPU), and a class id outside ``[0, C)``
        that is not ``ignore_index`` (CPU, the same message as :func:`softxent.cross_entropy`;
        on other devices the loss and that row's gradient are NaN, to avoid a host sync).
    RuntimeError
        A collective failed: a rank died or did not call, or the group's timeout passed.

    Notes
    -----
    Communication per call, for ``N`` tokens: one MAX all-reduce of ``N`` values and one SUM
    all-reduce of ``k N (+1)`` values in the compute dtype (float32, or float64 for float64
    input), ``k = 2`` (+1 with ``weight``, +1 with smoothing) for class ids and ``k = 3``
    for probabilities; none in backward. See ``docs/distributed.md``.

    Equivalent single-process code, with ``full = torch.cat(all ranks' local_logits, -1)``::

        capped = s * torch.tanh(full / s) if softcap else full
        loss = F.cross_entropy(capped, target, weight=full_weight, ignore_index=...,
                               reduction=..., label_smoothing=eps) + z-term

    Differences from torch: an ignored row's gradient is always 0 (never NaN), and NaN or
    out-of-range ``label_smoothing`` raises.

    Examples
    --------
    Without torch.distributed initialized the call acts on a world of one process:

    >>> import torch
    >>> import torch.nn.functional as F
    >>> logits = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]], dtype=torch.float64)
    >>> target = torch.tensor([1, 0])
    >>> loss = vocab_parallel_cross_entropy(logits, target, label_smoothing=0.3)
    >>> bool(torch.isclose(loss, F.cross_entropy(logits, target, label_smoothing=0.3)))
    True
    """
    check_float_tensor(local_logits, "local_logits")  # classes last
    call, target2d, class_weight = prepare(
        _WHAT,
        local_logits.dtype,
        local_logits.device,
        tuple(local_logits.shape),
        target,
        weight,
        group=group,
        vocab_start=vocab_start,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
    )
    logits2d = local_logits.reshape(target2d.shape[0], local_logits.shape[-1])  # (N, V_r)
    loss = _VocabParallelCrossEntropy.apply(logits2d, target2d, class_weight, call)
    reduction = call.options.reduction
    return loss.reshape(local_logits.shape[:-1]) if reduction == "none" else loss

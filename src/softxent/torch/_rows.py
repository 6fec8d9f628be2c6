"""The generic (pure torch, any device) cross-entropy kernel over rows of logits.

One function computes, for logits ``x`` of shape ``(R, C)`` with classes last, the per-row
losses and (optionally) their gradient, with every option: class weights, ``ignore_index``,
label smoothing, probability targets, z-loss and softcap. It never synchronises with the
host: no ``.item()``, no data-dependent shapes, no Python branching on tensor values. The
CPU fast path (softxent's NumPy kernels) and this kernel implement the same formulas.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["RowsResult", "index_denominator", "reduce_rows", "rows_cross_entropy"]


class RowsResult(NamedTuple):
    loss: torch.Tensor  #: (R,) per-row losses (0 for ignored rows), compute dtype
    grad: torch.Tensor | None  #: (R, C) d(sum_n scale_n * loss_n)/dx, compute dtype


def index_denominator(
    target: torch.Tensor, weight: torch.Tensor | None, ignore_index: int, dtype: torch.dtype
) -> torch.Tensor:
    """torch's ``'mean'`` denominator for class indices: ``sum of w[y_n]`` over valid n.

    A 0-d tensor (no host sync); 0 when every sample is ignored (the mean is then NaN).
    """
    valid = target != ignore_index  # (R,)
    if weight is None:
        return valid.sum().to(dtype)
    ys = torch.where(valid, target, 0).clamp(0, weight.numel() - 1)
    return torch.where(valid, weight.to(dtype)[ys], 0).sum()


def reduce_rows(
    loss: torch.Tensor,
    reduction: str,
    denominator: torch.Tensor | float,
    dtype: torch.dtype,
    shape: tuple[int, ...],
) -> torch.Tensor:
    """Reduce flat per-row losses by torch's rules; ``'none'`` is reshaped to ``shape``.

    ``'mean'`` divides by ``denominator`` (sum of target weights for class indices, number
    of samples for probabilities); a zero denominator gives NaN, the mean of nothing.
    """
    if reduction == "none":
        return loss.reshape(shape).to(dtype)
    # float64 accumulation of the sum (cheap: one value per row) then one rounding; MPS
    # has no float64, it accumulates in the compute dtype.
    acc = torch.float64 if loss.device.type != "mps" else loss.dtype
    total = loss.sum(dtype=acc)
    if reduction == "mean":
        total = total / denominator
    return total.to(dtype)


def rows_cross_entropy(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    *,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    grad_scale: torch.Tensor | float | None,
) -> RowsResult:
    r"""Per-row cross-entropy of ``x`` (R, C) and, if ``grad_scale`` is given, its gradient.

    .. math::

        \ell_n = (1-\varepsilon)\, w_{y_n} (\mathrm{lse}_n - x_{n,y_n})
            + \frac{\varepsilon}{C}\sum_c w_c (\mathrm{lse}_n - x_{n,c})
            + z\, \mathrm{lse}_n^2

    for class indices (0 for ignored rows), :math:`-\sum_c w_c q_{n,c}\,
    \mathrm{log\_softmax}(x)_{n,c} + z\,\mathrm{lse}_n^2` with
    :math:`q = (1-\varepsilon) t + \varepsilon/C` for probabilities; ``x`` is first
    replaced by ``softcap * tanh(x / softcap)`` when a cap is given.

    Parameters
    ----------
    x : Tensor (R, C), float32 or float64
        Logits, classes last, in the compute dtype. Not modified.
    target : Tensor
        (R,) int64 class indices, or (R, C) probabilities in ``x``'s dtype.
    weight : Tensor (C,) of ``x``'s dtype, optional
    grad_scale : Tensor of shape () or (R,), or float, optional
        ``g_n``: the gradient returned is that of ``sum_n g_n * loss_n``. None: no gradient.

    Returns
    -------
    RowsResult
        ``loss`` (R,) and ``grad`` (R, C) (None without ``grad_scale``). Ignored rows have
        loss 0 and gradient exactly 0 (even when their logits are NaN or infinite). A class
        index out of ``[0, C)`` that is not ``ignore_index`` gives a NaN loss (checking it
        would need a host sync; the CPU entry points raise instead).
    """
    num_classes = x.shape[1]
    eps = label_smoothing
    if softcap is not None:
        capped = torch.tanh(x / softcap)  # (R, C), kept for the chain rule
        xc = capped * softcap
    else:
        capped, xc = None, x
    # Shift by the row max for stability. Like torch's log_softmax the max itself is used,
    # so a +inf or NaN logit (or an all -inf row) gives NaN, as in torch.
    m = xc.amax(1, keepdim=True)  # (R, 1)
    shifted = xc - m  # (R, C)
    e = shifted.exp()  # (R, C), becomes softmax then the gradient, in place
    s = e.sum(1, keepdim=True)  # (R, 1)
    log_s = s.log()  # (R, 1)
    lse = (m + log_s).squeeze(1)  # (R,)
    w = weight

    if target.dtype.is_floating_point:
        q = target * (1.0 - eps) + eps / num_classes if eps > 0 else target  # (R, C)
        wq = q * w if w is not None else q  # (R, C)
        lp = shifted - log_s  # (R, C) log_softmax, torch's evaluation order
        loss = -(lp * wq).sum(1)  # (R,)
        del lp
        if z_loss:
            loss = loss + z_loss * lse * lse
        if grad_scale is None:
            return RowsResult(loss, None)
        g = torch.as_tensor(grad_scale, dtype=x.dtype, device=x.device).expand(loss.shape)
        # d loss_n / dx_c = p_c * sum_k w_k q_k - w_c q_c  (+ 2 z lse p_c)
        coef = wq.sum(1)  # (R,)
        if z_loss:
            coef = coef + 2.0 * z_loss * lse
        grad = e.div_(s).mul_((g * coef)[:, None])
        grad.sub_(wq * g[:, None])
        if capped is not None:
            grad.mul_(1.0 - capped * capped)
        return RowsResult(loss, grad)

    valid = target != ignore_index  # (R,)
    in_range = (target >= 0) & (target < num_classes)
    ys = torch.where(valid & in_range, target, 0)  # (R,) safe to gather
    lp_y = shifted.gather(1, ys[:, None]).squeeze(1) - log_s.squeeze(1)  # (R,)
    if w is not None:
        wy = torch.where(valid, w[ys], 0)  # (R,)
        nll = -wy * lp_y
    else:
        wy = valid.to(x.dtype)
        nll = -lp_y
    loss = (1.0 - eps) * nll if eps > 0 else nll
    if eps > 0:
        # S_n = sum_c w_c (log s - shifted_c) = -sum_c w_c lp_c
        if w is not None:
            smooth = w.sum() * log_s.squeeze(1) - shifted @ w
        else:
            smooth = num_classes * log_s.squeeze(1) - shifted.sum(1)
        loss = loss + (eps / num_classes) * smooth
    if z_loss:
        loss = loss + z_loss * lse * lse
    loss = torch.where(valid, loss, 0)
    # An out-of-range class index cannot raise without a host sync: poison the loss.
    loss = torch.where(valid & ~in_range, torch.nan, loss)
    if grad_scale is None:
        return RowsResult(loss, None)

    g = torch.as_tensor(grad_scale, dtype=x.dtype, device=x.device).expand(loss.shape)
    g = torch.where(valid, g, 0)  # (R,)
    # d loss_n / dx_c = (1-eps) w_y (p_c - [c=y]) + eps/C (W p_c - w_c) + 2 z lse p_c
    total_w = w.sum() if w is not None else float(num_classes)
    coef = (1.0 - eps) * wy
    if eps > 0:
        coef = coef + (eps / num_classes) * total_w
    if z_loss:
        coef = coef + 2.0 * z_loss * lse
    grad = e.div_(s).mul_((g * coef)[:, None])  # (R, C)
    grad.scatter_add_(1, ys[:, None], (-(1.0 - eps) * g * wy)[:, None])
    if eps > 0:
        uniform = (eps / num_classes) * (w if w is not None else 1.0)
        grad.sub_(g[:, None] * uniform)
    if capped is not None:
        grad.mul_(1.0 - capped * capped)
    # Ignored rows get exactly 0, even when their logits are NaN/inf (torch: NaN, #11551).
    grad.masked_fill_(~valid[:, None], 0)
    return RowsResult(loss, grad)

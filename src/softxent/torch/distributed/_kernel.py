"""The per-token algebra shared by both distributed losses: local sums, combine, gradient.

Notation (one token ``n``; ``x`` = this rank's (soft-capped) logits, ``c`` its classes,
``w`` its class weights, ``m`` the global max, ``S = sum_c exp(x_c - m)`` over *all* classes):

* ``log p_c = (x_c - m) - log S`` and ``lse = m + log S``;
* class index ``y``: ``nll = w_y (log S - (x_y - m))``, smoothing term
  ``S_n = W log S - sum_c w_c (x_c - m)`` with ``W = sum_c w_c`` over all classes,
  loss ``(1 - eps) nll + (eps / C) S_n``;
* probabilities ``q = (1 - eps) y + eps / C``: loss
  ``(sum_c w_c q_c) log S - sum_c w_c q_c (x_c - m)``;
* plus ``z lse^2`` on every non-ignored token.

Each rank first computes its sums relative to its *local* max ``m_r`` (so the linear variant
can do it chunk by chunk before ``m`` is known); after the ``MAX`` all-reduce they are moved
to the global shift exactly: ``sum exp(x - m) = exp(m_r - m) sum exp(x - m_r)`` and
``sum w (x - m) = sum w (x - m_r) + (sum w) (m_r - m)``. The target logit is gathered raw by
the rank that owns it (0 elsewhere) and shifted by ``m`` after the all-reduce, as torch does.
Then one ``SUM`` all-reduce of the packed per-token vectors makes every sum global, and
every rank computes the same loss from the same numbers.

The gradient of the loss of token ``n`` with respect to its local logits is

.. math::

    G_{n,c} = a_n\\, p_{n,c} - b_{n,c} - \\delta_{c, y_n} (1 - \\varepsilon) w_{y_n}

with ``a = (1 - eps) w_y + eps W / C + 2 z lse`` and ``b_c = (eps / C) w_c`` for class
indices, ``a = sum_c w_c q_c + 2 z lse`` and ``b_c = w_c q_c`` for probabilities, times
``1 - (x_c / s)^2`` under a softcap ``s``; then each row is scaled by its share of the
reduction (``1 / D`` for 'mean') and by the upstream gradient.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist

from softxent.torch._rows import reduce_rows
from softxent.torch.distributed._comm import Shard, all_reduce_


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """Everything static about one call (options travel together; backward stays short)."""

    what: str  # the public function's name, for error messages
    group: dist.ProcessGroup | None
    shard: Shard
    reduction: str
    label_smoothing: float
    z_loss: float
    softcap: float | None
    soft: bool  # probability targets
    ignore_index: int
    compute_dtype: torch.dtype
    out_dtype: torch.dtype


@dataclasses.dataclass
class Targets:
    """Per-token target facts, all ``(N,)``, known locally (the target is identical everywhere)."""

    valid: torch.Tensor  # bool: not ignored
    owned: torch.Tensor  # bool: valid and the target class lives on this rank
    index: torch.Tensor  # int64: local column of the target (0 where not owned)
    bad: torch.Tensor  # bool: valid but outside [0, C)
    weight: torch.Tensor | None  # (N,) target weight where owned, 0 elsewhere (None: no weight)


def class_targets(target: torch.Tensor, plan: Plan, weight: torch.Tensor | None) -> Targets:
    """Where each global target id lives; ``target`` (N,) integer, ``weight`` (V,) or None."""
    shard = plan.shard
    target = target.long()  # (N,)
    valid = target != plan.ignore_index
    local = target - shard.vocab_start
    owned = valid & (local >= 0) & (local < shard.size)
    index = torch.where(owned, local, 0)
    bad = valid & ((target < 0) | (target >= shard.num_classes))
    target_weight = None
    if weight is not None:
        if shard.size == 0:
            target_weight = torch.zeros(
                target.shape, dtype=plan.compute_dtype, device=target.device
            )
        else:
            target_weight = torch.where(owned, weight[index], 0)  # (N,)
    return Targets(valid, owned, index, bad, target_weight)


def soft_q(probs: torch.Tensor, plan: Plan) -> torch.Tensor:
    """Smoothed probability targets ``q = (1 - eps) y + eps / C`` (``y`` when eps = 0)."""
    eps = plan.label_smoothing
    if eps > 0:
        return probs * (1.0 - eps) + eps / plan.shard.num_classes
    return probs


@dataclasses.dataclass
class LocalSums:
    """This rank's per-token sums, relative to its local max, filled chunk by chunk."""

    local_max: torch.Tensor  # (N,) max over local classes (-inf for an empty shard)
    sum_exp: torch.Tensor  # (N,) sum_c exp(x_c - local_max_safe)
    target_logit: torch.Tensor  # (N,) raw x_y where owned, else 0 (class indices)
    # (N,) sum_c w_c (x_c - local_max_safe) (smoothing) or sum_c w_c q_c (x_c - ...) (soft)
    weighted: torch.Tensor | None
    weight_total: torch.Tensor | None  # (N,) sum_c w_c q_c (probabilities)

    @classmethod
    def empty(cls, n: int, plan: Plan, device: torch.device) -> LocalSums:
        def vec():
            return torch.zeros(n, dtype=plan.compute_dtype, device=device)

        want_weighted = plan.soft or plan.label_smoothing > 0
        return cls(
            local_max=torch.full((n,), -torch.inf, dtype=plan.compute_dtype, device=device),
            sum_exp=vec(),
            target_logit=vec(),
            weighted=vec() if want_weighted else None,
            weight_total=vec() if plan.soft else None,
        )


def softcapped(logits: torch.Tensor, plan: Plan) -> torch.Tensor:
    """``logits`` in the compute dtype, replaced by ``s tanh(logits / s)`` under a softcap."""
    x = logits.to(plan.compute_dtype)
    if plan.softcap is not None:
        x = torch.tanh(x / plan.softcap).mul_(plan.softcap)
    return x


def safe(shift: torch.Tensor) -> torch.Tensor:
    """A non-finite max becomes 0: the shift is only for stability, never a source of NaN."""
    return torch.where(torch.isfinite(shift), shift, 0)


def accumulate(
    sums: LocalSums,
    rows: slice,
    x: torch.Tensor,
    plan: Plan,
    targets: Targets | None,
    class_weight: torch.Tensor | None,
    probs: torch.Tensor | None,
) -> torch.Tensor:
    """Fill ``sums[rows]`` from the capped local logits ``x`` (n, V); return ``exp(x - m_r)``."""
    if x.shape[1] == 0:  # an empty shard contributes nothing (and amax of nothing would raise)
        return x
    local_max = x.amax(dim=1)  # (n,)
    shift = safe(local_max)  # (n,)
    shifted = x - shift[:, None]  # (n, V)
    sums.local_max[rows] = local_max
    if sums.weighted is not None:
        if plan.soft:
            wq = soft_q(probs, plan)  # (n, V)
            if class_weight is not None:
                wq = wq * class_weight
            sums.weighted[rows] = (wq * shifted).sum(dim=1)
            sums.weight_total[rows] = wq.sum(dim=1)
        elif class_weight is not None:
            sums.weighted[rows] = shifted @ class_weight  # (n,)
        else:
            sums.weighted[rows] = shifted.sum(dim=1)
    if not plan.soft:
        picked = x.gather(1, targets.index[rows, None]).squeeze(1)  # (n,)
        sums.target_logit[rows] = torch.where(targets.owned[rows], picked, 0)
    exps = shifted.exp_()  # (n, V), reuses `shifted`
    sums.sum_exp[rows] = exps.sum(dim=1)
    return exps


@dataclasses.dataclass
class Combined:
    """Global per-token results, identical on every rank."""

    loss: torch.Tensor  # reduced loss in the output dtype ((N,) for 'none')
    shift: torch.Tensor  # (N,) global max, made safe
    log_sum_exp: torch.Tensor  # (N,) log S (relative to `shift`)
    rescale: torch.Tensor  # (N,) exp(local_max_safe - shift) (0 for an all -inf local row)
    a: torch.Tensor  # (N,) coefficient of p in the gradient
    target_coef: torch.Tensor | None  # (N,) (1 - eps) w_y, subtracted at the owned target
    row_scale: torch.Tensor  # (N,) d(reduced loss)/d(loss_n) before the upstream gradient


def combine(
    sums: LocalSums,
    plan: Plan,
    targets: Targets | None,
    class_weight: torch.Tensor | None,
) -> Combined:
    """MAX all-reduce, move to the global shift, one packed SUM all-reduce, the loss."""
    shard = plan.shard
    n = sums.sum_exp.shape[0]
    eps, z = plan.label_smoothing, plan.z_loss
    local_shift = safe(sums.local_max)  # (N,)
    global_max = all_reduce_(
        sums.local_max.clone(), dist.ReduceOp.MAX, plan.group, plan.what, "MAX all-reduce"
    )
    shift = safe(global_max)  # (N,)
    delta = local_shift - shift  # (N,) <= 0 where the local max is finite
    rescale = torch.where(torch.isfinite(sums.local_max), delta.exp(), 0)  # (N,)

    # The packed rows (k, N) (+ W as one extra scalar): see docs/distributed.md.
    rows = [sums.sum_exp * rescale]
    if plan.soft:
        rows += [sums.weighted + sums.weight_total * delta, sums.weight_total]
    else:
        rows.append(torch.where(targets.owned, sums.target_logit - shift, 0))
        if targets.weight is not None:
            rows.append(targets.weight)
        if eps > 0:
            local_total = (
                class_weight.sum() if class_weight is not None else float(shard.size)
            )  # 0-d: sum of this rank's class weights
            rows.append(sums.weighted + local_total * delta)
    flat = torch.stack(rows).reshape(-1)  # (k * N,)
    want_total = not plan.soft and eps > 0 and class_weight is not None
    if want_total:
        flat = torch.cat([flat, class_weight.sum().reshape(1)])
    all_reduce_(flat, dist.ReduceOp.SUM, plan.group, plan.what, "packed SUM all-reduce")
    packed = flat[: len(rows) * n].reshape(len(rows), n)  # (k, N)

    log_s = packed[0].log()  # (N,)
    lse = shift + log_s  # (N,)
    z_term = z * lse * lse if z > 0 else None
    if plan.soft:
        weighted_x, weight_total = packed[1], packed[2]
        per_token = weight_total * log_s - weighted_x  # (N,)
        a = weight_total
        target_coef = None
        valid = None
        denominator = torch.tensor(float(n), dtype=plan.compute_dtype, device=log_s.device)
    else:
        target_logit = packed[1]
        target_weight = packed[2] if targets.weight is not None else None
        nll = log_s - target_logit
        if target_weight is not None:
            nll = target_weight * nll
        w_y = target_weight if target_weight is not None else 1.0
        per_token = nll
        a = (1.0 - eps) * w_y + torch.zeros_like(log_s)
        if eps > 0:
            total = flat[-1] if want_total else float(shard.num_classes)  # W = sum_c w_c
            smooth = total * log_s - packed[-1]
            per_token = (1.0 - eps) * nll + (eps / shard.num_classes) * smooth
            a = a + eps * total / shard.num_classes
        target_coef = (1.0 - eps) * w_y + torch.zeros_like(log_s)
        valid = targets.valid
        denominator = (
            torch.where(valid, target_weight, 0).sum()
            if target_weight is not None
            else valid.sum().to(plan.compute_dtype)
        )
    if z_term is not None:
        per_token = per_token + z_term
        a = a + 2.0 * z * lse
    if valid is not None:
        per_token = torch.where(valid, per_token, 0)
    if plan.reduction == "mean":
        row_scale = (1.0 / denominator).expand(n)
    else:
        row_scale = torch.ones(n, dtype=plan.compute_dtype, device=log_s.device)
    if valid is not None:
        row_scale = torch.where(valid, row_scale, 0)
        # A valid id outside [0, C) is an error; on devices where raising would need a host
        # sync, the loss and that row's gradient are NaN instead of a silent number.
        per_token = torch.where(targets.bad, torch.nan, per_token)
        row_scale = torch.where(targets.bad, torch.nan, row_scale)
    # Summed in float64 and rounded once, as every other softxent path reduces.
    loss = reduce_rows(per_token, plan.reduction, denominator, plan.out_dtype, (n,))
    return Combined(loss, shift, log_s, rescale, a, target_coef, row_scale)


def logits_grad_(
    probs_or_exps: torch.Tensor,
    rows: slice,
    x: torch.Tensor,
    plan: Plan,
    comb: Combined,
    targets: Targets | None,
    class_weight: torch.Tensor | None,
    soft_targets: torch.Tensor | None,
    row_coef: torch.Tensor,
) -> torch.Tensor:
    """d(loss)/d(raw local logits) for ``rows``, computed in place in ``probs_or_exps``.

    ``probs_or_exps`` (n, V) holds ``p`` (the global softmax restricted to this rank's
    classes); ``x`` (n, V) the capped logits; ``row_coef`` (n,) the per-row scale (reduction
    share times upstream gradient). Ignored rows come out exactly 0, whatever their logits.
    """
    grad = probs_or_exps  # (n, V)
    if grad.shape[1] == 0:
        return grad
    grad.mul_(comb.a[rows, None])
    if plan.soft:
        wq = soft_q(soft_targets, plan)  # (n, V)
        if class_weight is not None:
            wq = wq * class_weight
        grad.sub_(wq)
    else:
        eps = plan.label_smoothing
        if eps > 0:
            c = plan.shard.num_classes
            grad.sub_(class_weight * (eps / c) if class_weight is not None else eps / c)
        owned = targets.owned[rows]
        at_target = torch.where(owned, -comb.target_coef[rows], 0)  # (n,)
        grad.scatter_add_(1, targets.index[rows, None], at_target[:, None])
    if plan.softcap is not None:
        grad.mul_(1.0 - (x / plan.softcap).square())  # d(s tanh(u / s))/du = 1 - tanh^2
    grad.mul_(row_coef[:, None])
    if not plan.soft:
        grad.masked_fill_(~targets.valid[rows, None], 0)
    return grad


def probabilities(x: torch.Tensor, rows: slice, comb: Combined) -> torch.Tensor:
    """``p = exp((x - m) - log S)`` (n, V) for the capped local logits ``x`` of ``rows``."""
    return (x - comb.shift[rows, None]).sub_(comb.log_sum_exp[rows, None]).exp_()

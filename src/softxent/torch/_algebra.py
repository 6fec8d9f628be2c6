"""The per-token cross-entropy algebra of the torch backend, written once for every path.

The generic single-process path (any device, bfloat16, z-loss, softcap), the chunked linear
layer and tensor parallelism all compute the loss and gradient with these functions. A rank
of a vocab-parallel group sees only its slice of the classes; a single process is the case
of one rank holding every class, where the two collectives below do nothing.

Notation (one token ``n``; ``x`` = this rank's (soft-capped) logits, ``c`` its classes,
``w`` the class weights, ``m`` the max over *all* classes, ``S = sum_c exp(x_c - m)``):

* ``log p_c = (x_c - m) - log S`` and ``lse = m + log S``;
* class index ``y``: ``nll = w_y (log S - (x_y - m))``, smoothing term
  ``S_n = W log S - sum_c w_c (x_c - m)`` with ``W = sum_c w_c`` over all classes,
  loss ``(1 - eps) nll + (eps / C) S_n``;
* probabilities ``q = (1 - eps) t + eps / C``: loss
  ``(sum_c w_c q_c) log S - sum_c w_c q_c (x_c - m)``;
* plus ``z lse^2`` on every non-ignored token.

Each rank first computes its sums relative to its *local* max ``m_r`` (so the linear layer
can do it chunk by chunk before ``m`` is known); after the ``"max"`` all-reduce they are
moved to the global shift exactly: ``sum exp(x - m) = exp(m_r - m) sum exp(x - m_r)`` and
``sum w (x - m) = sum w (x - m_r) + (sum w) (m_r - m)``. The target logit is gathered raw by
the rank that owns it (0 elsewhere) and shifted by ``m`` after the all-reduce, as torch
does. One ``"sum"`` all-reduce of the packed per-token vectors then makes every sum global,
and every rank computes the same loss from the same numbers.

The gradient of the loss of token ``n`` with respect to its (local) logits is

.. math::

    G_{n,c} = a_n\\, p_{n,c} - b_{n,c} - \\delta_{c, y_n} (1 - \\varepsilon) w_{y_n}

with ``a = (1 - eps) w_y + eps W / C + 2 z lse`` and ``b_c = (eps / C) w_c`` for class
indices, ``a = sum_c w_c q_c + 2 z lse`` and ``b_c = w_c q_c`` for probabilities, times
``1 - (x_c / s)^2`` under a softcap ``s``; each row is then scaled by its share of the
reduction (:mod:`softxent.torch._reduction`) and by the upstream gradient.

Nothing here synchronises with the host: no ``.item()``, no data-dependent shapes, no
Python branching on tensor values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import torch

from softxent.torch._options import LossOptions

__all__ = [
    "AllReduce",
    "LocalSums",
    "Plan",
    "RowsPass",
    "Targets",
    "TokenStats",
    "accumulate",
    "class_targets",
    "combine",
    "logits_grad_",
    "make_plan",
    "no_peers",
    "probabilities",
    "rows_pass",
    "softcapped",
]

#: ``all_reduce(tensor, op, purpose)``: reduce ``tensor`` in place over the ranks that share
#: the classes (``op`` is ``"max"`` or ``"sum"``) and return it.
AllReduce = Callable[[torch.Tensor, Literal["max", "sum"], str], torch.Tensor]


def no_peers(tensor: torch.Tensor, op: Literal["max", "sum"], purpose: str) -> torch.Tensor:
    """The all-reduce of a single process: every class is local, nothing to combine."""
    return tensor


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """Everything static about one call's algebra (options travel together)."""

    vocab_start: int  # first class of the local logits (0 on a single process)
    local_classes: int  # classes of the local logits
    num_classes: int  # classes over all ranks (C)
    label_smoothing: float
    z_loss: float
    softcap: float | None
    soft: bool  # probability targets
    ignore_index: int
    compute_dtype: torch.dtype
    all_reduce: AllReduce = no_peers


def make_plan(
    options: LossOptions,
    num_classes: int,
    soft: bool,
    compute_dtype: torch.dtype,
    *,
    vocab_start: int = 0,
    local_classes: int | None = None,
    all_reduce: AllReduce = no_peers,
) -> Plan:
    """The plan of a call with ``options`` over ``num_classes`` classes in all.

    By default the call holds every class (one process, nothing to all-reduce); a rank of
    a vocab-parallel group gives its slice ``[vocab_start, vocab_start + local_classes)``
    and its group's ``all_reduce``.
    """
    return Plan(
        vocab_start=vocab_start,
        local_classes=num_classes if local_classes is None else local_classes,
        num_classes=num_classes,
        label_smoothing=options.label_smoothing,
        z_loss=options.z_loss,
        softcap=options.softcap,
        soft=soft,
        ignore_index=options.ignore_index,
        compute_dtype=compute_dtype,
        all_reduce=all_reduce,
    )


@dataclasses.dataclass
class Targets:
    """Per-token target facts, all ``(N,)``, known locally (the target is identical everywhere)."""

    valid: torch.Tensor  # bool: not ignored
    owned: torch.Tensor  # bool: valid and the target class is local
    index: torch.Tensor  # int64: local column of the target (0 where not owned)
    bad: torch.Tensor  # bool: valid but outside [0, C)
    weight: torch.Tensor | None  # (N,) target weight where owned, 0 elsewhere (None: no weight)


def class_targets(target: torch.Tensor, plan: Plan, class_weight: torch.Tensor | None) -> Targets:
    """Where each global class id of ``target`` (N,) lives; ``class_weight`` (V_r,) or None."""
    target = target.long()  # (N,)
    valid = target != plan.ignore_index
    local = target - plan.vocab_start
    owned = valid & (local >= 0) & (local < plan.local_classes)
    index = torch.where(owned, local, 0)
    bad = valid & ((target < 0) | (target >= plan.num_classes))
    target_weight = None
    if class_weight is not None:
        if plan.local_classes == 0:
            target_weight = torch.zeros(
                target.shape, dtype=plan.compute_dtype, device=target.device
            )
        else:
            target_weight = torch.where(owned, class_weight[index], 0)  # (N,)
    return Targets(valid, owned, index, bad, target_weight)


def _smoothed(probs: torch.Tensor, plan: Plan) -> torch.Tensor:
    """Smoothed probability targets ``q = (1 - eps) t + eps / C`` (``t`` when eps = 0)."""
    eps = plan.label_smoothing
    if eps > 0:
        return probs * (1.0 - eps) + eps / plan.num_classes
    return probs


def _weighted_q(
    probs: torch.Tensor, plan: Plan, class_weight: torch.Tensor | None
) -> torch.Tensor:
    """``w_c q_c`` (n, V_r) of probability targets."""
    wq = _smoothed(probs, plan)
    return wq * class_weight if class_weight is not None else wq


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
        def vec() -> torch.Tensor:
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


def _finite_or_zero(shift: torch.Tensor) -> torch.Tensor:
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
    """Fill ``sums[rows]`` from the capped local logits ``x`` (n, V_r); return ``exp(x - m_r)``.

    ``probs`` (n, V_r): the rows' probability targets (None for class indices).
    """
    if x.shape[1] == 0:  # an empty shard contributes nothing (and amax of nothing would raise)
        return x
    local_max = x.amax(dim=1)  # (n,)
    shifted = x - _finite_or_zero(local_max)[:, None]  # (n, V_r)
    sums.local_max[rows] = local_max
    if sums.weighted is not None:
        if probs is not None:
            wq = _weighted_q(probs, plan, class_weight)  # (n, V_r)
            sums.weighted[rows] = (wq * shifted).sum(dim=1)
            if sums.weight_total is not None:
                sums.weight_total[rows] = wq.sum(dim=1)
        elif class_weight is not None:
            sums.weighted[rows] = shifted @ class_weight  # (n,)
        else:
            sums.weighted[rows] = shifted.sum(dim=1)
    if targets is not None:
        picked = x.gather(1, targets.index[rows, None]).squeeze(1)  # (n,)
        sums.target_logit[rows] = torch.where(targets.owned[rows], picked, 0)
    exps = shifted.exp_()  # (n, V_r), reuses `shifted`
    sums.sum_exp[rows] = exps.sum(dim=1)
    return exps


@dataclasses.dataclass
class TokenStats:
    """Global per-token results, identical on every rank."""

    loss: torch.Tensor  # (N,) per-token loss (0 ignored, NaN for a class id outside [0, C))
    shift: torch.Tensor  # (N,) global max, made finite
    log_sum_exp: torch.Tensor  # (N,) log S (relative to `shift`)
    rescale: torch.Tensor  # (N,) exp(local_max_safe - shift) (0 for an all -inf local row)
    a: torch.Tensor  # (N,) coefficient of p in the gradient (NaN where the class id is bad)
    target_coef: torch.Tensor | None  # (N,) (1 - eps) w_y, subtracted at the owned target
    valid: torch.Tensor | None  # (N,) bool, not ignored (None: probability targets)
    target_weight: torch.Tensor | None  # (N,) w_y of valid tokens, 0 elsewhere (None: no w)


def combine(
    sums: LocalSums, plan: Plan, targets: Targets | None, class_weight: torch.Tensor | None
) -> TokenStats:
    """The ``"max"`` all-reduce, the move to the global shift, one packed ``"sum"``, the loss.

    ``targets`` is None for probability targets.
    """
    n = sums.sum_exp.shape[0]
    global_max = plan.all_reduce(sums.local_max.clone(), "max", "MAX all-reduce")
    shift = _finite_or_zero(global_max)  # (N,)
    delta = _finite_or_zero(sums.local_max) - shift  # (N,) <= 0 where the local max is finite
    rescale = torch.where(torch.isfinite(sums.local_max), delta.exp(), 0)  # (N,)
    rows, local_weight_total = _packed_rows(sums, plan, targets, class_weight, shift, delta)
    rows[0] = rows[0] * rescale
    flat = torch.stack(rows).reshape(-1)  # (k * N,): one collective for every row
    if local_weight_total is not None:
        flat = torch.cat([flat, local_weight_total.reshape(1)])
    plan.all_reduce(flat, "sum", "packed SUM all-reduce")
    packed = flat[: len(rows) * n].reshape(len(rows), n)  # (k, N)
    log_s = packed[0].log()  # (N,)
    lse = shift + log_s  # (N,)
    if targets is None:
        loss = packed[2] * log_s - packed[1]  # (N,) (sum w q) log S - sum w q (x - m)
        a, target_coef, target_weight = packed[2], None, None
    else:
        weight_total = flat[-1] if local_weight_total is not None else None  # W, summed
        loss, a, target_coef, target_weight = _index_terms(
            packed, log_s, plan, targets, weight_total
        )
    if plan.z_loss > 0:
        loss = loss + plan.z_loss * lse * lse
        a = a + 2.0 * plan.z_loss * lse
    valid = None
    if targets is not None:
        valid = targets.valid
        loss = torch.where(valid, loss, 0)
        # A valid id outside [0, C) is an error; where raising would need a host sync, the
        # loss and that row's gradient are NaN instead of a silent number.
        loss = torch.where(targets.bad, torch.nan, loss)
        a = torch.where(targets.bad, torch.nan, a)
    return TokenStats(loss, shift, log_s, rescale, a, target_coef, valid, target_weight)


def _packed_rows(
    sums: LocalSums,
    plan: Plan,
    targets: Targets | None,
    class_weight: torch.Tensor | None,
    shift: torch.Tensor,
    delta: torch.Tensor,
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """The per-token vectors to sum over ranks (moved to the global shift), in packing order.

    Row 0 is ``sum_exp`` (still to be rescaled); then ``weighted`` and ``weight_total`` for
    probabilities, or the shifted target logit, the target weight (with class weights) and
    the smoothing sum (with smoothing) for class indices. The second value is this rank's
    ``sum_c w_c``, summed over ranks as one extra scalar (smoothing with class weights).
    """
    rows = [sums.sum_exp]
    if targets is None:
        assert sums.weighted is not None and sums.weight_total is not None
        return [*rows, sums.weighted + sums.weight_total * delta, sums.weight_total], None
    rows.append(torch.where(targets.owned, sums.target_logit - shift, 0))
    if targets.weight is not None:
        rows.append(targets.weight)
    local_weight_total = None
    if plan.label_smoothing > 0:
        assert sums.weighted is not None
        if class_weight is not None:
            local_weight_total = class_weight.sum()  # 0-d
            rows.append(sums.weighted + local_weight_total * delta)
        else:
            rows.append(sums.weighted + float(plan.local_classes) * delta)
    return rows, local_weight_total


def _index_terms(
    packed: torch.Tensor,
    log_s: torch.Tensor,
    plan: Plan,
    targets: Targets,
    weight_total: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Class-index loss (before z-loss), ``a``, the target coefficient and the target weight."""
    eps, num_classes = plan.label_smoothing, plan.num_classes
    target_weight = packed[2] if targets.weight is not None else None
    nll = log_s - packed[1]  # (N,) log S - (x_y - m)
    w_y: torch.Tensor | float = 1.0
    if target_weight is not None:
        w_y = target_weight
        nll = target_weight * nll
    target_coef = (1.0 - eps) * w_y + torch.zeros_like(log_s)  # (N,)
    if eps == 0:
        return nll, target_coef, target_coef, target_weight
    total = weight_total if weight_total is not None else float(num_classes)  # W
    smooth = total * log_s - packed[-1]  # (N,) W log S - sum_c w_c (x_c - m)
    loss = (1.0 - eps) * nll + (eps / num_classes) * smooth
    a = target_coef + eps * total / num_classes
    return loss, a, target_coef, target_weight


@dataclasses.dataclass
class RowsPass:
    """One pass over tokens whose local logits are all in hand (not chunked by class)."""

    plan: Plan
    x: torch.Tensor  # (N, V_r) capped logits in the compute dtype
    targets: Targets | None  # class indices (None for probabilities)
    probs: torch.Tensor | None  # (N, V_r) probability targets (None for class indices)
    class_weight: torch.Tensor | None  # (V_r,)
    exps: torch.Tensor  # (N, V_r) exp(x - m_r), consumed by `gradient_`
    stats: TokenStats

    def gradient_(self, row_coef: torch.Tensor) -> torch.Tensor:
        """d(sum_n row_coef_n loss_n)/d(raw logits), (N, V_r), in place in ``exps``.

        The exponentials of the forward become the probabilities without another ``exp``:
        ``p = exp(x - m_r) exp(m_r - m) / S``.
        """
        if self.exps.shape[1]:
            stats = self.stats
            self.exps.mul_((stats.rescale * (-stats.log_sum_exp).exp())[:, None])
        return logits_grad_(
            self.exps,
            slice(None),
            self.x,
            self.plan,
            self.stats,
            self.targets,
            self.class_weight,
            self.probs,
            row_coef,
        )


def rows_pass(
    logits: torch.Tensor,
    target: torch.Tensor,
    class_weight: torch.Tensor | None,
    plan: Plan,
    targets: Targets | None = None,
) -> RowsPass:
    """Loss statistics of the rows of ``logits`` (N, V_r), any dtype (computed in the plan's).

    ``target``: (N,) class ids, or (N, V_r) probabilities in the compute dtype;
    ``targets``: the class-id facts when the caller already made them.
    """
    x = softcapped(logits, plan)  # (N, V_r)
    probs = target if plan.soft else None
    if not plan.soft and targets is None:
        targets = class_targets(target, plan, class_weight)
    sums = LocalSums.empty(x.shape[0], plan, x.device)
    exps = accumulate(sums, slice(None), x, plan, targets, class_weight, probs)
    stats = combine(sums, plan, targets, class_weight)
    return RowsPass(plan, x, targets, probs, class_weight, exps, stats)


def logits_grad_(
    probs_or_exps: torch.Tensor,
    rows: slice,
    x: torch.Tensor,
    plan: Plan,
    stats: TokenStats,
    targets: Targets | None,
    class_weight: torch.Tensor | None,
    probs: torch.Tensor | None,
    row_coef: torch.Tensor,
) -> torch.Tensor:
    """d(loss)/d(raw local logits) for ``rows``, computed in place in ``probs_or_exps``.

    ``probs_or_exps`` (n, V_r) holds ``p`` (the global softmax restricted to the local
    classes); ``x`` (n, V_r) the capped logits; ``probs`` (n, V_r) the probability targets
    (None for class indices); ``row_coef`` (n,) the per-row scale (reduction share times
    upstream gradient). Ignored rows come out exactly 0, whatever their logits.
    """
    grad = probs_or_exps  # (n, V_r)
    if grad.shape[1] == 0:
        return grad
    grad.mul_(stats.a[rows, None])
    if targets is None:
        assert probs is not None
        grad.sub_(_weighted_q(probs, plan, class_weight))
    else:
        eps = plan.label_smoothing
        if eps > 0:
            c = plan.num_classes
            grad.sub_(class_weight * (eps / c) if class_weight is not None else eps / c)
        assert stats.target_coef is not None
        at_target = torch.where(targets.owned[rows], -stats.target_coef[rows], 0)  # (n,)
        grad.scatter_add_(1, targets.index[rows, None], at_target[:, None])
    if plan.softcap is not None:
        grad.mul_(1.0 - (x / plan.softcap).square())  # d(s tanh(u / s))/du = 1 - tanh^2
    grad.mul_(row_coef[:, None])
    if targets is not None:
        # Ignored rows get exactly 0, even when their logits are NaN/inf (torch: NaN, #11551).
        grad.masked_fill_(~targets.valid[rows, None], 0)
    return grad


def probabilities(x: torch.Tensor, rows: slice, stats: TokenStats) -> torch.Tensor:
    """``p = exp((x - m) - log S)`` (n, V_r) for the capped local logits ``x`` of ``rows``."""
    return (x - stats.shift[rows, None]).sub_(stats.log_sum_exp[rows, None]).exp_()

"""What both vocab-parallel losses do before their first collective: check, shard, plan."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.distributed as dist

from softxent.torch._algebra import Plan, make_plan
from softxent.torch._options import LossOptions, make_options
from softxent.torch._validation import (
    check_class_index_range,
    check_grad_free,
    check_target,
    compute_dtype,
    loss_dtype,
)
from softxent.torch.distributed._comm import group_all_reduce, resolve_shard
from softxent.torch.distributed._validation import check_local_class_weight, check_vocab_start

__all__ = ["Call", "prepare"]


@dataclasses.dataclass(frozen=True, eq=False)
class Call:
    """One call's static facts: the algebra's plan, the options and the loss dtype."""

    what: str  # the public function's name, for error messages
    group: dist.ProcessGroup | None
    plan: Plan
    options: LossOptions
    out_dtype: torch.dtype


def prepare(
    what: str,
    dtype: torch.dtype,
    device: torch.device,
    logits_shape: tuple[int, ...],
    target: Any,
    weight: Any,
    *,
    group: dist.ProcessGroup | None,
    vocab_start: Any,
    **options: Any,
) -> tuple[Call, torch.Tensor, torch.Tensor | None]:
    """Validate a call whose local logits have ``logits_shape`` ``(..., V_r)`` and ``dtype``,
    then resolve this rank's shard (one cached all-gather per group and shard size).

    ``options`` are the scalar options of :func:`softxent.torch._options.make_options`.
    Every check runs before the first collective, so a bad argument raises on every rank
    alike instead of leaving the others waiting. Returns ``(call, target, class_weight)``:
    the target flat, ``(N,)`` class ids or ``(N, V_r)`` probabilities in the compute dtype,
    and the class weight in the compute dtype (or None).
    """
    checked = make_options(**options)
    vocab_start = check_vocab_start(vocab_start)
    *leading, local_classes = logits_shape
    soft = check_target(target, logits_shape, len(leading), checked.ignore_index, device)
    check_grad_free(target if soft else None, "target")
    weight = check_local_class_weight(weight, local_classes, device, dtype, soft)
    out_dtype = loss_dtype(dtype, target, weight, soft)
    cdt = compute_dtype(out_dtype)
    shard = resolve_shard(group, local_classes, vocab_start, device, what)
    if not soft:
        check_class_index_range(target, shard.num_classes, checked.ignore_index)
    plan = make_plan(
        checked,
        shard.num_classes,
        soft,
        cdt,
        vocab_start=shard.vocab_start,
        local_classes=shard.size,
        all_reduce=group_all_reduce(group, what),
    )
    n = math.prod(leading)
    flat_target = target.reshape(n, local_classes).to(cdt) if soft else target.reshape(n)
    class_weight = weight.to(cdt) if weight is not None else None
    return Call(what, group, plan, checked, out_dtype), flat_target, class_weight

"""What both vocab-parallel losses do before their first collective: check, shard, plan."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.distributed as dist

from softxent.torch._algebra import Plan
from softxent.torch._validation import check_class_index_range
from softxent.torch.distributed._comm import group_all_reduce, resolve_shard
from softxent.torch.distributed._validation import (
    check_local_class_weight,
    check_options,
    check_targets,
    compute_dtype,
)

__all__ = ["Call", "prepare"]


@dataclasses.dataclass(frozen=True, eq=False)
class Call:
    """One call's static facts: the algebra's plan, the reduction and the loss dtype."""

    what: str  # the public function's name, for error messages
    group: dist.ProcessGroup | None
    plan: Plan
    reduction: str
    out_dtype: torch.dtype


def prepare(
    what: str,
    *,
    dtype: torch.dtype,
    device: torch.device,
    leading: tuple[int, ...],
    local_classes: int,
    target: Any,
    group: dist.ProcessGroup | None,
    vocab_start: Any,
    weight: Any,
    ignore_index: Any,
    reduction: Any,
    label_smoothing: Any,
    z_loss: Any,
    softcap: Any,
) -> tuple[Call, torch.Tensor, torch.Tensor | None]:
    """Validate the options and targets of a call whose logits are ``leading + (V_r,)`` of
    ``dtype``; resolve this rank's shard (one cached all-gather per group and shard size).

    Returns ``(call, target, class_weight)``: the target flat, ``(N,)`` class ids or
    ``(N, V_r)`` probabilities in the compute dtype, and the class weight in the compute
    dtype (or None).
    """
    reduction, eps, z, cap, ignore_index = check_options(
        reduction=reduction,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        ignore_index=ignore_index,
        vocab_start=vocab_start,
    )
    soft = check_targets(target, leading, local_classes, ignore_index)
    weight = check_local_class_weight(weight, local_classes, device, dtype, soft)
    dtypes = [dtype]
    if soft:
        dtypes += [target.dtype] + ([weight.dtype] if weight is not None else [])
    out_dtype = dtypes[0]
    for other in dtypes[1:]:
        out_dtype = torch.promote_types(out_dtype, other)
    cdt = compute_dtype(*dtypes)
    shard = resolve_shard(group, local_classes, vocab_start, device, what)
    if not soft:
        check_class_index_range(target, shard.num_classes, ignore_index)
    plan = Plan(
        vocab_start=shard.vocab_start,
        local_classes=shard.size,
        num_classes=shard.num_classes,
        label_smoothing=eps,
        z_loss=z,
        softcap=cap,
        soft=soft,
        ignore_index=ignore_index,
        compute_dtype=cdt,
        all_reduce=group_all_reduce(group, what),
    )
    n = math.prod(leading)
    flat_target = target.reshape(n, local_classes).to(cdt) if soft else target.reshape(n)
    class_weight = weight.to(cdt) if weight is not None else None
    return Call(what, group, plan, reduction, out_dtype), flat_target, class_weight

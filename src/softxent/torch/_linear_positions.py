"""The K-dimensional loss of ``LinearCrossEntropyLoss(out_features=(d1, ..., dk))``.

torch's layer then has ``C * K`` outputs (``K = d1 * ... * dk``), read as logits of shape
``(N, C, d1, ..., dk)``: the output of row ``c * K + k`` is class ``c`` at position ``k``.
Each position is an ordinary linear cross-entropy over the ``C`` rows ``c * K + k``
(``linear_weight.view(C, K, D)[:, k]``), so the loss is computed position by position by
the fused, chunked layer, and the positions' losses are combined as torch reduces over
``(N, d1, ..., dk)``: ``'sum'`` adds them, ``'mean'`` divides that sum by the weighted count
of every non-ignored (token, position) (class indices) or by ``N * K`` (probabilities).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from softxent.torch._algebra import class_targets, make_plan
from softxent.torch._linear_cross_entropy import linear_cross_entropy_with_options
from softxent.torch._options import LossOptions
from softxent.torch._reduction import mean_denominator
from softxent.torch._validation import compute_dtype

__all__ = ["linear_cross_entropy_positions"]


def linear_cross_entropy_positions(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    linear_bias: torch.Tensor | None,
    weight: torch.Tensor | None,
    options: LossOptions,
    num_classes: int,
    out_features: tuple[int, ...],
) -> torch.Tensor:
    """Loss of ``F.linear_cross_entropy(input, linear_weight.view(C, *out_features, D),
    target, linear_bias=linear_bias.view(C, *out_features), ...)``.

    ``input`` (N, D); ``linear_weight`` (C * K, D) and ``linear_bias`` (C * K,) as an
    ``nn.Linear`` holds them; ``target`` (N, *out_features) class indices or
    (N, C, *out_features) probabilities. Returns a scalar, or (N, *out_features) for
    ``'none'``.
    """
    if not isinstance(input, torch.Tensor) or input.ndim != 2:
        shape = tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__
        raise ValueError(
            f"input must be 2-D (N, in_features) with out_features={out_features}, as in "
            f"torch, got {shape}"
        )
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    n, dim = input.shape
    positions = math.prod(out_features)
    prob = target.is_floating_point()
    expected = (n, num_classes, *out_features) if prob else (n, *out_features)
    if tuple(target.shape) != expected:
        kind = "probabilities" if prob else "class indices"
        raise ValueError(
            f"target of {kind} must have shape {expected} with out_features={out_features}, "
            f"got {tuple(target.shape)}"
        )
    per_position = linear_weight.view(num_classes, positions, dim)  # (C, K, D)
    bias = None if linear_bias is None else linear_bias.view(num_classes, positions)  # (C, K)
    rows = target.reshape(n, num_classes, positions) if prob else target.reshape(n, positions)
    reduced = options.reduction != "none"
    each = dataclasses.replace(options, reduction="sum" if reduced else "none")
    losses = [
        linear_cross_entropy_with_options(
            input,
            per_position[:, k],  # (C, D): the rows c * K + k
            rows[..., k],  # (N,) or (N, C)
            None if bias is None else bias[:, k],
            weight,
            each,
        )
        for k in range(positions)
    ]
    if not reduced:
        return torch.stack(losses, dim=-1).reshape(n, *out_features)  # (N, *out_features)
    dtype = losses[0].dtype
    total = torch.stack(losses).to(compute_dtype(dtype)).sum()
    if options.reduction == "sum":
        return total.to(dtype)
    if prob:
        return (total / (n * positions)).to(dtype)
    w = None if weight is None else weight.to(total.dtype)
    flat = rows.reshape(-1)  # (N * K,) the class ids of every (token, position)
    targets = class_targets(flat, make_plan(options, num_classes, False, total.dtype), w)
    denominator = mean_denominator(
        targets.valid, targets.weight, flat.numel(), total.dtype, total.device
    )
    return (total / denominator).to(dtype)

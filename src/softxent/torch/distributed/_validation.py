"""What only the distributed entry points check: the shard start and a rank's weight slice.

Everything else (options, tensors, targets, class weights, class-index ranges) follows the
rules of :mod:`softxent.torch`, checked by the same functions, in the same words.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch

from softxent.torch._validation import check_class_weight, check_grad_free, check_values_on_cpu

__all__ = ["check_local_class_weight", "check_vocab_start"]


def check_vocab_start(vocab_start: Any) -> int | None:
    """``vocab_start``: None (shards follow each other in rank order) or an int >= 0."""
    if vocab_start is None:
        return None
    if isinstance(vocab_start, bool) or not isinstance(vocab_start, numbers.Integral):
        raise TypeError(f"vocab_start must be an int or None, got {vocab_start!r}")
    if vocab_start < 0:
        raise ValueError(f"vocab_start must be >= 0, got {vocab_start!r}")
    return int(vocab_start)


def check_local_class_weight(
    weight: Any, local_classes: int, device: torch.device, logits_dtype: torch.dtype, soft: bool
) -> torch.Tensor | None:
    """This rank's slice of the class weights: the rules of :mod:`softxent.torch`'s
    ``weight`` (dtype as torch, finite values on CPU), one entry per local class."""
    if weight is None:
        return None
    weight = check_class_weight(
        weight,
        local_classes,
        device,
        logits_dtype=logits_dtype,
        soft=soft,
        what="this rank's slice of the class weights",
    )
    check_grad_free(weight, "weight")
    check_values_on_cpu(None, weight, local_classes, -100)
    return weight

"""Argument checks of the distributed losses: validate once, at the entry, in one voice.

Every message names the argument, what was expected and what was got.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from softxent.torch._validation import check_class_weight, check_values_on_cpu

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_options(
    *,
    reduction: Any,
    label_smoothing: Any,
    z_loss: Any,
    softcap: Any,
    ignore_index: Any,
    vocab_start: Any,
) -> tuple[str, float, float, float | None, int]:
    """Normalized ``(reduction, label_smoothing, z_loss, softcap, ignore_index)``."""
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be one of 'none', 'mean', 'sum'; got {reduction!r}")
    eps = _real(label_smoothing, "label_smoothing", "a float in [0, 1]")
    # torch silently ignores NaN and negative values; we refuse them (as softxent does).
    if math.isnan(eps) or not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    z = _real(z_loss, "z_loss", "a float >= 0")
    if not (math.isfinite(z) and z >= 0.0):
        raise ValueError(f"z_loss must be a finite float >= 0, got {z_loss!r}")
    cap = None
    if softcap is not None:
        cap = _real(softcap, "softcap", "a positive float or None")
        if not (math.isfinite(cap) and cap > 0.0):
            raise ValueError(f"softcap must be a finite float > 0 or None, got {softcap!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    if vocab_start is not None:
        if isinstance(vocab_start, bool) or not isinstance(vocab_start, numbers.Integral):
            raise TypeError(f"vocab_start must be an int or None, got {vocab_start!r}")
        if vocab_start < 0:
            raise ValueError(f"vocab_start must be >= 0, got {vocab_start!r}")
    return reduction, eps, z, cap, int(ignore_index)


def _real(value: Any, name: str, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


def check_float(tensor: Any, name: str) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in _FLOATS:
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), "
            f"got dtype {tensor.dtype}"
        )
    return tensor


def check_targets(
    target: Any, leading: tuple[int, ...], local_classes: int, ignore_index: int
) -> bool:
    """Whether ``target`` holds probabilities (shape ``leading + (V_local,)``) or class ids."""
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if tuple(target.shape) == (*leading, local_classes):
        check_float(target, "target (probabilities, same shape as the local logits)")
        if ignore_index >= 0:
            raise ValueError(
                f"ignore_index must be < 0 with probability targets, got {ignore_index!r}"
            )
        if target.requires_grad:
            raise ValueError(
                "target: gradients with respect to probability targets are not supported; "
                "pass target.detach()"
            )
        return True
    if tuple(target.shape) != leading:
        raise ValueError(
            f"target must have shape {tuple(leading)} (global class ids) or "
            f"{(*leading, local_classes)} (this rank's slice of the probabilities), "
            f"got {tuple(target.shape)}"
        )
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise TypeError(f"target (class ids) must be an integer tensor, got dtype {target.dtype}")
    return False


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
    if weight.requires_grad:
        raise ValueError(
            "weight: gradients with respect to class weights are not supported; "
            "pass weight.detach()"
        )
    check_values_on_cpu(None, weight, local_classes, -100)
    return weight


def compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 when any input is float64, else float32 (half precision computes in float32)."""
    return torch.float64 if torch.float64 in dtypes else torch.float32

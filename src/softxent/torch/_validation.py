"""Tensor checks of the torch backend: validate once, at the entry, in one voice.

Shapes, dtypes and devices are checked on every device (they are host metadata, checking
them never synchronises). Values (out-of-range class indices, non-finite class weights) are
checked only on CPU: on an accelerator that would need a device-to-host copy, so there an
out-of-range class index gives a NaN loss instead of an error.
"""

from __future__ import annotations

from typing import Any

import torch

from softxent._validation import class_index_error, operand_shape_error

__all__ = [
    "FLOAT_DTYPES",
    "check_class_index_range",
    "check_class_weight",
    "check_elementwise_operand",
    "check_float_tensor",
    "check_grad_free",
    "check_linear_layer",
    "check_target",
    "check_values_on_cpu",
    "compute_dtype",
    "loss_dtype",
]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_HALF = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half inputs are computed (and accumulated) in float32; the others in themselves."""
    return torch.float32 if dtype in _HALF else dtype


def loss_dtype(
    logits_dtype: torch.dtype, target: torch.Tensor, weight: torch.Tensor | None, prob: bool
) -> torch.dtype:
    """The loss's dtype, as torch's: the logits' for class indices; for probability targets
    the promotion of the logits', the target's and the class weight's dtypes."""
    if not prob:
        return logits_dtype
    dtype = torch.promote_types(logits_dtype, target.dtype)
    return dtype if weight is None else torch.promote_types(dtype, weight.dtype)


def check_float_tensor(value: Any, name: str, *, min_ndim: int = 1) -> torch.Tensor:
    """``value`` must be a float16/bfloat16/float32/float64 tensor of ``min_ndim``+ dims."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or "
            f"float64), got dtype {value.dtype}"
        )
    if value.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimension(s), got shape {tuple(value.shape)}"
        )
    return value


def check_linear_layer(
    input: torch.Tensor,
    linear_weight: Any,
    linear_bias: Any,
    *,
    names: tuple[str, str] = ("linear_weight", "linear_bias"),
    min_classes: int = 1,
) -> int:
    """The output layer of ``input`` (..., D): a ``(V, D)`` weight and an optional ``(V,)``
    bias, floating tensors of ``input``'s dtype and device; returns ``V`` (>= ``min_classes``:
    a rank's slice of the vocabulary may be empty, a whole layer may not)."""
    weight_name, bias_name = names
    lw = check_float_tensor(linear_weight, weight_name, min_ndim=2)
    if lw.ndim != 2:
        raise ValueError(
            f"{weight_name} must be 2-D (V, D) like torch.nn.Linear.weight, got shape "
            f"{tuple(lw.shape)} (K-dimensional outputs are not supported)"
        )
    num_classes, dim = lw.shape
    if num_classes < min_classes:
        raise ValueError(f"{weight_name} has no rows (classes): shape {tuple(lw.shape)}")
    if input.shape[-1] != dim:
        raise ValueError(
            f"input must have last dimension D = {dim} to match {weight_name} "
            f"{tuple(lw.shape)}, got shape {tuple(input.shape)}"
        )
    for name, tensor in ((weight_name, lw), (bias_name, linear_bias)):
        if tensor is None:
            continue
        if name == bias_name:
            tensor = check_float_tensor(tensor, name)
            if tuple(tensor.shape) != (num_classes,):
                raise ValueError(
                    f"{name} must have shape ({num_classes},), one entry per class, "
                    f"got shape {tuple(tensor.shape)}"
                )
        if tensor.dtype != input.dtype:
            raise TypeError(
                f"{name} must have the dtype of input ({input.dtype}), got {tensor.dtype}"
            )
        if tensor.device != input.device:
            raise ValueError(f"{name} is on {tensor.device}, input on {input.device}; move it")
    return num_classes


def check_target(
    target: Any, logits_shape: tuple[int, ...], class_dim: int, ignore_index: int, device
) -> bool:
    """Check ``target`` against logits of ``logits_shape``; True for probability targets.

    Dispatch is torch's: a target with the logits' shape holds probabilities (and must be
    floating), any other target holds class indices (integer, the logits' shape without
    the class dim).
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.device != device:
        raise ValueError(f"target is on {target.device}, the logits on {device}; move it")
    batch_shape = logits_shape[:class_dim] + logits_shape[class_dim + 1 :]
    shape = tuple(target.shape)
    if shape == tuple(logits_shape):
        if not target.dtype.is_floating_point:
            raise TypeError(
                f"target has the logits' shape {shape} but dtype {target.dtype}: "
                "probability targets must be floating point; class indices must have "
                f"shape {batch_shape} (the logits without dim {class_dim})"
            )
        if ignore_index >= 0:
            raise ValueError(
                f"ignore_index={ignore_index} cannot be used with probability targets "
                "(floating-point target); leave it negative (the default -100)"
            )
        return True
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        if shape == batch_shape:
            raise TypeError(
                f"target of class indices must have an integer dtype, got {target.dtype} "
                f"(probability targets must have the logits' shape {tuple(logits_shape)})"
            )
        raise ValueError(
            f"target of probabilities must have the logits' shape {tuple(logits_shape)}, "
            f"got shape {shape} (dtype {target.dtype})"
        )
    if shape != batch_shape:
        raise ValueError(
            f"target of class indices must have shape {batch_shape} (the logits "
            f"{tuple(logits_shape)} without dim {class_dim}), got shape {shape}"
        )
    return False


def check_class_weight(
    weight: Any,
    num_classes: int,
    device: torch.device,
    *,
    logits_dtype: torch.dtype,
    soft: bool,
    what: str = "one entry per class",
) -> torch.Tensor | None:
    """The per-class ``weight``: None, or a floating (C,) tensor on the logits' device.

    With class-index targets it must have the logits' dtype, as torch's ``nll_loss``
    requires (torch raises ``expected scalar type ...``); with probability targets any
    floating dtype takes part in type promotion, as in torch.
    """
    if weight is None:
        return None
    check_float_tensor(weight, "weight", min_ndim=0)
    if tuple(weight.shape) != (num_classes,):
        raise ValueError(
            f"weight must have shape ({num_classes},), {what}, got shape {tuple(weight.shape)}"
        )
    if weight.device != device:
        raise ValueError(f"weight is on {weight.device}, the logits on {device}; move it")
    if not soft and weight.dtype != logits_dtype:
        raise TypeError(
            f"weight must have the logits' dtype {logits_dtype} with class-index targets "
            f"(as torch requires), got {weight.dtype}; cast it with weight.to({logits_dtype})"
        )
    return weight


def check_grad_free(tensor: torch.Tensor | None, name: str) -> None:
    """softxent differentiates for the logits (or the layer) only, never silently less."""
    if tensor is not None and tensor.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            f"{name} requires grad, but softxent.torch computes no gradient for {name}; "
            f"pass {name}.detach() (or use torch.nn.functional for that gradient)"
        )


def check_values_on_cpu(
    target: torch.Tensor | None, weight: torch.Tensor | None, num_classes: int, ignore_index: int
) -> None:
    """Value checks that need the data on the host: done on CPU tensors only.

    ``target`` (class indices, any shape) must be in ``[0, C)`` or equal ``ignore_index``;
    ``weight`` must be finite (negative values are computed as torch does).
    """
    if weight is not None and weight.device.type == "cpu" and weight.numel():
        bad = ~torch.isfinite(weight)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"weight must be finite (negative values are allowed), "
                f"got {float(weight[i])!r} at [{i}]"
            )
    if target is not None:
        check_class_index_range(target, num_classes, ignore_index)


def check_class_index_range(target: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """On CPU, raise :func:`softxent._validation.class_index_error` for the first entry of
    ``target`` (integer class ids, any shape) outside ``[0, C)`` that is not ``ignore_index``.
    Off CPU nothing is checked: that would synchronise with the host (the loss is NaN).
    """
    if target.device.type != "cpu" or not target.numel():
        return
    bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        position = tuple(int(i) for i in bad.nonzero()[0])
        raise class_index_error(
            "target", position, int(target[position]), num_classes, ignore_index
        )


# --------------------------------------------------------------------------- elementwise losses


def check_elementwise_operand(
    tensor: Any, name: str, input: torch.Tensor, of: str, *, broadcast: bool
) -> torch.Tensor | None:
    """An operand of an elementwise loss (target, weight, pos_weight): None, or a floating
    tensor on ``input``'s device with ``input``'s shape or (``broadcast``) one that
    broadcasts to it; never one that requires grad (its gradient is not computed)."""
    if tensor is None:
        return None
    tensor = check_float_tensor(tensor, name, min_ndim=0)
    shape = tuple(input.shape)
    got = tuple(tensor.shape)
    if got != shape:
        fits = broadcast
        if broadcast:
            try:
                fits = tuple(torch.broadcast_shapes(got, shape)) == shape
            except RuntimeError:
                fits = False
        if not fits:
            raise operand_shape_error(name, got, shape, of, broadcast=broadcast)
    if tensor.device != input.device:
        raise ValueError(
            f"{name} is on {tensor.device} but {of} is on {input.device}; "
            "put them on the same device"
        )
    check_grad_free(tensor, name)
    return tensor

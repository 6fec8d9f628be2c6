"""The scalar options of one loss call, validated once and carried as one frozen value.

Keeping them in a frozen dataclass lets the autograd Functions take a short, fixed list of
arguments (so their ``backward`` returns a short, fixed tuple) and makes an option that a
path forgets to honour impossible to miss: every path reads the same object.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from softxent._validation import (
    Reduction,
    check_chunk_size,
    check_ignore_index,
    check_label_smoothing,
    check_reduction,
)

__all__ = ["BACKENDS", "LossOptions", "make_options", "use_numpy_kernels"]

#: The paths a call can take: ``"auto"`` (softxent's NumPy kernels for the CPU tensors they
#: support, else the pure-torch path), ``"numpy"`` (raise if unsupported) or ``"torch"``.
BACKENDS = ("auto", "numpy", "torch")
_NUMPY_DTYPES = (torch.float16, torch.float32, torch.float64)


@dataclass(frozen=True)
class LossOptions:
    """Validated options of a cross-entropy call (see :func:`make_options`)."""

    ignore_index: int = -100
    reduction: Reduction = "mean"
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    softcap: float | None = None
    inplace_backward: bool = False
    chunk_size: int | None = None

    @property
    def numpy_compatible(self) -> bool:
        """True when softxent's NumPy kernels implement every option (no z-loss, no cap)."""
        return self.z_loss == 0.0 and self.softcap is None


def make_options(
    *,
    ignore_index: Any = -100,
    reduction: Any = "mean",
    label_smoothing: Any = 0.0,
    z_loss: Any = 0.0,
    softcap: Any = None,
    inplace_backward: Any = False,
    chunk_size: Any = None,
) -> LossOptions:
    """Check every scalar option and return them as a :class:`LossOptions`.

    ``ignore_index=None`` means -100 (torch's ``F.linear_cross_entropy`` convention).
    """
    given = (
        ignore_index,
        reduction,
        label_smoothing,
        z_loss,
        softcap,
        inplace_backward,
        chunk_size,
    )
    # The types belong to the key: True == 1 and 0.1 == np.float64(0.1), yet they are
    # checked differently. Only plain Python values are remembered (hashable, immutable).
    types = tuple(map(type, given))
    if not _PLAIN_TYPES.issuperset(types):
        return _check_options(*given)
    key = given + types
    options = _CHECKED.get(key)
    if options is None:
        options = _check_options(*given)
        if len(_CHECKED) < _MAX_CHECKED:
            _CHECKED[key] = options
    return options


#: Options already checked, by their values and types: a training loop calls the loss with
#: the same few options every step, and checking them anew is a measurable part of a call
#: on a small batch. Only valid options get here (a check that raises stores nothing).
_CHECKED: dict[tuple, LossOptions] = {}
_MAX_CHECKED = 256
_PLAIN_TYPES = frozenset((int, float, str, bool, type(None)))


def _check_options(
    ignore_index: Any,
    reduction: Any,
    label_smoothing: Any,
    z_loss: Any,
    softcap: Any,
    inplace_backward: Any,
    chunk_size: Any,
) -> LossOptions:
    if ignore_index is None:
        ignore_index = -100
    return LossOptions(
        ignore_index=check_ignore_index(ignore_index),
        reduction=check_reduction(reduction),
        label_smoothing=check_label_smoothing(label_smoothing),
        z_loss=_check_z_loss(z_loss),
        softcap=_check_softcap(softcap),
        inplace_backward=_check_bool(inplace_backward, "inplace_backward"),
        chunk_size=check_chunk_size(chunk_size),
    )


def _check_z_loss(z_loss: Any) -> float:
    if isinstance(z_loss, bool) or not isinstance(z_loss, numbers.Real):
        raise TypeError(f"z_loss must be a non-negative float, got {z_loss!r}")
    value = float(z_loss)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"z_loss must be a finite float >= 0, got {z_loss!r}")
    return value


def _check_softcap(softcap: Any) -> float | None:
    if softcap is None:
        return None
    if isinstance(softcap, bool) or not isinstance(softcap, numbers.Real):
        raise TypeError(f"softcap must be None or a positive float, got {softcap!r}")
    value = float(softcap)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"softcap must be None or a finite float > 0, got {softcap!r}")
    return value


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def use_numpy_kernels(
    backend: str, options: LossOptions, tensors: Sequence[torch.Tensor | None]
) -> bool:
    """Whether a call on ``tensors`` (the logits or hidden states first) runs the NumPy kernels.

    They need CPU tensors, float16/32/64 logits, no bfloat16 anywhere, and no option that
    only the torch path implements (z-loss, softcap).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    logits = tensors[0]
    supported = options.numpy_compatible and logits is not None and logits.dtype in _NUMPY_DTYPES
    for t in tensors:  # a plain loop: this runs on every call, small ones too
        if supported and t is not None:
            supported = t.is_cpu and t.dtype != torch.bfloat16
    if backend == "numpy" and not supported:
        raise ValueError(
            "backend='numpy' needs CPU tensors, no bfloat16, z_loss=0 and softcap=None"
        )
    return supported and backend != "torch"

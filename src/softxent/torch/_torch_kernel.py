"""Small CPU calls of ``cross_entropy`` run torch's own ``F.cross_entropy``.

On a small input the time of a call is fixed costs, not arithmetic: a Python
``torch.autograd.Function`` and the hand-off of the logits to softxent's kernels cost more
than torch's whole fused kernel (forward and backward) does. So below a size measured on
CPU, a call whose result torch *defines* anyway is handed to
``torch.nn.functional.cross_entropy`` with the same arguments: its values and gradients are
torch's by construction, and gradients flow through torch's autograd. Everything else (and
every non-CPU tensor) keeps softxent's own path.

"Defines anyway" excludes every input where softxent differs from torch on purpose: half
precision (softxent computes it in float32 and rounds once), an ignored sample with
non-finite logits (torch gives it a NaN gradient, softxent 0), class weights that are not
all positive and finite (a zero "mean" denominator and non-finite weights are handled
differently), class indices that are out of range (softxent's ``ValueError``) or not
int64, and the options torch does not have (z-loss, softcap, ``inplace_backward``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from softxent.torch._options import LossOptions
from softxent.torch._validation import check_class_index_range

__all__ = ["runs_torch_kernel", "torch_cross_entropy"]

#: The sizes that run torch's kernel: at most ``MAX_LOGITS`` logits, and at most
#: ``MAX_NARROW_ROWS`` rows when a row has fewer than ``NARROW_CLASSES`` classes (torch's
#: per-row cost is high on such rows, so its kernel stops being the cheaper one sooner).
#: Measured on CPU as the crossover of a timing sweep (N x C from 4 x 3 to 4096 x 10000,
#: ``softxent.torch.cross_entropy`` against ``F.cross_entropy``, forward + backward,
#: float32, default options, 1 and 2 threads, interleaved repeats in one process):
#: torch's kernel is the faster one up to about 30,000-100,000 logits for C >= 32, up to
#: about 256 rows for C = 10 and about 1,000 rows for C = 3.
MAX_LOGITS = 32768
MAX_NARROW_ROWS = 256
NARROW_CLASSES = 32

_DTYPES = (torch.float32, torch.float64)
#: Up to this many class indices or class weights are checked as a Python list (cheaper
#: than tensor reductions on a few values).
_LIST_CHECK = 64


def runs_torch_kernel(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    options: LossOptions,
    prob: bool,
    *,
    need_grad: bool,
) -> bool:
    """Whether this validated CPU call runs ``F.cross_entropy`` (see the module's text).

    Raises softxent's ``ValueError`` for an out-of-range class index, as the own path
    would. Reads values only of inputs small enough for torch's kernel.
    """
    num_classes = input.shape[0 if input.ndim == 1 else 1]
    logits = input.numel()
    if (
        logits > MAX_LOGITS
        or (num_classes < NARROW_CLASSES and logits > MAX_NARROW_ROWS * num_classes)
        or input.dtype not in _DTYPES
        or options.inplace_backward
        or not options.numpy_compatible
        or target.dtype != (input.dtype if prob else torch.int64)
    ):
        return False
    if weight is not None and not (weight.dtype == input.dtype and _positive_finite(weight)):
        return False
    if prob or not _ignores_any(target, num_classes, options.ignore_index):
        return True
    # An ignored sample's gradient row is 0 in softxent, NaN in torch if its logits are not
    # finite: torch's kernel runs only when that cannot happen.
    return not need_grad or bool(np.isfinite(input.detach().numpy()).all())


def torch_cross_entropy(
    input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, options: LossOptions
) -> torch.Tensor:
    """``F.cross_entropy`` with the call's arguments."""
    return F.cross_entropy(
        input,
        target,
        weight,
        ignore_index=options.ignore_index,
        reduction=options.reduction,
        label_smoothing=options.label_smoothing,
    )


def _positive_finite(weight: torch.Tensor) -> bool:
    if weight.numel() <= _LIST_CHECK:
        return all(0.0 < w < math.inf for w in weight.tolist())  # False for NaN too
    low, high = torch.aminmax(weight)
    return 0.0 < float(low) and float(high) < math.inf


def _ignores_any(target: torch.Tensor, num_classes: int, ignore_index: int) -> bool:
    """Whether some class index equals ``ignore_index``; raises for one out of range."""
    can_ignore = 0 <= ignore_index < num_classes  # then an index in range may be ignored
    if target.numel() <= _LIST_CHECK:
        values = (target if target.ndim == 1 else target.reshape(-1)).tolist()
        if 0 <= min(values, default=0) and max(values, default=0) < num_classes:
            return can_ignore and ignore_index in values
        if all(0 <= v < num_classes or v == ignore_index for v in values):
            return True  # some index is out of range: the ignored one
    else:
        bounds = torch.aminmax(target)
        if 0 <= int(bounds.min) and int(bounds.max) < num_classes and not can_ignore:
            return False
    check_class_index_range(target, num_classes, ignore_index)  # raises for a bad index
    return bool((target == ignore_index).any())

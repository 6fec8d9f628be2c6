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
differently), class indices that are not int64, and the options torch does not have
(z-loss, softcap, ``inplace_backward``). Class indices out of range do run torch's kernel,
which checks them on CPU: its error is reported as softxent's ``ValueError``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from softxent import _native
from softxent.torch._options import LossOptions
from softxent.torch._validation import check_class_index_range

__all__ = ["plain_small_call", "runs_torch_kernel", "torch_cross_entropy"]

#: The sizes that run torch's kernel: at most ``MAX_LOGITS`` logits, or ``MAX_NARROW_LOGITS``
#: when a row has fewer than ``NARROW_CLASSES`` classes (rows narrower than one AVX-512
#: vector of float32, which torch's CPU kernel runs at a high cost per row). Measured as
#: the crossover of a timing sweep on CPU: ``softxent.torch.cross_entropy`` (own path)
#: against ``F.cross_entropy``, forward + backward, float32, default options, 1 thread,
#: the minimum of 5 interleaved repeats per size in one process, N x C from 4 x 3 to
#: 4096 x 10000. With C >= 16 torch's kernel was the faster at 32,768 and 65,536 logits
#: for every C tried (32 to 10,000; up to 3x), the two were even around 100,000 and
#: softxent's the faster from about 130,000 on (2-3x at 256,000). With C = 3, 8, 10, 15
#: the crossover lies between 2048 logits (torch faster, 1.3x) and 4096 (softxent
#: faster, 1.2x).
MAX_LOGITS = 65536
MAX_NARROW_LOGITS = 3072
NARROW_CLASSES = 16

_DTYPES = (torch.float32, torch.float64)
#: Up to this many class indices or class weights are checked as a Python list (cheaper
#: than tensor reductions on a few values).
_LIST_CHECK = 64


def plain_small_call(
    input: object, target: object, weight: object, options: LossOptions
) -> torch.Tensor | None:
    """``F.cross_entropy``'s loss for the commonest small call, checked in a few attribute
    reads instead of softxent's full validation; None for anything else.

    The commonest call: float32/float64 (N, C) CPU logits, N int64 class indices, no class
    weights or positive finite ones of the logits' dtype that need no gradient, torch's
    options. Such a call passes every check of the full path, and ``runs_torch_kernel``
    would send it to torch anyway when its size allows; the class indices are read only
    for a gradient (ignored samples) and their range is torch's kernel's check (turned
    into softxent's ``ValueError``). On a 3 x 3 batch the full checks cost as much as a
    fifth of torch's forward and backward together.
    """
    if not (
        isinstance(input, torch.Tensor)
        and isinstance(target, torch.Tensor)
        and input.ndim == 2
        and target.ndim == 1
        and input.is_cpu
        and target.is_cpu
        and 0 < input.shape[0] == target.shape[0]
    ):
        return None
    if weight is not None and not (
        isinstance(weight, torch.Tensor)
        and weight.shape == (input.shape[1],)
        and weight.is_cpu
        and not weight.requires_grad
    ):
        return None
    need_grad = input.requires_grad and torch.is_grad_enabled()
    if not _torch_defines(input, target, weight, options, input.shape[1], False, need_grad):
        return None
    return torch_cross_entropy(input, target, weight, options)


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

    Reads values only of inputs small enough for torch's kernel, and class indices only
    when the gradient is needed (to find ignored samples); an index out of range is
    reported by ``torch_cross_entropy``.
    """
    num_classes = input.shape[0 if input.ndim == 1 else 1]
    return _torch_defines(input, target, weight, options, num_classes, prob, need_grad)


def _torch_defines(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    options: LossOptions,
    num_classes: int,
    prob: bool,
    need_grad: bool,
) -> bool:
    """The rules of both routes: the size, the dtypes, the options, the class weights and the
    ignored samples (their values read only when the size allows)."""
    if (
        input.numel() > (MAX_LOGITS if num_classes >= NARROW_CLASSES else MAX_NARROW_LOGITS)
        or input.dtype not in _DTYPES
        or options.inplace_backward
        or not options.numpy_compatible
        or target.dtype != (input.dtype if prob else torch.int64)
    ):
        return False
    if weight is not None and not (weight.dtype == input.dtype and _positive_finite(weight)):
        return False
    # Class indices out of range are left to torch's kernel, which checks them on CPU
    # (``torch_cross_entropy`` turns its IndexError into softxent's ValueError). An ignored
    # sample's gradient row is 0 in softxent, NaN in torch if its logits are not finite:
    # torch's kernel runs only when that cannot happen.
    if prob or not need_grad:
        return True
    return not _ignores_any(target, num_classes, options.ignore_index) or _all_finite(input)


def torch_cross_entropy(
    input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, options: LossOptions
) -> torch.Tensor:
    """``F.cross_entropy`` with the call's arguments; softxent's ValueError for a class index
    out of range (torch's CPU kernel raises IndexError)."""
    try:
        return F.cross_entropy(
            input,
            target,
            weight,
            ignore_index=options.ignore_index,
            reduction=options.reduction,
            label_smoothing=options.label_smoothing,
        )
    except (IndexError, RuntimeError) as torch_error:
        error = torch_error
    # Outside the handler, so that softxent's error does not carry torch's as its context.
    num_classes = input.shape[0 if input.ndim == 1 else 1]
    check_class_index_range(target, num_classes, options.ignore_index)  # raises if one is
    raise error  # not a class index: torch's own error


def _all_finite(input: torch.Tensor) -> bool:
    # Any NaN or infinity makes the sum of squares non-finite (one that overflows only
    # sends a finite input to softxent's path, which is right too). A BLAS dot product:
    # the cheapest reduction measured (1.5 us at 64 x 100 against 2.9 for numpy's sum).
    if input.numel() <= _LIST_CHECK:
        return math.isfinite(sum(input.detach().reshape(-1).tolist()))
    flat = input.detach().numpy().reshape(-1)
    return math.isfinite(np.dot(flat, flat))


def _positive_finite(weight: torch.Tensor) -> bool:
    if weight.numel() <= _LIST_CHECK:
        return all(0.0 < w < math.inf for w in weight.tolist())  # False for NaN too
    low, high = torch.aminmax(weight)
    return 0.0 < float(low) and float(high) < math.inf


def _ignores_any(target: torch.Tensor, num_classes: int, ignore_index: int) -> bool:
    """Whether some class index equals ``ignore_index`` (indices out of range allowed)."""
    if target.numel() <= _LIST_CHECK:
        flat_list = (target if target.ndim == 1 else target.reshape(-1)).tolist()
        return ignore_index in flat_list  # (a view of a 1-D target would cost 0.9 us)
    flat = target.numpy().reshape(-1)
    if flat.flags.c_contiguous:  # the core's one pass: 1.2 us against 7.7 for torch at 64
        counted = _native.count_class_targets(flat, num_classes, ignore_index)
        if counted is not None and counted[0] < 0:  # all in range: every ignored one counted
            return counted[1] > 0
    return bool((flat == ignore_index).any())

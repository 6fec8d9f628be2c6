"""The native row kernels, when built, and the switch back to the NumPy kernels.

``softxent._core`` is a C extension compiled at install for several instruction sets;
the widest the CPU runs is picked when it is imported. Where it was not built (no C
compiler at install) or when the environment variable ``SOFTXENT_NATIVE=0`` is set, every
function runs the NumPy block kernels of ``softxent._kernels`` instead: the same results
within float rounding, and the reference the native kernels are tested against.

The elementwise losses' block kernels (``softxent._elementwise_kernels``) call
:func:`elementwise_loss_block` first and run their NumPy passes only when it declines.

The block functions below take the same ``(rows, C)`` blocks as the NumPy kernels (strided
views, classes last) and return False, having done nothing, for a block they do not take;
the caller then runs the NumPy kernel.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from types import ModuleType

import numpy as np

from softxent._threads import run_parallel


def _load() -> ModuleType | None:
    setting = os.environ.get("SOFTXENT_NATIVE", "").strip()
    if setting not in ("", "0", "1"):
        raise ValueError(
            f"environment variable SOFTXENT_NATIVE must be 0 (NumPy kernels) or 1 (native "
            f"kernels when built), got {setting!r}"
        )
    if setting == "0":
        return None
    try:
        from softxent import _core
    except ImportError:  # not built: no compiler at install
        return None
    return _core


core = _load()


def kernels() -> str:
    """Which kernels run: the native instruction set (``"x86-64-v4"`` for AVX-512,
    ``"x86-64-v3"`` for AVX2, ``"baseline"``) or ``"numpy"`` for the fallback."""
    return "numpy" if core is None else str(core.isa())


def takes(*arrays: np.ndarray | None) -> bool:
    """Whether the native kernels run on blocks of these arrays (None entries ignored).

    The same test as the extension's: aligned data and strides that are whole numbers of
    elements (always true of arrays NumPy allocates). When it holds, callers need no
    scratch buffers for the NumPy kernels.
    """
    if core is None:
        return False
    for a in arrays:
        if a is None:
            continue
        size = a.dtype.itemsize
        if a.dtype.alignment == size and a.size:  # NumPy's flag is then the data's test,
            data_aligned = a.flags.aligned  # and costs far less than reading the address
        else:
            data_aligned = a.__array_interface__["data"][0] % size == 0
        if not data_aligned or any(s % size for s in a.strides):
            return False
    return True


def contiguous(a: np.ndarray | None) -> np.ndarray | None:
    """A per-row or per-class operand as the kernels take it: None or a contiguous 1-d
    array (a copy only when ``a`` is strided)."""
    return None if a is None else np.ascontiguousarray(a)


def upstream(g: np.ndarray | float | None) -> np.ndarray | float:
    """The upstream gradient as the kernels take it: a float (0 for a forward call, None)
    or a contiguous (rows,) array."""
    if isinstance(g, np.ndarray):
        return np.ascontiguousarray(g)
    return 0.0 if g is None else float(g)


def check_class_targets(
    flat: np.ndarray, num_classes: int, ignore_index: int, class_weight: np.ndarray | None
) -> tuple[int, int, float] | None:
    """``(first_bad, ignored, weight_total)`` of contiguous int64 class indices ``flat`` in
    one native pass: the position of the first entry neither in ``[0, num_classes)`` nor
    ``ignore_index`` (-1: none), how many entries equal ``ignore_index``, and the float64
    sum of ``class_weight[y]`` over the other entries (0.0 without class weights; only
    meaningful when no entry is bad); None without the core."""
    if core is None:
        return None
    return core.class_targets(flat, num_classes, ignore_index, class_weight, None, None, None)


def count_class_targets(
    flat: np.ndarray, num_classes: int, ignore_index: int
) -> tuple[int, int] | None:
    """``(first_bad, ignored)`` of :func:`check_class_targets`; None without the core."""
    checked = check_class_targets(flat, num_classes, ignore_index, None)
    return None if checked is None else checked[:2]


def fill_class_targets(
    flat: np.ndarray,
    ignore_index: int,
    class_weight: np.ndarray | None,
    num_classes: int,
    ignored: int,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None:
    """Contiguous int64 class indices ``flat``, checked (:func:`check_class_targets`, which
    counted ``ignored`` entries equal to ``ignore_index``), prepared for the NumPy kernels
    in one native pass, in parts on the worker threads (each part's call checks its
    entries again first); None without the core.

    Returns ``(y, valid, wy)``: ``y`` the indices with ignored entries as 0 (``flat`` itself
    when none is ignored); ``valid`` which entries are not ignored (None: all); ``wy`` each
    entry's ``class_weight``, 0 where ignored (None without class weights).
    """
    if core is None:
        return None
    if ignored == 0 and class_weight is None:
        return flat, None, None
    y = flat if ignored == 0 else np.empty_like(flat)
    valid = None if ignored == 0 else np.empty(flat.shape, np.bool_)
    wy = None if class_weight is None else np.empty(flat.shape, class_weight.dtype)
    y_out = None if y is flat else y
    fill_core = core

    def fill(parts: Iterable[tuple[int, int]]) -> None:
        for lo, hi in parts:
            fill_core.class_targets(
                flat[lo:hi], num_classes, ignore_index, class_weight,
                *(None if a is None else a[lo:hi] for a in (y_out, valid, wy)),
            )  # fmt: skip

    # On the worker threads (the core releases the GIL): a single-threaded fill took
    # 2.7 ms of a 13 ms forward at a million targets.
    n = len(flat)
    run_parallel(fill, [(lo, min(n, lo + _FILL_ENTRIES)) for lo in range(0, n, _FILL_ENTRIES)])
    return y, valid, wy


#: Class indices per task of the parallel fill in :func:`fill_class_targets`.
_FILL_ENTRIES = 1 << 17


def softmax_block(xb: np.ndarray, ob: np.ndarray, *, log: bool) -> bool:
    """``ob = softmax(xb)`` (``log_softmax`` if ``log``) row by row; False if not done."""
    return core is not None and core.softmax(xb, ob, log)


def logsumexp_block(xb: np.ndarray, result: np.ndarray) -> bool:
    """``result = logsumexp(xb)`` per row (``result``: contiguous, compute dtype)."""
    return core is not None and core.logsumexp(xb, result)


def ce_index_block(
    xb: np.ndarray,
    y: np.ndarray,
    wy: np.ndarray | None,
    valid: np.ndarray | None,
    g: np.ndarray | float,
    class_weight: np.ndarray | None,
    smoothing: float,
    weight_sum: float,
    loss: np.ndarray,
    grad: np.ndarray | None,
    ignore_index: int | None = None,
) -> bool:
    """Class-index cross-entropy of a block into ``loss`` (and its gradient into ``grad``
    unless None), the arguments as in ``softxent._kernels.ce_index_block``; ignored rows
    get a loss and a gradient of exactly 0. False if not done.

    With ``ignore_index``, ``y`` holds the targets as given (``wy`` and ``valid`` None):
    rows equal to ``ignore_index`` are ignored and the others weigh ``class_weight[y]``,
    found in the kernel's pass (no prepared per-row arrays to write and read back)."""
    return core is not None and core.ce_index(
        xb, y, wy, valid, g, class_weight, smoothing, weight_sum, loss, grad, ignore_index
    )


def ce_prob_block(
    xb: np.ndarray,
    tb: np.ndarray,
    g: np.ndarray | float,
    scale: np.ndarray | None,
    offset: np.ndarray | None,
    loss: np.ndarray,
    grad: np.ndarray | None,
) -> bool:
    """Probability-target cross-entropy of a block with ``q = scale * t + offset``
    (``scale``, ``offset``: (C,) arrays or None), as ``softxent._kernels.ce_prob_block``.
    ``tb`` must have ``xb``'s dtype. False if not done."""
    return core is not None and core.ce_prob(xb, tb, g, scale, offset, loss, grad)


#: The elementwise losses of :func:`elementwise_loss_block` (the extension's numbering).
MSE, BCE_WITH_LOGITS, BCE, KL_DIV, KL_DIV_LOG_TARGET = range(5)


def elementwise_loss_block(
    loss_kind: int,
    x: np.ndarray,
    t: np.ndarray,
    w: np.ndarray | None,
    p: np.ndarray | None,
    g: np.ndarray | float,
    loss: np.ndarray,
    grad: np.ndarray | None,
) -> bool:
    """One block of an elementwise loss (``loss_kind``: :data:`MSE`, ...) in one fused pass,
    the arguments as in ``softxent._elementwise_kernels``: ``(R, L)`` operands ``x``, ``t``,
    weight ``w`` and ``pos_weight`` ``p`` (None: absent), ``g`` a float or an ``(R, L)``
    view. False, having done nothing, unless every array is float32 (or every one float64)
    with consecutive entries along L (row strides free, so operands broadcast across rows
    are taken; float16 blocks and entries broadcast along L run the NumPy passes)."""
    return core is not None and core.elementwise_loss(loss_kind, x, t, w, p, g, loss, grad)


_FLOAT16, _FLOAT32 = np.dtype(np.float16), np.dtype(np.float32)


def convert_block(src: np.ndarray, dst: np.ndarray) -> bool:
    """``dst[...] = src`` between C-contiguous float16 and float32 blocks of one shape, by
    the instruction set's conversions (F16C, AVX-512): bit for bit NumPy's cast (round to
    nearest even), without NumPy's slow path for float16 subnormals (~70 ns each: the
    gradient of a mean over millions of entries is mostly subnormal in float16). False,
    having done nothing, for other dtypes or layouts."""
    if core is None or src.shape != dst.shape:
        return False
    if not (src.flags.c_contiguous and dst.flags.c_contiguous):
        return False
    if src.dtype == _FLOAT32 and dst.dtype == _FLOAT16:
        core.elementwise(src.reshape(-1), dst.reshape(-1), 2)
        return True
    if src.dtype == _FLOAT16 and dst.dtype == _FLOAT32:
        core.elementwise(src.reshape(-1), dst.reshape(-1), 3)
        return True
    return False

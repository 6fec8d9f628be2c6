"""Block kernels: each takes one ``(rows, C)`` block and does every pass over it while it
is in cache.

Shapes in the comments: ``R`` rows in the block, ``C`` classes. ``work`` is a C-contiguous
``(R, C)`` buffer of the compute dtype; it may be the output block itself (and that may be
the input block, for in-place calls), which saves a pass.

Row sums use ``einsum`` rather than ``ndarray.sum`` (three times faster: SIMD lanes instead
of scalar pairwise sums, an accuracy like torch's vectorised reductions) or a BLAS
matrix-vector product (as fast, but OpenBLAS then starts its own threads, which fight ours
for the cores).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np


def _rowsum(a: np.ndarray) -> np.ndarray:
    """(R, C) -> (R,) sum of each row (pairwise summation for short rows: cheaper there)."""
    return np.add.reduce(a, axis=1) if a.shape[1] < 64 else np.einsum("ij->i", a)


def _rowdot(a: np.ndarray, b: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """(R, C), (R, C) or (C,) -> (R,) dot product of each row of ``a`` with ``b``.

    A product into ``scratch`` then a row sum: 1.5x faster than the two-operand einsum.
    """
    return _rowsum(np.multiply(a, b, out=scratch))


class Consts(NamedTuple):
    """What every block of one call shares."""

    ct: np.dtype  # compute dtype: float32 for float16/float32 inputs, else float64
    rows: np.ndarray  # (R_max,) arange, for gathering one entry per row


@functools.lru_cache(maxsize=64)
def make_consts(ct: np.dtype, num_classes: int, block_rows: int) -> Consts:
    rows = _ARANGE[:block_rows] if block_rows <= _ARANGE.size else np.arange(block_rows)
    return Consts(ct, rows)


_ARANGE = np.arange(4096)
_ARANGE.flags.writeable = False


#: Rows whose max ``m`` satisfies ``|m| <= SAFE_MAX`` take ``exp(x)`` without subtracting
#: ``m`` first: no term can overflow (``e**64 * C`` is far below float32's 3.4e38) and the
#: largest cannot underflow, so the sum keeps full relative precision, and the block is
#: spared one pass. Other rows (huge, infinite or NaN maxima) are shifted by their max.
SAFE_MAX = 64.0
#: ... but only for rows of at least this many classes, where the saved pass matters; the
#: shifted form rounds less (``x - m`` is often exact, Sterbenz), so short rows such as the
#: study note's keep torch's bits.
UNSHIFTED_MIN_CLASSES = 256


class Exp(NamedTuple):
    """What :func:`exp_block` found out about each row of a block."""

    m: np.ndarray  # (R,) row max, compute dtype
    shift: np.ndarray  # (R,) what was subtracted before exp: 0 or m
    gap: np.ndarray | float  # shift - m: (R,), or 0.0 when every row was shifted by its max
    dot: np.ndarray | None  # (R,) row dot of (x - shift) with the requested weights


def exp_block(xb, work, ct: np.dtype, dot_with=None, scratch=None) -> Exp:
    """Fill ``work`` with ``exp(x - shift)``, ``shift`` = 0 or the row max (see SAFE_MAX).

    ``dot_with`` (None, ``"sum"``, a (C,) vector or an (R, C) array) asks for the row dot
    products of ``x - shift`` with it, taken before the exponential. With ``s`` the row sum
    of ``work`` and ``gap = shift - m``: ``log(s exp(gap)) = log sum exp(x - m)`` and
    ``x - m = (x - shift) + gap``. ``scratch`` (like ``work``) serves the dot products.
    """
    if xb.dtype != ct:
        xb = load(xb, work)  # work = x in the compute dtype; then everything in place
    m = np.maximum.reduce(xb, axis=1)  # (R,) NaN if a NaN
    if xb.shape[1] >= UNSHIFTED_MIN_CLASSES:
        safe = np.abs(m) <= SAFE_MAX  # False for NaN and inf
        if safe.all():
            dot = None if dot_with is None else _dot(xb, dot_with, scratch)
            np.exp(xb, out=work)  # (R, C)
            return Exp(m, np.zeros_like(m), -m, dot)
        if safe.any():
            shift = np.where(safe, 0, m).astype(ct, copy=False)  # (R,)
            gap = shift - m
        else:
            shift, gap = m, 0.0
    else:
        shift, gap = m, 0.0
    np.subtract(xb, shift[:, None], out=work)  # (R, C)
    dot = None if dot_with is None else _dot(work, dot_with, scratch)
    np.exp(work, out=work)
    return Exp(m, shift, gap, dot)


#: float16 bit pattern -> float32 value: a table lookup converts twice as fast as NumPy's cast.
_HALF_TO_FLOAT = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
_HALF_TO_FLOAT.flags.writeable = False
_HALF_NORMAL_MIN = np.float32(2.0**-14)


def load(xb: np.ndarray, work: np.ndarray) -> np.ndarray:
    """Copy the (R, C) block ``xb`` into ``work`` (the compute dtype) and return ``work``."""
    if xb.dtype == np.float16 and work.dtype == np.float32:
        np.take(_HALF_TO_FLOAT, xb.view(np.uint16), out=work)
    else:
        np.copyto(work, xb)
    return work


def store(ob: np.ndarray, work: np.ndarray, tmp: np.ndarray) -> None:
    """Round the compute-dtype block ``work`` once into ``ob`` (``tmp``: a scratch block).

    NumPy's float32 -> float16 cast is some 25 times slower for values below float16's
    normal range (gradients are mostly that small). Rounding those values to float16's
    subnormal grid first, ``(v + 0.75) - 0.75`` (float32's spacing at 0.75 is 2**-24, the
    grid), gives the same single round-to-nearest-even and leaves the cast an exact, fast one.
    """
    if ob.dtype == np.float16 and work.dtype == np.float32:
        small = np.less(np.abs(work, out=tmp), _HALF_NORMAL_MIN)  # (R, C)
        if small.any():
            np.add(work, np.float32(0.75), out=tmp)
            np.subtract(tmp, np.float32(0.75), out=tmp)
            np.copysign(tmp, work, out=tmp)  # keep the sign of values that round to 0
            np.copyto(work, tmp, where=small)
    np.copyto(ob, work, casting="same_kind")


def _dot(a, b, scratch):
    return _rowsum(a) if isinstance(b, str) else _rowdot(a, b, scratch)


def _log_sum(work: np.ndarray, gap) -> tuple[np.ndarray, np.ndarray]:
    """``(log sum_c exp(x_c - m), s)`` per row from ``work = exp(x - shift)``."""
    s = _rowsum(work)  # (R,)
    if isinstance(gap, float):  # every row shifted by its max
        return np.log(s), s
    return np.log(s * np.exp(gap)), s  # exp(0) == 1 exactly for shifted rows


def softmax_block(xb, ob, work, work2, c: Consts) -> None:
    """``ob = exp(x - shift) * (1 / sum exp(x - shift))`` (torch multiplies by 1/s too).

    The exponentials go to the cache-resident scratch ``work`` and the output block is
    written once, by the last pass.
    """
    exp_block(xb, work, c.ct)
    s = _rowsum(work)  # (R,)
    _finish(ob, np.multiply, work, (1.0 / s)[:, None], work2)


def log_softmax_block(xb, ob, work, work2, c: Consts) -> None:
    """``ob = (x - m) - log(sum exp(x - m))``, evaluated in exactly this order like torch."""
    if xb.dtype != c.ct:
        xb = load(xb, work)
    m = np.maximum.reduce(xb, axis=1)  # (R,)
    np.subtract(xb, m[:, None], out=work)  # (R, C) x - m, kept for the output
    np.exp(work, out=work2)  # (R, C)
    log_s = np.log(_rowsum(work2))  # (R,)
    _finish(ob, np.subtract, work, log_s[:, None], work2)


def _finish(ob, ufunc, work, operand, tmp) -> None:
    """``ob = ufunc(work, operand)``: straight into ``ob`` when it has the compute dtype,
    else in ``work`` and then one rounding :func:`store`."""
    if ob.dtype == work.dtype:
        ufunc(work, operand, out=ob)
    else:
        ufunc(work, operand, out=work)
        store(ob, work, tmp)


def logsumexp_block(xb, work, c: Consts) -> np.ndarray:
    """Per-row ``log(sum exp(x - m')) + m'`` with ``m' = 0`` where the max is infinite.

    Replacing an infinite max by 0 is what makes all ``-inf`` rows give ``-inf`` and rows
    with ``+inf`` give ``+inf`` (instead of NaN from ``inf - inf``), as in torch.
    """
    e = exp_block(xb, work, c.ct)
    shift = e.shift.copy()  # (R,)
    infinite = np.isinf(e.m)
    if infinite.any():  # rare: redo those rows unshifted
        work[infinite] = np.exp(np.asarray(xb[infinite], dtype=c.ct))
        shift[infinite] = 0
    return np.log(_rowsum(work)) + shift  # (R,)


class IndexOptions(NamedTuple):
    """Options of a class-index cross-entropy call, in the compute dtype."""

    smoothing: float  # epsilon
    class_weight: np.ndarray | None  # (C,) or None for all ones
    weight_sum: float  # W = sum_c w_c (C when unweighted)
    num_classes: int


def ce_index_block(xb, y, wy, valid, g, work, work2, ob, c: Consts, o: IndexOptions):
    """Cross-entropy of one block with class-index targets, and optionally its gradient.

    Parameters
    ----------
    xb : (R, C) logits block.
    y : (R,) int64 target ids (ignored rows hold 0).
    wy : (R,) weight of each row's target, 0 for ignored rows; None means all ones.
    valid : (R,) bool or None (nothing ignored).
    g : (R,) or scalar upstream gradient per row; None for the forward only.
    ob : (R, C) gradient output block, or None.

    Returns
    -------
    (R,) loss per row (ignored rows not yet zeroed).

    Notes
    -----
    With ``lp = log_softmax(x)``, ``p = exp(lp)``, ``eps`` the smoothing and ``W = sum w``::

        loss = (1 - eps) w[y] (-lp[y]) + eps / C * sum_c w_c (-lp_c)
        grad = g ((1 - eps) w[y] + eps W / C) p - g (1 - eps) w[y] onehot(y) - g eps / C w
    """
    R = xb.shape[0]
    r = c.rows[:R]
    eps = o.smoothing
    x_y = xb[r, y]  # (R,) gathered first: work may be xb itself
    # With smoothing, also sum_c w_c (x_c - shift), before exp overwrites the block.
    weights = None if not eps else ("sum" if o.class_weight is None else o.class_weight)
    e = exp_block(xb, work, c.ct, weights, work2)  # work = exp(x - shift)
    log_sum, s = _log_sum(work, e.gap)  # (R,) log sum exp(x - m)
    nll = log_sum - (x_y.astype(c.ct) - e.m)  # -lp[y]: no cancellation when x[y] is the max
    w_target = 1.0 if wy is None else wy
    if eps:
        # sum_c w_c (-lp_c) = W log_sum - sum_c w_c (x_c - m), the latter <= 0 termwise
        wd = e.dot + o.weight_sum * e.gap  # (R,) sum_c w_c (x_c - m)
        smooth = o.weight_sum * log_sum - wd
        loss = (1.0 - eps) * (w_target * nll) + (eps / o.num_classes) * smooth
    else:
        loss = w_target * nll
    if ob is None:
        return loss
    hit = g * w_target if not eps else g * ((1.0 - eps) * w_target)  # (R,) or scalar
    coef = hit if not eps else hit + g * (eps * o.weight_sum / o.num_classes)
    np.multiply(work, (coef / s)[:, None], out=work)  # p * coef
    work[r, y] -= hit
    if eps:
        spread = np.broadcast_to(g * (eps / o.num_classes), (R,))  # (R,)
        if o.class_weight is None:
            work -= spread[:, None]
        else:
            np.multiply(spread[:, None], o.class_weight, out=work2)
            work -= work2
    if valid is not None and not valid.all():
        work[~valid] = 0  # ignored rows: exactly 0, even when they hold NaN or -inf
    if work is not ob:
        store(ob, work, work2)  # the only rounding for float16
    return loss


def ce_prob_block(xb, tb, g, work, wq, tmp, ob, c: Consts, scale, offset):
    """Cross-entropy of one block with probability targets, and optionally its gradient.

    ``q = scale * t + offset`` is the weighted, smoothed target ``w ((1 - eps) t + eps / C)``
    (``scale``, ``offset``: scalars or (C,) vectors, or None)::

        loss = sum_c q_c (lse - x_c) = (sum q) log sum exp(x - m) - sum_c q_c (x_c - m)
        grad = g (p sum q - q)
    """
    if scale is None and offset is None and tb.dtype == c.ct:
        q = tb  # the target itself: no copy
    else:
        np.multiply(tb, 1.0 if scale is None else scale, out=wq, dtype=c.ct)
        if offset is not None:
            np.add(wq, offset, out=wq)
        q = wq
    sum_q = _rowsum(q)  # (R,)
    e = exp_block(xb, work, c.ct, q, tmp)  # work = exp(x - shift); e.dot = sum q (x - shift)
    log_sum, s = _log_sum(work, e.gap)
    sum_qd = e.dot + sum_q * e.gap  # (R,) sum_c q_c (x_c - m)
    loss = sum_q * log_sum - sum_qd
    if ob is None:
        return loss
    coef = g * sum_q / s  # (R,)
    np.multiply(work, coef[:, None], out=work)
    np.multiply(q, np.broadcast_to(g, coef.shape)[:, None], out=tmp, dtype=c.ct)
    np.subtract(work, tmp, out=work)
    if work is not ob:
        store(ob, work, tmp)
    return loss

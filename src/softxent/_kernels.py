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
import math
from typing import NamedTuple

import numpy as np


def rowsum(a: np.ndarray) -> np.ndarray:
    """(R, C) -> (R,) sum of each row (pairwise summation for short rows: cheaper there)."""
    return np.add.reduce(a, axis=1) if a.shape[1] < 64 else np.einsum("ij->i", a)


def _rowdot(a: np.ndarray, b: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """(R, C), (R, C) or (C,) -> (R,) dot product of each row of ``a`` with ``b``.

    A product into ``scratch`` then a row sum: 1.5x faster than the two-operand einsum.
    """
    return rowsum(np.multiply(a, b, out=scratch))


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


#: Rows of at least this many classes take ``exp(x)`` without subtracting their max first,
#: which spares the pass that finds the max (the pass that reads the block from memory).
#: Short rows are shifted by their max as usual: there the pass costs little, and the shifted
#: form rounds less (``x - m`` is often exact, Sterbenz), so small inputs such as the 3x3
#: example of ``softxent demo`` keep torch's bits.
UNSHIFTED_MIN_CLASSES = 256
#: An unshifted row is kept when ``TINY <= sum exp(x) <= HUGE``: then no term overflowed
#: and the largest, at least ``TINY / C``, is far from float32's subnormals, so the sum has
#: full relative precision. Other rows (huge, infinite or NaN logits) are redone shifted.
_TINY, _HUGE = 2.0**-60, 2.0**100


class Exp(NamedTuple):
    """What :func:`exp_block` found out about each row of a block (all (R,), compute dtype).

    ``work`` holds ``exp(x - shift)``; ``ref`` is the reference value of the row:
    ``log_sum = log sum_c exp(x_c - ref)`` and ``lse = ref + log_sum``.
    """

    ref: np.ndarray  # the row max (shifted rows) or the caller's reference (unshifted rows)
    shift: np.ndarray | float  # what was subtracted before exp: the max, or 0
    gap: np.ndarray | float  # shift - ref: x - ref = (x - shift) + gap
    s: np.ndarray  # sum_c exp(x_c - shift)
    log_sum: np.ndarray  # log sum_c exp(x_c - ref)
    dot: np.ndarray | None  # row dot of (x - shift) with the requested weights

    def weighted(self) -> np.ndarray:
        """``dot``: there whenever :func:`exp_block` was asked for a weighted row sum."""
        if self.dot is None:
            raise RuntimeError("exp_block was called without weights: no row dot to read")
        return self.dot


def exp_block(xb, work, ct: np.dtype, dot_with=None, scratch=None, ref=None) -> Exp:
    """Fill ``work`` with ``exp(x - shift)`` and sum it, ``shift`` being 0 or the row max.

    ``dot_with`` (None, ``"sum"``, a (C,) vector or an (R, C) array) asks for the row dot
    products of ``x - shift`` with it, taken before the exponential (``scratch``, like
    ``work``, serves them). ``ref`` (R,) is the reference value for unshifted rows (default
    0): the target's logit, say, so that ``log_sum`` is that class's loss directly. Every
    row's result depends on that row alone, never on the block it was computed in.
    """
    original = xb
    if xb.dtype != ct:
        xb = load(xb, work)  # work = x in the compute dtype; then everything in place
    rows = xb.shape[0]
    if xb.shape[1] >= UNSHIFTED_MIN_CLASSES:
        dot = None if dot_with is None else _dot(xb, dot_with, scratch)
        np.exp(xb, out=work)  # (R, C)
        s = rowsum(work)  # (R,)
        ref = np.zeros(rows, ct) if ref is None else ref
        log_sum = np.log(s * np.exp(-ref))  # (R,) the product is >= 1 when ref = x[y]
        kept = (s >= _TINY) & (s <= _HUGE) & np.isfinite(log_sum)
        if kept.all():
            return Exp(ref, 0.0, -ref, s, log_sum, dot)
        e = Exp(ref, 0.0, -ref, s, log_sum, dot)
        return _redo_shifted(original, work, ~kept, e, dot_with, ct)
    m = np.maximum.reduce(xb, axis=1)  # (R,) NaN if the row has a NaN
    np.subtract(xb, m[:, None], out=work)  # (R, C) <= 0
    dot = None if dot_with is None else _dot(work, dot_with, scratch)
    np.exp(work, out=work)
    s = rowsum(work)
    return Exp(m, m, 0.0, s, np.log(s), dot)


def _redo_shifted(xb, work, redo, e: Exp, dot_with, ct) -> Exp:
    """Recompute rows ``redo`` of an unshifted :func:`exp_block` shifted by their max.

    ``xb`` is the caller's block (``work`` may have held its converted copy, now overwritten).
    """
    x = np.asarray(xb[redo], dtype=ct)  # (k, C) a copy
    m = np.maximum.reduce(x, axis=1)  # (k,)
    x -= m[:, None]
    ref, s, log_sum = e.ref.copy(), e.s.copy(), e.log_sum.copy()
    shift = np.zeros_like(ref)
    ref[redo], shift[redo] = m, m
    if e.dot is not None:
        dot = e.dot.copy()
        other = dot_with if isinstance(dot_with, str) or dot_with.ndim == 1 else dot_with[redo]
        dot[redo] = _dot(x, other, np.empty_like(x))
    else:
        dot = None
    np.exp(x, out=x)
    work[redo] = x
    s[redo] = rowsum(x)
    log_sum[redo] = np.log(s[redo])
    return Exp(ref, shift, shift - ref, s, log_sum, dot)


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
    return rowsum(a) if isinstance(b, str) else _rowdot(a, b, scratch)


def softmax_block(xb, ob, work, work2, c: Consts) -> None:
    """``ob = exp(x - shift) * (1 / sum exp(x - shift))`` (torch multiplies by 1/s too).

    The exponentials go to the cache-resident scratch ``work`` and the output block is
    written once, by the last pass.
    """
    s = exp_block(xb, work, c.ct).s  # (R,)
    _finish(ob, np.multiply, work, (1.0 / s)[:, None], work2)


def log_softmax_block(xb, ob, work, work2, c: Consts) -> None:
    """``ob = (x - m) - log(sum exp(x - m))``, evaluated in exactly this order like torch."""
    if xb.dtype != c.ct:
        xb = load(xb, work)
    m = np.maximum.reduce(xb, axis=1)  # (R,)
    np.subtract(xb, m[:, None], out=work)  # (R, C) x - m, kept for the output
    np.exp(work, out=work2)  # (R, C)
    log_s = np.log(rowsum(work2))  # (R,)
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
    lse = e.ref + e.log_sum  # (R,)
    infinite = np.isinf(e.ref)  # only rows shifted by an infinite max
    if infinite.any():  # rare: those rows unshifted, m' = 0
        lse[infinite] = np.log(rowsum(np.exp(np.asarray(xb[infinite], dtype=c.ct))))
    return lse


class IndexOptions(NamedTuple):
    """Options of a class-index cross-entropy call, in the compute dtype."""

    smoothing: float  # epsilon
    class_weight: np.ndarray | None  # (C,) or None for all ones
    weight_sum: float  # W = sum_c w_c (C when unweighted)
    num_classes: int


def ce_index_block(xb, y, wy, valid, g, work, work2, ob, c: Consts, o: IndexOptions) -> np.ndarray:
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
    x_y = x_y.astype(c.ct, copy=False)
    e = exp_block(xb, work, c.ct, weights, work2, ref=x_y)  # work = exp(x - shift)
    s, log_sum = e.s, e.log_sum  # (R,)
    nll = log_sum + (e.ref - x_y)  # -lp[y] = lse - x[y]; e.ref is x[y] unless shifted
    w_target = 1.0 if wy is None else wy
    if eps:
        # sum_c w_c (-lp_c) = W log_sum - sum_c w_c (x_c - ref)
        wd = e.weighted() + o.weight_sum * e.gap  # (R,) sum_c w_c (x_c - ref)
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


def ce_prob_block(xb, tb, g, work, wq, tmp, ob, c: Consts, scale, offset) -> np.ndarray:
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
    sum_q = rowsum(q)  # (R,)
    e = exp_block(xb, work, c.ct, q, tmp)  # work = exp(x - shift); e.dot = sum q (x - shift)
    s, log_sum = e.s, e.log_sum  # (R,)
    sum_qd = e.weighted() + sum_q * e.gap  # (R,) sum_c q_c (x_c - ref)
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


class RowScores(NamedTuple):
    """What :func:`score_block` measures for each row of a block (all (R,), compute dtype)."""

    nll: np.ndarray  # -log p[y]
    confidence: np.ndarray  # max_c p_c
    rank: np.ndarray  # other classes with a logit >= x[y], capped at kmax (exact integers)


def score_block(xb, y, work, c: Consts, kmax: int) -> RowScores:
    """Loss, top-1 confidence and capped rank of the target for one block of logits.

    Parameters
    ----------
    xb : (R, C) logits block.
    y : (R,) int64 target ids (ignored rows hold any valid id).
    work : (R, C) scratch of the compute dtype.
    kmax : the rank is counted up to ``kmax``, enough to decide every top-k with k <= kmax.

    Notes
    -----
    With ``p = softmax(x)`` and ``shift`` the row max or 0 (see :func:`exp_block`)::

        nll = lse - x[y]                     (as ce_index_block computes it)
        confidence = max_c exp(x_c - shift) / sum_c exp(x_c - shift)
        rank = #{c != y : x_c >= x[y]}       (ties count against the target)
    """
    C = xb.shape[1]
    r = c.rows[: xb.shape[0]]
    x_y = xb[r, y].astype(c.ct, copy=False)  # (R,)
    e = exp_block(xb, work, c.ct, ref=x_y)  # work = exp(x - shift)
    nll = e.log_sum + (e.ref - x_y)  # e.ref is x[y] unless the row was shifted
    # A row shifted by its max has max_c exp(x_c - m) = exp(0) = 1: no pass needed.
    top = 1.0 if C < UNSHIFTED_MIN_CLASSES else np.maximum.reduce(work, axis=1)  # (R,)
    confidence = top / e.s
    p_y = work[r, y] / e.s  # (R,)
    return RowScores(nll, confidence, _target_rank(xb, x_y, p_y, work, kmax))


def _target_rank(xb, x_y, p_y, work, kmax: int) -> np.ndarray:
    """(R,) number of other classes whose logit is >= ``x_y``, capped at ``kmax``.

    Raw logits are compared: ``x - max`` could round distinct values together. ``work``
    (R, C) is free scratch by now.
    """
    R, C = xb.shape
    ct = work.dtype
    rank = np.zeros(R, ct)  # (R,) 0 unless counted below
    # A target with p_y > 1/2 has rank 0: another class >= it would hold p >= p_y too.
    # 0.75 leaves room for the rounding of the row sum (relative error < C eps < 1/3).
    sure = 0.75 if C * np.finfo(ct).eps < 1 / 3 else math.inf
    todo = np.flatnonzero(~(p_y > sure))  # NaN rows too: the caller excludes them anyway
    if not todo.size:
        return rank
    xs = xb if todo.size == R else xb[todo]  # (t, C)
    ref = x_y[todo]  # (t,)
    counted = np.full(todo.size, kmax, ct)  # (t,) capped rank
    undecided = np.arange(todo.size)
    # Rows whose target is beaten by kmax others within the first columns are decided
    # without reading the rest (most rows of a large vocabulary).
    prefix = max(64, C // 8) if C >= 256 else C
    if prefix < C:
        part = _count_at_least(xs, ref, work, prefix) - 1.0  # others, or itself too
        undecided = np.flatnonzero(part < kmax)
    if undecided.size:
        sub = xs if undecided.size == todo.size else xs[undecided]
        full = _count_at_least(sub, ref[undecided], work, C) - 1.0  # the target itself too
        counted[undecided] = np.minimum(full, kmax)
    rank[todo] = counted
    return rank


def _count_at_least(xs, ref, work, cols: int) -> np.ndarray:
    """(n,) how many of the first ``cols`` entries of each row of ``xs`` are >= ``ref``."""
    flags = work[: xs.shape[0], :cols]  # (n, cols) 1.0 or 0.0
    np.greater_equal(xs[:, :cols], ref[:, None], out=flags, casting="unsafe")
    if xs.shape[1] < 2**24:  # float32 counts are exact up to 2**24
        return rowsum(flags)
    return flags.sum(axis=1, dtype=np.float64)  # pragma: no cover

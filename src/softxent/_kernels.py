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

from typing import NamedTuple

import numpy as np


def _rowsum(a: np.ndarray) -> np.ndarray:
    """(R, C) -> (R,) sum of each row."""
    return np.einsum("ij->i", a)


def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(R, C), (R, C) or (C,) -> (R,) dot product of each row of ``a`` with ``b``."""
    return np.einsum("ij,ij->i" if b.ndim == 2 else "ij,j->i", a, b)


class Consts(NamedTuple):
    """What every block of one call shares."""

    ct: np.dtype  # compute dtype: float32 for float16/float32 inputs, else float64
    rows: np.ndarray  # (R_max,) arange, for gathering one entry per row


def make_consts(ct: np.dtype, num_classes: int, block_rows: int) -> Consts:
    rows = _ARANGE[:block_rows] if block_rows <= _ARANGE.size else np.arange(block_rows)
    return Consts(ct, rows)


_ARANGE = np.arange(4096)
_ARANGE.flags.writeable = False


def _shift(xb: np.ndarray, work: np.ndarray, ct: np.dtype) -> np.ndarray:
    """``work = x - max(x)`` row by row (the max is subtracted only so exp cannot overflow)."""
    m = np.maximum.reduce(xb, axis=1)  # (R,) NaN if the row has a NaN
    np.subtract(xb, m[:, None], out=work, dtype=ct)  # (R, C) <= 0, or NaN
    return m


def softmax_block(xb, ob, work, c: Consts) -> None:
    """``ob = exp(x - m) * (1 / sum exp(x - m))``, torch's order of operations."""
    _shift(xb, work, c.ct)
    np.exp(work, out=work)  # (R, C)
    s = _rowsum(work)  # (R,)
    np.multiply(work, (1.0 / s)[:, None], out=ob, casting="same_kind")


def log_softmax_block(xb, ob, work, work2, c: Consts) -> None:
    """``ob = (x - m) - log(sum exp(x - m))``, evaluated in exactly this order like torch."""
    _shift(xb, work, c.ct)
    np.exp(work, out=work2)  # (R, C)
    log_s = np.log(_rowsum(work2))  # (R,)
    np.subtract(work, log_s[:, None], out=ob, casting="same_kind")


def logsumexp_block(xb, work, c: Consts) -> np.ndarray:
    """Per-row ``log(sum exp(x - m')) + m'`` with ``m' = 0`` where the max is infinite.

    Replacing an infinite max by 0 is what makes all ``-inf`` rows give ``-inf`` and rows
    with ``+inf`` give ``+inf`` (instead of NaN from ``inf - inf``), as in torch.
    """
    m = xb.max(axis=1).astype(c.ct)  # (R,)
    m[np.isinf(m)] = 0
    np.subtract(xb, m[:, None], out=work, dtype=c.ct)  # (R, C)
    np.exp(work, out=work)
    return np.log(_rowsum(work)) + m  # (R,)


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
    _shift(xb, work, c.ct)  # d = x - m
    d_y = work[r, y]  # (R,) x[y] - m
    eps = o.smoothing
    if eps:
        # sum_c w_c d_c: every term <= 0, so no cancellation (unlike sum w x - W lse).
        wd = _rowsum(work) if o.class_weight is None else _rowdot(work, o.class_weight)
    np.exp(work, out=work)  # (R, C) e = exp(d)
    s = _rowsum(work)  # (R,)
    log_s = np.log(s)
    nll = log_s - d_y  # -lp[y] = lse - x[y], no cancellation when x[y] is the max
    w_target = 1.0 if wy is None else wy
    if eps:
        loss = (1.0 - eps) * (w_target * nll) + (eps / o.num_classes) * (o.weight_sum * log_s - wd)
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
        np.copyto(ob, work, casting="same_kind")  # the only rounding for float16
    return loss


def ce_prob_block(xb, tb, g, work, wq, tmp, ob, c: Consts, scale, shift):
    """Cross-entropy of one block with probability targets, and optionally its gradient.

    ``q = scale * t + shift`` is the weighted, smoothed target ``w ((1 - eps) t + eps / C)``
    (``scale``, ``shift``: scalars or (C,) vectors; ``shift`` may be None)::

        loss = sum_c q_c (lse - x_c) = (sum q) log s - sum_c q_c (x_c - m)
        grad = g (p sum q - q)
    """
    _shift(xb, work, c.ct)  # (R, C) d = x - m
    if scale is None and shift is None and tb.dtype == c.ct:
        q = tb  # the target itself: no copy
    else:
        np.multiply(tb, 1.0 if scale is None else scale, out=wq, dtype=c.ct)
        if shift is not None:
            np.add(wq, shift, out=wq)
        q = wq
    sum_q = _rowsum(q)  # (R,)
    sum_qd = _rowdot(work, q)  # (R,) every term <= 0 for non-negative q
    np.exp(work, out=work)  # (R, C)
    s = _rowsum(work)
    loss = sum_q * np.log(s) - sum_qd
    if ob is None:
        return loss
    coef = g * sum_q / s  # (R,)
    np.multiply(work, coef[:, None], out=work)
    np.multiply(q, np.broadcast_to(g, coef.shape)[:, None], out=tmp, dtype=c.ct)
    np.subtract(work, tmp, out=work)
    if work is not ob:
        np.copyto(ob, work, casting="same_kind")
    return loss

"""score: evaluate saved logits (loss, perplexity, top-k accuracy, calibration) in bounded memory.

The logits are read in batches of whole rows of at most ``batch_bytes``
(``_score_reader``); the driver of the kernel layer cuts each batch into cache-sized
blocks that the worker threads run through ``_kernels.score_block`` (exp, row sum,
confidence, rank of the target), and only per-row numbers leave a block. Sums over rows
are taken in float64 here, batch by batch, so the result does not depend on the batch size
beyond float64 rounding, nor on the thread count or block size at all.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from softxent import _kernels
from softxent._blocks import RowBlocks
from softxent._reduction import cast_losses, ieee_divide
from softxent._rowwise import compute_dtype, for_each_block
from softxent._score_reader import row_batches
from softxent._validation import (
    as_array,
    as_class_weight,
    as_float_array,
    check_ignore_index,
    class_axis,
    class_index_error,
    native_dtype,
)

__all__ = ["DEFAULT_BATCH_BYTES", "ScoreResult", "score"]

#: Default bound on the logits read per block (64 MiB).
DEFAULT_BATCH_BYTES = 64 * 2**20

#: Bytes of logits one worker processes at a time (one block of the kernel layer, and the
#: worker's one scratch buffer): small enough to stay in a core's L2 cache, so the passes
#: after the first read from cache, not from memory; large enough that the ~20 NumPy calls
#: per block cost little (1 MiB measured 5-8% faster than 512 KiB).
_BLOCK_BYTES = 1024 * 1024

_LN2 = math.log(2.0)


@dataclass(frozen=True, eq=False)
class ScoreResult:
    """What :func:`score` measured.

    Rows are the samples (the positions of the logits without the class axis). A row is
    *ignored* when its target equals ``ignore_index``, *non-finite* when it is not ignored
    and its cross-entropy is not finite (a NaN or ``+inf`` logit, or a ``-inf`` logit on
    the target class); non-finite rows are excluded from every metric and counted. The
    metrics cover the remaining ``n_scored`` rows.
    """

    n_samples: int  #: rows in the input
    n_ignored: int  #: rows whose target is ``ignore_index``
    n_nonfinite: int  #: rows excluded because their loss is NaN or inf
    cross_entropy: float  #: mean loss in nats (weighted mean when ``weight`` is given)
    cross_entropy_bits: float  #: the same in bits
    perplexity: float  #: ``exp(cross_entropy)``
    top_k_accuracy: dict[int, float]  #: k -> fraction of rows with the target in the top k
    ece: float  #: expected calibration error of the top-1 prediction
    mean_confidence: float  #: mean of the largest softmax probability
    bin_edges: np.ndarray  #: (bins + 1,) equal-width edges over [0, 1]
    bin_counts: np.ndarray  #: (bins,) int64 rows per confidence bin
    bin_confidence: np.ndarray  #: (bins,) mean confidence per bin (NaN when empty)
    bin_accuracy: np.ndarray  #: (bins,) top-1 accuracy per bin (NaN when empty)
    weighted: bool = False  #: whether class weights were applied to the loss
    per_sample: np.ndarray | None = field(default=None, repr=False)  #: losses, see score
    nonfinite_treatment: str = "excluded"  #: how non-finite rows were treated

    @property
    def n_scored(self) -> int:
        """Rows that enter the metrics: neither ignored nor non-finite."""
        return self.n_samples - self.n_ignored - self.n_nonfinite

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready Python objects (NaN becomes None; no per-sample losses)."""

        def num(value: float) -> float | None:
            return None if math.isnan(value) else float(value)

        return {
            "n_samples": self.n_samples,
            "n_ignored": self.n_ignored,
            "n_nonfinite": self.n_nonfinite,
            "n_scored": self.n_scored,
            "nonfinite_treatment": self.nonfinite_treatment,
            "weighted": self.weighted,
            "cross_entropy": num(self.cross_entropy),
            "cross_entropy_bits": num(self.cross_entropy_bits),
            "perplexity": num(self.perplexity),
            "top_k_accuracy": {str(k): num(v) for k, v in self.top_k_accuracy.items()},
            "ece": num(self.ece),
            "mean_confidence": num(self.mean_confidence),
            "bins": [
                {
                    "lower": float(self.bin_edges[i]),
                    "upper": float(self.bin_edges[i + 1]),
                    "count": int(self.bin_counts[i]),
                    "confidence": num(self.bin_confidence[i]),
                    "accuracy": num(self.bin_accuracy[i]),
                }
                for i in range(len(self.bin_counts))
            ],
        }


def score(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    axis: int = -1,
    ignore_index: int = -100,
    weight: ArrayLike | None = None,
    top_k: int | Iterable[int] = (1, 5),
    bins: int = 15,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    per_sample: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ScoreResult:
    r"""Cross-entropy, perplexity, top-k accuracy and calibration of ``logits`` for ``target``.

    With ``p = softmax(logits)`` along ``axis``, ``S`` the scored rows (not ignored, finite
    loss), class weights ``w`` (ones by default) and ``B`` equal-width confidence bins:

    .. math::

        \mathrm{CE} = \frac{\sum_{n \in S} w_{y_n} (-\log p_{n, y_n})}{\sum_{n \in S} w_{y_n}},
        \qquad \mathrm{PPL} = e^{\mathrm{CE}}, \qquad
        \mathrm{ECE} = \sum_{b=1}^{B} \frac{|S_b|}{|S|}
        \left|\mathrm{acc}(S_b) - \mathrm{conf}(S_b)\right|

    where :math:`S_b` holds the rows whose confidence :math:`\max_c p_{n,c}` falls in
    :math:`[(b-1)/B, b/B)` (1.0 in the last bin), and ``acc`` is their top-1 accuracy.

    Parameters
    ----------
    logits : array_like of float16, float32 or float64
        Scores, classes along ``axis``, e.g. (N, C), or torch's (N, C, d1, ...) with
        ``axis=1``. May be a memory-mapped array (``np.load(path, mmap_mode="r")``): it
        is read block by block and never loaded whole.
    target : array_like of int
        Class ids, shape of ``logits`` without ``axis``. Probability (floating) targets are
        not supported here; use :func:`softxent.cross_entropy` for them.
    axis : int, default -1
        The class axis. Blocks are taken along the first of the other axes.
    ignore_index : int, default -100
        Rows whose target equals it are counted in ``n_ignored`` and left out of every
        metric.
    weight : array_like of shape (C,), optional
        Finite class weights (negative ones too, as in torch). They weight the loss only
        (the mean is ``sum w[y] l / sum w[y]``, as in torch); accuracy and calibration
        count rows.
    top_k : int or iterable of int, default (1, 5)
        The k of the top-k accuracies (each >= 1; a k >= C gives 1.0).
    bins : int, default 15
        Number of equal-width confidence bins of the ECE.
    batch_bytes : int, default 64 MiB
        At most this many bytes of logits are in flight per block (a view, never a copy):
        the pages of a memory-mapped file in memory at a time. Memory use beyond that is
        a 1 MiB scratch block per thread plus per-row results (targets, and the
        per-sample losses when asked for).
    per_sample : bool, default False
        Also return the per-sample losses ``w[y] (-log p_y)`` (0 for ignored rows, NaN or
        inf for non-finite ones), shape of ``target``, dtype of ``logits``: the values of
        ``cross_entropy(..., reduction="none")``.
    progress : callable, optional
        Called with the number of rows just finished after each block (for progress bars).

    Returns
    -------
    ScoreResult

    Raises
    ------
    TypeError
        Non-float logits; non-integer target (float targets included); non-integer
        ``top_k``, ``bins``, ``batch_bytes``, ``axis`` or ``ignore_index``.
    ValueError
        0-d logits or an empty class axis; target of the wrong shape or out of range
        (its position is named); bad weight; ``top_k``, ``bins`` or ``batch_bytes`` < 1.

    Notes
    -----
    *Non-finite rows* (a NaN or ``+inf`` logit, or ``-inf`` on the target class; ``-inf`` on
    other classes is an ordinary zero probability) would make torch's mean NaN or inf;
    here they are excluded from all metrics and reported in ``n_scored`` /
    ``n_nonfinite``. Without them, ``cross_entropy`` equals
    ``F.cross_entropy(logits, target, weight, ignore_index=ignore_index)`` (classes moved
    to dim 1). When nothing is scored (no row left, or the scored rows' target weights sum to
    0) every metric is NaN and every bin empty.

    *Top-k and ties*: the target is in the top k when fewer than k *other* classes have a
    logit greater than or equal to its own, so ties count against the target (this
    differs from ``argmax == target`` only for exact ties). The ECE uses the same top-1
    rule and the confidence ``max_c p_c = 1 / sum_c exp(x_c - max x)``.

    Examples
    --------
    >>> import numpy as np, softxent as sx
    >>> logits = np.array([[0.3, 0.1, 0.3], [0.9, 0.2, 0.9], [0.5, 0.4, 0.2]], np.float32)
    >>> r = sx.score(logits, [1, 2, 0], top_k=(1, 2), bins=5)
    >>> round(r.cross_entropy, 6), round(r.perplexity, 4), r.top_k_accuracy
    (1.041377, 2.8331, {1: 0.3333333333333333, 2: 0.6666666666666666})
    >>> r.bin_counts  # confidences 0.355, 0.378 and 0.401
    array([0, 2, 1, 0, 0])
    """
    # Byte-swapped logits stay as they are (a file larger than memory is not copied): each
    # block is converted when it is read, and the per-sample losses are in native order.
    x = as_float_array(logits, "logits", native=False)
    axis, num_classes = class_axis(x, axis, "logits")
    ignore_index = check_ignore_index(ignore_index)
    ks = _check_top_k(top_k)
    bins = _check_positive_int(bins, "bins")
    batch_bytes = _check_positive_int(batch_bytes, "batch_bytes")
    xm = x if axis == x.ndim - 1 else np.moveaxis(x, axis, -1)  # (*batch, C) view
    batch_shape = xm.shape[:-1]
    t = _check_target(target, batch_shape, x.shape, axis)
    class_weight = as_class_weight(weight, num_classes, np.dtype(np.float64))
    _check_target_range(t, batch_shape, num_classes, ignore_index, batch_bytes)

    ct = compute_dtype(native_dtype(x.dtype))
    state = _Accumulator(ks, bins, class_weight, ct)
    losses = np.empty(batch_shape, native_dtype(x.dtype)) if per_sample else None
    flat_losses = None if losses is None else losses.reshape(-1)  # a view: losses is new
    row0 = 0
    for blk, tgt in row_batches(xm, t, batch_bytes):
        y = np.asarray(tgt).reshape(-1).astype(np.int64)  # (R,)
        valid = y != ignore_index
        y[~valid] = 0  # any in-range id, so gathering works; masked below
        nll, conf, rank = _row_scores(blk, y, ct, max(ks, default=1))
        state.add(nll, conf, rank, y, valid)
        if flat_losses is not None:
            row_losses = _row_losses(nll, y, valid, class_weight, ct)
            flat_losses[row0 : row0 + len(y)] = cast_losses(row_losses, flat_losses.dtype)
        row0 += len(y)
        if progress is not None:
            progress(len(y))
    return state.result(row0, losses)


# ----------------------------------------------------------------------------- checks


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return int(value)


def _check_top_k(top_k: Any) -> tuple[int, ...]:
    if isinstance(top_k, numbers.Integral) or not isinstance(top_k, Iterable):
        values = [top_k]
    else:
        values = list(top_k)
    if not values:
        raise ValueError("top_k must name at least one k, got an empty sequence")
    return tuple(sorted({_check_positive_int(k, "top_k") for k in values}))


def _check_target(target: Any, batch_shape: tuple, logits_shape: tuple, axis: int):
    t = as_array(target, "target")
    if t.dtype.kind not in "iu":
        extra = ""
        if t.dtype.kind == "f":
            extra = (
                "; score takes class ids only (probability targets are not supported: "
                "use softxent.cross_entropy)"
            )
        raise TypeError(f"target must hold integer class ids, got dtype {t.dtype}{extra}")
    if t.shape != batch_shape:
        raise ValueError(
            f"target must have shape {batch_shape} (logits {logits_shape} without axis "
            f"{axis}), got shape {t.shape}"
        )
    return t


def _check_target_range(t, batch_shape, num_classes, ignore_index, batch_bytes) -> None:
    """Every target is a class id or ``ignore_index``; checked before any logit is read."""
    flat = np.reshape(t, -1)  # a view unless the target itself is strided
    step = max(1, batch_bytes // 8)
    for lo in range(0, flat.size, step):
        chunk = flat[lo : lo + step]
        chunk = chunk.astype(np.int64) if chunk.dtype != np.uint64 else chunk
        bad = (chunk != ignore_index) & ((chunk < 0) | (chunk >= num_classes))
        if bad.any():
            first = lo + int(np.argmax(bad))
            position = np.unravel_index(first, batch_shape)
            raise class_index_error(
                "target", position, int(flat[first]), num_classes, ignore_index
            )


# ----------------------------------------------------------------------------- kernel


def _row_scores(blk: np.ndarray, y: np.ndarray, ct: np.dtype, kmax: int) -> _kernels.RowScores:
    """:func:`_kernels.score_block` over a batch ``blk`` (b, *rest, C), on the worker threads.

    Rows are viewed where they lie (strided layouts too), never copied whole.
    """
    blocks = RowBlocks([blk], blk.ndim - 1)
    R = blocks.num_rows
    nll, conf = np.empty(R, ct), np.empty(R, ct)  # (R,)
    rank = np.empty(R, ct)  # (R,) exact integers: counts <= C < 2**24 in float32

    def body(task, scratch, consts) -> None:
        lo, hi = task.row0, task.row0 + task.stop - task.start
        nll[lo:hi], conf[lo:hi], rank[lo:hi] = _kernels.score_block(
            blocks.block(0, task), y[lo:hi], scratch[0], consts, kmax
        )

    for_each_block(blocks, ct, body, num_scratch=1, block_bytes=_BLOCK_BYTES)
    return _kernels.RowScores(nll, conf, rank)


def _row_losses(nll, y, valid, class_weight, ct) -> np.ndarray:
    """Per-sample losses as ``cross_entropy(reduction='none')`` returns them."""
    out = nll if class_weight is None else class_weight.astype(ct)[y] * nll
    return np.where(valid, out, 0)


class _Accumulator:
    """Running float64 sums over blocks, in block order (deterministic)."""

    def __init__(self, ks, bins, class_weight, ct) -> None:
        self.ks = ks
        self.bins = bins
        self.class_weight = class_weight
        self.ct = ct
        self.n_ignored = 0
        self.n_nonfinite = 0
        self.n_scored = 0
        self.sum_loss = 0.0
        self.sum_weight = 0.0
        self.correct = dict.fromkeys(ks, 0)
        self.sum_conf = 0.0
        self.bin_counts = np.zeros(bins, np.int64)
        self.bin_conf = np.zeros(bins, np.float64)
        self.bin_correct = np.zeros(bins, np.float64)

    def add(self, nll, conf, rank, y, valid) -> None:
        finite = np.isfinite(nll)
        self.n_ignored += int(valid.size - np.count_nonzero(valid))
        self.n_nonfinite += int(np.count_nonzero(valid & ~finite))
        keep = valid & finite
        if keep.all():
            nll_k, conf_k, rank_k, y_k = nll, conf, rank, y
        else:
            nll_k, conf_k, rank_k, y_k = nll[keep], conf[keep], rank[keep], y[keep]
        self.n_scored += len(nll_k)
        if self.class_weight is None:
            self.sum_loss += float(np.sum(nll_k, dtype=np.float64))
            self.sum_weight += len(nll_k)
        else:
            w = self.class_weight[y_k]  # (n,) float64
            self.sum_loss += float(np.dot(w, nll_k.astype(np.float64)))
            self.sum_weight += float(np.sum(w))
        for k in self.ks:
            self.correct[k] += int(np.count_nonzero(rank_k < k))
        conf64 = conf_k.astype(np.float64)
        hit = (rank_k < 1).astype(np.float64)
        b = np.minimum((conf64 * self.bins).astype(np.int64), self.bins - 1)  # [i/B, (i+1)/B)
        self.sum_conf += float(np.sum(conf64))
        self.bin_counts += np.bincount(b, minlength=self.bins)
        self.bin_conf += np.bincount(b, weights=conf64, minlength=self.bins)
        self.bin_correct += np.bincount(b, weights=hit, minlength=self.bins)

    def result(self, n_samples: int, losses) -> ScoreResult:
        n = self.n_scored
        if not self.sum_weight:
            # Nothing scored: no row left, or rows whose target weights sum to 0 (the loss is
            # then 0/0). Every metric is NaN, accuracy and calibration too, and the bins are
            # empty, so that no metric describes rows the loss does not.
            n = 0
            self.correct = dict.fromkeys(self.ks, 0)
            self.bin_counts[:] = 0
            self.bin_conf[:] = 0.0
            self.bin_correct[:] = 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = ieee_divide(self.sum_loss, self.sum_weight)
            bin_conf = self.bin_conf / self.bin_counts
            bin_acc = self.bin_correct / self.bin_counts
        if n:
            gaps = np.abs(bin_acc - bin_conf)
            ece = float(np.sum(self.bin_counts[self.bin_counts > 0] * gaps[self.bin_counts > 0]))
            ece /= n
        else:
            ece = math.nan
        return ScoreResult(
            n_samples=n_samples,
            n_ignored=self.n_ignored,
            n_nonfinite=self.n_nonfinite,
            cross_entropy=mean,
            cross_entropy_bits=mean / _LN2,
            perplexity=math.exp(mean) if mean < 709.0 else (math.inf if mean > 0 else mean),
            top_k_accuracy={k: (c / n if n else math.nan) for k, c in self.correct.items()},
            ece=ece,
            mean_confidence=self.sum_conf / n if n else math.nan,
            bin_edges=np.linspace(0.0, 1.0, self.bins + 1),
            bin_counts=self.bin_counts,
            bin_confidence=bin_conf,
            bin_accuracy=bin_acc,
            weighted=self.class_weight is not None,
            per_sample=losses,
        )

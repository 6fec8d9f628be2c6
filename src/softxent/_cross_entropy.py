"""cross_entropy, nll_loss and the fused cross_entropy_with_grad (NumPy, torch semantics)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from softxent import _blocks, _kernels, _native
from softxent._blocks import RowBlocks
from softxent._output_cache import empty_like
from softxent._reduction import Loss, mean_scale, reduce_losses, target_weights
from softxent._rowwise import compute_dtype, for_each_block, work_buffer
from softxent._validation import (
    Reduction,
    as_array,
    as_class_indices,
    as_class_weight,
    as_float_array,
    as_grad_output,
    check_loss_options,
    class_axis,
    class_index_error,
    is_class_index_target,
    probability_target,
)

__all__ = [
    "CrossEntropyCall",
    "CrossEntropyTargets",
    "LossAndGrad",
    "cross_entropy",
    "cross_entropy_targets",
    "cross_entropy_with_grad",
    "nll_loss",
    "row_grad_scale",
    "row_losses",
]


class LossAndGrad(NamedTuple):
    """The result of :func:`cross_entropy_with_grad`."""

    loss: Loss  #: ndarray for reduction="none", else a NumPy scalar
    grad: np.ndarray  #: d(loss)/d(logits), shape and dtype of the logits


@dataclass(frozen=True)
class CrossEntropyTargets:
    """The validated targets and options of a cross-entropy call: all but the logits.

    Rows are the samples: the positions of the logits without the class axis, flattened in
    C order. Built by :func:`cross_entropy_targets`, run by :func:`row_losses`.
    """

    num_classes: int
    reduction: Reduction
    smoothing: float
    out_dtype: np.dtype  # dtype of the loss
    ct: np.dtype  # compute dtype
    class_weight: np.ndarray | None  # (C,) in ct
    denominator: float  # of "mean"
    # class-index targets
    y: np.ndarray | None = None  # (rows,) int64, ignored rows hold 0 (unless `as_given`)
    valid: np.ndarray | None = None  # (rows,) bool, None when nothing is ignored
    wy: np.ndarray | None = None  # (rows,) target weight, 0 when ignored; None: all ones
    # Set (to ignore_index) when `y` holds the checked indices as given, contiguous int64:
    # its entries equal to ignore_index are the ignored rows, the others weigh
    # class_weight[y], and `valid` and `wy` are None. The native kernel reads them so;
    # `prepared` makes the arrays above for the rest.
    as_given: int | None = None
    # probability targets
    t: np.ndarray | None = None  # the logits' shape

    @cached_property
    def prepared(self) -> CrossEntropyTargets:
        """These targets with ``y``, ``valid`` and ``wy`` as documented (ignored rows of
        ``y`` as 0), as the NumPy kernels take them; ``self`` when they already are."""
        if self.as_given is None or self.y is None:
            return self
        raw, ignore_index, w = self.y, self.as_given, self.class_weight
        ignored = int(raw.size - np.count_nonzero(raw != ignore_index))
        filled = _native.fill_class_targets(raw, ignore_index, w, self.num_classes, ignored)
        if filled is None:  # the core was switched off after these targets were made
            y, valid = as_class_indices(raw, self.num_classes, ignore_index)
            filled = y, valid, target_weights(y, valid, w, self.ct)[0]
        y, valid, wy = filled
        return replace(self, y=y, valid=valid, wy=wy, as_given=None)

    def rows(self, lo: int, hi: int) -> CrossEntropyTargets:
        """The targets of rows ``[lo, hi)`` (for probability targets of ``(rows, C)`` logits),
        for running the logits of those rows alone; the denominator stays the whole call's."""

        def part(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[lo:hi]

        return replace(
            self, y=part(self.y), valid=part(self.valid), wy=part(self.wy), t=part(self.t)
        )


def cross_entropy_targets(
    target: Any,
    t: np.ndarray,
    is_index: bool,
    weight: Any,
    logits_dtype: np.dtype,
    num_classes: int,
    options: tuple[Reduction, float, int],
    weight_name: str = "weight",
) -> CrossEntropyTargets:
    """The targets of a call, validated once: ``t`` is ``target`` as an array, of the kind
    ``is_index`` (see ``_validation.is_class_index_target``); ``weight`` the class weights
    as given; ``options`` the checked ``(reduction, label_smoothing, ignore_index)``.

    Class indices are flattened and range-checked, each row gets its target weight and
    the mean its denominator; probability targets set the loss dtype by promotion.
    """
    reduction, smoothing, ignore_index = options
    if is_index:
        ct = compute_dtype(logits_dtype)
        class_weight = as_class_weight(weight, num_classes, ct, name=weight_name)
        return _class_index_targets(
            t, class_weight, ct,
            CrossEntropyTargets(
                num_classes, reduction, smoothing, logits_dtype, ct, class_weight, 0.0
            ),
            ignore_index,
        )  # fmt: skip
    t, out_dtype = probability_target(target, t, weight, logits_dtype)
    ct = compute_dtype(out_dtype)
    class_weight = as_class_weight(weight, num_classes, ct, name=weight_name)
    return CrossEntropyTargets(
        num_classes, reduction, smoothing, out_dtype, ct, class_weight,
        float(t.size // num_classes), t=t,
    )  # fmt: skip


def _class_index_targets(
    t: np.ndarray,
    class_weight: np.ndarray | None,
    ct: np.dtype,
    base: CrossEntropyTargets,
    ignore_index: int,
) -> CrossEntropyTargets:
    """``base`` with the class indices ``t``, checked, and the "mean" denominator.

    Contiguous int64 indices take the native core's one pass, which checks the range,
    counts the ignored entries and sums the targets' class weights; they are kept as given
    (``as_given``), since the native kernel finds each row's weight and whether it is
    ignored as it reads the row (at a million targets, writing and reading back the
    prepared arrays took a fifth of a weighted forward call). The rest, or without the
    core: ``as_class_indices`` and ``target_weights``.
    """
    flat = t.reshape(-1)
    num_classes = base.num_classes
    checked = None
    if flat.dtype == np.int64 and flat.size and flat.flags.c_contiguous and flat.flags.aligned:
        checked = _native.check_class_targets(flat, num_classes, ignore_index, class_weight)
    if checked is None:
        y, valid = as_class_indices(t, num_classes, ignore_index)
        wy, denominator = target_weights(y, valid, class_weight, ct)
        return replace(base, denominator=denominator, y=y, valid=valid, wy=wy)
    first_bad, ignored, weight_total = checked
    if first_bad >= 0:
        position = np.unravel_index(first_bad, t.shape)
        raise class_index_error(
            "target", position, int(flat[first_bad]), num_classes, ignore_index
        )
    denominator = float(flat.size - ignored) if class_weight is None else weight_total
    as_given = None if ignored == 0 and class_weight is None else ignore_index
    return replace(base, denominator=denominator, y=flat, as_given=as_given)


class CrossEntropyCall(NamedTuple):
    """A validated cross-entropy call: the logits, their class axis and the targets."""

    x: np.ndarray  # logits
    axis: int
    batch_shape: tuple[int, ...]  # the loss shape of reduction="none"
    targets: CrossEntropyTargets

    @classmethod
    def of(cls, x: np.ndarray, axis: int, targets: CrossEntropyTargets) -> CrossEntropyCall:
        """The call on logits ``x`` (classes along ``axis``) whose ``targets`` are checked."""
        return cls(x, axis, x.shape[:axis] + x.shape[axis + 1 :], targets)

    def loss(self, grad: np.ndarray | None = None, grad_output: Any = None) -> Loss:
        """The reduced loss; with ``grad`` (the logits' shape, or ``x`` itself to compute in
        place) also the gradient of ``grad_output`` times the loss, written into ``grad``."""
        p = self.targets
        g_rows = None if grad is None else row_grad_scale(grad_output, p, self.batch_shape)
        return self.reduce(row_losses(self.x, self.axis, p, grad, g_rows))

    def reduce(self, losses: np.ndarray) -> Loss:
        """The flat per-row ``losses`` reduced as the call asks (torch's rules)."""
        p = self.targets
        return reduce_losses(losses, p.reduction, p.denominator, p.out_dtype, self.batch_shape)


def _prepare(
    logits, target, axis, weight, ignore_index, reduction, label_smoothing, name="logits"
) -> CrossEntropyCall:
    x = as_float_array(logits, name)
    axis, num_classes = class_axis(x, axis, name)
    options = check_loss_options(reduction, label_smoothing, ignore_index)
    batch_shape = x.shape[:axis] + x.shape[axis + 1 :]
    t = as_array(target, "target")
    is_index = is_class_index_target(
        t, options[2],
        index_shape=batch_shape, index_note=f"{name} {x.shape} without axis {axis}",
        prob_shape=x.shape, prob_note=f"the shape of {name}",
    )  # fmt: skip
    targets = cross_entropy_targets(target, t, is_index, weight, x.dtype, num_classes, options)
    return CrossEntropyCall(x, axis, batch_shape, targets)


def row_losses(
    x: np.ndarray,
    axis: int,
    p: CrossEntropyTargets,
    grad: np.ndarray | None = None,
    g_rows: Any = None,
) -> np.ndarray:
    """Per-row losses of the logits ``x`` (classes along ``axis``) for the validated targets
    ``p`` of its rows (flat, compute dtype), with no further checks; fills ``grad`` (the
    logits' shape, or ``x`` itself to compute in place) when given, scaled per row by
    ``g_rows`` (a scalar or a (rows,) array of ``p.ct``)."""
    rows = x.size // p.num_classes
    if rows == 0:
        return np.empty(0, p.ct)
    if p.t is None and x.ndim == 2 and axis == 1 and _fits_one_block(x, p):
        return _run_small(x, p, grad, g_rows)
    losses = np.empty(rows, p.ct)
    arrays = [a for a in (x, p.t, grad) if a is not None]  # logits, [targets], [gradient]
    blocks = RowBlocks(arrays, axis)
    grad_index = len(arrays) - 1
    in_place = grad is x  # then the logits must survive the exponentials
    g_is_rows = isinstance(g_rows, np.ndarray)
    native = _native.takes(*arrays)  # then the NumPy kernels' scratch is not needed

    if p.t is None:
        # A second scratch block serves weighted smoothing and the float16 gradient store.
        needs_work2 = bool(p.smoothing and p.class_weight is not None) or (
            grad is not None and grad.dtype != p.ct
        )
        options = _index_options(p)
        operands = _NativeIndexOperands(p, g_rows)

        def body(task, scratch, consts):
            lo, hi = task.row0, task.row0 + task.stop - task.start
            ob = blocks.block(grad_index, task) if grad is not None else None
            if native and operands.run(blocks.block(0, task), lo, hi, losses[lo:hi], ob):
                return  # the native kernel gives ignored rows a loss of exactly 0 itself
            q = p.prepared  # made once (a race at worst makes it twice, the same)
            assert q.y is not None
            valid = None if q.valid is None else q.valid[lo:hi]
            losses[lo:hi] = _kernels.ce_index_block(
                blocks.block(0, task),
                q.y[lo:hi],
                None if q.wy is None else q.wy[lo:hi],
                valid,
                g_rows[lo:hi] if g_is_rows else g_rows,
                work_buffer(ob, scratch[0], p.ct, in_place),
                scratch[1] if needs_work2 else None,
                ob,
                consts,
                options,
            )
            if valid is not None:  # an ignored sample contributes exactly 0, whatever its logits
                losses[lo:hi][~valid] = 0

        num_scratch = 0 if native else 2 if needs_work2 else 1
    else:
        eps, num_classes, w = p.smoothing, p.num_classes, p.class_weight
        # q = w ((1 - eps) t + eps / C) = scale * t + offset
        scale = None if (w is None and not eps) else (1.0 - eps) * (1.0 if w is None else w)
        offset = None if not eps else (eps / num_classes) * (1.0 if w is None else w)
        # The native kernel reads targets of the logits' dtype (the common case).
        native = native and p.t.dtype == x.dtype and compute_dtype(x.dtype) == p.ct
        per_class = [_per_class(v, num_classes, p.ct) for v in (scale, offset)]
        g_native = _native.upstream(g_rows)

        def body(task, scratch, consts):
            lo, hi = task.row0, task.row0 + task.stop - task.start
            ob = blocks.block(grad_index, task) if grad is not None else None
            g_block = g_native[lo:hi] if isinstance(g_native, np.ndarray) else g_native
            if native and _native.ce_prob_block(
                blocks.block(0, task), blocks.block(1, task), g_block, *per_class,
                losses[lo:hi], ob,
            ):  # fmt: skip
                return
            losses[lo:hi] = _kernels.ce_prob_block(
                blocks.block(0, task),
                blocks.block(1, task),
                g_rows[lo:hi] if g_is_rows else g_rows,
                work_buffer(ob, scratch[0], p.ct, in_place),
                scratch[1],
                scratch[2],
                ob,
                consts,
                scale,
                offset,
            )

        num_scratch = 0 if native else 3
    for_each_block(blocks, p.ct, body, num_scratch)
    return losses


def row_grad_scale(
    grad_output: Any, p: CrossEntropyTargets, loss_shape: tuple[int, ...]
) -> float | np.ndarray:
    """The upstream gradient of each row's loss, as :func:`row_losses` takes it: for
    ``'none'`` ``grad_output`` per row (a (rows,) array of ``p.ct``, or 1.0), for the
    reduced losses one number, ``grad_output`` times d(reduced loss)/d(row loss) (for
    ``'mean'`` divided by the denominator of the whole call, whatever part of the rows
    is run). ``grad_output`` is checked against ``loss_shape``."""
    g = as_grad_output(grad_output, p.reduction, loss_shape)
    if p.reduction == "none":
        return 1.0 if g is None else g.reshape(-1).astype(p.ct, copy=False)
    return (1.0 if g is None else float(g)) * mean_scale(p.reduction, p.denominator)


class _NativeIndexOperands:
    """The per-row and per-class operands of a class-index call, as the native kernel
    takes them (contiguous, compute dtype), made once per call."""

    def __init__(self, p: CrossEntropyTargets, g_rows: np.ndarray | float | None) -> None:
        assert p.y is not None  # a class-index problem
        self.y = np.ascontiguousarray(p.y)
        self.wy = _native.contiguous(p.wy)
        self.valid = _native.contiguous(p.valid)
        self.g = _native.upstream(g_rows)
        self.class_weight = _native.contiguous(p.class_weight)
        self.smoothing = p.smoothing
        self.weight_sum = float(_index_options(p).weight_sum)
        self.as_given = p.as_given

    def run(self, xb: np.ndarray, lo: int, hi: int, loss: np.ndarray, grad) -> bool:
        """Rows ``lo:hi`` (the block ``xb``) into ``loss`` and ``grad``; False if not done."""
        return _native.ce_index_block(
            xb,
            self.y[lo:hi],
            None if self.wy is None else self.wy[lo:hi],
            None if self.valid is None else self.valid[lo:hi],
            self.g[lo:hi] if isinstance(self.g, np.ndarray) else self.g,
            self.class_weight,
            self.smoothing,
            self.weight_sum,
            loss,
            grad,
            self.as_given,
        )


def _per_class(value, num_classes: int, ct: np.dtype) -> np.ndarray | None:
    """A scalar or (C,) option as a contiguous (C,) array of ``ct`` (None stays None)."""
    if value is None:
        return None
    return np.ascontiguousarray(np.broadcast_to(np.asarray(value, dtype=ct), (num_classes,)))


def _index_options(p: CrossEntropyTargets) -> _kernels.IndexOptions:
    weight_sum = p.num_classes if p.class_weight is None else p.class_weight.sum()
    return _kernels.IndexOptions(p.smoothing, p.class_weight, float(weight_sum), p.num_classes)


def _fits_one_block(x: np.ndarray, p: CrossEntropyTargets) -> bool:
    return x.shape[0] <= _blocks.rows_per_block(p.num_classes, p.ct.itemsize)


def _run_small(
    x: np.ndarray, p: CrossEntropyTargets, grad: np.ndarray | None, g_rows
) -> np.ndarray:
    """:func:`row_losses` for (rows, C) class-index input that is one block: no thread hand-off.

    The same kernel as the blocked path; only the bookkeeping around it is skipped, which
    is most of the time of a call on a small input.
    """
    shape = x.shape
    losses = np.empty(shape[0], p.ct)
    if _NativeIndexOperands(p, g_rows).run(x, 0, shape[0], losses, grad):  # False: not taken
        return losses
    # In place, the logits must survive the exponentials: rows that overflow are redone.
    if grad is None or grad.dtype != p.ct or grad is x:
        work = np.empty(shape, p.ct)
    else:
        work = grad
    work2 = np.empty(shape, p.ct) if (p.smoothing and p.class_weight is not None) or (
        grad is not None and grad.dtype != p.ct
    ) else None  # fmt: skip
    consts = _kernels.make_consts(p.ct, p.num_classes, shape[0])
    p = p.prepared
    with np.errstate(all="ignore"):
        losses = _kernels.ce_index_block(
            x, p.y, p.wy, p.valid, g_rows, work, work2, grad, consts, _index_options(p)
        )
        if p.valid is not None:
            losses[~p.valid] = 0
    return losses


def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
) -> Loss:
    r"""Cross-entropy between ``softmax(logits)`` along ``axis`` and ``target``.

    With ``lp = log_softmax(logits)``, class weights ``w`` (ones by default), smoothing
    :math:`\varepsilon` and ``C`` classes, the loss of sample ``n`` is

    .. math::

        \ell_n = -\sum_c w_c\, q_{n,c}\, \mathrm{lp}_{n,c}, \qquad
        q_{n,c} = (1-\varepsilon)\, t_{n,c} + \varepsilon / C

    where ``t`` is the one-hot of the class index (or the given probabilities). For class
    indices the first term is computed as ``w[y] (logsumexp(x) - x[y])``, never forming
    ``log_softmax``.

    Parameters
    ----------
    logits : array_like of float16, float32 or float64
        Scores, classes along ``axis``, e.g. shape (N, C) with ``axis=-1`` or torch's
        (N, C, d1, ...) with ``axis=1``.
    target : array_like
        Integer class indices with the shape of ``logits`` without ``axis`` (any integer
        dtype), or floating probabilities with the shape of ``logits``.
    axis : int, default -1
        The class axis.
    weight : array_like of shape (C,), optional
        Finite weight per class (negative values are computed as torch does).
    ignore_index : int, default -100
        Class-index targets equal to it contribute nothing (not to the mean's
        denominator either). Must be negative with probability targets.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
    label_smoothing : float in [0, 1], default 0

    Returns
    -------
    ndarray or NumPy scalar
        ``'none'``: per-sample losses (shape of ``logits`` without ``axis``). Otherwise a
        scalar: the sum, or the mean ``sum_n l_n / sum_n w[y_n]`` over non-ignored samples
        (class indices) or ``sum_n l_n / N`` (probabilities). dtype: the logits' dtype for
        class indices; for probability targets the promotion of the ndarray arguments.

    Raises
    ------
    TypeError
        Integer/bool logits; float targets shaped like class indices; integer targets
        shaped like logits.
    ValueError
        Shape mismatch, target out of range (its position is named), bad weight, unknown
        reduction, axis out of range, empty class axis, ``label_smoothing`` outside
        [0, 1] or NaN, ``ignore_index >= 0`` with probability targets.

    Notes
    -----
    Equal to ``torch.nn.functional.cross_entropy(torch.from_numpy(np.moveaxis(logits,
    axis, 1)), torch.from_numpy(target), weight, ignore_index=ignore_index,
    reduction=reduction, label_smoothing=label_smoothing)``, including its special values
    (all targets ignored: 'mean' is NaN; a ``-inf`` logit on the target: ``+inf``; with
    smoothing any ``-inf`` logit in a valid row: ``+inf``; ``+inf`` or NaN logits: NaN),
    except that ``label_smoothing`` outside [0, 1] is an error (torch ignores negative and
    NaN values). float16 logits are computed in float32 and rounded once.

    Examples
    --------
    The 3x3 example of ``softxent demo``:

    >>> import numpy as np, softxent as sx
    >>> logits = np.array([[0.3, 0.1, 0.3], [0.9, 0.2, 0.9], [0.5, 0.4, 0.2]], np.float32)
    >>> float(sx.cross_entropy(logits, [1, 2, 0]))
    1.0413765907287598
    >>> sx.cross_entropy(logits, [1, 2, 0], reduction="none")
    array([1.2362868 , 0.91492397, 0.9729189 ], dtype=float32)
    """
    call = _prepare(logits, target, axis, weight, ignore_index, reduction, label_smoothing)
    return call.loss()


def cross_entropy_with_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    grad_output: ArrayLike | None = None,
    out: np.ndarray | None = None,
) -> LossAndGrad:
    r""":func:`cross_entropy` and its gradient with respect to ``logits``, in one pass.

    For class indices (smoothing :math:`\varepsilon`, weights ``w``, ``W = sum w``, upstream
    gradient :math:`g_n` of sample ``n``)

    .. math::

        \frac{\partial L}{\partial x_{n,c}} = g_n\Big[(1-\varepsilon)\, w_{y_n}
        (p_{n,c} - \delta_{c,y_n}) + \frac{\varepsilon}{C}(W p_{n,c} - w_c)\Big]

    and for probability targets :math:`g_n (p_{n,c} \sum_k w_k q_{n,k} - w_c q_{n,c})`,
    with ``p = softmax(logits)``.

    Parameters
    ----------
    logits, target, axis, weight, ignore_index, reduction, label_smoothing
        As in :func:`cross_entropy`.
    grad_output : array_like, optional
        The upstream gradient. For ``reduction='none'`` an array shaped like the loss (the
        result is the gradient of ``sum(grad_output * loss)``); otherwise a scalar.
        Default 1.
    out : ndarray, optional
        Where to write the gradient: an array of the logits' shape and dtype, or
        ``logits`` itself to compute in place with no logits-sized allocation.

    Returns
    -------
    LossAndGrad
        ``(loss, grad)``: the loss as :func:`cross_entropy` returns it, and the gradient
        (shape and dtype of ``logits``; ``out`` when given).

    Raises
    ------
    TypeError, ValueError
        As :func:`cross_entropy`; also a ``grad_output`` or ``out`` of the wrong shape or
        dtype.

    Notes
    -----
    Equal to torch's autograd gradient of ``F.cross_entropy`` with one deliberate
    difference: an ignored sample's gradient row is always 0, even when its logits hold
    NaN or ``-inf`` (torch gives NaN there, pytorch/pytorch#11551). When all target
    weights are 0 with ``reduction='mean'``, the non-ignored rows are NaN, as in torch.

    Examples
    --------
    >>> import numpy as np, softxent as sx
    >>> logits = np.array([[0.3, 0.1, 0.3], [0.9, 0.2, 0.9], [0.5, 0.4, 0.2]], np.float32)
    >>> loss, grad = sx.cross_entropy_with_grad(logits, [1, 2, 0])
    >>> grad.round(6)  # (softmax - one_hot) / 3
    array([[ 0.118257, -0.236513,  0.118257],
           [ 0.133516,  0.066302, -0.199818],
           [-0.207341,  0.114003,  0.093338]], dtype=float32)
    """
    call = _prepare(logits, target, axis, weight, ignore_index, reduction, label_smoothing)
    grad = _check_out(out, call.x)
    return LossAndGrad(call.loss(grad, grad_output), grad)


def _check_out(out: Any, x: np.ndarray) -> np.ndarray:
    if out is None:
        return empty_like(x)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != x.shape:
        raise ValueError(f"out must have the shape of logits {x.shape}, got shape {out.shape}")
    if out.dtype != x.dtype:
        raise TypeError(f"out must have the dtype of logits {x.dtype}, got dtype {out.dtype}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable, got a read-only array")
    if out is not x and np.may_share_memory(out, x):
        same_view = (
            out.__array_interface__["data"][0] == x.__array_interface__["data"][0]
            and out.strides == x.strides
        )
        if not same_view:
            raise ValueError(
                "out overlaps logits without being the same view; pass out=logits to "
                "compute in place, or a separate array"
            )
    return out


def nll_loss(
    log_probs: ArrayLike,
    target: ArrayLike,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
) -> Loss:
    r"""Negative log-likelihood of class-index targets, given log-probabilities.

    .. math::

        \ell_n = -w_{y_n}\, \mathrm{lp}_{n, y_n}, \qquad
        \text{mean} = \frac{\sum_n \ell_n}{\sum_n w_{y_n}} \;(\text{non-ignored } n)

    Parameters
    ----------
    log_probs : array_like of float16, float32 or float64
        Log-probabilities (e.g. from :func:`log_softmax`), classes along ``axis``. Not
        checked: like torch, the entries are just picked.
    target : array_like of int
        Class indices, shape of ``log_probs`` without ``axis``.
    axis, weight, ignore_index, reduction
        As in :func:`cross_entropy`.

    Returns
    -------
    ndarray or NumPy scalar
        dtype of ``log_probs``.

    Raises
    ------
    TypeError, ValueError
        As :func:`cross_entropy` (probability targets are not accepted here).

    Notes
    -----
    ``nll_loss(log_softmax(x, axis), y, ...) == cross_entropy(x, y, ...)``; equal to
    ``torch.nn.functional.nll_loss`` with the class axis moved to dim 1.

    Examples
    --------
    >>> import softxent as sx
    >>> float(sx.nll_loss([[-0.5, -1.0], [-2.0, -0.1]], [0, 1]))
    0.3
    """
    lp = as_float_array(log_probs, "log_probs")
    target = as_array(target, "target")
    if target.dtype.kind not in "iu":
        raise TypeError(
            f"target of nll_loss must hold integer class indices, got dtype {target.dtype}"
        )
    call = _prepare(lp, target, axis, weight, ignore_index, reduction, 0.0, name="log_probs")
    p, batch_shape = call.targets.prepared, call.batch_shape
    moved = np.moveaxis(call.x, call.axis, -1)
    rows = np.unravel_index(np.arange(math.prod(batch_shape)), batch_shape) if batch_shape else ()
    target_entries = (*rows, p.y)  # lp[n, y_n] for every row n
    picked = moved[target_entries].astype(p.ct)  # (rows,)
    with np.errstate(all="ignore"):
        losses = -picked if p.wy is None else -(p.wy * picked)
    if p.valid is not None:
        losses[~p.valid] = 0
    return call.reduce(losses)

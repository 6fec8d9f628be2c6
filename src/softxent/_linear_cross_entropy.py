"""The last linear layer and the cross-entropy fused, chunked over tokens, with gradients.

``loss = cross_entropy(hidden @ weight.T + bias, target)`` without the ``(N, V)`` logits:
the tokens are processed ``chunk_size`` rows at a time. Per chunk of rows ``[i, j)``::

    logits  = hidden[i:j] @ weight.T + bias          # (c, V) into one reused buffer
    d_logits = cross_entropy_with_grad(logits, ...)  # in place, over the same buffer
    d_hidden[i:j] = d_logits @ weight               # (c, D)
    d_weight     += d_logits.T @ hidden[i:j]         # (V, D)
    d_bias       += d_logits.sum(0)                  # (V,)

so the three matmuls of the unfused layer are done once each and the only ``(c, V)`` array
is the chunk buffer. The ``"mean"`` reduction needs its denominator (sum of the target
classes' weights) before the first chunk, so it is computed from the targets up front and
every chunk gets the gradient scale ``grad_output / denominator``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from softxent._cross_entropy import (
    CrossEntropyTargets,
    cross_entropy_targets,
    row_grad_scale,
    row_losses,
)
from softxent._reduction import Loss, reduce_losses
from softxent._rowwise import compute_dtype
from softxent._validation import (
    Reduction,
    as_array,
    as_float_array,
    check_chunk_size,
    check_loss_options,
    is_class_index_target,
)

__all__ = [
    "CHUNKS_PER_BATCH",
    "CHUNK_BYTES",
    "MIN_CHUNK_ROWS",
    "LinearLossAndGrads",
    "linear_cross_entropy",
    "linear_cross_entropy_with_grad",
]

#: Cap of one chunk's logits buffer (bytes, in the compute dtype): with V = 32000 float32
#: classes, 128 MiB / (32000 * 4 B) = 1048 tokens.
CHUNK_BYTES = 128 * 1024 * 1024

#: The chunk buffer is also at most 1/CHUNKS_PER_BATCH of the whole (N, V) logits: a batch is
#: split into at least this many chunks ...
CHUNKS_PER_BATCH = 4

#: ... of at least this many tokens (unless :data:`CHUNK_BYTES` allows fewer). Every chunk's
#: two matmuls with the weight read (and pack) all of it again and its ``d_weight`` is added
#: to the accumulator, all ``(V, D)``-sized work per chunk, so small chunks are slow.
MIN_CHUNK_ROWS = 256


def default_chunk_rows(num_classes: int, itemsize: int, num_rows: int | None = None) -> int:
    r"""Rows per chunk by default, for every linear layer (NumPy, torch, tensor parallel).

    .. math::

        r = \min\Big(\Big\lfloor \frac{B}{V s} \Big\rfloor,\;
            \max\Big(R, \Big\lceil \frac{N}{K} \Big\rceil\Big)\Big), \qquad
        c = \Big\lceil N \Big/ \Big\lceil \frac{N}{r} \Big\rceil \Big\rceil

    with ``B`` = :data:`CHUNK_BYTES`, ``s`` = ``itemsize`` (of the compute dtype), ``V`` =
    ``num_classes``, ``N`` = ``num_rows``, ``K`` = :data:`CHUNKS_PER_BATCH` and ``R`` =
    :data:`MIN_CHUNK_ROWS`, at least 1: one chunk's ``(c, V)`` logits take at most
    128 MiB, and at most a quarter of the whole logits once ``N >= K R`` (1024 tokens);
    ``c`` splits the ``N`` tokens into as many chunks as ``r`` would, of nearly equal size,
    since a short last chunk is slow per token (OpenBLAS's ``d_logits @ weight`` is, at a
    few hundred rows). Without ``num_rows``: ``floor(B / (V s))``, at least 1.

    >>> default_chunk_rows(32000, 4)  # 128 MiB / (32000 classes * 4 bytes)
    1048
    >>> default_chunk_rows(32000, 4, num_rows=4096)  # a quarter of the tokens
    1024
    >>> default_chunk_rows(131072, 4, num_rows=1024)  # 128 MiB and a quarter: 256 tokens
    256
    >>> default_chunk_rows(32000, 4, num_rows=100_000)  # 96 chunks of <= 1048 rows
    1042
    """
    rows = max(1, CHUNK_BYTES // (max(1, num_classes) * itemsize))
    if not num_rows:
        return rows
    rows = min(rows, max(MIN_CHUNK_ROWS, -(-num_rows // CHUNKS_PER_BATCH)))
    chunks = -(-num_rows // rows)
    return -(-num_rows // chunks)


#: Bytes of one vocabulary slice of a chunk's ``d_weight`` before it is added to the
#: accumulator: small enough to stay in cache, large enough for full-speed matmuls.
_SLICE_BYTES = 2 * 1024 * 1024


class LinearLossAndGrads(NamedTuple):
    """The result of :func:`linear_cross_entropy_with_grad`."""

    loss: Loss  #: ndarray (N,) for reduction="none", else a NumPy scalar
    d_hidden: np.ndarray  #: (N, D), dtype of ``hidden``
    d_weight: np.ndarray  #: (V, D), dtype of ``weight``
    d_bias: np.ndarray | None  #: (V,), dtype of ``bias``; None when there is no bias


class _Layer(NamedTuple):
    """A validated call."""

    hidden: np.ndarray  # (N, D)
    weight: np.ndarray  # (V, D), compute dtype
    bias: np.ndarray | None  # (V,), compute dtype
    dtype: np.dtype  # of hidden / weight / bias and of the gradients
    ct: np.dtype  # compute dtype of the logits and the gradient accumulators
    chunk: int  # rows per chunk
    targets: CrossEntropyTargets  # of all N rows; its ct may be wider (float64 targets)


def _prepare(
    hidden, weight, target, bias, class_weight, ignore_index, reduction, smoothing, chunk_size
) -> _Layer:
    h, w, b = _layer_arrays(hidden, weight, bias)
    n, v = h.shape[0], w.shape[0]
    options = check_loss_options(reduction, smoothing, ignore_index)
    t = as_array(target, "target")
    is_index = is_class_index_target(
        t, options[2],
        index_shape=(n,), index_note="one per row of hidden",
        prob_shape=(n, v), prob_note="the shape of the logits hidden @ weight.T",
    )  # fmt: skip
    # The targets of the full (N, V) logits, as cross_entropy validates them, once.
    targets = cross_entropy_targets(
        target, t, is_index, class_weight, h.dtype, v, options, weight_name="class_weight"
    )
    ct = compute_dtype(h.dtype)
    chunk = check_chunk_size(chunk_size) or default_chunk_rows(v, ct.itemsize, n)
    chunk = max(1, min(chunk, n))
    # float16 layers: the matmuls run in float32 (one copy of the weight); see the docstring.
    w_ct = w.astype(ct, copy=False)
    b_ct = None if b is None else b.astype(ct, copy=False)
    return _Layer(h, w_ct, b_ct, h.dtype, ct, chunk, targets)


def _layer_arrays(
    hidden: Any, weight: Any, bias: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``hidden`` (N, D), ``weight`` (V, D) and ``bias`` (V,) or None, checked to fit."""
    h = as_float_array(hidden, "hidden")
    w = as_float_array(weight, "weight")
    if h.ndim != 2:
        raise ValueError(
            f"hidden must be 2-D (N, D), got shape {h.shape}; reshape batch dimensions "
            "into N first"
        )
    if w.ndim != 2:
        raise ValueError(
            f"weight must be 2-D (V, D) like torch's Linear.weight, got shape {w.shape}"
        )
    d = h.shape[1]
    v = w.shape[0]
    if w.shape[1] != d:
        raise ValueError(
            f"weight must have shape (V, {d}) to match hidden {h.shape} (D = {d}), "
            f"got shape {w.shape}"
        )
    if v == 0:
        raise ValueError(f"weight has 0 rows (classes), shape {w.shape}; at least 1 is needed")
    if w.dtype != h.dtype:
        raise TypeError(
            f"weight must have the dtype of hidden ({h.dtype}), got dtype {w.dtype}; "
            "cast one of them (like torch, no silent promotion of the layer)"
        )
    if bias is None:
        return h, w, None
    b = as_float_array(bias, "bias")
    if b.shape != (v,):
        raise ValueError(f"bias must have shape ({v},), one entry per class, got shape {b.shape}")
    if b.dtype != h.dtype:
        raise TypeError(f"bias must have the dtype of hidden ({h.dtype}), got dtype {b.dtype}")
    return h, w, b


def _chunk_logits(
    layer: _Layer, i: int, j: int, buffer: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``hidden[i:j] @ weight.T + bias`` written into ``buffer[: j - i]``; also the hidden rows."""
    h = layer.hidden[i:j].astype(layer.ct, copy=False)  # (c, D)
    logits = buffer[: j - i]  # (c, V) view of the reused buffer
    np.matmul(h, layer.weight.T, out=logits)
    if layer.bias is not None:
        logits += layer.bias
    if layer.dtype != layer.ct:
        # float16 layers: the logits are the layer's output, rounded to float16 once, as
        # torch's F.linear gives them (and as softxent.torch does on every device).
        logits[...] = logits.astype(layer.dtype)
    return logits, h


def _zero_ignored_rows(layer: _Layer, i: int, h: np.ndarray) -> np.ndarray:
    """``h`` (the hidden rows ``[i, i + len(h))``) with the rows of ignored tokens zeroed.

    An ignored token's ``d_logits`` row is 0, but padding tokens may hold NaN or inf hidden
    states, and ``0 * NaN`` in ``d_logits.T @ h`` would poison every entry of ``d_weight``.
    Only chunks holding an ignored token pay for the ``(c, D)`` copy (``1 / V`` of the
    chunk's matmuls); ``h`` itself may be a view of the caller's array, so it is not written.
    """
    valid_all = layer.targets.prepared.valid
    if valid_all is None:  # no token is ignored
        return h
    valid = valid_all[i : i + len(h)]  # (c,)
    return h if valid.all() else np.where(valid[:, None], h, 0)  # (c, D)


def linear_cross_entropy(
    hidden: ArrayLike,
    weight: ArrayLike,
    target: ArrayLike,
    bias: ArrayLike | None = None,
    *,
    class_weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    chunk_size: int | None = None,
) -> Loss:
    r"""Cross-entropy of the linear layer ``hidden @ weight.T + bias``, without its logits.

    .. math::

        L = \mathrm{CE}(H W^\top + b,\; y)

    with :math:`\mathrm{CE}` exactly :func:`softxent.cross_entropy` (classes last). The
    logits are computed ``chunk_size`` rows at a time into one reused buffer, so memory
    stays bounded however large ``N`` is.

    Parameters
    ----------
    hidden : array_like of float16, float32 or float64, shape (N, D)
        The layer's input (e.g. the last hidden states, one row per token).
    weight : array_like, shape (V, D), dtype of ``hidden``
        The layer's weight in torch's ``Linear`` layout (one row per class).
    target : array_like
        Integer class indices of shape (N,), or floating probabilities of shape (N, V).
    bias : array_like, shape (V,), dtype of ``hidden``, optional
        The layer's bias.
    class_weight : array_like of shape (V,), optional
        Finite weight per class (negative values too): torch's ``weight`` argument of
        ``F.cross_entropy``, renamed so that it cannot be confused with the layer's weight.
    ignore_index, reduction, label_smoothing
        As in :func:`softxent.cross_entropy`.
    chunk_size : int, optional
        Rows per chunk. Default (:func:`default_chunk_rows`): a quarter of the tokens,
        at least 256, at most as many as fit in 128 MiB of logits in the compute dtype.

    Returns
    -------
    ndarray or NumPy scalar
        As ``cross_entropy(hidden @ weight.T + bias, target, ...)``: the (N,) losses for
        ``'none'``, else a scalar; dtype of ``hidden`` (class indices) or the promotion with
        the target's (probabilities).

    Raises
    ------
    TypeError
        Non-float ``hidden``/``weight``/``bias``, ``weight`` or ``bias`` of another dtype
        than ``hidden``, a target that is neither integer nor floating, a non-int
        ``chunk_size``.
    ValueError
        Shapes that do not fit together, ``chunk_size < 1``, and everything
        :func:`softxent.cross_entropy` rejects (targets out of range, bad class weights...).

    Notes
    -----
    Equal to ``torch.nn.functional.cross_entropy(F.linear(hidden, weight, bias), target,
    weight=class_weight, ignore_index=ignore_index, reduction=reduction,
    label_smoothing=label_smoothing)`` with torch's special values.

    float16 layers (the same rule as :mod:`softxent.torch` on every device): the logits
    are the layer's output rounded to float16 once (as ``F.linear`` gives them), the
    cross-entropy is computed in float32, the input gradient is ``d_logits`` rounded to
    float16 times the weight (as ``F.linear``'s backward), and the weight and bias
    gradients are accumulated in float32 over the chunks and rounded once. The matmuls
    run in float32 (a float32 copy of ``weight`` is made).

    Examples
    --------
    >>> import numpy as np, softxent as sx
    >>> rng = np.random.default_rng(0)
    >>> hidden, weight = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    >>> target = np.array([0, 3, 1, 1, 2])
    >>> fused = sx.linear_cross_entropy(hidden, weight, target, chunk_size=2)
    >>> bool(np.isclose(fused, sx.cross_entropy(hidden @ weight.T, target), rtol=1e-14))
    True
    """
    layer = _prepare(
        hidden, weight, target, bias, class_weight, ignore_index, reduction, label_smoothing,
        chunk_size,
    )  # fmt: skip
    return _reduce(layer, _run(layer, None))


def linear_cross_entropy_with_grad(
    hidden: ArrayLike,
    weight: ArrayLike,
    target: ArrayLike,
    bias: ArrayLike | None = None,
    *,
    class_weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    chunk_size: int | None = None,
    grad_output: ArrayLike | None = None,
) -> LinearLossAndGrads:
    r""":func:`linear_cross_entropy` and its gradients for the layer's three inputs.

    With ``G = dL/dZ`` the gradient of the loss for the logits ``Z = H W^T + b`` (as
    :func:`softxent.cross_entropy_with_grad` gives it),

    .. math::

        \frac{\partial L}{\partial H} = G W, \qquad
        \frac{\partial L}{\partial W} = G^\top H, \qquad
        \frac{\partial L}{\partial b} = \textstyle\sum_n G_{n,:}

    accumulated chunk by chunk: ``G`` only ever exists one chunk of rows at a time, and it
    is computed in place in the chunk's logits buffer.

    Parameters
    ----------
    hidden, weight, target, bias, class_weight, ignore_index, reduction, label_smoothing
        As in :func:`linear_cross_entropy`.
    chunk_size : int, optional
        Rows per chunk; default as in :func:`linear_cross_entropy`.
    grad_output : array_like, optional
        The upstream gradient: shape (N,) for ``reduction='none'`` (the gradients are those
        of ``sum(grad_output * loss)``), a scalar otherwise. Default 1.

    Returns
    -------
    LinearLossAndGrads
        ``(loss, d_hidden, d_weight, d_bias)``: the loss as :func:`linear_cross_entropy`
        returns it; the gradients with the shapes and dtype of ``hidden``, ``weight`` and
        ``bias`` (``d_bias`` is None without a bias).

    Raises
    ------
    TypeError, ValueError
        As :func:`linear_cross_entropy`; also a ``grad_output`` of the wrong shape or dtype.

    Notes
    -----
    Memory: besides the inputs and the returned gradients, one ``(chunk_size, V)`` buffer
    of the compute dtype (by default at most a quarter of the ``(N, V)`` logits and at
    most 128 MiB) and per-token vectors. Each chunk's contribution to ``d_weight`` is
    added one vocabulary slice at a time (NumPy's matmul cannot accumulate into its
    output) through rows of ``d_hidden`` not written yet. Gradients are accumulated in
    float32 for float16/float32 layers and in float64 for float64 layers; float16
    gradients are rounded once at the end.

    The exact torch equivalent (``hidden``, ``weight``, ``bias`` requiring grad)::

        loss = F.cross_entropy(F.linear(hidden, weight, bias), target, weight=class_weight,
                               ignore_index=ignore_index, reduction=reduction,
                               label_smoothing=label_smoothing)
        loss.backward(grad_output)

    An ignored token's gradient row is 0 even when its logits are not finite (torch: NaN).

    Examples
    --------
    >>> import numpy as np, softxent as sx
    >>> rng = np.random.default_rng(0)
    >>> hidden, weight, bias = rng.normal(size=(5, 3)), rng.normal(size=(4, 3)), np.zeros(4)
    >>> target = np.array([0, 3, 1, 1, 2])
    >>> loss, d_hidden, d_weight, d_bias = sx.linear_cross_entropy_with_grad(
    ...     hidden, weight, target, bias, chunk_size=2)
    >>> _, d_logits = sx.cross_entropy_with_grad(hidden @ weight.T + bias, target)
    >>> bool(np.allclose(d_weight, d_logits.T @ hidden, rtol=1e-13, atol=0))
    True
    >>> bool(np.allclose(d_bias, d_logits.sum(0), rtol=1e-13, atol=0))
    True
    """
    layer = _prepare(
        hidden, weight, target, bias, class_weight, ignore_index, reduction, label_smoothing,
        chunk_size,
    )  # fmt: skip
    # For "mean" every token's gradient is divided by the denominator of the whole batch,
    # known only from all the targets, never from one chunk.
    g_rows = row_grad_scale(grad_output, layer.targets, (layer.hidden.shape[0],))
    grads = _Grads(layer, g_rows)
    losses = _run(layer, grads)
    d_hidden, d_weight, d_bias = grads.result()
    return LinearLossAndGrads(_reduce(layer, losses), d_hidden, d_weight, d_bias)


def _reduce(layer: _Layer, losses: np.ndarray) -> Loss:
    p = layer.targets
    return reduce_losses(losses, p.reduction, p.denominator, p.out_dtype, losses.shape)


def _run(layer: _Layer, grads: _Grads | None) -> np.ndarray:
    """Per-token losses (N,) of the compute dtype, chunk by chunk; with ``grads``, each
    chunk's ``d_logits`` (computed in place in the logits buffer) is added to them."""
    n, v = layer.hidden.shape[0], layer.weight.shape[0]
    targets = layer.targets
    losses = np.empty(n, targets.ct)  # (N,)
    buffer = np.empty((min(layer.chunk, n), v), layer.ct)  # (c, V), the only logits array
    with np.errstate(all="ignore"):  # inf/NaN logits follow torch's semantics, no warnings
        for i in range(0, n, layer.chunk):
            j = min(n, i + layer.chunk)
            logits, h = _chunk_logits(layer, i, j, buffer)
            if grads is None:
                losses[i:j] = row_losses(logits, 1, targets.rows(i, j))
                continue
            g = grads.g_rows if isinstance(grads.g_rows, float) else grads.g_rows[i:j]
            losses[i:j] = row_losses(logits, 1, targets.rows(i, j), logits, g)
            grads.add(i, logits, h)
    return losses


class _Grads:
    """The gradients of the layer's three inputs, accumulated chunk by chunk from each
    chunk's ``d_logits``, in the compute dtype (returned in the layer's dtype)."""

    def __init__(self, layer: _Layer, g_rows: float | np.ndarray) -> None:
        n, d = layer.hidden.shape
        v = layer.weight.shape[0]
        ct = layer.ct
        self.layer = layer
        self.g_rows = g_rows  # (N,) upstream gradient of each token's loss, or one for all
        self.d_hidden = np.empty((n, d), ct)  # (N, D)
        # Zeros for N = 0 (no chunk); calloc: pages the first chunk writes cost nothing more.
        self.d_weight = np.zeros((v, d), ct)  # (V, D)
        self.d_bias = None if layer.bias is None else np.zeros(v, ct)  # (V,)
        self.s_rows = max(1, min(v, _SLICE_BYTES // max(1, d * ct.itemsize)))
        self.ones = np.ones(min(layer.chunk, n), ct)  # (c,) column sums by BLAS (faster)

    def add(self, i: int, d_logits: np.ndarray, h: np.ndarray) -> None:
        """Add the chunk of rows ``[i, i + len(h))``: its ``d_logits`` (c, V), hidden ``h``."""
        layer, j = self.layer, i + len(h)
        # d_weight and d_bias first: the rows [i, N) of d_hidden are not written yet, so
        # they hold the slices of the chunk's d_weight on their way to the accumulator.
        self._add_weight_grads(i, d_logits, _zero_ignored_rows(layer, i, h))
        if layer.dtype != layer.ct:  # F.linear's backward takes d_logits in the layer's dtype
            rounded = d_logits.astype(layer.dtype).astype(layer.ct)
            np.matmul(rounded, layer.weight, out=self.d_hidden[i:j])
        else:
            np.matmul(d_logits, layer.weight, out=self.d_hidden[i:j])  # (c, D)

    def _add_weight_grads(self, i: int, d_logits: np.ndarray, h: np.ndarray) -> None:
        """``d_weight += d_logits.T @ h`` and ``d_bias += d_logits.sum(0)`` (the first chunk
        writes ``d_weight``). NumPy's matmul cannot accumulate into its output, so a later
        chunk's ``d_weight`` goes to the accumulator one vocabulary slice at a time through a
        cache-sized scratch: rows of ``d_hidden`` not written yet, no memory of its own."""
        if self.d_bias is not None:
            self.d_bias += self.ones[: len(h)] @ d_logits  # (V,)
        if i == 0:
            np.matmul(d_logits.T, h, out=self.d_weight)  # (V, D)
            return
        v, d = self.d_weight.shape
        free = self.d_hidden[i:].reshape(-1)  # ((N - i) * D,), a view: d_hidden is C-ordered
        # >= 1 row: the chunk's own rows are free (D = 0: empty slices)
        s = min(self.s_rows, len(free) // d) if d else self.s_rows
        for k in range(0, v, s):
            e = min(v, k + s)
            part = free[: (e - k) * d].reshape(e - k, d)  # (s, D)
            np.matmul(d_logits[:, k:e].T, h, out=part)
            self.d_weight[k:e] += part

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(d_hidden, d_weight, d_bias)`` in the layer's dtype (rounded once for float16)."""
        dt = self.layer.dtype
        d_bias = None if self.d_bias is None else self.d_bias.astype(dt, copy=False)
        return self.d_hidden.astype(dt, copy=False), self.d_weight.astype(dt, copy=False), d_bias

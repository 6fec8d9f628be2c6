"""The ``linear`` suite: NumPy's fused output layer against the three matmuls it contains.

``softxent.linear_cross_entropy_with_grad(hidden, weight, target, bias)`` (forward and the
gradients for hidden, weight and bias) at ``(N, D, V)``, default ``(4096, 512, 32000)``
float32, against

* **matmuls** (the floor): ``x @ W.T``, ``g @ W`` and ``g.T @ x`` alone, into preallocated
  outputs: the best case for any implementation, fused or not, since the loss and
  gradient passes come on top;
* **numpy_unfused**: the layer written out with the full ``(N, V)`` logits: the matmul,
  ``softxent.cross_entropy_with_grad(logits, y, out=logits)`` and the two gradient matmuls.

Peak extra memory by :mod:`tracemalloc` (all of it is NumPy's), beyond the inputs and the
returned loss and gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

import softxent as sx
from softxent._bench.results import SOFTXENT, ImplRow
from softxent._bench.suites import Timed
from softxent._bench.timing import median_seconds, peak_extra_bytes

DEFAULT_LINEAR_SHAPE = (4096, 512, 32000)
QUICK_LINEAR_SHAPE = (64, 32, 1000)
UNFUSED = "numpy_unfused"
IMPLEMENTATIONS = (SOFTXENT, UNFUSED)


def make_layer(
    shape: tuple[int, int, int], dtype: str, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded ``hidden (N, D)``, ``weight (V, D)`` (times 0.05), ``bias (V,)``, ``target (N,)``."""
    n, d, v = shape
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((n, d), dtype=np.float32).astype(dtype)  # (N, D)
    weight = (rng.standard_normal((v, d), dtype=np.float32) * 0.05).astype(dtype)  # (V, D)
    bias = np.zeros(v, dtype)  # (V,)
    target = rng.integers(0, v, n)  # (N,) int64
    return hidden, weight, bias, target


def fused_call(hidden, weight, bias, target) -> Timed:
    """softxent's fused layer: loss and the three gradients, no ``(N, V)`` array."""
    return Timed(lambda: sx.linear_cross_entropy_with_grad(hidden, weight, target, bias))


def unfused_call(hidden, weight, bias, target) -> Timed:
    """The layer with the full logits (what a NumPy user writes by hand)."""

    def forward_backward():
        logits = hidden @ weight.T + bias  # (N, V)
        loss, grad = sx.cross_entropy_with_grad(logits, target, out=logits)  # grad in logits
        return loss, grad @ weight, grad.T @ hidden, grad.sum(axis=0)  # (N, D) (V, D) (V,)

    return Timed(forward_backward)


def matmuls_call(hidden, weight) -> Timed:
    """The floor: the three matmuls alone, into outputs allocated once (untimed)."""
    n, v = hidden.shape[0], weight.shape[0]
    logits = np.empty((n, v), hidden.dtype)  # (N, V), also stands in for the gradient
    d_hidden, d_weight = np.empty_like(hidden), np.empty_like(weight)  # (N, D), (V, D)

    def matmuls():
        np.matmul(hidden, weight.T, out=logits)
        np.matmul(logits, weight, out=d_hidden)
        np.matmul(logits.T, hidden, out=d_weight)

    return Timed(matmuls, buffers=(logits, d_hidden, d_weight))


def count_jobs(shapes: Sequence[tuple[int, int, int]], dtypes: Sequence[str]) -> int:
    return len(shapes) * len(dtypes) * (2 + len(IMPLEMENTATIONS))


def run_linear(
    shapes: Sequence[tuple[int, int, int]],
    dtypes: Sequence[str],
    *,
    repeat: int,
    threads: int,
    progress: Callable[[int], object] = lambda n: None,
) -> list[ImplRow]:
    """One row per (shape, dtype): the floor, each implementation (time and memory), the
    floor again (the smaller of its two medians is kept)."""
    rows = []
    previous = sx.get_num_threads()
    sx.set_num_threads(threads)
    try:
        for shape in shapes:
            for dtype in dtypes:
                rows.append(_run_one(shape, dtype, repeat=repeat, progress=progress))
    finally:
        sx.set_num_threads(previous)
    return rows


def _run_one(shape, dtype, *, repeat: int, progress) -> ImplRow:
    hidden, weight, bias, target = make_layer(shape, dtype)
    inputs = [hidden, weight, bias, target]
    floor_seconds = _floor_seconds(hidden, weight, repeat=repeat)
    row = ImplRow(
        "linear_cross_entropy_with_grad",
        tuple(shape),
        dtype,
        "matmuls",
        floor_seconds,
        suite="linear",
        memory_method="tracemalloc",
    )
    for name, make in ((SOFTXENT, fused_call), (UNFUSED, unfused_call)):
        try:
            timed = make(*inputs)
            row.times[name] = median_seconds(timed.fn, repeat=repeat)
            row.memory[name] = peak_extra_bytes(timed.fn, inputs=inputs)
        except Exception as error:  # one implementation failing must not stop the others
            row.errors[name] = f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"
            row.times.pop(name, None)
        progress(1)
    # Measured again after the implementations and the smaller median kept: a floor taken
    # while someone else loaded the machine would flatter every ratio to it.
    row.floor_seconds = min(floor_seconds, _floor_seconds(hidden, weight, repeat=repeat))
    progress(1)
    return row


def _floor_seconds(hidden: np.ndarray, weight: np.ndarray, *, repeat: int) -> float:
    # A function of its own: the floor's (N, V) buffer is freed before anything else runs.
    return median_seconds(matmuls_call(hidden, weight).fn, repeat=repeat)

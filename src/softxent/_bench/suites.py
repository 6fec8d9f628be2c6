"""What the benchmark measures: the operations, their inputs, and softxent's calls.

An operation is a name (what ``--ops`` takes), the kind of bandwidth floor it is compared
with, and how its inputs are made. A *case* is one operation at one shape and dtype. Peers
(:mod:`softxent._bench.peers`) implement the same operation names.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

import softxent as sx
from softxent import _example as example

# The demo's 3x3 example (softxent._example), timed per call in microseconds.
DEMO_SHAPE = (3, 3)
DEMO_DTYPE = example.DTYPE.name

# The options of the "cross_entropy_options" case.
LABEL_SMOOTHING = 0.1
IGNORE_INDEX = -100
IGNORED_FRACTION = 0.1  # one sample in ten has the ignored label


@dataclass(frozen=True)
class Op:
    """One benchmarked operation.

    ``floor`` is ``"read"`` for operations that only read the logits (one read pass is
    their lower bound), ``"copy"`` for those that also write a logits-sized output (one
    copy pass; see ``floor_calls``), and None for the tiny demo cases where bandwidth is
    irrelevant.
    """

    name: str
    floor: str | None
    help: str
    grad: bool = False  # peers time forward + backward
    probs: bool = False  # probability targets instead of class indices
    options: bool = False  # weight + ignore_index + label_smoothing
    in_place: bool = False  # the gradient overwrites the logits (out=logits)
    demo: bool = False  # the fixed 3x3 example, not --shape / --dtype
    #: an elementwise loss: the kind of its (N, C) float target ("labels": 0/1 multi-label,
    #: "probs": rows of probabilities, "values": regression values); None otherwise
    elementwise: str | None = None

    @property
    def kernel(self) -> str:
        """The operation peers implement (the demo cases reuse the full-size ones)."""
        return self.name.removeprefix("demo_")


OPS: dict[str, Op] = {
    op.name: op
    for op in [
        Op("cross_entropy", "read", "loss, class-index targets"),
        Op("cross_entropy_with_grad", "copy", "loss and gradient", grad=True),
        Op(
            "cross_entropy_options",
            "read",
            "loss with weight, ignore_index and label_smoothing",
            options=True,
        ),
        Op("cross_entropy_probs", "read", "loss, probability targets", probs=True),
        Op("softmax", "copy", "softmax over the classes"),
        Op("log_softmax", "copy", "log-softmax over the classes"),
        Op("logsumexp", "read", "log-sum-exp over the classes"),
        Op(
            "cross_entropy_with_grad_out",
            "copy",
            "loss and gradient written over the logits (out=logits)",
            grad=True,
            in_place=True,
        ),
        Op(
            "binary_cross_entropy_with_logits_with_grad",
            "copy",
            "multi-label loss (one sigmoid per entry) and gradient, 0/1 targets",
            grad=True,
            elementwise="labels",
        ),
        Op(
            "kl_div_with_grad",
            "copy",
            "KL divergence (reduction='batchmean') and gradient; the logits stand in for "
            "the log-probabilities (the cost is the same)",
            grad=True,
            elementwise="probs",
        ),
        Op(
            "mse_loss_with_grad",
            "copy",
            "mean squared error and gradient, normal targets",
            grad=True,
            elementwise="values",
        ),
        Op("demo_cross_entropy", None, "loss on the 3x3 demo example", demo=True),
        Op(
            "demo_cross_entropy_with_grad",
            None,
            "loss and gradient on the 3x3 demo example",
            grad=True,
            demo=True,
        ),
    ]
}

DTYPES = ("float16", "float32", "float64")


@dataclass(frozen=True)
class Case:
    """One operation at one shape and dtype: one row of the table."""

    op: Op
    shape: tuple[int, int]
    dtype: str


def build_cases(
    ops: Sequence[str], shapes: Sequence[tuple[int, int]], dtypes: Sequence[str]
) -> list[Case]:
    """Every selected operation at every shape and dtype; the demo cases once each.

    Cases are grouped by (shape, dtype) so that one set of inputs serves a whole group.
    """
    return cases_for(ops, [(shape, dtype) for shape in shapes for dtype in dtypes])


def cases_for(ops: Sequence[str], groups: Sequence[tuple[tuple[int, int], str]]) -> list[Case]:
    """Every selected operation at each ``(shape, dtype)`` of ``groups``, in that order; the
    demo cases (the fixed 3x3 example) once each, at the end."""
    cases = [Case(OPS[n], shape, dtype) for shape, dtype in groups for n in ops if not OPS[n].demo]
    cases += [Case(OPS[n], DEMO_SHAPE, DEMO_DTYPE) for n in ops if OPS[n].demo]
    return cases


# ``--sweep``: the layouts users run, from many rows of a few classes to a few rows of a
# large vocabulary; float32 at every shape, float16 and float64 at the language-model shape.
SWEEP_DTYPE = "float32"
SWEEP_SHAPES = (
    (1_000_000, 10),
    (262_144, 32),
    (65_536, 100),
    (16_384, 1000),
    (4096, 32_000),
    (256, 262_144),
)
SWEEP_OTHER_DTYPES = {(4096, 32_000): ("float16", "float64")}
QUICK_SWEEP_LOGITS = 100_000  # --sweep --quick: the same class counts, ~1e5 logits a case


def sweep_groups(*, quick: bool) -> list[tuple[tuple[int, int], str]]:
    """The sweep's ``(shape, dtype)`` pairs, in table order.

    With ``quick`` every shape keeps its class count and gets ``max(1, round(1e5 / C))``
    rows, so each case costs about the same and the whole sweep takes seconds.
    """
    groups = []
    for shape in SWEEP_SHAPES:
        n, c = shape
        rows = max(1, round(QUICK_SWEEP_LOGITS / c)) if quick else n
        for dtype in (SWEEP_DTYPE, *SWEEP_OTHER_DTYPES.get(shape, ())):
            groups.append(((rows, c), dtype))
    return groups


@dataclass
class Inputs:
    """The arrays of one case (NumPy; peers convert them to their own types, untimed)."""

    x: np.ndarray  # (N, C) logits
    y: np.ndarray  # (N,) int64 class indices (IGNORE_INDEX in some rows for "options")
    probs: np.ndarray | None = None  # (N, C) target probabilities, rows sum to 1 ("probs")
    weight: np.ndarray | None = None  # (C,) class weights
    ignore_index: int = IGNORE_INDEX
    label_smoothing: float = 0.0
    target: np.ndarray | None = None  # (N, C) float target of an elementwise loss

    def arrays(self) -> list[np.ndarray]:
        present = (self.x, self.y, self.probs, self.weight, self.target)
        return [a for a in present if a is not None]


def make_logits(
    shape: tuple[int, int], dtype: str, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded logits ``(N, C)`` and class indices ``(N,)``; the demo's numbers for 3x3."""
    if shape == DEMO_SHAPE:
        return np.array(example.LOGITS, dtype=dtype), example.targets()
    rng = np.random.default_rng(seed)
    n, c = shape
    x = np.empty(shape, dtype=dtype)
    # Generated in row chunks: a float64 temporary of the full (4096, 32000) would be 1 GB.
    step = max(1, (1 << 24) // max(c, 1))
    for start in range(0, n, step):
        x[start : start + step] = rng.standard_normal((min(step, n - start), c)) * 2.0
    y = rng.integers(0, c, size=n, dtype=np.int64)
    return x, y


def make_inputs(op: Op, x: np.ndarray, y: np.ndarray, *, seed: int = 1) -> Inputs:
    """The inputs of ``op`` built around shared logits ``x`` and class indices ``y``."""
    rng = np.random.default_rng(seed)
    if op.elementwise is not None:
        return Inputs(x, y, target=_elementwise_target(op.elementwise, x.shape, x.dtype, rng))
    if op.probs:
        probs = rng.random(x.shape, dtype=np.float32).astype(x.dtype)  # (N, C)
        probs /= probs.sum(axis=-1, keepdims=True)
        return Inputs(x, y, probs=probs)
    if op.options:
        y = y.copy()
        y[rng.random(y.shape) < IGNORED_FRACTION] = IGNORE_INDEX
        weight = rng.uniform(0.5, 2.0, size=(x.shape[-1],)).astype(x.dtype)  # (C,)
        return Inputs(x, y, weight=weight, label_smoothing=LABEL_SMOOTHING)
    return Inputs(x, y)


def _elementwise_target(
    kind: str, shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator
) -> np.ndarray:
    """An (N, C) target of ``kind`` (see :class:`Op`), made in float32 chunks of rows."""
    target = np.empty(shape, dtype=dtype)
    step = max(1, (1 << 24) // max(shape[-1], 1))
    for start in range(0, shape[0], step):
        rows = (min(step, shape[0] - start), shape[-1])
        if kind == "labels":
            chunk = (rng.random(rows, dtype=np.float32) < 0.5).astype(np.float32)
        elif kind == "probs":
            chunk = rng.random(rows, dtype=np.float32)
            chunk /= chunk.sum(axis=-1, keepdims=True)
        else:
            chunk = rng.standard_normal(rows, dtype=np.float32)
        target[start : start + step] = chunk
    return target


@dataclass(frozen=True)
class Timed:
    """A zero-argument call to time, with an untimed ``setup`` run before each call."""

    fn: Callable[[], object]
    setup: Callable[[], object] | None = None
    buffers: tuple[np.ndarray, ...] = ()  # preallocated arrays the call writes into


def softxent_call(op: Op, inputs: Inputs) -> Timed:
    """softxent's implementation of ``op`` on ``inputs`` (public API only)."""
    x, y = inputs.x, inputs.y
    name = op.kernel
    if name == "cross_entropy":
        return Timed(lambda: sx.cross_entropy(x, y))
    if name == "cross_entropy_with_grad":
        return Timed(lambda: sx.cross_entropy_with_grad(x, y))
    if name == "cross_entropy_with_grad_out":
        # The call overwrites its logits with the gradient: restore them before each call.
        work = np.empty_like(x)
        return Timed(
            lambda: sx.cross_entropy_with_grad(work, y, out=work),
            setup=lambda: np.copyto(work, x),
            buffers=(work,),
        )
    if name == "cross_entropy_options":
        return Timed(
            lambda: sx.cross_entropy(
                x,
                y,
                weight=inputs.weight,
                ignore_index=inputs.ignore_index,
                label_smoothing=inputs.label_smoothing,
            )
        )
    if name == "cross_entropy_probs":
        probs = inputs.probs
        if probs is None:
            raise ValueError("cross_entropy_probs needs inputs made with probability targets")
        return Timed(lambda: sx.cross_entropy(x, probs))
    if op.elementwise is not None:
        t = inputs.target
        if t is None:
            raise ValueError(f"{name} needs inputs made with an elementwise target")
        if name == "binary_cross_entropy_with_logits_with_grad":
            return Timed(lambda: sx.binary_cross_entropy_with_logits_with_grad(x, t))
        if name == "kl_div_with_grad":
            return Timed(lambda: sx.kl_div_with_grad(x, t, reduction="batchmean"))
        return Timed(lambda: sx.mse_loss_with_grad(x, t))
    if name == "softmax":
        return Timed(lambda: sx.softmax(x))
    if name == "log_softmax":
        return Timed(lambda: sx.log_softmax(x))
    if name == "logsumexp":
        return Timed(lambda: sx.logsumexp(x))
    raise AssertionError(f"no softxent call for {op.name!r}")  # OPS and this list agree


def floor_calls(x: np.ndarray, pool: ThreadPoolExecutor, *, threads: int) -> dict[str, Timed]:
    """The bandwidth floors for logits ``x``: one read pass and one copy pass, each split
    into ``threads`` contiguous parts run at once on ``pool`` (as many threads as softxent
    is given).

    The read pass takes the max of the bytes viewed as integers of the item's size, which
    NumPy vectorizes at the memory's speed: a float sum (pairwise, and converting every
    float16) ran 2-3.5x slower than the memory here, so it measured NumPy's arithmetic,
    not the bandwidth. The copy pass is ``numpy.copyto`` of each part.
    """
    flat = x.reshape(-1)
    ints = flat.view(np.dtype(f"i{x.itemsize}"))
    buf = np.empty_like(flat)
    bounds = np.linspace(0, flat.size, max(1, threads) + 1).astype(int)
    parts = [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]

    def read() -> object:
        return list(pool.map(lambda part: ints[part].max(initial=0), parts))

    def copy() -> object:
        return list(pool.map(lambda part: np.copyto(buf[part], flat[part]), parts))

    return {"read": Timed(read), "copy": Timed(copy, buffers=(buf,))}

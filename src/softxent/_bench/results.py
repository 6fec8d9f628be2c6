"""Rows of the model-sized suites (``linear``, ``torch``, ``distributed``).

The default ``numpy`` suite keeps its own rows (:class:`softxent._bench.runner.Row`). The
``linear`` and ``torch`` suites compare several implementations of one computation with
one another and with a floor (the three matmuls); :class:`ImplRow` holds one such
computation. The ``distributed`` suite has one :class:`WorldRow` per world size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SOFTXENT = "softxent"


@dataclass
class MeasuredRow:
    """One computation at one shape and dtype, timed for several implementations.

    ``times`` (median seconds), ``memory`` (peak extra bytes, None when not measured) and
    ``errors`` (what failed) are keyed by implementation; ``"softxent"`` is the baseline of
    the ratios and ``floor_seconds`` the time of the floor named by ``floor``.
    """

    op: str
    shape: tuple[int, ...]
    dtype: str
    floor: str | None
    floor_seconds: float | None
    times: dict[str, float] = field(default_factory=dict)
    memory: dict[str, int | None] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ratios(self) -> dict[str, float]:
        """``time / softxent time`` per other implementation: above 1, softxent is faster."""
        base = self.times.get(SOFTXENT)
        if not base:
            return {}
        return {k: t / base for k, t in self.times.items() if k != SOFTXENT}

    @property
    def floor_ratios(self) -> dict[str, float]:
        """``time / floor time`` per implementation: 1 would be running at the floor."""
        if not self.floor_seconds:
            return {}
        return {k: t / self.floor_seconds for k, t in self.times.items()}

    @property
    def floor_ratio(self) -> float | None:
        """softxent's ``time / floor time`` (None without a floor or a softxent time)."""
        return self.floor_ratios.get(SOFTXENT)


@dataclass
class ImplRow(MeasuredRow):
    """A row of the ``linear`` or ``torch`` suite.

    ``shape`` is (N, C) for cross_entropy and (N, D, V) for the linear layer; ``floor`` is
    ``"matmuls"`` or None; ``memory_method`` says how ``memory`` was measured (see
    docs/bench.md).
    """

    suite: str = "linear"  # "linear" or "torch"
    memory_method: str = "tracemalloc"  # or "ru_maxrss"


@dataclass
class WorldRow:
    """Forward + backward of the vocab-parallel linear loss at one world size.

    ``ratio`` is ``seconds / seconds at world size 1`` (None when world size 1 did not run).
    """

    world_size: int
    tokens: int
    hidden: int
    vocab: int
    seconds: float
    collectives: int
    bytes: int
    per_token_vectors: float  # bytes beyond the input gradient / (4 * tokens)
    loss: float
    ratio: float | None = None

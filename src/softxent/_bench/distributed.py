"""The ``distributed`` suite: vocab-parallel linear cross-entropy at several world sizes.

A thin wrapper over :func:`softxent.torch.distributed._bench.benchmark`, which spawns a
gloo world on 127.0.0.1 per world size (world size 1 runs in this process without
torch.distributed), times forward + backward of ``vocab_parallel_linear_cross_entropy``
(``label_smoothing=0.1``, one thread per rank) and counts the collectives and bytes of the
last call. Each row's ``ratio`` is its time over world size 1's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from softxent._bench.results import WorldRow

DEFAULT_WORLD_SIZES = (1, 2, 4)
QUICK_WORLD_SIZES = (1, 2)
DEFAULT_SIZES = {"tokens": 1024, "hidden": 128, "vocab": 8192, "steps": 3}
QUICK_SIZES = {"tokens": 64, "hidden": 16, "vocab": 256, "steps": 1}


def run_distributed(
    world_sizes: Sequence[int],
    *,
    tokens: int,
    hidden: int,
    vocab: int,
    steps: int,
    progress: Callable[[int], object] = lambda n: None,
) -> list[WorldRow]:
    """One :class:`WorldRow` per world size, in the order given."""
    from softxent.torch.distributed._bench import benchmark  # needs torch

    rows = []
    for world in world_sizes:
        (result,) = benchmark((world,), tokens=tokens, hidden=hidden, vocab=vocab, steps=steps)
        rows.append(WorldRow(**result))
        progress(1)
    base = next((r.seconds for r in rows if r.world_size == 1), None)
    for row in rows:
        row.ratio = row.seconds / base if base else None
    return rows

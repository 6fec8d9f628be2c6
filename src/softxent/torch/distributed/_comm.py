"""Every collective the distributed losses issue goes through here: counted and explained.

Three kinds of traffic, all through plain :mod:`torch.distributed` (gloo, NCCL, ...):

* once per (group, local shard): an ``all_gather`` of two int64 per rank, the shard layout
  (cached, so the host sync it needs happens once);
* per call: one ``MAX`` all-reduce of a per-token vector and one ``SUM`` all-reduce of a
  packed ``(k, N)`` buffer (plus at most one scalar);
* per backward of the linear variant: one ``SUM`` all-reduce of the ``(N, H)`` input gradient.

A failed collective (a rank died, never called, or the group's timeout passed) is re-raised
as a :class:`RuntimeError` that says which collective of which loss failed and why that
usually happens, with the backend's error chained.
"""

from __future__ import annotations

import contextlib
import dataclasses
import weakref
from collections.abc import Iterator
from typing import Any, Literal

import torch
import torch.distributed as dist

from softxent.torch._algebra import AllReduce
from softxent.torch.distributed._partition import check_layout, contiguous_starts


@dataclasses.dataclass
class CommStats:
    """What the distributed losses sent while a :func:`count_communication` block was open.

    Attributes
    ----------
    collectives : int
        Number of collective calls issued by this process.
    bytes : int
        Sum over those calls of the payload this rank contributes (``numel * itemsize`` of
        the reduced buffer, or of the local piece for an all-gather). A ring all-reduce moves
        about ``2 (P - 1) / P`` times that over each rank's link.
    calls : list of (str, str, int)
        ``(collective, purpose, bytes)`` per call, in order.
    """

    collectives: int = 0
    bytes: int = 0
    calls: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)

    def _record(self, collective: str, purpose: str, nbytes: int) -> None:
        self.collectives += 1
        self.bytes += nbytes
        self.calls.append((collective, purpose, nbytes))


_ACTIVE: list[CommStats] = []


@contextlib.contextmanager
def count_communication() -> Iterator[CommStats]:
    """Count the collectives and bytes this process issues inside the ``with`` block.

    Only collectives of :mod:`softxent.torch.distributed` are counted; nothing is counted
    on a world of one process (no collective is issued there).

    Examples
    --------
    >>> with count_communication() as stats:
    ...     pass
    >>> stats.collectives, stats.bytes
    (0, 0)
    """
    stats = CommStats()
    _ACTIVE.append(stats)
    try:
        yield stats
    finally:
        _ACTIVE.remove(stats)


def _record(collective: str, purpose: str, nbytes: int) -> None:
    for stats in _ACTIVE:
        stats._record(collective, purpose, nbytes)


def world(group: dist.ProcessGroup | None) -> tuple[int, int]:
    """``(world_size, rank)`` of ``group``; ``(1, 0)`` when torch.distributed is not set up."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1, 0
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError(f"group: this process (global rank {dist.get_rank()}) is not a member")
    return dist.get_world_size(group), rank


def _failure(what: str, purpose: str, size: int, err: BaseException) -> RuntimeError:
    return RuntimeError(
        f"{what}: the {purpose} over a process group of {size} ranks failed: a rank died, "
        "did not call this function with the same arguments, or the process group's timeout "
        f"passed. Backend error: {err}"
    )


def all_reduce_(
    tensor: torch.Tensor,
    op: dist.ReduceOp.RedOpType,
    group: dist.ProcessGroup | None,
    what: str,
    purpose: str,
) -> torch.Tensor:
    """All-reduce ``tensor`` in place (a no-op on a world of one); counted; clear failures."""
    size, _ = world(group)
    if size == 1:
        return tensor
    _record("all_reduce", purpose, tensor.numel() * tensor.element_size())
    try:
        dist.all_reduce(tensor, op=op, group=group)
    except RuntimeError as err:  # DistBackendError and gloo's timeouts are RuntimeErrors
        raise _failure(what, purpose, size, err) from err
    return tensor


_OPS = {"max": dist.ReduceOp.MAX, "sum": dist.ReduceOp.SUM}


def group_all_reduce(group: dist.ProcessGroup | None, what: str) -> AllReduce:
    """The per-token all-reduce of the loss algebra over ``group``, for the loss ``what``."""

    def reduce_(tensor: torch.Tensor, op: Literal["max", "sum"], purpose: str) -> torch.Tensor:
        return all_reduce_(tensor, _OPS[op], group, what, purpose)

    return reduce_


@dataclasses.dataclass(frozen=True)
class Shard:
    """This rank's classes ``[vocab_start, vocab_start + size)`` out of ``num_classes``."""

    vocab_start: int
    size: int
    num_classes: int


#: Shard layouts per process group, then per ``(size, rank, local_size, vocab_start)``.
#: Keyed by the group object itself, weakly: a destroyed group's entries go with it, and a
#: new group can never find them (``id(group)`` could, as Python reuses ids).
_LAYOUTS: weakref.WeakKeyDictionary[Any, dict[tuple[int, int, int, int | None], Shard]] = (
    weakref.WeakKeyDictionary()
)


def _layout_cache(group: Any) -> dict[tuple[int, int, int, int | None], Shard]:
    """The layout cache of ``group`` (a throw-away dict if it cannot be weakly referenced)."""
    try:
        return _LAYOUTS.setdefault(group, {})
    except TypeError:  # not weakly referenceable or not hashable: do not cache
        return {}


def resolve_shard(
    group: dist.ProcessGroup | None,
    local_size: int,
    vocab_start: int | None,
    device: torch.device,
    what: str,
) -> Shard:
    """This rank's shard and the global class count, from one cached all-gather.

    Every rank sends ``(vocab_start or -1, local_size)``. With ``vocab_start=None`` on every
    rank the shards follow each other in rank order; otherwise every rank must pass its own
    start. The layout must tile ``[0, C)``.
    """
    size, rank = world(group)
    if size == 1:
        start = 0 if vocab_start is None else vocab_start
        return Shard(start, local_size, check_layout([(start, local_size)]))
    cache = _layout_cache(group if group is not None else dist.group.WORLD)
    key = (size, rank, local_size, vocab_start)
    cached = cache.get(key)
    if cached is not None:
        return cached
    mine = torch.tensor([-1 if vocab_start is None else vocab_start, local_size], device=device)
    pieces = [torch.empty_like(mine) for _ in range(size)]
    _record("all_gather", "shard layout", mine.numel() * mine.element_size())
    try:
        dist.all_gather(pieces, mine, group=group)
    except RuntimeError as err:
        raise _failure(what, "all_gather of the shard layout", size, err) from err
    pairs = [(int(start), int(n)) for start, n in (p.tolist() for p in pieces)]  # once
    given = [start >= 0 for start, _ in pairs]
    if all(given):
        layout = pairs
    elif not any(given):
        sizes = [n for _, n in pairs]
        layout = list(zip(contiguous_starts(sizes), sizes, strict=True))
    else:
        raise ValueError(
            f"vocab_start must be given on every rank or on none; got (vocab_start, size) per "
            f"rank (-1 = None): {pairs}"
        )
    shard = Shard(layout[rank][0], local_size, check_layout(layout))
    cache[key] = shard
    return shard

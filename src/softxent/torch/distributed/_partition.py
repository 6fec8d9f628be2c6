"""How the vocabulary is split across ranks: pure functions, no communication.

A *layout* is the list of ``(vocab_start, size)`` pairs of the ranks, in rank order. The
distributed losses accept any layout whose shards tile ``[0, C)`` exactly (contiguous, no
gap, no overlap, in any rank order); :func:`even_partition` is the layout used when a
caller just wants ``C`` classes spread over ``world_size`` ranks.
"""

from __future__ import annotations

import numbers


def even_partition(num_classes: int, world_size: int) -> list[tuple[int, int]]:
    r"""Split ``num_classes`` classes into ``world_size`` contiguous shards, in rank order.

    The first ``num_classes % world_size`` ranks hold one class more than the others:

    .. math::

        \text{size}_r = \lfloor C / P \rfloor + [r < C \bmod P], \qquad
        \text{start}_r = \sum_{s < r} \text{size}_s

    Parameters
    ----------
    num_classes : int
        ``C >= 0``, the global number of classes.
    world_size : int
        ``P >= 1``, the number of ranks.

    Returns
    -------
    list of (int, int)
        ``(vocab_start, size)`` of each rank, in rank order.

    Raises
    ------
    TypeError
        If an argument is not an int.
    ValueError
        If ``num_classes < 0`` or ``world_size < 1``.

    Examples
    --------
    >>> even_partition(1001, 3)
    [(0, 334), (334, 334), (668, 333)]
    >>> even_partition(2, 3)
    [(0, 1), (1, 1), (2, 0)]
    """
    for name, value in (("num_classes", num_classes), ("world_size", world_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes!r}")
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size!r}")
    base, extra = divmod(int(num_classes), int(world_size))
    layout = []
    start = 0
    for rank in range(int(world_size)):
        size = base + (1 if rank < extra else 0)
        layout.append((start, size))
        start += size
    return layout


def contiguous_starts(sizes: list[int]) -> list[int]:
    """The ``vocab_start`` of each rank when shards of ``sizes`` follow each other in rank order.

    Examples
    --------
    >>> contiguous_starts([334, 334, 333])
    [0, 334, 668]
    """
    starts = []
    start = 0
    for size in sizes:
        starts.append(start)
        start += size
    return starts


def check_layout(layout: list[tuple[int, int]]) -> int:
    """Check that the shards ``(vocab_start, size)`` tile ``[0, C)``; return ``C``.

    Empty shards (``size == 0``) are allowed anywhere; they own no class.

    Raises
    ------
    ValueError
        If a start or size is negative, or the shards overlap or leave a gap; the message
        lists the whole layout.

    Examples
    --------
    >>> check_layout([(0, 3), (3, 2)])
    5
    >>> check_layout([(2, 3), (0, 2)])
    5
    >>> check_layout([(0, 3), (4, 2)])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: the shards must tile [0, C) without gap or overlap; ... at class 3)
    """
    for start, size in layout:
        if start < 0 or size < 0:
            raise ValueError(
                "vocab_start and the local class count must be >= 0 on every rank; "
                f"got (vocab_start, size) per rank: {layout}"
            )
    expected = 0
    for start, size in sorted((s, n) for s, n in layout if n > 0):
        if start != expected:
            raise ValueError(
                "the shards must tile [0, C) without gap or overlap; "
                f"got (vocab_start, size) per rank: {layout} (gap or overlap at class {expected})"
            )
        expected = start + size
    return expected

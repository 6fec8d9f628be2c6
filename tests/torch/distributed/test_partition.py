"""The shard layout: a pure function with its own tests (no process group needed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softxent.torch.distributed._partition import check_layout, contiguous_starts, even_partition


@settings(max_examples=25, deadline=None)
@given(num_classes=st.integers(0, 5000), world_size=st.integers(1, 64))
def test_even_partition_tiles_and_balances(num_classes, world_size):
    layout = even_partition(num_classes, world_size)
    sizes = [size for _, size in layout]
    assert len(layout) == world_size
    assert sum(sizes) == num_classes
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)  # the larger shards come first
    assert [start for start, _ in layout] == contiguous_starts(sizes)
    assert check_layout(layout) == num_classes


def test_issue5_uneven_1001_over_3():
    assert even_partition(1001, 3) == [(0, 334), (334, 334), (668, 333)]


def test_check_layout_accepts_any_rank_order_and_empty_shards():
    assert check_layout([(5, 3), (0, 5), (123, 0)]) == 8


@pytest.mark.parametrize(
    "layout",
    [[(0, 3), (4, 2)], [(0, 3), (2, 2)], [(1, 3)], [(0, -1)], [(-1, 2), (1, 2)]],
)
def test_check_layout_rejects_gaps_overlaps_and_negatives(layout):
    with pytest.raises(ValueError, match=r"vocab_start|tile"):
        check_layout(layout)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((10, 0), ValueError),
        ((-1, 2), ValueError),
        ((10.0, 2), TypeError),
        ((10, True), TypeError),
    ],
)
def test_even_partition_rejects_bad_arguments(args, error):
    with pytest.raises(error):
        even_partition(*args)

"""The distributed losses off CPU: no host synchronisation, and a layout cache that cannot
outlive its process group.

Meta tensors have no data, so any ``.item()``, ``bool(tensor)`` or data-dependent shape
raises on them (see tests/torch/test_torch_no_sync.py). A world of two ranks is simulated
by replacing the collectives with no-ops that record their calls; the shard layout (one
cached all-gather per group and shard size, a documented one-time sync) is given.
"""

from __future__ import annotations

import gc

import pytest
import torch
import torch.distributed as dist

from softxent.torch.distributed import (
    _comm,
    _setup,
    vocab_parallel_cross_entropy,
    vocab_parallel_linear_cross_entropy,
)

META = torch.device("meta")
N, V_LOCAL, H = 6, 5, 4


@pytest.fixture
def two_meta_ranks(monkeypatch):
    """Rank 0 of 2, classes [0, 5) of 10; collectives recorded, never run."""
    calls = []

    def all_reduce(tensor, op=None, group=None):
        assert tensor.device == META
        calls.append(("all_reduce", op, tuple(tensor.shape)))

    def shard(group, local_size, vocab_start, device, what):
        return _comm.Shard(0, local_size, 2 * local_size)

    monkeypatch.setattr(_comm, "world", lambda group: (2, 0))
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    monkeypatch.setattr(_setup, "resolve_shard", shard)
    return calls


def _target(prob):
    if prob:
        return torch.rand(N, V_LOCAL, device=META)
    return torch.randint(0, 2 * V_LOCAL, (N,), device=META)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("prob", [False, True])
@pytest.mark.parametrize("extras", [{}, dict(z_loss=0.1, softcap=2.0, label_smoothing=0.1)])
def test_cross_entropy_runs_on_meta(two_meta_ranks, reduction, prob, extras):
    leaf = torch.randn(N, V_LOCAL, device=META, requires_grad=True)
    loss = vocab_parallel_cross_entropy(
        leaf * 1.0,
        _target(prob),
        weight=torch.rand(V_LOCAL, device=META),
        reduction=reduction,
        **extras,
    )
    loss.backward(torch.ones_like(loss))
    assert leaf.grad.shape == leaf.shape and leaf.grad.device == META
    assert [c[0] for c in two_meta_ranks] == ["all_reduce", "all_reduce"]  # MAX, packed SUM


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("prob", [False, True])
@pytest.mark.parametrize("extras", [{}, dict(z_loss=0.1, softcap=2.0, label_smoothing=0.1)])
def test_linear_cross_entropy_runs_on_meta(two_meta_ranks, reduction, prob, extras):
    h = torch.randn(N, H, device=META, requires_grad=True)
    w = torch.randn(V_LOCAL, H, device=META, requires_grad=True)
    b = torch.randn(V_LOCAL, device=META, requires_grad=True)
    loss = vocab_parallel_linear_cross_entropy(
        h,
        w,
        _target(prob),
        local_linear_bias=b,
        weight=torch.rand(V_LOCAL, device=META),
        reduction=reduction,
        chunk_size=4,
        **extras,
    )
    loss.backward(torch.ones_like(loss))
    assert (h.grad.shape, w.grad.shape, b.grad.shape) == (h.shape, w.shape, b.shape)
    # MAX and packed SUM in the forward, the input gradient's SUM in the backward.
    assert len(two_meta_ranks) == 3


class _Group:
    """Stands in for a ProcessGroup: a plain object (weakly referenceable, like one)."""


def test_layout_cache_dies_with_its_group(monkeypatch):
    gathers = []

    def all_gather(pieces, mine, group=None):
        gathers.append(mine.tolist())  # not the group: that would keep it alive
        pieces[0].copy_(mine)
        pieces[1].copy_(torch.tensor([-1, 3]))

    monkeypatch.setattr(_comm, "world", lambda group: (2, 0))
    monkeypatch.setattr(dist, "all_gather", all_gather)
    entries_before = len(_comm._LAYOUTS)
    group = _Group()
    first = _comm.resolve_shard(group, 4, None, torch.device("cpu"), "test")
    assert _comm.resolve_shard(group, 4, None, torch.device("cpu"), "test") == first
    assert len(gathers) == 1  # cached for the group
    old_id = id(group)
    del group
    gc.collect()
    assert len(_comm._LAYOUTS) == entries_before  # the destroyed group's layout is gone
    # A new group (CPython often reuses the freed id) never finds the old layout.
    new = _Group()
    _comm.resolve_shard(new, 4, None, torch.device("cpu"), "test")
    assert len(gathers) == 2, f"new group {id(new) == old_id=} reused a destroyed group's layout"

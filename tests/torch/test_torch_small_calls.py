"""The shortcuts that keep a small ``softxent.torch.cross_entropy`` call cheap, each branch:

* checked options are remembered per (values, types): a repeated call skips the checks,
  but a value that only compares equal to a valid one (``True == 1``) is still refused;
* ``backward`` skips the pass over the saved gradient for an upstream gradient of ones, read
  as one value for a reduced loss and as a tensor comparison per sample;
* the CPU forward builds the NumPy core's targets from the checked tensors directly: its
  value checks (class-index range, finite weights) still raise, forward-only and with grad.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from softxent.torch import cross_entropy
from softxent.torch._autograd import scale_saved_gradient
from softxent.torch._options import make_options

GEN = torch.Generator().manual_seed(11)


def test_repeated_options_are_the_checked_ones():
    first = make_options(ignore_index=3, reduction="sum", label_smoothing=0.25)
    again = make_options(ignore_index=3, reduction="sum", label_smoothing=0.25)
    assert again is first  # remembered
    assert (first.ignore_index, first.reduction, first.label_smoothing) == (3, "sum", 0.25)
    # Not plain Python values: checked every time, to equal options.
    numpy_values = make_options(ignore_index=np.int64(3), label_smoothing=np.float64(0.25))
    assert numpy_values is not first
    assert numpy_values == make_options(ignore_index=3, label_smoothing=0.25)


def test_remembered_options_keep_every_refusal():
    make_options(ignore_index=1)
    with pytest.raises(TypeError, match="ignore_index"):
        make_options(ignore_index=True)  # True == 1, yet a bool is refused
    make_options(inplace_backward=False)
    with pytest.raises(TypeError, match="inplace_backward"):
        make_options(inplace_backward=0)  # 0 == False, yet not a bool
    for _ in range(2):  # a refused value is never remembered
        with pytest.raises(ValueError, match="label_smoothing"):
            make_options(label_smoothing=1.5)


@pytest.mark.parametrize("keep", [False, True])
def test_upstream_ones_of_a_reduced_loss(keep):
    grad = torch.randn(4, 3, generator=GEN)
    expected = grad.clone()
    result = scale_saved_gradient(grad, torch.ones(()), keep=keep)
    assert torch.equal(result, expected)
    assert (result is grad) == (not keep)  # not even a copy, unless the graph is kept
    twice = scale_saved_gradient(grad.clone(), torch.tensor(2.0), keep=keep)
    assert torch.equal(twice, 2 * expected)


@pytest.mark.parametrize("rows", [1, 4])
def test_upstream_ones_per_sample(rows):
    grad = torch.randn(rows, 3, generator=GEN)
    expected = grad.clone()
    assert scale_saved_gradient(grad, torch.ones(rows), keep=False, per_sample=True) is grad
    g = torch.arange(1.0, rows + 1.0) + 1
    scaled = scale_saved_gradient(grad.clone(), g, keep=False, per_sample=True)
    assert torch.equal(scaled, expected * g.unsqueeze(1))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_backward_matches_torch_for_any_upstream(reduction):
    x = torch.randn(6, 5, generator=GEN, requires_grad=True)
    y = torch.tensor([0, 4, 2, -100, 1, 3])
    w = torch.rand(5, generator=GEN) + 0.5
    kwargs = dict(weight=w, reduction=reduction, label_smoothing=0.1)
    loss, ref = cross_entropy(x, y, **kwargs), F.cross_entropy(x, y, **kwargs)
    torch.testing.assert_close(loss, ref)
    for upstream in (torch.ones_like(ref), torch.full_like(ref, -0.5)):
        (got,) = torch.autograd.grad(loss, x, upstream, retain_graph=True)
        (want,) = torch.autograd.grad(ref, x, upstream, retain_graph=True)
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("grad", [False, True])
def test_value_errors_still_raised(grad):
    x = torch.randn(3, 4, generator=GEN, requires_grad=grad)
    with pytest.raises(ValueError, match=r"target\[2\] = 4 is out of range"):
        cross_entropy(x, torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match="weight must be finite"):
        cross_entropy(x, torch.tensor([0, 1, 2]), torch.tensor([1.0, float("inf"), 1.0, 1.0]))

"""Finite negative class weights are computed as torch computes them, in every NumPy path.

torch accepts any finite weight (its own tests of ``cross_entropy`` and ``nll_loss`` use
negative ones); the weighted mean then divides by ``D = sum_n w[y_n]``, which can be
negative or exactly 0 (IEEE division: ``x / 0`` is an infinity of the sign of ``x``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import softxent as sx

from conftest import assert_close, logit_scale, random_logits, torch_cross_entropy

X = random_logits((5, 4), np.float64, seed=21)
Y = np.array([0, 1, 2, 3, 1])
W_NEG = np.array([-1.0, 2.0, -0.5, 1.5])  # D = -1 + 2 - 0.5 + 1.5 + 2 = 4
W_NEG_D = np.array([-1.0, -2.0, 0.5, 0.5])  # D = -1 - 2 + 0.5 + 0.5 - 2 = -4 (negative)
W_ZERO_D = np.array([1.0, -1.0, 1.0, -1.0])  # D = 1 - 1 + 1 - 1 - 1 = -1; see Y_ZERO
Y_ZERO = np.array([0, 1, 2, 3, -100])  # D = 0 exactly


@pytest.mark.parametrize("weight", [W_NEG, W_NEG_D], ids=["positive-D", "negative-D"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_cross_entropy_and_grad_match_torch(weight, reduction, eps):
    kwargs = dict(weight=weight, reduction=reduction, label_smoothing=eps)
    loss, grad = sx.cross_entropy_with_grad(X, Y, **kwargs)
    expected, expected_grad = torch_cross_entropy(X, Y, with_grad=True, **kwargs)
    scale = logit_scale(X) * 10
    assert_close(loss, expected, np.float64, scale=scale)
    assert_close(sx.cross_entropy(X, Y, **kwargs), expected, np.float64, scale=scale)
    assert_close(grad, expected_grad, np.float64, scale=scale)


@pytest.mark.parametrize("weight", [W_NEG, W_NEG_D], ids=["positive-D", "negative-D"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_nll_loss_matches_torch(weight, reduction):
    lp = sx.log_softmax(X)
    got = sx.nll_loss(lp, Y, weight=weight, reduction=reduction)
    expected = torch_cross_entropy(lp, Y, weight=weight, reduction=reduction, nll=True)
    assert_close(got, expected, np.float64, scale=logit_scale(X) * 10)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_half_and_single_logits_with_negative_weights(dtype):
    x = X.astype(dtype)
    w = W_NEG.astype(dtype)
    got = sx.cross_entropy(x, Y, weight=w, label_smoothing=0.1)
    assert got.dtype == dtype
    expected = torch_cross_entropy(x, Y, weight=w, label_smoothing=0.1)
    assert_close(got, expected, dtype, scale=logit_scale(X) * 10)


def test_probability_targets_with_negative_weights():
    t = sx.softmax(random_logits((5, 4), np.float64, seed=22))
    for reduction in ("none", "mean", "sum"):
        kwargs = dict(weight=W_NEG, reduction=reduction, label_smoothing=0.2)
        loss, grad = sx.cross_entropy_with_grad(X, t, **kwargs)
        expected, expected_grad = torch_cross_entropy(X, t, with_grad=True, **kwargs)
        assert_close(loss, expected, np.float64, scale=logit_scale(X) * 10)
        assert_close(grad, expected_grad, np.float64, scale=logit_scale(X) * 10)


def test_zero_denominator_mean_is_sum_over_zero_like_torch():
    # torch divides by D = 0 as IEEE does: +-inf for a non-zero sum (not NaN, not an error).
    got = sx.cross_entropy(X, Y_ZERO, weight=W_ZERO_D)
    expected = torch_cross_entropy(X, Y_ZERO, weight=W_ZERO_D)
    assert np.isinf(expected)
    assert got == expected
    lp = sx.log_softmax(X)
    nll = sx.nll_loss(lp, Y_ZERO, weight=W_ZERO_D)
    assert nll == torch_cross_entropy(lp, Y_ZERO, weight=W_ZERO_D, nll=True)
    # The gradient is 1 / D times finite numbers: not finite, as in torch.
    loss, grad = sx.cross_entropy_with_grad(X, Y_ZERO, weight=W_ZERO_D)
    assert loss == expected
    assert not np.isfinite(grad[:4]).any()
    np.testing.assert_array_equal(grad[4], 0)  # the ignored row


def test_zero_sum_over_zero_denominator_is_nan():
    # Weights that make every loss 0 and D = 0: 0 / 0, NaN, as in torch.
    y = np.array([0, 0, -100])
    w = np.array([0.0, 1.0, 1.0, 1.0])
    assert np.isnan(sx.cross_entropy(X[:3], y, weight=w))
    assert np.isnan(torch_cross_entropy(X[:3], y, weight=w))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("chunk_size", [2, None])
def test_linear_layer_matches_torch(reduction, chunk_size):
    rng = np.random.default_rng(5)
    hidden, weight = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    bias = rng.normal(size=4)
    kwargs = dict(class_weight=W_NEG_D, reduction=reduction, label_smoothing=0.1)
    loss, d_hidden, d_weight, d_bias = sx.linear_cross_entropy_with_grad(
        hidden, weight, Y, bias, chunk_size=chunk_size, **kwargs
    )
    forward = sx.linear_cross_entropy(hidden, weight, Y, bias, chunk_size=chunk_size, **kwargs)
    ht, wt, bt = (torch.tensor(a, requires_grad=True) for a in (hidden, weight, bias))
    ref = F.cross_entropy(
        F.linear(ht, wt, bt),
        torch.from_numpy(Y),
        weight=torch.from_numpy(W_NEG_D),
        reduction=reduction,
        label_smoothing=0.1,
    )
    ref.sum().backward()
    scale = 100.0
    assert_close(loss, ref.detach().numpy(), np.float64, scale=scale)
    assert_close(forward, ref.detach().numpy(), np.float64, scale=scale)
    for got, ref_t in ((d_hidden, ht), (d_weight, wt), (d_bias, bt)):
        assert_close(got, ref_t.grad.numpy(), np.float64, scale=scale)


def test_score_weighted_mean_matches_torch():
    result = sx.score(X, Y, weight=W_NEG_D)
    expected = torch_cross_entropy(X, Y, weight=W_NEG_D)
    assert_close(np.float64(result.cross_entropy), expected, np.float64, scale=10)
    zero = sx.score(X, Y_ZERO, weight=W_ZERO_D)
    assert zero.cross_entropy == torch_cross_entropy(X, Y_ZERO, weight=W_ZERO_D)

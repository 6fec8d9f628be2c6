"""cross_entropy_with_grad: loss == cross_entropy, grad == torch autograd == finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_cross_entropy import (
    INDEX_OPTIONS,
    PROB_OPTIONS,
    SHAPES,
    make_index_case,
    make_prob_case,
)

import softxent as sx

from conftest import (
    FLOAT_DTYPES,
    assert_close,
    logit_scale,
    random_logits,
    random_probs,
    torch_cross_entropy,
)

inf, nan = np.inf, np.nan


def grad_scale(expected, x) -> float:
    """Absolute error scale of a gradient: its size times the cancellation in ``x - max x``."""
    e = np.abs(np.asarray(expected, np.float64))
    e = e[np.isfinite(e)]
    return (float(e.max()) if e.size else 0.0) * logit_scale(x)


def upstream(reduction, batch_shape, seed=0):
    """A random grad_output: shaped like the loss for 'none', a scalar otherwise."""
    r = np.random.default_rng(seed + 100)
    if reduction == "none":
        return r.standard_normal(batch_shape)
    return np.float64(r.uniform(0.5, 2.0))


def check_grad_against_torch(x, target, kwargs, reduction, grad_output=None):
    result = sx.cross_entropy_with_grad(
        x, target, reduction=reduction, grad_output=grad_output, **kwargs
    )
    assert isinstance(result, sx.LossAndGrad)
    loss, grad = result
    # The loss is exactly what cross_entropy returns.
    plain = sx.cross_entropy(x, target, reduction=reduction, **kwargs)
    assert np.asarray(loss).dtype == np.asarray(plain).dtype
    assert np.array_equal(loss, plain, equal_nan=True)
    assert type(loss) is type(plain)
    _, expected = torch_cross_entropy(
        x, target, reduction=reduction, with_grad=True, grad_output=grad_output, **kwargs
    )
    assert grad.shape == x.shape and grad.dtype == x.dtype
    assert_close(grad, expected, x.dtype, scale=grad_scale(expected, x))
    return loss, grad


# ----------------------------------------------------------------- parity with autograd


REDUCTIONS_AND_UPSTREAM = [(r, k) for r in ("none", "mean", "sum") for k in ("default", "given")]


@pytest.mark.parametrize("options", list(INDEX_OPTIONS))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("shape", "axis"), SHAPES)
def test_class_index_grad_matches_torch(shape, axis, dtype, options):
    x, y, kwargs = make_index_case(shape, axis, dtype, seed=len(shape), **INDEX_OPTIONS[options])
    for reduction, upstream_kind in REDUCTIONS_AND_UPSTREAM:
        g = upstream(reduction, y.shape) if upstream_kind == "given" else None
        check_grad_against_torch(x, y, kwargs, reduction, g)


@pytest.mark.parametrize("options", list(PROB_OPTIONS))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("shape", "axis"), SHAPES)
def test_probability_grad_matches_torch(shape, axis, dtype, options):
    x, t, kwargs = make_prob_case(shape, axis, dtype, seed=len(shape), **PROB_OPTIONS[options])
    batch = tuple(n for d, n in enumerate(shape) if d != axis % len(shape))
    for reduction, upstream_kind in REDUCTIONS_AND_UPSTREAM:
        g = upstream(reduction, batch) if upstream_kind == "given" else None
        check_grad_against_torch(x, t, kwargs, reduction, g)


def test_study_note_gradient():
    pred = np.array([[0.3, 0.1, 0.3], [0.9, 0.2, 0.9], [0.5, 0.4, 0.2]], np.float32)
    expected = np.array(
        [
            [0.11825653, -0.23651308, 0.11825653],
            [0.13351570, 0.06630193, -0.19981764],
            [-0.20734063, 0.11400293, 0.09333770],
        ],
        np.float32,
    )
    loss, grad = sx.cross_entropy_with_grad(pred, np.array([1, 2, 0]))
    assert_close(loss, np.float32(1.04137659), np.float32)
    assert_close(grad, expected, np.float32)


def test_spec_6_3_gradient():
    x = np.array([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]])
    _, grad = sx.cross_entropy_with_grad(
        x, np.array([1, 0]), weight=np.array([1.0, 10.0, 1.0]), label_smoothing=0.3
    )
    expected = [[0.05802279, -0.54483878, 0.48681599], [0.02167671, -0.03365018, 0.01197347]]
    np.testing.assert_allclose(grad, expected, rtol=0, atol=5e-9)  # 8 printed decimals


def test_scalar_grad_output_scales_gradient():
    x, y, kwargs = make_index_case((6, 4), -1, np.float64, seed=1, weight=True)
    _, g1 = sx.cross_entropy_with_grad(x, y, **kwargs)
    _, g3 = sx.cross_entropy_with_grad(x, y, grad_output=np.float64(-3.0), **kwargs)
    assert_close(g3, -3.0 * g1, np.float64)
    _, g3_0d = sx.cross_entropy_with_grad(x, y, grad_output=np.array(-3.0), **kwargs)
    np.testing.assert_array_equal(g3, g3_0d)
    _, g3_py = sx.cross_entropy_with_grad(x, y, grad_output=-3.0, **kwargs)
    np.testing.assert_array_equal(g3, g3_py)


def test_none_grad_output_weights_rows():
    x, y, kwargs = make_index_case((2, 3, 4), 1, np.float64, seed=2, label_smoothing=0.1)
    g = np.random.default_rng(0).standard_normal((2, 4))
    _, grad = sx.cross_entropy_with_grad(x, y, reduction="none", grad_output=g, **kwargs)
    _, ones = sx.cross_entropy_with_grad(x, y, reduction="none", **kwargs)
    assert_close(grad, ones * g[:, None, :], np.float64)


# ------------------------------------------------------------------------ out= and in place


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_out_preallocated(dtype, soft, reduction):
    make = make_prob_case if soft else make_index_case
    x, t, kwargs = make((3, 5, 4), 1, dtype, seed=3, weight=True, label_smoothing=0.1)
    expected_loss, expected = sx.cross_entropy_with_grad(x, t, reduction=reduction, **kwargs)
    for out in (np.full_like(x, nan), np.asfortranarray(np.full_like(x, nan))):
        loss, grad = sx.cross_entropy_with_grad(x, t, reduction=reduction, out=out, **kwargs)
        assert grad is out
        np.testing.assert_array_equal(grad, expected)
        assert np.array_equal(loss, expected_loss, equal_nan=True)
    # A strided view of a bigger buffer: only the view is written.
    big = np.full((3, 10, 4), 7.0, dtype)
    view = big[:, ::2, :]
    _, grad = sx.cross_entropy_with_grad(x, t, reduction=reduction, out=view, **kwargs)
    assert grad is view
    np.testing.assert_array_equal(view, expected)
    np.testing.assert_array_equal(big[:, 1::2, :], 7.0)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize(("shape", "axis"), [((6, 5), -1), ((3, 5, 4), 1), ((5, 3), 0)])
def test_out_is_logits_in_place(dtype, soft, shape, axis):
    make = make_prob_case if soft else make_index_case
    x, t, kwargs = make(shape, axis, dtype, seed=4, weight=True, label_smoothing=0.2)
    expected_loss, expected = sx.cross_entropy_with_grad(x, t, **kwargs)
    logits = x.copy()
    loss, grad = sx.cross_entropy_with_grad(logits, t, out=logits, **kwargs)
    assert grad is logits
    np.testing.assert_array_equal(logits, expected)
    assert loss == expected_loss


def test_in_place_on_fortran_and_strided_logits():
    x, y, kwargs = make_index_case((6, 7), -1, np.float32, seed=5, label_smoothing=0.1)
    expected_loss, expected = sx.cross_entropy_with_grad(x, y, **kwargs)
    f = np.asfortranarray(x)
    loss, grad = sx.cross_entropy_with_grad(f, y, out=f, **kwargs)
    assert grad is f and loss == expected_loss
    np.testing.assert_array_equal(f, expected)
    big = np.zeros((12, 7), np.float32)
    big[::2] = x
    view = big[::2]
    sx.cross_entropy_with_grad(view, y, out=view, **kwargs)
    np.testing.assert_array_equal(view, expected)
    np.testing.assert_array_equal(big[1::2], 0)


# ---------------------------------------------------------- special values (spec §6.7)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("weight", [None, [1.0, 2.0, 0.5, 1.5]])
def test_pytorch_11551_ignored_rows_get_zero_grad_even_with_nan(dtype, reduction, eps, weight):
    """pytorch#11551: torch gives NaN gradient rows for ignored NaN/-inf rows; we give 0."""
    x = random_logits((5, 4), dtype, seed=6)
    x[1] = nan
    x[3] = -inf
    x[4, 2] = inf
    y = np.array([0, -100, 3, -100, -100])
    w = None if weight is None else np.array(weight)
    kwargs = dict(axis=-1, weight=w, label_smoothing=eps)
    g = upstream(reduction, (5,))
    loss, grad = sx.cross_entropy_with_grad(x, y, reduction=reduction, grad_output=g, **kwargs)
    np.testing.assert_array_equal(grad[[1, 3, 4]], 0)
    assert np.isfinite(loss).all()
    # The valid rows are torch's, computed on a copy whose ignored rows are finite.
    finite = x.copy()
    finite[[1, 3, 4]] = 0
    _, expected = torch_cross_entropy(
        finite, y, reduction=reduction, with_grad=True, grad_output=g, **kwargs
    )
    assert_close(grad, expected, dtype, scale=grad_scale(expected, x))
    # ... and torch itself really does poison the ignored rows.
    _, torch_grad = torch_cross_entropy(
        x, y, reduction=reduction, with_grad=True, grad_output=g, **kwargs
    )
    assert np.isnan(torch_grad[1]).all() and np.isnan(torch_grad[3]).all()


@pytest.mark.parametrize("eps", [0.0, 0.3])
@pytest.mark.parametrize("weight", [None, [1.0, 2.0, 0.5]])
def test_all_ignored_mean_grad_is_zero(eps, weight):
    x = random_logits((4, 3), np.float64)
    y = np.full(4, -100)
    w = None if weight is None else np.array(weight)
    loss, grad = sx.cross_entropy_with_grad(x, y, weight=w, label_smoothing=eps)
    assert np.isnan(loss)
    np.testing.assert_array_equal(grad, 0)
    _, expected = torch_cross_entropy(x, y, weight=w, label_smoothing=eps, with_grad=True)
    np.testing.assert_array_equal(expected, 0)


def test_zero_target_weights_mean_grad_is_nan_like_torch():
    x = random_logits((3, 3), np.float64)
    y = np.array([0, 0, -100])
    w = np.array([0.0, 1.0, 1.0])
    loss, grad = sx.cross_entropy_with_grad(x, y, weight=w)
    _, expected = torch_cross_entropy(x, y, weight=w, with_grad=True)
    assert np.isnan(loss)
    assert np.isnan(grad[:2]).all() and np.isnan(expected[:2]).all()
    np.testing.assert_array_equal(grad[2], 0)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_minus_inf_logits_give_finite_grad(dtype, eps):
    # -inf on non-target classes, and -inf on the target class (loss +inf, grad finite).
    x = np.array([[0.5, -inf, 1.0, -inf], [-inf, 2.0, 0.0, 1.0], [0.0, 1.0, 2.0, 3.0]], dtype)
    y = np.array([2, 0, 1])
    for reduction in ("none", "sum", "mean"):
        loss, grad = check_grad_against_torch(x, y, dict(axis=-1, label_smoothing=eps), reduction)
        assert np.isfinite(grad).all()
    assert loss == inf


def test_empty_batch_grad():
    x = np.zeros((0, 3), np.float32)
    for reduction in ("none", "mean", "sum"):
        _loss, grad = sx.cross_entropy_with_grad(x, np.zeros(0, np.int64), reduction=reduction)
        assert grad.shape == (0, 3) and grad.dtype == np.float32


def test_logits_not_modified_without_out():
    x, y, kwargs = make_index_case((4, 5), -1, np.float32, seed=8, label_smoothing=0.1)
    copy = x.copy()
    sx.cross_entropy_with_grad(x, y, **kwargs)
    np.testing.assert_array_equal(x, copy)


# ------------------------------------------------------------- finite differences (float64)

# Central differences have truncation error O(h^2 f''') and rounding error O(eps/h); with
# h = 1e-5 both are ~1e-10 for these O(1) functions, hence the tolerance of the method
# (not of a dtype) below.
FD_H = 1e-5
FD_TOL = dict(rtol=1e-6, atol=1e-8)


def numeric_grad(f, x: np.ndarray, h: float = FD_H) -> np.ndarray:
    """Central finite-difference gradient of the scalar function ``f`` at ``x`` (float64)."""
    grad = np.empty_like(x, dtype=np.float64)
    for index in np.ndindex(x.shape):
        xp = x.copy()
        xm = x.copy()
        xp[index] += h
        xm[index] -= h
        grad[index] = (float(f(xp)) - float(f(xm))) / (2 * h)
    return grad


def _validate_with_torch(np_fn, torch_fn, x):
    """The FD helper on a softxent function agrees with torch autograd of the same function."""
    numeric = numeric_grad(np_fn, x)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    (auto,) = torch.autograd.grad(torch_fn(xt), xt)
    np.testing.assert_allclose(numeric, auto.numpy(), **FD_TOL)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_finite_difference_helper_on_softmax_family(axis):
    x = random_logits((3, 4, 2), np.float64, seed=9, scale=1.0)
    g = np.random.default_rng(1).standard_normal(x.shape)
    gt = torch.from_numpy(g)
    _validate_with_torch(
        lambda a: np.sum(g * sx.softmax(a, axis=axis)),
        lambda t: (gt * torch.softmax(t, axis)).sum(),
        x,
    )
    _validate_with_torch(
        lambda a: np.sum(g * sx.log_softmax(a, axis=axis)),
        lambda t: (gt * torch.log_softmax(t, axis)).sum(),
        x,
    )
    lse_g = g.sum(axis=axis)
    _validate_with_torch(
        lambda a: np.sum(lse_g * sx.logsumexp(a, axis=axis)),
        lambda t: (torch.from_numpy(lse_g) * torch.logsumexp(t, axis)).sum(),
        x,
    )


FD_CASES = {
    "index": dict(),
    "index-weight-smoothing": dict(weight=True, label_smoothing=0.3),
    "index-ignore-weight": dict(weight=True, ignore_fraction=0.3),
    "index-all": dict(weight=True, ignore_fraction=0.3, label_smoothing=0.15),
    "prob": dict(soft=True),
    "prob-weight-smoothing": dict(soft=True, weight=True, label_smoothing=0.2),
}


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("case", list(FD_CASES))
@pytest.mark.parametrize(("shape", "axis"), [((4, 3), -1), ((2, 3, 2), 1), ((3,), 0)])
def test_grad_matches_finite_differences(shape, axis, case, reduction):
    opts = dict(FD_CASES[case])
    if opts.pop("soft", False):
        x, t, kwargs = make_prob_case(shape, axis, np.float64, seed=10, **opts)
    else:
        x, t, kwargs = make_index_case(shape, axis, np.float64, seed=10, **opts)
    batch = np.asarray(sx.cross_entropy(x, t, reduction="none", **kwargs)).shape
    g = upstream(reduction, batch, seed=3)

    def f(a):
        loss = sx.cross_entropy(a, t, reduction=reduction, **kwargs)
        return np.sum(g * np.asarray(loss))

    _, grad = sx.cross_entropy_with_grad(x, t, reduction=reduction, grad_output=g, **kwargs)
    if np.isnan(f(x)):  # the single sample of the 1-D case is ignored: mean of nothing
        np.testing.assert_array_equal(grad, 0)
    else:
        np.testing.assert_allclose(grad, numeric_grad(f, x), **FD_TOL)


def test_finite_differences_soft_targets_unnormalised():
    # Probability targets are not validated (spec §6.4): the gradient formula must still hold.
    x = random_logits((3, 4), np.float64, seed=11, scale=1.0)
    t = random_probs((3, 4), -1, np.float64) * 1.7 - 0.1
    _, grad = sx.cross_entropy_with_grad(x, t, reduction="sum", label_smoothing=0.1)
    numeric = numeric_grad(
        lambda a: sx.cross_entropy(a, t, reduction="sum", label_smoothing=0.1), x
    )
    np.testing.assert_allclose(grad, numeric, **FD_TOL)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize(
    "options",
    [{}, {"label_smoothing": 0.1}, {"reduction": "none"}, {"weight": "random"}],
    ids=["plain", "smoothing", "none", "weight"],
)
def test_wide_rows_redone_with_a_shift_match_torch_in_place_too(dtype, options):
    # Rows of >= 256 classes skip the max shift unless they overflow, underflow or hold
    # inf/NaN; those rows are redone shifted, which in place needs the logits intact.
    generator = np.random.default_rng(11)
    x = (generator.standard_normal((9, 300)) * 3).astype(dtype)
    big = 200 if dtype != np.float16 else 20
    x[1, 5] = np.inf
    x[2] += big
    x[3] -= big * 1.5
    x[4, 7] = np.nan
    y = generator.integers(0, 300, size=9)
    x[5, y[5]] = -np.inf
    x[6, :] = -np.inf
    y[6] = -100  # an ignored row of -inf: its gradient row is 0 (pytorch#11551)
    options = dict(options)
    if options.get("weight") == "random":
        options["weight"] = generator.uniform(0.5, 2.0, size=300).astype(dtype)
    fresh = sx.cross_entropy_with_grad(x, y, **options)
    inplace = x.copy()
    result = sx.cross_entropy_with_grad(inplace, y, out=inplace, **options)
    assert result.grad is inplace
    np.testing.assert_array_equal(np.asarray(result.loss), np.asarray(fresh.loss))
    np.testing.assert_array_equal(result.grad, fresh.grad)
    loss, grad = torch_cross_entropy(x, y, with_grad=True, **options)
    assert_close(fresh.loss, loss, dtype, scale=logit_scale(x))
    rows = [0, 1, 2, 3, 4, 5, 7, 8]  # the ignored -inf row: 0 here, NaN in torch
    assert_close(fresh.grad[rows], grad[rows], dtype, scale=logit_scale(x))
    assert (fresh.grad[6] == 0).all()

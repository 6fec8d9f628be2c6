"""mse_loss, binary_cross_entropy(_with_logits), kl_div and their *_with_grad twins against
torch (loss and autograd gradient), float64 finite differences, special values, empty and
N-d inputs, thread independence and bad input."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import softxent as sx
from softxent import _elementwise, _elementwise_kernels

from conftest import FLOAT_DTYPES, assert_close, logit_scale, ref_dtype, rng

inf, nan = np.inf, np.nan


@dataclass(frozen=True)
class Loss:
    """One loss: its NumPy functions, torch's, and how to draw its input and target."""

    name: str
    fn: Callable[..., Any]
    with_grad: Callable[..., sx.LossAndGrad]
    torch_fn: Callable[..., torch.Tensor]
    input_name: str

    def draw_input(self, shape, dtype, seed) -> np.ndarray:
        r = rng(seed)
        if self.name == "binary_cross_entropy":
            q = r.random(shape)
            q[r.random(shape) < 0.1] = 0.0
            q[r.random(shape) < 0.1] = 1.0
            return q.astype(dtype)
        if self.name == "kl_div":
            return np.log(r.random(shape) + 1e-3).astype(dtype)
        return (r.standard_normal(shape) * 3).astype(dtype)

    def draw_target(self, shape, dtype, seed) -> np.ndarray:
        r = rng(seed + 1)
        if self.name == "mse_loss":
            return r.standard_normal(shape).astype(dtype)
        t = r.random(shape)
        t[r.random(shape) < 0.2] = 0.0  # hard labels and zero targets
        t[r.random(shape) < 0.2] = 1.0
        return t.astype(dtype)


def _torch_mse(x, t, weight=None, reduction="mean"):
    return F.mse_loss(x, t, reduction=reduction, weight=weight)


def _torch_kl(x, t, reduction="mean", log_target=False):
    return F.kl_div(x, t, reduction=reduction, log_target=log_target)


LOSSES = {
    loss.name: loss
    for loss in [
        Loss("mse_loss", sx.mse_loss, sx.mse_loss_with_grad, _torch_mse, "input"),
        Loss(
            "binary_cross_entropy_with_logits",
            sx.binary_cross_entropy_with_logits,
            sx.binary_cross_entropy_with_logits_with_grad,
            F.binary_cross_entropy_with_logits,
            "logits",
        ),
        Loss(
            "binary_cross_entropy",
            sx.binary_cross_entropy,
            sx.binary_cross_entropy_with_grad,
            F.binary_cross_entropy,
            "probs",
        ),
        Loss("kl_div", sx.kl_div, sx.kl_div_with_grad, _torch_kl, "log_probs"),
    ]
}


def _t(a, dtype):
    return torch.from_numpy(np.array(a, dtype=dtype))


def torch_oracle(loss: Loss, x, t, reduction, grad_output=None, **options):
    """torch's loss and autograd gradient, computed in the reference dtype and cast back."""
    out_dtype = np.result_type(x, t, *(v for v in options.values() if isinstance(v, np.ndarray)))
    if loss.name == "binary_cross_entropy_with_logits":
        out_dtype = t.dtype  # torch's: the target's dtype, whatever the logits' and weights'
    ct = ref_dtype(out_dtype)
    xt = _t(x, ct).requires_grad_(True)
    kwargs = {k: _t(v, ct) if isinstance(v, np.ndarray) else v for k, v in options.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kl_div's 'mean' warning, mse/kl broadcast ones
        value = loss.torch_fn(xt, _t(t, ct), reduction=reduction, **kwargs)
    g = torch.ones_like(value) if grad_output is None else _t(grad_output, ct)
    (grad,) = torch.autograd.grad(value, xt, g)
    with np.errstate(over="ignore"):  # float16 gradients of 1e12 (BCE at q = 0, 1) are inf
        return value.detach().numpy().astype(out_dtype), grad.numpy().astype(x.dtype)


def options_for(loss: Loss, shape, dtype, data) -> dict[str, Any]:
    """Random options of ``loss`` for an input of ``shape``: weights of the full shape or
    of a shape that broadcasts, pos_weight along the last axis, log_target."""
    r = rng(data.draw(st.integers(0, 1000)))
    options: dict[str, Any] = {}
    if loss.name == "mse_loss" and data.draw(st.booleans()):
        options["weight"] = r.uniform(0, 2, shape).astype(dtype)
    if loss.name.startswith("binary") and data.draw(st.booleans()):
        wshape = data.draw(st.sampled_from([shape, shape[-1:], (1,) * len(shape), ()]))
        options["weight"] = r.uniform(0, 2, wshape).astype(dtype)
    if loss.name == "binary_cross_entropy_with_logits" and data.draw(st.booleans()):
        options["pos_weight"] = r.uniform(0.5, 3, shape[-1:]).astype(dtype)
    if loss.name == "kl_div":
        options["log_target"] = data.draw(st.booleans())
    return options


def error_scale(loss: Loss, x, options, reduction) -> float:
    """The absolute error scale of one entry's loss (or gradient) times the number of
    entries a reduced value adds up: terms cancel (``(1 - t) x + sp(-x)``, ``t log t - t x``)
    so the error is relative to the largest input and weight, not to the result."""
    scale = logit_scale(x)
    for value in options.values():
        if isinstance(value, np.ndarray) and value.size:
            scale *= max(1.0, float(np.abs(value).max()))
    if reduction == "sum":
        scale *= max(1, x.size)
    return scale


def check_against_torch(loss: Loss, x, t, reduction, grad_output=None, **options):
    expected, expected_grad = torch_oracle(loss, x, t, reduction, grad_output, **options)
    value = loss.fn(x, t, reduction=reduction, **options)
    result = loss.with_grad(x, t, reduction=reduction, grad_output=grad_output, **options)
    assert isinstance(result, sx.LossAndGrad)
    # The fused loss is exactly the plain one.
    assert np.array_equal(result.loss, value, equal_nan=True)
    assert np.asarray(result.loss).dtype == np.asarray(value).dtype
    scale = error_scale(loss, x, options, reduction)
    assert_close(value, expected, expected.dtype, scale=scale)
    assert result.grad.shape == x.shape and result.grad.dtype == x.dtype
    g = 1.0 if grad_output is None else float(np.abs(grad_output).max(initial=1.0))
    grad_scale = (
        scale * g * float(np.abs(expected_grad[np.isfinite(expected_grad)]).max(initial=1))
    )
    assert_close(result.grad, expected_grad, x.dtype, scale=grad_scale)
    return value, result


REDUCTIONS = {name: ("none", "mean", "sum") for name in LOSSES}
REDUCTIONS["kl_div"] = ("none", "mean", "sum", "batchmean")


@pytest.mark.parametrize("name", list(LOSSES))
@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data())
def test_matches_torch(name, data):
    loss = LOSSES[name]
    ndim = data.draw(st.integers(0, 4))
    shape = tuple(data.draw(st.lists(st.integers(0, 5), min_size=ndim, max_size=ndim)))
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES))
    reduction = data.draw(st.sampled_from(REDUCTIONS[name]))
    seed = data.draw(st.integers(0, 2**16))
    x = loss.draw_input(shape, dtype, seed)
    t = loss.draw_target(shape, dtype, seed)
    options = options_for(loss, shape, dtype, data) if ndim else {}
    grad_output = None
    if data.draw(st.booleans()):
        r = rng(seed + 7)
        grad_output = r.standard_normal(shape) if reduction == "none" else np.float64(1.5)
    check_against_torch(loss, x, t, reduction, grad_output, **options)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bce_with_logits_saturated(dtype, reduction):
    """|x| = 80: sigmoid rounds to 0 or 1, the stable formula does not."""
    x = np.array([[80.0, -80.0, 80.0, -80.0, 0.0], [-80.0, 80.0, 30.0, -30.0, 1e-3]], dtype)
    t = np.array([[1.0, 0.0, 0.0, 1.0, 0.5], [0.3, 0.7, 1.0, 0.0, 1.0]], dtype)
    pos_weight = np.array([2.0, 0.5, 3.0, 1.0, 1.5], dtype)
    value, _ = check_against_torch(LOSSES["binary_cross_entropy_with_logits"], x, t, reduction)
    assert np.isfinite(value).all()
    check_against_torch(
        LOSSES["binary_cross_entropy_with_logits"], x, t, reduction, pos_weight=pos_weight
    )
    # -log(sigmoid(-80)) is 80 exactly, not inf.
    loss = sx.binary_cross_entropy_with_logits(x, t, reduction="none")
    assert float(loss[0, 3]) == 80.0 and float(loss[0, 2]) == 80.0


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bce_probabilities_zero_and_one(dtype, reduction):
    """torch clamps the logarithms at -100 and floors q (1 - q) at 1e-12 in the gradient."""
    q = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.5], dtype)
    t = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 1.0], dtype)
    w = np.array([1.0, 2.0, 1.0, 1.0, 0.5, 1.0, 3.0], dtype)
    check_against_torch(LOSSES["binary_cross_entropy"], q, t, reduction)
    check_against_torch(LOSSES["binary_cross_entropy"], q, t, reduction, weight=w)
    assert sx.binary_cross_entropy(q, t, reduction="none")[0] == 100


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("reduction", ["none", "sum", "batchmean"])
def test_kl_div_special_targets(dtype, reduction):
    """Zero targets contribute 0 (NaN against a -inf log-probability, as torch's
    ``xlogy(t, t) - t x``); a negative target is NaN; with log_target, a -inf target is NaN."""
    x = np.array([[-1.0, -inf, -2.0, -0.5], [-3.0, -1.0, -inf, -0.1]], dtype)
    t = np.array([[0.0, 0.5, 0.5, 0.0], [0.0, 1.0, 0.0, -0.25]], dtype)
    loss = LOSSES["kl_div"]
    check_against_torch(loss, x, t, reduction)
    none = sx.kl_div(x, t, reduction="none")
    assert none[0, 0] == 0 and none[0, 3] == 0
    assert np.isnan(none[1, 2]) and np.isnan(none[1, 3]) and np.isinf(none[0, 1])
    lt = np.array([[-inf, 0.0, -1.0, -2.0], [-0.5, -inf, -3.0, -1.0]], dtype)
    finite_x = np.where(np.isfinite(x), x, -5.0).astype(dtype)
    check_against_torch(loss, finite_x, lt, reduction, log_target=True)
    assert np.isnan(sx.kl_div(finite_x, lt, reduction="none", log_target=True)[0, 0])


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4, 2)])
def test_empty_inputs(name, shape):
    loss = LOSSES[name]
    x = loss.draw_input(shape, np.float32, 0)
    t = loss.draw_target(shape, np.float32, 0)
    for reduction in REDUCTIONS[name]:
        check_against_torch(loss, x, t, reduction)
    assert np.isnan(loss.fn(x, t)) and loss.fn(x, t, reduction="sum") == 0


@pytest.mark.parametrize("name", list(LOSSES))
def test_zero_dimensional_input(name):
    loss = LOSSES[name]
    x = loss.draw_input((), np.float64, 3)
    t = loss.draw_target((), np.float64, 3)
    for reduction in REDUCTIONS[name]:
        _, result = check_against_torch(loss, x, t, reduction)
        assert result.grad.shape == ()


def test_targets_broadcast_where_torch_broadcasts():
    """mse_loss and kl_div broadcast the target to the input (torch does, with a warning)."""
    x = rng(0).standard_normal((3, 4))
    check_against_torch(LOSSES["mse_loss"], x, np.array([0.5, -1.0, 2.0, 0.0]), "mean")
    lp = np.log(rng(1).random((3, 4)))
    check_against_torch(LOSSES["kl_div"], lp, np.full((1, 4), 0.25), "batchmean")


def test_result_dtype_is_the_promotion_of_array_arguments():
    x16 = np.array([0.5, -1.0], np.float16)
    t32 = np.array([0.0, 1.0], np.float32)
    for name in ("mse_loss", "binary_cross_entropy_with_logits", "kl_div"):
        value, result = check_against_torch(LOSSES[name], x16, t32, "mean")
        assert value.dtype == np.float32 and result.grad.dtype == np.float16
    # lists follow the input
    assert sx.mse_loss(x16, [0.0, 1.0]).dtype == np.float16
    # torch's binary_cross_entropy_with_logits returns the target's dtype
    x32, t16 = x16.astype(np.float32), t32.astype(np.float16)
    value, _ = check_against_torch(LOSSES["binary_cross_entropy_with_logits"], x32, t16, "sum")
    assert value.dtype == np.float16


# ------------------------------------------------------------- finite differences (float64)

FD_H = 1e-6
FD_TOL = dict(rtol=1e-6, atol=1e-8)  # of the method: O(h^2) truncation, O(eps/h) rounding


def numeric_grad(f, x: np.ndarray) -> np.ndarray:
    grad = np.empty_like(x)
    for index in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[index] += FD_H
        xm[index] -= FD_H
        grad[index] = (float(f(xp)) - float(f(xm))) / (2 * FD_H)
    return grad


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_grad_matches_finite_differences(name, reduction):
    loss = LOSSES[name]
    x = loss.draw_input((3, 4), np.float64, 5)
    if name == "binary_cross_entropy":
        x = np.clip(x, 0.05, 0.95)  # away from the clamps, where the function is smooth
    t = loss.draw_target((3, 4), np.float64, 5)
    options: dict[str, Any] = {}
    if name == "mse_loss":
        options["weight"] = rng(2).uniform(0.1, 2, (3, 4))
    elif name == "binary_cross_entropy_with_logits":
        options.update(weight=rng(2).uniform(0.1, 2, (3, 1)), pos_weight=rng(3).uniform(1, 3, 4))

    def f(a):
        return loss.fn(a, t, reduction=reduction, **options)

    grad = loss.with_grad(x, t, reduction=reduction, **options).grad
    np.testing.assert_allclose(grad, numeric_grad(f, x), **FD_TOL)


# ------------------------------------------------------------------ layouts and threads


@pytest.mark.parametrize("name", list(LOSSES))
def test_results_do_not_depend_on_threads_or_blocks(name, monkeypatch, restore_threads):
    loss = LOSSES[name]
    base = loss.draw_input((7, 5, 33), np.float32, 11)
    x = np.asfortranarray(base)[:, ::2]  # strided, Fortran-ordered
    t = loss.draw_target(x.shape, np.float32, 11)
    options = {"weight": rng(4).random(x.shape[-1:]).astype(np.float32)}
    if name in ("mse_loss", "kl_div"):
        options = {} if name == "kl_div" else {"weight": rng(4).random(x.shape).astype(np.float32)}
    results = []
    for threads, block_bytes in [(1, None), (1, 200), (3, 200), (4, 64)]:
        sx.set_num_threads(threads)
        if block_bytes is not None:
            monkeypatch.setattr(_elementwise, "BLOCK_BYTES", block_bytes)
        for reduction in ("none", "sum"):
            results.append(loss.with_grad(x, t, reduction=reduction, **options))
    for reduction_offset in (0, 1):
        first = results[reduction_offset]
        for other in results[reduction_offset::2]:
            assert np.array_equal(other.grad, first.grad, equal_nan=True)
            if reduction_offset == 0:
                assert np.array_equal(other.loss, first.loss, equal_nan=True)
    # the sum of blocks is the float64 sum of the entries, within float64 rounding
    check_against_torch(loss, np.ascontiguousarray(x), t, "sum", **options)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", list(LOSSES))
def test_integer_input_is_a_type_error_naming_it(name):
    loss = LOSSES[name]
    with pytest.raises(TypeError, match=rf"^{loss.input_name} must be a floating-point"):
        loss.fn(np.array([0, 1]), np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match=r"^target must be a floating-point"):
        loss.fn(np.array([0.0, 1.0]), np.array([0, 1]))


@pytest.mark.parametrize("name", list(LOSSES))
def test_bad_reduction(name):
    loss = LOSSES[name]
    with pytest.raises(ValueError, match=r"reduction must be one of .*got 'avg'"):
        loss.fn([0.5], [0.5], reduction="avg")


def test_batchmean_is_only_for_kl_div():
    with pytest.raises(ValueError, match="got 'batchmean'"):
        sx.mse_loss([0.5], [0.5], reduction="batchmean")


@pytest.mark.parametrize("name", ["binary_cross_entropy_with_logits", "binary_cross_entropy"])
def test_bce_target_must_have_the_input_shape(name):
    loss = LOSSES[name]
    with pytest.raises(
        ValueError, match=rf"^target must have the shape of {loss.input_name} \(2, 3\)"
    ):
        loss.fn(np.full((2, 3), 0.5), np.full((3,), 0.5))


@pytest.mark.parametrize("name", ["mse_loss", "kl_div"])
def test_target_must_broadcast_to_the_input(name):
    loss = LOSSES[name]
    with pytest.raises(ValueError, match=r"^target of shape \(2, 3\) does not broadcast"):
        loss.fn(np.full((3,), 0.5), np.full((2, 3), 0.5))


def test_mse_weight_must_have_the_input_shape():
    """torch 2.13: "Weights and input must have the same size"."""
    with pytest.raises(ValueError, match=r"^weight must have the shape of input \(2, 3\)"):
        sx.mse_loss(np.zeros((2, 3)), np.zeros((2, 3)), weight=np.ones(3))


@pytest.mark.parametrize("key", ["weight", "pos_weight"])
def test_bce_weights_must_broadcast(key):
    with pytest.raises(ValueError, match=rf"^{key} of shape \(2, 2, 3\) does not broadcast"):
        sx.binary_cross_entropy_with_logits(
            np.zeros((2, 3)), np.zeros((2, 3)), **{key: np.ones((2, 2, 3))}
        )
    with pytest.raises(TypeError, match=f"^{key} must be a real number"):
        sx.binary_cross_entropy_with_logits(np.zeros(3), np.zeros(3), **{key: [True] * 3})


@pytest.mark.parametrize("value", [1.5, -0.25, nan])
def test_bce_probabilities_outside_the_unit_interval(value):
    probs = np.full((2, 3), 0.5)
    probs[1, 2] = value
    with pytest.raises(
        ValueError,
        match=rf"^probs must hold probabilities in \[0, 1\], got .*{value}.* at \[1, 2\]",
    ):
        sx.binary_cross_entropy(probs, np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"^target must hold probabilities .* at \[1, 2\]"):
        sx.binary_cross_entropy_with_grad(np.full((2, 3), 0.5), probs)


def test_kl_div_log_target_must_be_a_bool():
    with pytest.raises(TypeError, match=r"^log_target must be a bool, got 1"):
        sx.kl_div([-1.0], [0.5], log_target=1)


@pytest.mark.parametrize("name", list(LOSSES))
def test_grad_output_shape(name):
    loss = LOSSES[name]
    with pytest.raises(ValueError, match=r"^grad_output must have the shape of the loss \(2,\)"):
        loss.with_grad([0.5, 0.5], [0.5, 0.5], reduction="none", grad_output=[1.0])
    with pytest.raises(ValueError, match=r"^grad_output must be a scalar for reduction='sum'"):
        loss.with_grad([0.5, 0.5], [0.5, 0.5], reduction="sum", grad_output=[1.0, 1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_log1p_is_within_a_few_ulps(dtype):
    """The kernels' log1p (Kahan's trick, NumPy's own is a slow scalar loop), over (-1, inf):
    tiny values where 1 + y rounds to 1, both signs, -1 itself."""
    r = rng(3)
    special = [0.0, -0.0, -1.0, 1e-30, -1e-30, 1e-8, -1e-8, 2.0**-24, 1.0, 1e30]
    positive = 10.0 ** r.uniform(-40, 3, 1000)
    negative = -(10.0 ** r.uniform(-40, -1e-9, 1000))
    y = np.concatenate([special, r.uniform(-1, 1, 1000), positive, negative]).astype(dtype)
    with np.errstate(all="ignore"):  # as in the driver: -1 gives -inf, by design
        got = _elementwise_kernels.log1p_into(y, np.empty_like(y), np.empty_like(y))
        want = np.log1p(y.astype(np.float64))
        assert got[2] == -np.inf
        ulp = np.spacing(np.abs(want).astype(dtype)).astype(np.float64)
        assert np.all((np.abs(got - want) <= 4 * ulp) | (got == want))


@pytest.mark.parametrize(
    "name", ["mse_loss", "binary_cross_entropy_with_logits", "binary_cross_entropy", "kl_div"]
)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_float16_is_computed_in_float32_and_rounded_once(name, reduction):
    # float16 entries are converted to float32 once; every step runs in float32 (as torch's
    # CPU kernels compute half precision) and the loss and gradient are rounded to float16
    # at the end, subnormal gradients included (a mean over many entries).
    rng = np.random.default_rng(7)
    x = rng.uniform(0.02, 0.98, (300, 37)).astype(np.float16)  # probabilities for BCE
    t = rng.uniform(0.0, 1.0, (300, 37)).astype(np.float16)
    fn = getattr(sx, f"{name}_with_grad")
    got = fn(x, t, reduction=reduction)
    want = fn(x.astype(np.float32), t.astype(np.float32), reduction=reduction)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got.loss, np.asarray(want.loss).astype(np.float16))
        np.testing.assert_array_equal(got.grad, want.grad.astype(np.float16))
    assert got.grad.dtype == np.float16
    if reduction == "mean":
        assert (np.abs(got.grad) < np.finfo(np.float16).tiny).any()  # subnormals were stored

"""cross_entropy and nll_loss against torch.nn.functional (spec §5, §6)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import softxent as sx

from conftest import (
    FLOAT_DTYPES,
    assert_close,
    float_dtypes,
    logit_scale,
    random_logits,
    random_probs,
    reductions,
    rng,
    shapes_and_axis,
    torch_cross_entropy,
)

inf, nan = np.inf, np.nan

STUDY_PRED = np.array([[0.3, 0.1, 0.3], [0.9, 0.2, 0.9], [0.5, 0.4, 0.2]], np.float32)
STUDY_TARGET = np.array([1, 2, 0])

# (shape, class axis): 1-D, 2-D, torch's 4-D layout with axis=1, and other axes.
SHAPES = [((5,), 0), ((6, 4), -1), ((2, 3, 4, 5), 1), ((3, 2, 5), 0), ((2, 5, 3), 2), ((4, 3), 0)]


# ------------------------------------------------------------------------ case builders


def make_index_case(
    shape,
    axis,
    dtype,
    seed=0,
    *,
    weight=False,
    ignore_index=-100,
    ignore_fraction=0.0,
    label_smoothing=0.0,
):
    """Logits, class-index target and the keyword options of one call."""
    rng = np.random.default_rng(seed)
    x = random_logits(shape, dtype, seed=seed)
    num_classes = shape[axis]
    batch = tuple(n for d, n in enumerate(shape) if d != axis % len(shape))
    y = rng.integers(0, num_classes, size=batch)
    if ignore_fraction:
        y = np.where(rng.random(batch) < ignore_fraction, ignore_index, y)
    kwargs = dict(axis=axis, ignore_index=ignore_index, label_smoothing=label_smoothing)
    if weight:
        kwargs["weight"] = class_weights(rng, num_classes, signed=weight == "signed")
    return x, y, kwargs


def class_weights(rng, num_classes, *, signed=False):
    """Weights of size in [0.5, 2]; ``signed``: each negative with probability 1/2 (torch
    computes negative weights, and its own tests use them)."""
    w = rng.uniform(0.5, 2.0, num_classes)
    return w * rng.choice([-1.0, 1.0], num_classes) if signed else w


def make_prob_case(shape, axis, dtype, seed=0, *, weight=False, label_smoothing=0.0):
    rng = np.random.default_rng(seed)
    x = random_logits(shape, dtype, seed=seed)
    t = random_probs(shape, axis, dtype, seed=seed + 1)
    kwargs = dict(axis=axis, label_smoothing=label_smoothing)
    if weight:  # in the logits' dtype, so that it does not promote the result
        kwargs["weight"] = class_weights(rng, shape[axis], signed=weight == "signed").astype(dtype)
    return x, t, kwargs


def loss_scale(x, kwargs, reduction, num_rows, target=None) -> float:
    """Absolute error scale of a loss: ``x - max x`` cancels, weights and sums multiply it.

    With negative weights the weighted mean divides by ``D = sum w[y]``, which can be
    much smaller than the ``sum |w[y]|`` that scales the rounding errors of the sum.
    """
    w = kwargs.get("weight")
    ratio = 1.0 if w is None else float(np.max(np.abs(w)) / np.min(np.abs(w)))
    if w is not None and (np.asarray(w) < 0).any() and reduction == "mean" and target is not None:
        y = np.asarray(target)
        if y.dtype.kind in "iu":
            valid = y != kwargs.get("ignore_index", -100)
            wy = np.asarray(w, np.float64)[np.where(valid, y, 0)][valid]
            if wy.size and np.sum(wy) != 0:
                ratio *= float(np.sum(np.abs(wy)) / abs(np.sum(wy)))
    return logit_scale(x) * ratio * (max(1, num_rows) if reduction == "sum" else 1)


def check_against_torch(x, target, kwargs, reduction, *, dtype=None):
    out = sx.cross_entropy(x, target, reduction=reduction, **kwargs)
    expected = torch_cross_entropy(x, target, reduction=reduction, **kwargs)
    num_rows = x.size // max(1, x.shape[kwargs["axis"]])
    if reduction != "none":
        assert isinstance(out, np.generic), type(out)
    else:
        assert isinstance(out, np.ndarray)
    scale = loss_scale(x, kwargs, reduction, num_rows, target)
    assert_close(out, expected, dtype or expected.dtype, scale=scale)
    return out


# ------------------------------------------------------------------- published numbers


def test_study_note_example():
    loss = sx.cross_entropy(STUDY_PRED, STUDY_TARGET)
    assert isinstance(loss, np.float32)
    assert_close(loss, np.float32(1.04137659), np.float32)
    assert_close(loss, torch_cross_entropy(STUDY_PRED, STUDY_TARGET), np.float32)
    per_sample = sx.cross_entropy(STUDY_PRED, STUDY_TARGET, reduction="none")
    assert per_sample.dtype == np.float32 and per_sample.shape == (3,)
    assert_close(
        per_sample, np.array([1.23628676, 0.91492397, 0.97291893], np.float32), np.float32
    )
    # With the same decimals in float64: the oracle is torch itself, not a copied number
    # (the published 1.041376514844158 is not what torch computes).
    logits64 = STUDY_PRED.astype(np.float64).round(1)
    loss64 = sx.cross_entropy(logits64, STUDY_TARGET)
    assert_close(loss64, torch_cross_entropy(logits64, STUDY_TARGET), np.float64)
    # The textbook recipe: softmax, one-hot, -sum(t log p) / N.
    p = sx.softmax(STUDY_PRED.astype(np.float64), axis=1)
    naive = -np.sum(sx.one_hot(STUDY_TARGET, 3, dtype=np.float64) * np.log(p)) / 3
    assert_close(sx.cross_entropy(STUDY_PRED.astype(np.float64), STUDY_TARGET), naive, np.float64)


# Spec §6.3 worked example (float64); the published numbers have 8 decimals.
X63 = np.array([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]])
Y63 = np.array([1, 0])
W63 = np.array([1.0, 10.0, 1.0])
PRINTED = dict(rtol=0, atol=5e-9)


def test_spec_6_3_worked_example():
    kw = dict(weight=W63, label_smoothing=0.3)
    none = sx.cross_entropy(X63, Y63, reduction="none", **kw)
    np.testing.assert_allclose(none, [11.54236891, 1.79784815], **PRINTED)
    np.testing.assert_allclose(
        sx.cross_entropy(X63, Y63, reduction="sum", **kw), 13.34021706, **PRINTED
    )
    np.testing.assert_allclose(sx.cross_entropy(X63, Y63, **kw), 1.21274701, **PRINTED)
    for reduction in ("none", "sum", "mean"):
        check_against_torch(X63, Y63, dict(axis=-1, **kw), reduction)
    # The contrasts of spec §6.3.
    onehot = sx.one_hot(Y63, 3, dtype=np.float64)
    np.testing.assert_allclose(sx.cross_entropy(X63, onehot, **kw), 6.67010853, **PRINTED)
    np.testing.assert_allclose(
        sx.cross_entropy(X63, onehot, reduction="none", **kw), none, rtol=1e-12
    )
    np.testing.assert_allclose(
        sx.cross_entropy(X63, Y63, label_smoothing=0.3), 1.10586828, **PRINTED
    )
    np.testing.assert_allclose(sx.cross_entropy(X63, Y63, weight=W63), 1.33456275, **PRINTED)


@pytest.mark.parametrize(
    ("weight", "smoothed"),
    [([1, 1, 1], 2.10760596), ([1, 10, 1], 3.37445133), ([10, 1, 1], 1.94423689)],
)
def test_spec_6_3_single_sample(weight, smoothed):
    x = np.array([[1.0, 2.0, 3.0]])
    w = np.array(weight, np.float64)
    y = np.array([0])
    got = sx.cross_entropy(x, y, weight=w, label_smoothing=0.3)
    np.testing.assert_allclose(got, smoothed, **PRINTED)
    # Without smoothing the weights cancel for a single sample.
    np.testing.assert_allclose(sx.cross_entropy(x, y, weight=w), 2.40760596, **PRINTED)
    np.testing.assert_allclose(
        sx.cross_entropy(x[0], np.array(0), weight=w), 2.40760596, **PRINTED
    )


# ---------------------------------------------------------------- parity: every option

INDEX_OPTIONS = {
    "plain": {},
    "weight": dict(weight=True),
    "signed-weight": dict(weight="signed"),
    "signed-weight-ignore-smoothing": dict(
        weight="signed", ignore_index=-100, ignore_fraction=0.3, label_smoothing=0.2
    ),
    "ignore-in-range": dict(ignore_index=1),
    "ignore-negative": dict(ignore_index=-1, ignore_fraction=0.3),
    "ignore-out-of-range": dict(ignore_index=99, ignore_fraction=0.3),
    "smoothing": dict(label_smoothing=0.3),
    "smoothing-1-weight": dict(label_smoothing=1.0, weight=True),
    "weight-ignore-smoothing": dict(
        weight=True, ignore_index=-100, ignore_fraction=0.3, label_smoothing=0.2
    ),
    "weight-ignore-class-smoothing": dict(weight=True, ignore_index=2, label_smoothing=0.1),
}


@pytest.mark.parametrize("options", list(INDEX_OPTIONS))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("shape", "axis"), SHAPES)
def test_class_indices_match_torch(shape, axis, dtype, options):
    x, y, kwargs = make_index_case(shape, axis, dtype, seed=len(shape), **INDEX_OPTIONS[options])
    for reduction in ("none", "mean", "sum"):
        check_against_torch(x, y, kwargs, reduction)


PROB_OPTIONS = {
    "plain": {},
    "weight": dict(weight=True),
    "smoothing": dict(label_smoothing=0.3),
    "smoothing-weight": dict(label_smoothing=0.25, weight=True),
    "smoothing-signed-weight": dict(label_smoothing=0.25, weight="signed"),
    "smoothing-1": dict(label_smoothing=1.0),
}


@pytest.mark.parametrize("options", list(PROB_OPTIONS))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("shape", "axis"), SHAPES)
def test_probabilities_match_torch(shape, axis, dtype, options):
    x, t, kwargs = make_prob_case(shape, axis, dtype, seed=len(shape), **PROB_OPTIONS[options])
    for reduction in ("none", "mean", "sum"):
        out = check_against_torch(x, t, kwargs, reduction)
        assert np.asarray(out).dtype == dtype


@settings(max_examples=25, deadline=None)
@given(
    shapes_and_axis(max_side=4),
    float_dtypes,
    reductions,
    st.sampled_from([False, True, "signed"]),
    st.sampled_from([0.0, 0.05, 1.0]),
    st.sampled_from([(-100, 0.0), (-100, 0.5), (0, 0.0), (7, 0.4), (-1, 1.0)]),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_cross_entropy_hypothesis(shape_axis, dtype, reduction, weight, eps, ignore, soft, seed):
    shape, axis = shape_axis
    if soft:
        x, t, kwargs = make_prob_case(shape, axis, dtype, seed, weight=weight, label_smoothing=eps)
    else:
        ignore_index, fraction = ignore
        x, t, kwargs = make_index_case(
            shape,
            axis,
            dtype,
            seed,
            weight=weight,
            ignore_index=ignore_index,
            ignore_fraction=fraction,
            label_smoothing=eps,
        )
    check_against_torch(x, t, kwargs, reduction)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_class_indices_match_torch_in_own_dtype(dtype):
    # Besides the float64 truth, torch computing in float32 itself agrees at float32 tolerance.
    x, y, kwargs = make_index_case(
        (40, 17), -1, dtype, seed=3, weight=True, ignore_fraction=0.2, label_smoothing=0.1
    )
    for reduction in ("none", "mean", "sum"):
        out = sx.cross_entropy(x, y, reduction=reduction, **kwargs)
        expected = torch_cross_entropy(x, y, reduction=reduction, out_dtype=dtype, **kwargs)
        own = torch.nn.functional.cross_entropy(
            torch.from_numpy(x),
            torch.from_numpy(y),
            weight=torch.from_numpy(kwargs["weight"].astype(dtype)),
            reduction=reduction,
            label_smoothing=0.1,
        ).numpy()
        scale = loss_scale(x, kwargs, reduction, 40)
        assert_close(out, own, dtype, scale=scale)
        assert_close(out, expected, dtype, scale=scale)


def test_probability_dtype_promotion():
    x16 = random_logits((3, 4), np.float16)
    t32 = random_probs((3, 4), -1, np.float32)
    out = sx.cross_entropy(x16, t32)
    assert np.asarray(out).dtype == np.float32
    assert_close(out, torch_cross_entropy(x16, t32), np.float32, scale=logit_scale(x16))
    x32 = x16.astype(np.float32)
    w64 = np.array([1.0, 2.0, 0.5, 1.5])
    out = sx.cross_entropy(x32, t32, weight=w64, reduction="none")
    assert out.dtype == np.float64
    # A list target follows the logits' dtype.
    assert np.asarray(sx.cross_entropy(x32, t32.astype(np.float64).tolist())).dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("weight", [None, [0.5, 2.0, 1.0, 1.5]])
def test_list_of_probabilities_is_converted_to_the_logits_dtype(dtype, weight):
    # "Lists take the logits' dtype": the result is that of the same probabilities given as
    # an array of the logits' dtype, bit for bit (also with classes on axis 1), as in the
    # fused linear layer.
    x = np.random.default_rng(3).standard_normal((2, 4, 3)).astype(dtype)
    probs = np.moveaxis(np.random.default_rng(4).dirichlet(np.ones(4), size=(2, 3)), -1, 1)
    options = {"axis": 1, "weight": weight, "label_smoothing": 0.1, "reduction": "none"}
    as_list = sx.cross_entropy_with_grad(x, probs.tolist(), **options)
    as_array = sx.cross_entropy_with_grad(x, probs.astype(dtype), **options)
    for got, expected in zip(as_list, as_array, strict=True):
        np.testing.assert_array_equal(got, expected, strict=True)


@pytest.mark.parametrize("int_dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64])
def test_any_integer_target_dtype(int_dtype):
    x, y, _ = make_index_case((6, 5), -1, np.float64, seed=2)
    expected = sx.cross_entropy(x, y, reduction="none")
    np.testing.assert_array_equal(
        sx.cross_entropy(x, y.astype(int_dtype), reduction="none"), expected
    )
    assert_close(expected, torch_cross_entropy(x, y, reduction="none"), np.float64, scale=10)


def test_uint8_target_with_ignore_index_255():
    x, y, _ = make_index_case((6, 3), -1, np.float32, seed=4)
    y = y.astype(np.uint8)
    y[[1, 4]] = 255
    out = sx.cross_entropy(x, y, ignore_index=255, reduction="none")
    assert out[1] == 0 and out[4] == 0
    assert_close(
        out,
        torch_cross_entropy(x, y, ignore_index=255, reduction="none"),
        np.float32,
        scale=logit_scale(x),
    )


# ------------------------------------------------------------------------------ nll_loss


@pytest.mark.parametrize(
    "options", ["plain", "weight", "ignore-in-range", "ignore-negative", "ignore-out-of-range"]
)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("shape", "axis"), SHAPES)
def test_nll_loss_matches_torch(shape, axis, dtype, options):
    x, y, kwargs = make_index_case(shape, axis, dtype, seed=7, **INDEX_OPTIONS[options])
    kwargs.pop("label_smoothing")
    for reduction in ("none", "mean", "sum"):
        _check_nll(x, y, kwargs, reduction, axis, dtype)


def _check_nll(x, y, kwargs, reduction, axis, dtype):
    # nll_loss just picks entries: arbitrary numbers, not log-probabilities, are fine.
    out = sx.nll_loss(x, y, reduction=reduction, **kwargs)
    expected = torch_cross_entropy(x, y, reduction=reduction, nll=True, **kwargs)
    num_rows = x.size // x.shape[axis]
    assert_close(out, expected, dtype, scale=loss_scale(x, kwargs, reduction, num_rows))
    # nll_loss(log_softmax(x)) == cross_entropy(x).
    lp = sx.log_softmax(x.astype(np.float64), axis=axis)
    ce = sx.cross_entropy(x.astype(np.float64), y, reduction=reduction, **kwargs)
    assert_close(
        sx.nll_loss(lp, y, reduction=reduction, **kwargs),
        ce,
        np.float64,
        scale=loss_scale(x, kwargs, reduction, num_rows),
    )


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_nll_loss_one_dimensional(reduction):
    # A (C,) input with a 0-d target (regression: this used to raise in unravel_index).
    lp = np.array([-0.5, -1.0, -2.0], np.float32)
    out = sx.nll_loss(lp, np.array(1), reduction=reduction)
    assert np.asarray(out).shape == () and np.asarray(out).dtype == np.float32
    assert out == np.float32(1.0)
    assert out == torch_cross_entropy(lp, np.array(1), axis=0, reduction=reduction, nll=True)


def test_nll_loss_empty_and_all_ignored():
    lp = np.zeros((0, 3))
    assert np.isnan(sx.nll_loss(lp, np.zeros(0, int)))
    assert sx.nll_loss(lp, np.zeros(0, int), reduction="sum") == 0
    x = np.full((2, 3), -1.0)
    assert np.isnan(sx.nll_loss(x, np.array([-100, -100])))
    np.testing.assert_array_equal(sx.nll_loss(x, np.array([-100, -100]), reduction="none"), 0)


# -------------------------------------------------------------------------- invariances


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_pytorch_107680_indices_equal_one_hot_probabilities(reduction, eps):
    x, y, kwargs = make_index_case((5, 2, 4), 1, np.float64, seed=9, weight=True)
    kwargs["label_smoothing"] = eps
    t = np.moveaxis(sx.one_hot(y, 2, dtype=np.float64), -1, 1)
    hard = sx.cross_entropy(x, y, reduction=reduction, **kwargs)
    soft = sx.cross_entropy(x, t, reduction=reduction, **kwargs)
    if reduction == "mean":  # weighted mean divides by sum w[y] vs N (pytorch#107680)
        w = kwargs["weight"]
        soft = soft * y.size / w[y].sum()
    assert_close(hard, soft, np.float64, scale=10)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_axis_equals_moveaxis_to_last(axis):
    x, y, kwargs = make_index_case(
        (3, 4, 5), axis, np.float64, seed=axis + 5, weight=True, label_smoothing=0.1
    )
    kwargs.pop("axis")
    moved = np.moveaxis(x, axis, -1)
    for reduction in ("none", "mean"):
        assert_close(
            sx.cross_entropy(x, y, axis=axis, reduction=reduction, **kwargs),
            sx.cross_entropy(moved, y, axis=-1, reduction=reduction, **kwargs),
            np.float64,
            scale=10,
        )


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_ignored_equals_filtered(eps):
    x, y, kwargs = make_index_case(
        (12, 5), -1, np.float64, seed=5, weight=True, ignore_fraction=0.4, label_smoothing=eps
    )
    keep = y != -100
    assert 0 < keep.sum() < 12
    for reduction in ("mean", "sum"):
        assert_close(
            sx.cross_entropy(x, y, reduction=reduction, **kwargs),
            sx.cross_entropy(x[keep], y[keep], reduction=reduction, **kwargs),
            np.float64,
            scale=10,
        )
    none = sx.cross_entropy(x, y, reduction="none", **kwargs)
    np.testing.assert_array_equal(none[~keep], 0)


def test_pytorch_63004_in_range_ignore_index_keeps_class_in_softmax():
    # pytorch#63004: samples whose target is the ignored class drop out, the class does not.
    x = np.array([[0.0, 5.0, 0.0], [1.0, 2.0, 3.0]])
    y = np.array([1, 0])
    out = sx.cross_entropy(x, y, ignore_index=1, reduction="none")
    assert out[0] == 0
    assert_close(out[1], np.float64(-sx.log_softmax(x[1])[0]), np.float64, scale=3)


def test_weighted_mean_is_not_mean_of_none():
    x, y, kwargs = make_index_case((6, 3), -1, np.float64, seed=8, weight=True)
    none = sx.cross_entropy(x, y, reduction="none", **kwargs)
    mean = sx.cross_entropy(x, y, **kwargs)
    w = kwargs["weight"]
    assert_close(mean, none.sum() / w[y].sum(), np.float64, scale=10)
    assert abs(mean - none.mean()) > 1e-6


# ----------------------------------------------------------------- special values (§6.7)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("eps", [0.0, 0.3])
@pytest.mark.parametrize("weight", [None, [1.0, 2.0, 0.5]])
def test_all_ignored(dtype, eps, weight):
    x = random_logits((4, 3), dtype)
    y = np.full(4, -100)
    w = None if weight is None else np.array(weight)
    mean = sx.cross_entropy(x, y, weight=w, label_smoothing=eps)
    assert isinstance(mean, np.generic) and mean.dtype == dtype and np.isnan(mean)
    assert sx.cross_entropy(x, y, weight=w, label_smoothing=eps, reduction="sum") == 0
    none = sx.cross_entropy(x, y, weight=w, label_smoothing=eps, reduction="none")
    np.testing.assert_array_equal(none, np.zeros(4, dtype))
    assert np.isnan(torch_cross_entropy(x, y, axis=-1, weight=w, label_smoothing=eps))


def test_zero_target_weights_mean_is_nan():
    x = random_logits((3, 3), np.float64)
    w = np.array([0.0, 1.0, 1.0])
    y = np.array([0, 0, 0])
    assert np.isnan(sx.cross_entropy(x, y, weight=w))
    assert np.isnan(torch_cross_entropy(x, y, weight=w))
    assert sx.cross_entropy(x, y, weight=w, reduction="sum") == 0


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_empty_batch(dtype, reduction, soft, eps):
    x = np.zeros((0, 4, 2), dtype)
    t = np.zeros((0, 4, 2), dtype) if soft else np.zeros((0, 2), np.int64)
    out = sx.cross_entropy(x, t, axis=1, reduction=reduction, label_smoothing=eps)
    expected = torch_cross_entropy(x, t, axis=1, reduction=reduction, label_smoothing=eps)
    if reduction == "none":
        assert out.shape == (0, 2) and out.dtype == dtype
    elif reduction == "mean":
        assert np.isnan(out) and np.isnan(expected)
    else:
        assert out == 0 and expected == 0
    assert np.asarray(out).dtype == dtype


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_minus_inf_masks(dtype):
    # Row 0: -inf on non-target classes (finite loss, eps=0); row 1: -inf on the target
    # (+inf); row 2: ignored row of -inf only; row 3: ignored row with NaN.
    x = np.array(
        [[0.5, -inf, 1.0, -inf], [-inf, 2.0, 0.0, 1.0], [-inf] * 4, [nan, 0.0, 1.0, 2.0]], dtype
    )
    y = np.array([2, 0, -100, -100])
    for eps in (0.0, 0.1):
        for reduction in ("none", "mean", "sum"):
            kwargs = dict(axis=-1, label_smoothing=eps)
            out = check_against_torch(x, y, kwargs, reduction)
            if reduction == "none":
                assert np.isfinite(out[0]) == (eps == 0)
                assert out[1] == inf and out[2] == 0 and out[3] == 0
            else:
                assert out == inf
    # The finite row alone: -inf classes are simply absent from the softmax.
    out = sx.cross_entropy(x[:1], y[:1])
    expected = -np.log(np.exp(1.0) / (np.exp(0.5) + np.exp(1.0)))
    assert_close(out, np.array(expected, dtype), dtype, scale=2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_huge_logits(dtype, eps):
    x = np.array([[1e30, 1.0, -1e30]] * 3 + [[-1e30, 1e30, 0.0]], dtype)
    y = np.array([0, 1, 2, 1])
    for reduction in ("none", "mean", "sum"):
        check_against_torch(x, y, dict(axis=-1, label_smoothing=eps), reduction)
    none = sx.cross_entropy(x, y, reduction="none")
    np.testing.assert_allclose(none, np.array([0.0, 1e30, 2e30, 0.0], dtype), rtol=1e-6)
    # The gradient is p - onehot: exactly representable here, no overflow to NaN.
    _loss, grad = sx.cross_entropy_with_grad(x, y, reduction="sum", label_smoothing=eps)
    _, expected = torch_cross_entropy(x, y, reduction="sum", label_smoothing=eps, with_grad=True)
    assert np.isfinite(grad).all()
    assert_close(grad, expected, dtype)


@pytest.mark.parametrize("soft", [False, True])
def test_plus_inf_and_nan_logits(soft):
    x = np.array([[inf, 0.0, 1.0], [0.0, nan, 1.0], [0.0, 1.0, 2.0]])
    t = sx.one_hot([0, 2, 1], 3, dtype=np.float64) if soft else np.array([0, 2, 1])
    out = sx.cross_entropy(x, t, reduction="none")
    assert np.isnan(out[0]) and np.isnan(out[1]) and np.isfinite(out[2])
    check_against_torch(x, t, dict(axis=-1), "none")
    assert np.isnan(sx.cross_entropy(x, t))
    # Gradient: the +inf and NaN rows are NaN (they are not ignored), the last row is not.
    for reduction in ("none", "sum"):
        _, grad = sx.cross_entropy_with_grad(x, t, reduction=reduction)
        _, expected = torch_cross_entropy(x, t, reduction=reduction, with_grad=True)
        assert np.isnan(grad[:2]).all() and np.isfinite(grad[2]).all()
        assert_close(grad, expected, np.float64, scale=3)


def test_soft_target_zero_on_minus_inf_is_nan():
    x = np.array([[0.0, -inf, 1.0]])
    t = np.array([[0.5, 0.0, 0.5]])
    assert np.isnan(sx.cross_entropy(x, t))
    assert np.isnan(torch_cross_entropy(x, t))
    # ... while the gradient stays finite (spec §6.4), as torch's.
    loss, grad = sx.cross_entropy_with_grad(x, t)
    _, expected = torch_cross_entropy(x, t, with_grad=True)
    assert np.isnan(loss) and np.isfinite(grad).all()
    assert_close(grad, expected, np.float64)


def test_label_smoothing_one_is_uniform_target():
    x, y, _kwargs = make_index_case((5, 4), -1, np.float64, seed=6)
    expected = -sx.log_softmax(x).mean(axis=-1)
    assert_close(
        sx.cross_entropy(x, y, label_smoothing=1.0, reduction="none"),
        expected,
        np.float64,
        scale=10,
    )


def test_one_dimensional_logits():
    x = np.array([1.0, 2.0, 3.0], np.float32)
    for reduction in ("none", "mean", "sum"):
        out = sx.cross_entropy(x, np.array(2), reduction=reduction)
        assert np.asarray(out).shape == ()
        assert_close(
            out,
            torch_cross_entropy(x, np.array(2), axis=0, reduction=reduction),
            np.float32,
            scale=3,
        )


def test_options_are_keyword_only():
    x, y, _ = make_index_case((2, 3), -1, np.float64)
    with pytest.raises(TypeError):
        sx.cross_entropy(x, y, -1)
    with pytest.raises(TypeError):
        sx.nll_loss(x, y, -1)
    with pytest.raises(TypeError):
        sx.cross_entropy_with_grad(x, y, -1)


# ----------------------------------------------------------------------- wide rows (C >= 256)


def wide_logits(dtype, num_classes=300, seed=12):
    """Rows of many classes whose maxima straddle the kernels' shift/no-shift boundary."""
    r = np.random.default_rng(seed)
    base = r.standard_normal((8, num_classes))
    x = np.stack(
        [
            base[0] * 3,
            base[1] * 3 + 60,  # max above 64
            base[2] * 0.5 + 63.0,  # max close to 64
            base[3] * 3 - 62,  # all negative
            base[4] * 0.2 - 64.5,  # max just below -64
            base[5] * 20,
            np.where(base[6] > 1, -np.inf, base[6]),  # -inf mask
            base[7] * 0.01,
        ]
    )
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("options", ["plain", "weight", "smoothing", "weight-ignore-smoothing"])
def test_wide_rows_match_torch(dtype, options):
    x = wide_logits(dtype)
    if dtype == np.float16:
        x = np.where(np.isfinite(x), x, -np.inf).astype(dtype)
    _, y, kwargs = make_index_case(x.shape, -1, dtype, seed=13, **INDEX_OPTIONS[options])
    y[6] = np.flatnonzero(np.isfinite(x[6]))[0]  # a finite target in the masked row
    for reduction in ("none", "mean", "sum"):
        check_against_torch(x, y, kwargs, reduction)
        _, grad = sx.cross_entropy_with_grad(x, y, reduction=reduction, **kwargs)
        _, expected = torch_cross_entropy(x, y, reduction=reduction, with_grad=True, **kwargs)
        scale = logit_scale(x) * float(np.abs(expected).max())
        assert_close(grad, expected, dtype, scale=scale)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_wide_rows_probabilities_match_torch(dtype, eps):
    x = wide_logits(dtype)
    x[6] = np.where(np.isfinite(x[6]), x[6], -30)  # soft targets would make -inf rows NaN
    t = random_probs(x.shape, -1, dtype, seed=14)
    w = np.random.default_rng(3).uniform(0.5, 2.0, x.shape[-1]).astype(dtype)
    kwargs = dict(axis=-1, weight=w, label_smoothing=eps)
    for reduction in ("none", "mean", "sum"):
        check_against_torch(x, t, kwargs, reduction)
        _, grad = sx.cross_entropy_with_grad(x, t, reduction=reduction, **kwargs)
        _, expected = torch_cross_entropy(x, t, reduction=reduction, with_grad=True, **kwargs)
        scale = logit_scale(x) * float(np.abs(expected).max())
        assert_close(grad, expected, dtype, scale=scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_large_batch_reductions_match_torch(dtype, reduction):
    # Batches of more than 64 samples take the float64 pairwise sum instead of fsum.
    x = random_logits((1000, 7), dtype, seed=5)
    y = rng(6).integers(0, 7, size=1000)
    y[::9] = -100
    weight = rng(7).uniform(0.5, 2.0, size=7).astype(dtype)
    options = dict(weight=weight, reduction=reduction, label_smoothing=0.1)
    expected = torch_cross_entropy(x, y, **options)
    assert_close(sx.cross_entropy(x, y, **options), expected, dtype, scale=logit_scale(x) * 1000)
    loss, _ = sx.cross_entropy_with_grad(x, y, **options)
    assert_close(loss, expected, dtype, scale=logit_scale(x) * 1000)


# A float16 loss beyond 65504 is inf in torch, without a warning: softxent's too (NumPy's
# float32 -> float16 cast used to add "overflow encountered in cast"). Each loss is 120000.
OVERFLOWING_FLOAT16 = (np.array([[-6e4, 6e4], [6e4, -6e4]], np.float16), np.array([0, 1]))


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("with_grad", [False, True])
def test_float16_loss_overflows_to_inf_silently(reduction, with_grad):
    x, y = OVERFLOWING_FLOAT16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if with_grad:
            loss = sx.cross_entropy_with_grad(x, y, reduction=reduction).loss
        else:
            loss = sx.cross_entropy(x, y, reduction=reduction)
    expected = torch.nn.functional.cross_entropy(
        torch.from_numpy(x), torch.from_numpy(y), reduction=reduction
    ).numpy()
    assert np.isinf(expected).all()  # torch's float16 loss overflows too
    assert_close(loss, expected, np.float16)


def test_float16_sum_overflows_to_inf_silently():
    # Each loss fits float16, their sum does not (a float64 sum rounded once, as torch's
    # float16 sum overflows).
    x = np.tile(np.array([[-30000.0, 30000.0]], np.float16), (3, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = sx.cross_entropy(x, [0, 0, 0], reduction="sum")
    assert loss.dtype == np.float16 and loss == np.inf

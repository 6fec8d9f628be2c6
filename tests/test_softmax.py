"""softmax, log_softmax and logsumexp against torch 2.13 (spec §2, §3)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import softxent as sx

from conftest import (
    FLOAT_DTYPES,
    assert_close,
    float_dtypes,
    logit_scale,
    random_logits,
    shapes_and_axis,
    torch_logsumexp,
    torch_softmax,
)

inf, nan = np.inf, np.nan


# ------------------------------------------------------------------ parity with torch


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    ("shape", "axis"),
    [((7,), 0), ((4, 5), -1), ((4, 5), 0), ((2, 3, 4), 1), ((2, 3, 4, 5), 1), ((3, 2, 4, 2), 3)],
)
@pytest.mark.parametrize("log", [False, True])
def test_softmax_matches_torch(shape, axis, dtype, log):
    x = random_logits(shape, dtype, seed=len(shape) + axis)
    fn = sx.log_softmax if log else sx.softmax
    assert_close(fn(x, axis=axis), torch_softmax(x, axis, log=log), dtype, scale=logit_scale(x))


@settings(max_examples=25, deadline=None)
@given(shapes_and_axis(), float_dtypes, st.booleans(), st.integers(0, 2**32 - 1))
def test_softmax_matches_torch_hypothesis(shape_axis, dtype, log, seed):
    shape, axis = shape_axis
    x = random_logits(shape, dtype, seed=seed, scale=10.0)
    fn = sx.log_softmax if log else sx.softmax
    assert_close(fn(x, axis=axis), torch_softmax(x, axis, log=log), dtype, scale=logit_scale(x))


def test_study_note_softmax():
    pred = np.array([[0.3, 0.1, 0.3], [0.9, 0.2, 0.9], [0.5, 0.4, 0.2]], np.float32)
    expected = [
        [0.35476959, 0.29046077, 0.35476959],
        [0.40054709, 0.19890580, 0.40054709],
        [0.37797815, 0.34200877, 0.28001308],
    ]
    assert_close(sx.softmax(pred, axis=1), np.array(expected, np.float32), np.float32)
    assert_close(
        sx.logsumexp(pred, axis=1),
        np.array([1.33628678, 1.81492400, 1.47291899], np.float32),
        np.float32,
    )


def test_default_axis_is_last():
    x = random_logits((3, 4, 5), np.float64)
    np.testing.assert_array_equal(sx.softmax(x), sx.softmax(x, axis=2))
    np.testing.assert_array_equal(sx.log_softmax(x), sx.log_softmax(x, axis=-1))
    np.testing.assert_array_equal(sx.logsumexp(x), sx.logsumexp(x, axis=2))


def test_array_like_input():
    out = sx.softmax([[1.0, 2.0], [3.0, 3.0]])
    assert isinstance(out, np.ndarray)
    assert_close(out[1], np.array([0.5, 0.5]), np.float64)


# ------------------------------------------------------------------------- properties


@settings(max_examples=20, deadline=None)
@given(shapes_and_axis(max_side=6), st.integers(0, 2**32 - 1))
def test_softmax_properties_float64(shape_axis, seed):
    shape, axis = shape_axis
    x = random_logits(shape, np.float64, seed=seed)
    p = sx.softmax(x, axis=axis)
    assert p.shape == x.shape and p.dtype == np.float64
    assert np.all((p >= 0) & (p <= 1))
    if x.size:
        np.testing.assert_allclose(p.sum(axis=axis), 1.0, rtol=1e-12)
    # Shift invariance along the class axis, and log_softmax == log(softmax).
    shifted = sx.softmax(x + 7.25, axis=axis)
    np.testing.assert_allclose(shifted, p, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(sx.log_softmax(x, axis=axis), np.log(p), rtol=1e-12, atol=1e-12)
    lse = sx.logsumexp(x, axis=axis, keepdims=True)
    np.testing.assert_allclose(sx.log_softmax(x, axis=axis), x - lse, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_axis_equals_moveaxis_to_last(axis):
    x = random_logits((3, 4, 5), np.float64, seed=axis)
    for fn in (sx.softmax, sx.log_softmax):
        expected = np.moveaxis(fn(np.moveaxis(x, axis, -1), axis=-1), -1, axis)
        assert_close(fn(x, axis=axis), expected, np.float64, scale=logit_scale(x))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_dtype_and_shape_preserved(dtype):
    x = random_logits((2, 3), dtype)
    for fn in (sx.softmax, sx.log_softmax):
        out = fn(x)
        assert out.dtype == dtype and out.shape == x.shape
    assert sx.logsumexp(x).dtype == dtype
    assert np.asarray(sx.logsumexp(x, axis=(0, 1))).dtype == dtype


def test_input_not_modified():
    x = random_logits((4, 6), np.float32)
    copy = x.copy()
    sx.softmax(x)
    sx.log_softmax(x)
    sx.logsumexp(x)
    np.testing.assert_array_equal(x, copy)


# --------------------------------------------------------------------------- logsumexp


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    "axis", [0, 1, -1, 3, (0,), (1, 2), (0, 3), (-1, 0), (3, 1), (0, 1, 2, 3), (2, 0, 1)]
)
@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_matches_torch(axis, keepdims, dtype):
    x = random_logits((2, 3, 4, 5), dtype, seed=11)
    out = sx.logsumexp(x, axis=axis, keepdims=keepdims)
    assert_close(out, torch_logsumexp(x, axis, keepdims), dtype, scale=logit_scale(x))


@settings(max_examples=20, deadline=None)
@given(shapes_and_axis(min_classes=0), float_dtypes, st.booleans(), st.integers(0, 2**32 - 1))
def test_logsumexp_matches_torch_hypothesis(shape_axis, dtype, keepdims, seed):
    shape, axis = shape_axis
    x = random_logits(shape, dtype, seed=seed, scale=10.0)
    out = sx.logsumexp(x, axis=axis, keepdims=keepdims)
    assert_close(out, torch_logsumexp(x, axis, keepdims), dtype, scale=logit_scale(x))


def test_logsumexp_full_reduction_is_numpy_scalar():
    x = random_logits((3, 4), np.float32)
    out = sx.logsumexp(x, axis=(0, 1))
    assert isinstance(out, np.generic) and out.dtype == np.float32
    assert_close(out, torch_logsumexp(x, (0, 1)), np.float32, scale=logit_scale(x))
    kept = sx.logsumexp(x, axis=(0, 1), keepdims=True)
    assert isinstance(kept, np.ndarray) and kept.shape == (1, 1)
    out1 = sx.logsumexp(x[0], axis=0)
    assert isinstance(out1, np.generic) and out1.dtype == np.float32


def test_logsumexp_tuple_axis_is_flattened_reduction():
    x = random_logits((2, 3, 4), np.float64, seed=5)
    assert_close(sx.logsumexp(x, axis=(1, 2)), sx.logsumexp(x.reshape(2, 12), axis=1), np.float64)
    # log-sum-exp of log-sum-exps: reducing one axis after the other gives the same.
    nested = sx.logsumexp(sx.logsumexp(x, axis=2), axis=1)
    assert_close(sx.logsumexp(x, axis=(2, 1)), nested, np.float64, scale=logit_scale(x))


def test_logsumexp_no_overflow():
    # exp(1e38) overflows float32; torch gives 1e38 + log 2 == 1e38 in float32.
    out = sx.logsumexp(np.array([1e38, 1e38], np.float32), axis=0)
    assert out == np.float32(1e38)
    out64 = sx.logsumexp(np.array([1000.0, 1000.0]), axis=0)
    assert_close(out64, np.float64(1000.0 + np.log(2.0)), np.float64, scale=1000)


# ------------------------------------------------------------------------- 0-d and empty


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("axis", [0, -1])
def test_zero_dim(axis, dtype):
    x = np.array(2.5, dtype)
    s = sx.softmax(x, axis=axis)
    ls = sx.log_softmax(x, axis=axis)
    assert np.asarray(s).shape == () and np.asarray(s).dtype == dtype and s == 1
    assert np.asarray(ls).shape == () and np.asarray(ls).dtype == dtype and ls == 0
    assert np.array_equal(s, torch_softmax(x, 0))
    assert np.array_equal(ls, torch_softmax(x, 0, log=True))
    lse = sx.logsumexp(x, axis=axis)
    assert np.asarray(lse).dtype == dtype and lse == x


@pytest.mark.parametrize("fn", [sx.softmax, sx.log_softmax, sx.logsumexp])
@pytest.mark.parametrize("axis", [1, -2])
def test_zero_dim_bad_axis(fn, axis):
    with pytest.raises(ValueError, match="axis"):
        fn(np.array(1.0), axis=axis)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    ("shape", "axis"), [((0, 3), -1), ((3, 0), -1), ((0,), 0), ((2, 0, 3), 1)]
)
def test_empty_softmax(shape, axis, dtype):
    x = np.zeros(shape, dtype)
    for log in (False, True):
        fn = sx.log_softmax if log else sx.softmax
        out = fn(x, axis=axis)
        assert out.shape == shape and out.dtype == dtype
        assert torch_softmax(x, axis, log=log).shape == shape


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    ("shape", "axis"), [((3, 0), -1), ((0,), 0), ((2, 0, 3), 1), ((2, 0, 3), (0, 1)), ((0, 3), -1)]
)
@pytest.mark.parametrize("keepdims", [False, True])
def test_empty_logsumexp(shape, axis, keepdims, dtype):
    x = np.zeros(shape, dtype)
    out = sx.logsumexp(x, axis=axis, keepdims=keepdims)
    expected = torch_logsumexp(x, axis, keepdims)
    assert_close(out, expected, dtype)
    if 0 in np.asarray(x).shape and np.asarray(out).size:
        assert np.all(np.asarray(out) == -inf)


# ---------------------------------------------------------------------- special values


# spec §2.2: (row, softmax, log_softmax)
SOFTMAX_TABLE = [
    ([-inf, -inf, -inf], [nan, nan, nan], [nan, nan, nan]),
    ([-inf, 0.0, 0.0], [0.0, 0.5, 0.5], [-inf, -np.log(2), -np.log(2)]),
    ([-inf, 1.0], [0.0, 1.0], [-inf, 0.0]),
    ([inf, 1.0, 2.0], [nan, nan, nan], [nan, nan, nan]),
    ([inf, -inf], [nan, nan], [nan, nan]),
    ([inf, inf], [nan, nan], [nan, nan]),
    ([nan, 1.0, 2.0], [nan, nan, nan], [nan, nan, nan]),
    ([nan, -inf], [nan, nan], [nan, nan]),
    ([3.0], [1.0], [0.0]),
    ([1e30, 1.0, -1e30], [1.0, 0.0, 0.0], [0.0, -1e30, -2e30]),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("row", "soft", "log_soft"), SOFTMAX_TABLE)
def test_softmax_special_values(row, soft, log_soft, dtype):
    x = np.array(row, dtype)
    # The same row in a batch with a normal row: special values must not leak across rows.
    batch = np.stack([x, np.zeros_like(x)])
    with np.errstate(all="ignore"):
        expected_soft = np.array(soft, dtype)
        expected_log = np.array(log_soft, dtype)
    for fn, expected, log in (
        (sx.softmax, expected_soft, False),
        (sx.log_softmax, expected_log, True),
    ):
        out = fn(batch, axis=-1)
        assert_close(out[0], expected, dtype, scale=logit_scale(x))
        assert_close(out[0], torch_softmax(x, 0, log=log), dtype, scale=logit_scale(x))
        assert_close(out[1], torch_softmax(np.zeros_like(x), 0, log=log), dtype)
        # Along axis 0 (non-last, strided): the same answers.
        out_t = fn(batch.T.copy(), axis=0)
        assert_close(out_t[:, 0], expected, dtype, scale=logit_scale(x))


def test_softmax_special_values_float16():
    x = np.array([[-inf, 0.0, 0.0], [inf, 1.0, 2.0], [nan, 0.0, 1.0], [65504.0, 0.0, -65504.0]])
    x = x.astype(np.float16)
    for log in (False, True):
        fn = sx.log_softmax if log else sx.softmax
        assert_close(fn(x), torch_softmax(x, -1, log=log), np.float16, scale=65504.0)


# spec §3: (row, logsumexp)
LOGSUMEXP_TABLE = [
    ([-inf, -inf], -inf),
    ([inf, 0.0], inf),
    ([inf, -inf], inf),
    ([inf, inf], inf),
    ([nan, 1.0], nan),
    ([nan, inf], nan),
    ([nan, -inf], nan),
    ([-inf, 0.0, 0.0], np.log(2.0)),
    ([1e30, 1.0, -1e30], 1e30),
]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("row", "expected"), LOGSUMEXP_TABLE)
def test_logsumexp_special_values(row, expected, dtype):
    with np.errstate(over="ignore"):
        x = np.array(row, dtype)
        expected = np.array(expected, dtype)
    batch = np.stack([x, np.zeros_like(x)])
    out = sx.logsumexp(batch, axis=-1)
    assert_close(out[0], expected, dtype, scale=logit_scale(x))
    assert_close(out[0], torch_logsumexp(x, 0), dtype, scale=logit_scale(x))
    assert_close(out[1], np.array(np.log(x.size), dtype), dtype)
    assert_close(sx.logsumexp(batch.T.copy(), axis=0)[0], expected, dtype, scale=logit_scale(x))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("num_classes", [300, 3001])
def test_wide_rows_match_torch(dtype, num_classes):
    # Many classes, maxima on both sides of the kernels' shift/no-shift boundary (|max| 64).
    r = np.random.default_rng(num_classes)
    base = r.standard_normal((6, num_classes))
    x = np.stack(
        [
            base[0] * 3,
            base[1] * 3 + 60,
            base[2] * 0.5 + 63,
            base[3] * 3 - 62,
            base[4] * 0.2 - 64.5,
            np.where(base[5] > 1, -inf, base[5]),
        ]
    ).astype(dtype)
    scale = logit_scale(x)
    for log in (False, True):
        fn = sx.log_softmax if log else sx.softmax
        assert_close(fn(x), torch_softmax(x, -1, log=log), dtype, scale=scale)
        assert_close(fn(x.T, axis=0), torch_softmax(x.T, 0, log=log), dtype, scale=scale)
    assert_close(sx.logsumexp(x), torch_logsumexp(x, -1), dtype, scale=scale)

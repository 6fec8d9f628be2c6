"""one_hot against torch.nn.functional.one_hot (spec §4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import softxent as sx


def torch_one_hot(target, num_classes=None) -> np.ndarray:
    t = torch.from_numpy(np.array(target, dtype=np.int64))
    return F.one_hot(t, -1 if num_classes is None else num_classes).numpy()


@pytest.mark.parametrize(
    "target",
    [
        np.array(2),
        np.array([1, 2, 0]),
        np.array([[0, 3], [3, 1], [2, 2]]),
        np.zeros((2, 1, 3), int),
    ],
)
@pytest.mark.parametrize("num_classes", [None, 4, 6])
def test_matches_torch(target, num_classes):
    out = sx.one_hot(target, num_classes)
    expected = torch_one_hot(target, num_classes)
    assert out.dtype == np.float32  # the default
    assert out.shape == (*target.shape, expected.shape[-1])
    np.testing.assert_array_equal(out, expected)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=0, max_size=3),
    st.integers(1, 6),
    st.sampled_from([np.int8, np.int32, np.int64, np.uint8, np.uint16]),
    st.integers(0, 2**32 - 1),
)
def test_matches_torch_hypothesis(shape, num_classes, int_dtype, seed):
    target = np.random.default_rng(seed).integers(0, num_classes, size=shape).astype(int_dtype)
    out = sx.one_hot(target, num_classes)
    assert out.shape == (*tuple(shape), num_classes)
    np.testing.assert_array_equal(out, torch_one_hot(target, num_classes))
    if target.size:
        inferred = sx.one_hot(target)
        assert inferred.shape[-1] == int(target.max()) + 1
        np.testing.assert_array_equal(inferred, torch_one_hot(target))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64, np.bool_])
def test_dtype_keyword(dtype):
    out = sx.one_hot(np.array([0, 2]), 3, dtype=dtype)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, np.array([[1, 0, 0], [0, 0, 1]], dtype))


def test_list_input_and_keyword_num_classes():
    np.testing.assert_array_equal(
        sx.one_hot([1, 0], num_classes=2), np.array([[0, 1], [1, 0]], np.float32)
    )


def test_rows_are_one_hot():
    target = np.random.default_rng(3).integers(0, 7, size=(5, 4))
    out = sx.one_hot(target, 7)
    np.testing.assert_array_equal(out.sum(axis=-1), 1)
    np.testing.assert_array_equal(out.argmax(axis=-1), target)


@pytest.mark.parametrize("shape", [(0,), (2, 0)])
def test_empty_with_num_classes(shape):
    out = sx.one_hot(np.zeros(shape, np.int64), 3)
    assert out.shape == (*shape, 3)
    assert out.shape == torch_one_hot(np.zeros(shape, np.int64), 3).shape

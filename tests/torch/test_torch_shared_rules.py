"""Rules every torch entry point shares with torch and with each other: class weights, chunks.

* any finite weight is computed, negative ones too, with torch's weighted mean (an IEEE
  division by ``D = sum w[y]``, which can be negative or 0);
* with class-index targets the weight must have the logits' dtype (torch raises
  ``expected scalar type ...``); with probability targets it takes part in promotion;
* a non-finite weight is refused (on CPU), the one difference from torch.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from softxent.torch import cross_entropy, linear_cross_entropy
from softxent.torch._cross_entropy import cross_entropy_with_options
from softxent.torch._linear_cross_entropy import linear_cross_entropy_with_options
from softxent.torch._options import make_options
from softxent.torch.distributed import (
    vocab_parallel_cross_entropy,
    vocab_parallel_linear_cross_entropy,
)

BACKENDS = ["numpy", "torch"]
GEN = torch.Generator().manual_seed(3)
X = torch.randn(5, 4, generator=GEN, dtype=torch.float64)
Y = torch.tensor([0, 1, 2, 3, 1])
W_ZERO_D = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
Y_ZERO = torch.tensor([0, 1, 2, 3, -100])  # sum of the target weights: exactly 0


def _entry_points(backend):
    """Every loss of (logits, target, weight) that takes torch tensors."""
    eye = torch.eye(4, dtype=torch.float64)
    return {
        "cross_entropy": lambda x, t, w: cross_entropy_with_options(
            x, t, w, make_options(), backend
        ),
        "linear": lambda x, t, w: linear_cross_entropy_with_options(
            x, eye.to(x.dtype), t, None, w, make_options(), backend
        ),
        "vocab_parallel": lambda x, t, w: vocab_parallel_cross_entropy(x, t, weight=w),
        "vocab_parallel_linear": lambda x, t, w: vocab_parallel_linear_cross_entropy(
            x, eye.to(x.dtype), t, weight=w
        ),
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name", ["cross_entropy", "linear", "vocab_parallel", "vocab_parallel_linear"]
)
def test_zero_denominator_matches_torch(backend, name):
    fn = _entry_points(backend)[name]
    expected = F.cross_entropy(X, Y_ZERO, weight=W_ZERO_D)
    assert torch.isinf(expected)
    assert fn(X, Y_ZERO, W_ZERO_D) == expected


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name", ["cross_entropy", "linear", "vocab_parallel", "vocab_parallel_linear"]
)
def test_weight_dtype_rule_is_torchs(backend, name):
    fn = _entry_points(backend)[name]
    x32 = X.float()
    w64 = torch.tensor([1.0, -2.0, 0.5, 1.0], dtype=torch.float64)
    with pytest.raises(RuntimeError, match="expected scalar type"):
        F.cross_entropy(x32, Y, weight=w64)
    with pytest.raises(TypeError, match=r"weight must have the logits' dtype torch.float32"):
        fn(x32, Y, w64)
    # Probability targets: the weight takes part in type promotion, as in torch.
    probs = torch.softmax(X.float(), -1)
    expected = F.cross_entropy(x32, probs, weight=w64)
    got = fn(x32, probs, w64)
    assert got.dtype == expected.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name", ["cross_entropy", "linear", "vocab_parallel", "vocab_parallel_linear"]
)
@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_non_finite_weight_is_refused_everywhere(backend, name, bad):
    fn = _entry_points(backend)[name]
    w = torch.tensor([1.0, bad, 1.0, 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"weight must be finite .* at \[1\]"):
        fn(X, Y, w)


def test_public_functions_take_negative_weights():
    w = torch.tensor([-1.0, 2.0, -0.5, 1.5], dtype=torch.float64)
    expected = F.cross_entropy(X, Y, weight=w, label_smoothing=0.1)
    torch.testing.assert_close(cross_entropy(X, Y, w, label_smoothing=0.1), expected)
    eye = torch.eye(4, dtype=torch.float64)
    got = linear_cross_entropy(X, eye, Y, weight=w, label_smoothing=0.1)
    torch.testing.assert_close(got, expected)


# ------------------------------------------- chunk_size: one rule for every linear layer


def test_chunk_size_takes_numpy_integers_in_every_linear_layer():
    import numpy as np

    import softxent as sx

    x, eye, y = X, torch.eye(4, dtype=torch.float64), Y
    expected = F.cross_entropy(x, y)
    for chunk in (np.int64(2), np.int32(3), np.uint8(1)):
        got = [
            torch.as_tensor(
                sx.linear_cross_entropy(x.numpy(), eye.numpy(), y.numpy(), chunk_size=chunk)
            ),
            linear_cross_entropy(x, eye, y, chunk_size=chunk),
            vocab_parallel_linear_cross_entropy(x, eye, y, chunk_size=chunk),
        ]
        for loss in got:
            torch.testing.assert_close(loss, expected)
    for bad, error in ((np.int64(0), ValueError), (np.float64(2.0), TypeError), (True, TypeError)):
        for call in (
            lambda c: sx.linear_cross_entropy(x.numpy(), eye.numpy(), y.numpy(), chunk_size=c),
            lambda c: linear_cross_entropy(x, eye, y, chunk_size=c),
            lambda c: vocab_parallel_linear_cross_entropy(x, eye, y, chunk_size=c),
        ):
            with pytest.raises(error, match="chunk_size must be"):
                call(bad)


def test_one_default_chunk_rule():
    import softxent._linear_cross_entropy as numpy_layer
    from softxent.torch import default_chunk_size
    from softxent.torch.distributed import _linear_cross_entropy as tp_layer

    assert tp_layer.default_chunk_size is default_chunk_size  # tensor parallelism: the same rule

    for classes, dtype in ((32000, torch.float32), (50257, torch.float64), (7, torch.float16)):
        rows = numpy_layer.default_chunk_rows(classes, 8 if dtype == torch.float64 else 4)
        assert rows == numpy_layer.CHUNK_BYTES // (classes * (8 if dtype == torch.float64 else 4))
        assert default_chunk_size(classes, dtype) == rows
        for n in (1, 1000, 4096, 10**6):  # with the batch's tokens: a quarter of the logits
            itemsize = 8 if dtype == torch.float64 else 4
            expected = numpy_layer.default_chunk_rows(classes, itemsize, n)
            assert default_chunk_size(classes, dtype, num_rows=n) == expected

"""Bad input: the right exception, and a message that names the argument (issue 2 §6)."""

from __future__ import annotations

import numpy as np
import pytest

import softxent as sx

X = np.array([[0.1, 0.2, 0.3], [1.0, -1.0, 0.0]], np.float32)  # (N=2, C=3)
Y = np.array([0, 2])
P = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], np.float32)

LOSSES = {
    "cross_entropy": sx.cross_entropy,
    "nll_loss": sx.nll_loss,
    "cross_entropy_with_grad": sx.cross_entropy_with_grad,
}
loss_fns = pytest.mark.parametrize("fn", list(LOSSES.values()), ids=list(LOSSES))
ce_fns = pytest.mark.parametrize(
    "fn", [sx.cross_entropy, sx.cross_entropy_with_grad], ids=["cross_entropy", "with_grad"]
)


def first_arg_name(fn) -> str:
    return "log_probs" if fn is sx.nll_loss else "logits"


# -------------------------------------------------------------------------------- target


@loss_fns
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("bad", [3, -1, 1000])
def test_target_out_of_range_names_position(fn, reduction, bad):
    y = np.array([[0, 1, 2], [2, bad, 0]])  # position [1, 1]
    x = np.zeros((2, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"target\[1, 1\]") as info:
        fn(x, y, reduction=reduction)
    assert str(bad) in str(info.value)


@loss_fns
def test_target_out_of_range_1d(fn):
    with pytest.raises(ValueError, match=r"target\[1\]"):
        fn(X, np.array([0, 3]))
    # An out-of-range value equal to ignore_index is fine.
    fn(X, np.array([0, 3]), ignore_index=3)


@loss_fns
def test_float_target_shaped_like_indices(fn):
    with pytest.raises(TypeError, match="target"):
        fn(X, Y.astype(np.float32))


@loss_fns
def test_int_target_shaped_like_logits(fn):
    with pytest.raises(TypeError, match="target"):
        fn(X, np.zeros(X.shape, np.int64))


@loss_fns
def test_bool_target(fn):
    with pytest.raises(TypeError, match="target"):
        fn(X, np.array([True, False]))


@loss_fns
@pytest.mark.parametrize("target", [np.array([0, 1, 2]), np.array([[0, 1]]), np.array(0)])
def test_index_target_shape_mismatch(fn, target):
    with pytest.raises(ValueError, match="target"):
        fn(X, target)


@ce_fns
@pytest.mark.parametrize("shape", [(2, 4), (3, 3), (2, 3, 1)])
def test_probability_target_shape_mismatch(fn, shape):
    with pytest.raises(ValueError, match="target"):
        fn(X, np.full(shape, 0.25, np.float32))


@ce_fns
def test_ignore_index_with_probabilities(fn):
    with pytest.raises(ValueError, match="ignore_index"):
        fn(X, P, ignore_index=0)
    fn(X, P, ignore_index=-1)  # negative: allowed (and meaningless)


@loss_fns
@pytest.mark.parametrize("ignore_index", [1.0, "a", None])
def test_ignore_index_not_int(fn, ignore_index):
    with pytest.raises(TypeError, match="ignore_index"):
        fn(X, Y, ignore_index=ignore_index)


# -------------------------------------------------------------------------------- weight


@loss_fns
@pytest.mark.parametrize("weight", [[1.0, 2.0], [1.0, 1.0, 1.0, 1.0], [[1.0, 1.0, 1.0]]])
def test_weight_wrong_length(fn, weight):
    with pytest.raises(ValueError, match="weight"):
        fn(X, Y, weight=np.array(weight))


@ce_fns
def test_weight_wrong_length_probabilities(fn):
    with pytest.raises(ValueError, match="weight"):
        fn(X, P, weight=np.array([1.0, 2.0]))


@loss_fns
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_weight_non_finite(fn, bad):
    with pytest.raises(ValueError, match="weight must be finite") as info:
        fn(X, Y, weight=np.array([1.0, bad, 1.0]))
    assert "[1]" in str(info.value)


@ce_fns
def test_weight_non_finite_probabilities(fn):
    with pytest.raises(ValueError, match="weight must be finite"):
        fn(X, P, weight=np.array([1.0, np.inf, 1.0]))


# ------------------------------------------------------------------------- other options


@loss_fns
@pytest.mark.parametrize("reduction", ["avg", "MEAN", "batchmean", None])
def test_unknown_reduction(fn, reduction):
    with pytest.raises(ValueError, match="reduction") as info:
        fn(X, Y, reduction=reduction)
    assert repr(reduction) in str(info.value)


@loss_fns
@pytest.mark.parametrize("axis", [2, -3, 10])
def test_loss_axis_out_of_range(fn, axis):
    with pytest.raises(ValueError, match="axis"):
        fn(X, Y, axis=axis)


@pytest.mark.parametrize("fn", [sx.softmax, sx.log_softmax, sx.logsumexp])
@pytest.mark.parametrize("axis", [2, -3])
def test_softmax_axis_out_of_range(fn, axis):
    with pytest.raises(ValueError, match="axis"):
        fn(X, axis=axis)


@pytest.mark.parametrize("axis", [(0, 2), (1, 1), (0, -2), ()])
def test_logsumexp_bad_axis_tuple(axis):
    with pytest.raises(ValueError, match="axis"):
        sx.logsumexp(X, axis=axis)


@pytest.mark.parametrize("fn", [sx.softmax, sx.log_softmax, sx.logsumexp])
@pytest.mark.parametrize("axis", [1.0, None, "0"])
def test_axis_not_int(fn, axis):
    with pytest.raises(TypeError, match="axis"):
        fn(X, axis=axis)


@loss_fns
def test_empty_class_axis(fn):
    with pytest.raises(ValueError, match=first_arg_name(fn)):
        fn(np.zeros((2, 0), np.float32), np.zeros(2, np.int64))


@ce_fns
def test_empty_class_axis_probabilities(fn):
    with pytest.raises(ValueError, match="logits"):
        fn(np.zeros((2, 0), np.float32), np.zeros((2, 0), np.float32))


@loss_fns
def test_zero_dim_logits(fn):
    with pytest.raises(ValueError, match=first_arg_name(fn)):
        fn(np.array(1.0), np.array(0))


@ce_fns
@pytest.mark.parametrize("eps", [np.nan, -0.1, 1.5, -np.inf, np.inf])
def test_label_smoothing_out_of_range(fn, eps):
    with pytest.raises(ValueError, match="label_smoothing"):
        fn(X, Y, label_smoothing=eps)
    with pytest.raises(ValueError, match="label_smoothing"):
        fn(X, P, label_smoothing=eps)


@ce_fns
@pytest.mark.parametrize("eps", ["0.1", None])
def test_label_smoothing_not_a_number(fn, eps):
    with pytest.raises(TypeError, match="label_smoothing"):
        fn(X, Y, label_smoothing=eps)


def test_nll_loss_rejects_probabilities():
    with pytest.raises(TypeError, match="target"):
        sx.nll_loss(X, P)


# ---------------------------------------------------------------------- dtypes of logits


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_, np.complex128])
@loss_fns
def test_non_float_logits(fn, dtype):
    with pytest.raises(TypeError, match=first_arg_name(fn)):
        fn(X.astype(dtype), Y)


@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.complex64])
@pytest.mark.parametrize("fn", [sx.softmax, sx.log_softmax, sx.logsumexp])
def test_non_float_softmax_input(fn, dtype):
    with pytest.raises(TypeError, match="x"):
        fn(np.ones((2, 3), dtype))


# ------------------------------------------------------------------- grad_output and out


@pytest.mark.parametrize("shape", [(3,), (2, 1), ()])
def test_grad_output_wrong_shape_none(shape):
    with pytest.raises(ValueError, match="grad_output"):
        sx.cross_entropy_with_grad(X, Y, reduction="none", grad_output=np.ones(shape))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(1,), (2,)])
def test_grad_output_not_scalar_for_reduced(reduction, shape):
    with pytest.raises(ValueError, match="grad_output"):
        sx.cross_entropy_with_grad(X, Y, reduction=reduction, grad_output=np.ones(shape))


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize(
    "value", [np.array([1j, 2j]), np.array(["a", "b"]), np.array([True, False])]
)
def test_grad_output_wrong_dtype(reduction, value):
    value = value if reduction == "none" else value[0]
    with pytest.raises(TypeError, match="grad_output"):
        sx.cross_entropy_with_grad(X, Y, reduction=reduction, grad_output=value)


@pytest.mark.parametrize("shape", [(3, 2), (2, 3, 1), (6,)])
def test_out_wrong_shape(shape):
    with pytest.raises(ValueError, match="out"):
        sx.cross_entropy_with_grad(X, Y, out=np.empty(shape, np.float32))


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32])
def test_out_wrong_dtype(dtype):
    with pytest.raises(TypeError, match="out"):
        sx.cross_entropy_with_grad(X, Y, out=np.empty(X.shape, dtype))


def test_out_not_ndarray():
    with pytest.raises(TypeError, match="out"):
        sx.cross_entropy_with_grad(X, Y, out=[[0.0] * 3] * 2)


def test_out_read_only():
    out = np.empty_like(X)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        sx.cross_entropy_with_grad(X, Y, out=out)


def test_out_partially_overlapping_logits():
    buffer = np.zeros((3, 3), np.float32)
    logits, out = buffer[:2], buffer[1:]
    with pytest.raises(ValueError, match="out"):
        sx.cross_entropy_with_grad(logits, Y, out=out)


# ----------------------------------------------------------------------------- one_hot


@pytest.mark.parametrize("num_classes", [None, 5])
def test_one_hot_negative(num_classes):
    with pytest.raises(ValueError, match=r"target\[1\]") as info:
        sx.one_hot(np.array([1, -1, 2]), num_classes)
    assert "-1" in str(info.value)


@pytest.mark.parametrize(("num_classes", "position"), [(3, r"\[1, 0\] = 3"), (0, r"\[0, 0\] = 0")])
def test_one_hot_too_large(num_classes, position):
    with pytest.raises(ValueError, match=r"target" + position) as info:
        sx.one_hot(np.array([[0, 0], [3, 0]]), num_classes)
    assert f"[0, {num_classes})" in str(info.value)


@pytest.mark.parametrize(
    "target", [np.array([0.0, 1.0]), np.array([0.0, 1.0], np.float16), np.array([True, False])]
)
def test_one_hot_non_integer(target):
    with pytest.raises(TypeError, match="target"):
        sx.one_hot(target, 2)


def test_one_hot_empty_without_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        sx.one_hot(np.zeros((0,), np.int64))


@pytest.mark.parametrize("num_classes", [2.0, "3", True])
def test_one_hot_num_classes_not_int(num_classes):
    with pytest.raises(TypeError, match="num_classes"):
        sx.one_hot(np.array([0, 1]), num_classes)


def test_one_hot_negative_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        sx.one_hot(np.array([0, 1]), -1)


# ------------------------------------------------------------------------------ threads


@pytest.mark.parametrize(
    ("n", "error"),
    [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError)],
)
def test_set_num_threads_bad(n, error, restore_threads):
    with pytest.raises(error, match="n"):
        sx.set_num_threads(n)


# ------------------------------------------- array arguments: ragged, masked, byte-swapped

RAGGED = [[1.0, 2.0], [3.0]]


def _array_argument_calls():
    """Every public NumPy function, with each of its array arguments replaced by ``bad``."""
    h, w, b = np.ones((2, 3)), np.ones((3, 3)), np.zeros(3)
    return {
        "cross_entropy.logits": lambda bad: sx.cross_entropy(bad, Y),
        "cross_entropy.target": lambda bad: sx.cross_entropy(X, bad),
        "cross_entropy.weight": lambda bad: sx.cross_entropy(X, Y, weight=bad),
        "with_grad.grad_output": lambda bad: sx.cross_entropy_with_grad(
            X, Y, reduction="none", grad_output=bad
        ),
        "nll_loss.log_probs": lambda bad: sx.nll_loss(bad, Y),
        "nll_loss.target": lambda bad: sx.nll_loss(X, bad),
        "softmax.x": lambda bad: sx.softmax(bad),
        "log_softmax.x": lambda bad: sx.log_softmax(bad),
        "one_hot.target": lambda bad: sx.one_hot(bad, 3),
        "linear.hidden": lambda bad: sx.linear_cross_entropy(bad, w, Y),
        "linear.weight": lambda bad: sx.linear_cross_entropy(h, bad, Y),
        "linear.target": lambda bad: sx.linear_cross_entropy(h, w, bad),
        "linear.bias": lambda bad: sx.linear_cross_entropy(h, w, Y, bad),
        "linear.class_weight": lambda bad: sx.linear_cross_entropy(h, w, Y, b, class_weight=bad),
        "linear.grad_output": lambda bad: sx.linear_cross_entropy_with_grad(
            h, w, Y, reduction="none", grad_output=bad
        ),
        "score.logits": lambda bad: sx.score(bad, Y),
        "score.target": lambda bad: sx.score(X, bad),
        "score.weight": lambda bad: sx.score(X, Y, weight=bad),
    }


ARRAY_ARGUMENTS = _array_argument_calls()


@pytest.mark.parametrize("call", list(ARRAY_ARGUMENTS))
def test_ragged_list_names_the_argument(call):
    name = call.split(".")[1]
    with pytest.raises(ValueError, match=rf"^{name} is a ragged nested sequence"):
        ARRAY_ARGUMENTS[call](RAGGED)


@pytest.mark.parametrize("call", list(ARRAY_ARGUMENTS))
def test_masked_array_is_refused_not_unmasked(call):
    name = call.split(".")[1]
    masked = np.ma.masked_array([[0.0, 1.0], [1.0, 0.0]], mask=[[0, 1], [0, 0]])
    with pytest.raises(TypeError, match=rf"^{name} is a masked array .*{name}\.filled"):
        ARRAY_ARGUMENTS[call](masked)


def test_one_hot_negative_id_says_negative():
    with pytest.raises(ValueError, match=r"target\[1\] = -1 is negative"):
        sx.one_hot(np.array([0, -1]))
    with pytest.raises(ValueError, match=r"target\[0\] = 3 is out of range"):
        sx.one_hot(np.array([3, 0]), 3)


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("dtype", ["f2", "f4", "f8"])
def test_byte_swapped_input_gives_native_results(dtype, soft):
    swapped = np.dtype(dtype).newbyteorder("S")
    native = np.dtype(dtype)
    x = X.astype(swapped)
    target = P.astype(swapped) if soft else Y.astype(np.dtype("i8").newbyteorder("S"))
    plain_target = P.astype(native) if soft else Y
    for reduction in ("none", "mean"):
        loss, grad = sx.cross_entropy_with_grad(x, target, reduction=reduction)
        want_loss, want_grad = sx.cross_entropy_with_grad(
            X.astype(native), plain_target, reduction=reduction
        )
        assert np.asarray(loss).dtype == native and grad.dtype == native
        np.testing.assert_array_equal(loss, want_loss)
        np.testing.assert_array_equal(grad, want_grad)
    assert sx.softmax(x).dtype == native and sx.log_softmax(x).dtype == native
    result = sx.score(x, Y, per_sample=True)
    assert result.per_sample.dtype == native
    np.testing.assert_array_equal(
        result.per_sample, sx.score(X.astype(native), Y, per_sample=True).per_sample
    )
    layer = sx.linear_cross_entropy_with_grad(x, np.eye(3, dtype=swapped), plain_target)
    assert layer.loss.dtype == native and layer.d_weight.dtype == native

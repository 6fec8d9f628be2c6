"""linear_cross_entropy(_with_grad) against the unfused layer: softxent and torch (issue 7)."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import softxent as sx
import softxent._linear_cross_entropy as layer_module
from softxent._linear_cross_entropy import default_chunk_rows

from conftest import assert_close, logit_scale, random_probs, ref_dtype

N, D, V = 37, 6, 11  # N = 37 is not a multiple of any chunk size below but 1 and 37
IGNORE = -100


def make_case(dtype, *, soft=False, bias=True, class_weight=False, ignore=False, seed=0):
    """A small layer: hidden (N, D), weight (V, D), bias (V,), target, class weights."""
    r = np.random.default_rng(seed)
    hidden = r.standard_normal((N, D)).astype(dtype)
    weight = (r.standard_normal((V, D)) * 0.8).astype(dtype)
    b = r.standard_normal(V).astype(dtype) if bias else None
    if soft:
        target = random_probs((N, V), -1, dtype, seed=seed + 1)
    else:
        target = r.integers(0, V, N)
        if ignore:
            target[r.random(N) < 0.25] = IGNORE
    cw = r.uniform(0.2, 2.0, V) if class_weight else None
    return hidden, weight, b, target, cw


def torch_linear_ce(hidden, weight, bias, target, *, grad_output=None, **options):
    """torch's F.cross_entropy(F.linear(...)) and autograd gradients, in float64."""
    ref = np.float64
    th = torch.tensor(np.asarray(hidden, ref), requires_grad=True)
    tw = torch.tensor(np.asarray(weight, ref), requires_grad=True)
    tb = None if bias is None else torch.tensor(np.asarray(bias, ref), requires_grad=True)
    t = np.asarray(target)
    tt = torch.tensor(t.astype(ref) if t.dtype.kind == "f" else t)
    cw = options.pop("class_weight", None)
    loss = F.cross_entropy(
        F.linear(th, tw, tb),
        tt,
        weight=None if cw is None else torch.tensor(np.asarray(cw, ref)),
        **options,
    )
    g = torch.ones_like(loss) if grad_output is None else torch.tensor(np.asarray(grad_output))
    inputs = [th, tw] + ([] if tb is None else [tb])
    grads = torch.autograd.grad(loss, inputs, g.to(loss.dtype))
    d_bias = None if tb is None else grads[2].numpy()
    return loss.detach().numpy(), grads[0].numpy(), grads[1].numpy(), d_bias


def assert_grads_close(result, expected, dtype):
    """Loss and gradients at the dtype's tolerance; absolute part scaled by each array."""
    names = ("loss", "d_hidden", "d_weight", "d_bias")
    for name, actual, ref in zip(names, result, expected, strict=True):
        if ref is None:
            assert actual is None, name
            continue
        scale = logit_scale(ref)  # max(1, max |finite entry|)
        assert_close(actual, ref, dtype, scale=scale, check_dtype=name != "loss")


OPTION_GRID = [
    {"soft": soft, "bias": bias, "class_weight": cw, "ignore": ign, "smoothing": eps}
    for soft, bias, cw, ign, eps in itertools.product(
        [False, True], [False, True], [False, True], [False, True], [0.0, 0.2]
    )
    if not (soft and ign)  # ignore_index applies to class indices only
]


def option_id(o):
    return "-".join(k if o[k] is True else f"{k}={o[k]}" for k in o if o[k] not in (False, 0.0))


# ------------------------------------------------------------ parity with torch (autograd)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", OPTION_GRID, ids=[option_id(o) or "plain" for o in OPTION_GRID])
def test_matches_torch_linear_cross_entropy(opts, reduction, dtype):
    hidden, weight, bias, target, cw = make_case(
        dtype, soft=opts["soft"], bias=opts["bias"], class_weight=opts["class_weight"],
        ignore=opts["ignore"],
    )  # fmt: skip
    g = np.random.default_rng(5).standard_normal(N) if reduction == "none" else None
    options = {
        "class_weight": cw, "reduction": reduction, "label_smoothing": opts["smoothing"],
    }  # fmt: skip
    result = sx.linear_cross_entropy_with_grad(
        hidden, weight, target, bias, chunk_size=5, grad_output=g, **options
    )
    expected = torch_linear_ce(hidden, weight, bias, target, grad_output=g, **options)
    assert_grads_close(result, expected, dtype)
    # Class indices: hidden's dtype; probabilities: promoted with the float64 class weights.
    promoted = np.float64 if opts["soft"] and cw is not None else dtype
    assert np.asarray(result.loss).dtype == np.dtype(promoted)
    # The forward-only function gives the same loss.
    loss = sx.linear_cross_entropy(hidden, weight, target, bias, chunk_size=5, **options)
    assert np.asarray(loss).dtype == np.dtype(promoted)
    assert_close(loss, result.loss, dtype, scale=logit_scale(result.loss), check_dtype=False)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_float32_scalar_grad_output_matches_torch(reduction):
    hidden, weight, bias, target, cw = make_case(np.float32, class_weight=True, ignore=True)
    g = np.float32(-2.5) if reduction != "none" else np.full(N, -2.5, np.float32)
    result = sx.linear_cross_entropy_with_grad(
        hidden, weight, target, bias, class_weight=cw, reduction=reduction, grad_output=g,
        chunk_size=4,
    )  # fmt: skip
    expected = torch_linear_ce(
        hidden, weight, bias, target, class_weight=cw, reduction=reduction, grad_output=g
    )
    assert_grads_close(result, expected, np.float32)


# -------------------------------------------- parity with the unfused softxent computation


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 36, 37, 1000, None])
@pytest.mark.parametrize(
    "opts", OPTION_GRID[::3], ids=[option_id(o) or "plain" for o in OPTION_GRID[::3]]
)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_equals_unfused_cross_entropy_with_grad(opts, chunk_size, reduction):
    dtype = np.float64
    hidden, weight, bias, target, cw = make_case(
        dtype, soft=opts["soft"], bias=opts["bias"], class_weight=opts["class_weight"],
        ignore=opts["ignore"], seed=3,
    )  # fmt: skip
    g = np.random.default_rng(6).standard_normal(N) if reduction == "none" else None
    options = {"reduction": reduction, "label_smoothing": opts["smoothing"]}
    result = sx.linear_cross_entropy_with_grad(
        hidden, weight, target, bias, class_weight=cw, chunk_size=chunk_size, grad_output=g,
        **options,
    )  # fmt: skip
    logits = hidden @ weight.T + (0 if bias is None else bias)  # (N, V), the unfused way
    loss, d_logits = sx.cross_entropy_with_grad(
        logits, target, weight=cw, grad_output=g, **options
    )
    expected = (
        loss,
        d_logits @ weight,
        d_logits.T @ hidden,
        None if bias is None else d_logits.sum(0),
    )
    assert_grads_close(result, expected, dtype)


def _exact_layer(dtype, kind, n, d, seed):
    """A layer whose matmuls are exact, so the fused layer's logits and gradients can be
    compared bit for bit with cross_entropy_with_grad on the materialized logits.

    ``"identity"``: weight = I (V = D), so the logits are ``hidden`` and ``d_hidden`` is
    ``d_logits``. ``"one_hot"``: hidden rows are distinct unit vectors ``e_k`` (N <= D), so
    the logits of row n are ``weight[:, k_n]`` and ``d_weight[:, k_n]`` is ``d_logits[n]``.
    """
    r = np.random.default_rng(seed)
    if kind == "identity":
        hidden = (r.standard_normal((n, d)) * 3).astype(dtype)
        return hidden, np.eye(d, dtype=dtype), hidden, None
    k = r.permutation(d)[:n]
    weight = (r.standard_normal((d + 2, d)) * 3).astype(dtype)  # V = D + 2
    return np.eye(d, dtype=dtype)[k], weight, weight[:, k].T, k


EXACT_OPTIONS = [
    {},
    {"label_smoothing": 0.1},
    {"class_weight": True, "ignore": True},
    {"class_weight": True, "label_smoothing": 0.2},
    {"soft": True},
    {"soft": True, "class_weight": True, "label_smoothing": 0.1},
]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize(
    "opts", EXACT_OPTIONS, ids=[option_id(o) or "plain" for o in EXACT_OPTIONS]
)
@pytest.mark.parametrize("chunk_size", [3, 5])  # neither divides N = 13
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kind", ["identity", "one_hot"])
def test_fused_layer_is_bitwise_cross_entropy_of_the_logits(
    dtype, opts, chunk_size, reduction, kind
):
    """Per chunk, the fused layer runs the kernels of cross_entropy_with_grad on the
    validated targets of the whole batch: the same loss and d_logits, bit for bit."""
    n, d = 13, 16
    hidden, weight, logits, k = _exact_layer(dtype, kind, n, d, seed=9)
    v = weight.shape[0]
    r = np.random.default_rng(10)
    if opts.get("soft"):
        target = random_probs((n, v), -1, dtype, seed=11)
    else:
        target = r.integers(0, v, n)
        if opts.get("ignore"):
            target[[0, 4, 5]] = IGNORE
    options = {
        "reduction": reduction,
        "label_smoothing": opts.get("label_smoothing", 0.0),
        "class_weight": r.uniform(-0.5, 2.0, v).astype(dtype)
        if opts.get("class_weight")
        else None,
    }
    g = r.standard_normal(n).astype(dtype) if reduction == "none" else 2.5
    fused = sx.linear_cross_entropy_with_grad(
        hidden, weight, target, chunk_size=chunk_size, grad_output=g, **options
    )
    options["weight"] = options.pop("class_weight")
    loss, d_logits = sx.cross_entropy_with_grad(logits, target, grad_output=g, **options)
    assert fused.loss.dtype == loss.dtype
    np.testing.assert_array_equal(fused.loss, loss, strict=True)
    np.testing.assert_array_equal(
        sx.linear_cross_entropy(
            hidden,
            weight,
            target,
            chunk_size=chunk_size,
            **{
                ("class_weight" if key == "weight" else key): value
                for key, value in options.items()
            },
        ),
        loss,
        strict=True,
    )
    if kind == "identity":
        np.testing.assert_array_equal(fused.d_hidden, d_logits, strict=True)
    else:
        np.testing.assert_array_equal(fused.d_weight[:, k], d_logits.T, strict=True)


@pytest.mark.parametrize("chunk_size", [3, 8, 37])
def test_float32_class_indices_equal_unfused_losses(chunk_size):
    """Per-token losses agree with cross_entropy on the full float32 logits."""
    hidden, weight, bias, target, _ = make_case(np.float32, ignore=True, seed=4)
    logits = hidden @ weight.T + bias
    scale = max(1.0, float(np.abs(logits).max()))
    fused = sx.linear_cross_entropy(
        hidden, weight, target, bias, reduction="none", chunk_size=chunk_size
    )
    assert_close(
        fused, sx.cross_entropy(logits, target, reduction="none"), np.float32, scale=scale
    )


def test_float16_layer_is_computed_in_float32_and_rounded_once():
    hidden, weight, bias, target, cw = make_case(np.float16, class_weight=True, ignore=True)
    result = sx.linear_cross_entropy_with_grad(
        hidden, weight, target, bias, class_weight=cw, label_smoothing=0.1, chunk_size=6
    )
    # Oracle: torch in float32 from the same float16 values, rounded once to float16.
    f32 = [a.astype(np.float32) for a in (hidden, weight, bias)]
    expected = torch_linear_ce(*f32[:2], f32[2], target, class_weight=cw, label_smoothing=0.1)
    assert ref_dtype(np.float16) == np.float32
    expected = tuple(None if e is None else np.asarray(e).astype(np.float16) for e in expected)
    assert_grads_close(result, expected, np.float16)
    assert result.loss.dtype == np.float16


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(0, 20),
    d=st.integers(0, 5),
    v=st.integers(1, 9),
    chunk=st.integers(1, 25),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    seed=st.integers(0, 2**16),
)
def test_any_shape_and_chunk_equals_unfused(n, d, v, chunk, reduction, seed):
    r = np.random.default_rng(seed)
    hidden, weight, bias = (
        r.standard_normal((n, d)),
        r.standard_normal((v, d)),
        r.standard_normal(v),
    )
    target = r.integers(-1, v, n)  # -1 is ignored below
    result = sx.linear_cross_entropy_with_grad(
        hidden, weight, target, bias, ignore_index=-1, reduction=reduction, chunk_size=chunk
    )
    loss, d_logits = sx.cross_entropy_with_grad(
        hidden @ weight.T + bias, target, ignore_index=-1, reduction=reduction
    )
    assert_grads_close(
        result, (loss, d_logits @ weight, d_logits.T @ hidden, d_logits.sum(0)), np.float64
    )


# ------------------------------------------------------------------------ finite differences


def test_gradients_match_finite_differences():
    """Central differences of the float64 loss for a few entries of each input."""
    hidden, weight, bias, target, cw = make_case(
        np.float64, class_weight=True, ignore=True, seed=7
    )
    options = {"class_weight": cw, "label_smoothing": 0.15, "chunk_size": 4}
    result = sx.linear_cross_entropy_with_grad(hidden, weight, target, bias, **options)
    arrays = {"hidden": hidden, "weight": weight, "bias": bias}
    grads = {"hidden": result.d_hidden, "weight": result.d_weight, "bias": result.d_bias}
    r = np.random.default_rng(8)
    h = 1e-6
    for name, array in arrays.items():
        for _ in range(6):
            index = tuple(int(r.integers(0, s)) for s in array.shape)
            saved = array[index]
            array[index] = saved + h
            up = sx.linear_cross_entropy(hidden, weight, target, bias, **options)
            array[index] = saved - h
            down = sx.linear_cross_entropy(hidden, weight, target, bias, **options)
            array[index] = saved
            numeric = (up - down) / (2 * h)
            assert abs(numeric - grads[name][index]) < 1e-7 * max(1.0, abs(numeric)), (name, index)


# ------------------------------------------------------------------------------ edge cases


def test_all_ignored_mean_is_nan_with_zero_gradients():
    hidden, weight, bias, _, _ = make_case(np.float64)
    target = np.full(N, IGNORE)
    result = sx.linear_cross_entropy_with_grad(hidden, weight, target, bias, chunk_size=5)
    assert np.isnan(result.loss)
    expected = torch_linear_ce(hidden, weight, bias, target)
    assert_grads_close(result, expected, np.float64)
    assert not result.d_weight.any() and not result.d_hidden.any()


def test_empty_batch():
    weight, bias = np.ones((4, 3), np.float32), np.zeros(4, np.float32)
    hidden, target = np.empty((0, 3), np.float32), np.empty(0, np.int64)
    result = sx.linear_cross_entropy_with_grad(hidden, weight, target, bias, reduction="sum")
    assert result.loss == 0 and result.loss.dtype == np.float32
    assert (
        result.d_hidden.shape == (0, 3) and not result.d_weight.any() and not result.d_bias.any()
    )
    assert np.isnan(sx.linear_cross_entropy(hidden, weight, target))
    assert sx.linear_cross_entropy(hidden, weight, target, reduction="none").shape == (0,)


def test_no_bias_gives_none_and_inputs_are_not_modified():
    hidden, weight, _, target, _ = make_case(np.float32)
    copies = hidden.copy(), weight.copy()
    result = sx.linear_cross_entropy_with_grad(hidden, weight, target, chunk_size=3)
    assert result.d_bias is None
    np.testing.assert_array_equal(hidden, copies[0])
    np.testing.assert_array_equal(weight, copies[1])


def test_non_contiguous_inputs():
    hidden, weight, bias, target, _ = make_case(np.float64, seed=9)
    result = sx.linear_cross_entropy_with_grad(
        np.asfortranarray(hidden), weight.T.copy().T, target, bias, chunk_size=7
    )
    assert_grads_close(result, torch_linear_ce(hidden, weight, bias, target), np.float64)


# ------------------------------------------------------------- chunk rule and memory bound


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("n", "v", "itemsize", "rows"),
    [
        (4096, 32000, 4, 1024),  # a quarter of the tokens (128 MiB would allow 1048)
        (1024, 131072, 4, 256),  # a quarter, and 128 MiB: 256 x 131072 x 4 B
        (100_000, 32000, 4, 1042),  # the 128 MiB cap (1048 rows), in 96 equal chunks
        (4096, 50257, 8, 316),  # float64: 128 MiB / (50257 x 8 B) = 333 rows, 13 chunks
        (64, 1000, 4, 64),  # small batches: at least 256 rows, so here one chunk
        (1000, 1000, 4, 250),  # 256 rows would leave 232: 4 chunks of 250
        (4097, 10, 4, 1025),  # ceil(4097 / 4): 4 chunks, the last one 3 rows shorter
        (10, 2**40, 4, 1),  # at least one row
    ],
)
def test_default_chunk_rows(n, v, itemsize, rows):
    assert default_chunk_rows(v, itemsize, n) == rows


@given(
    n=st.integers(1, 10**7),
    v=st.integers(1, 10**6),
    itemsize=st.sampled_from([4, 8]),
)
@settings(max_examples=60, deadline=None, derandomize=True)
def test_default_chunk_is_at_most_a_quarter_of_the_logits(n, v, itemsize):
    rows = default_chunk_rows(v, itemsize, n)
    cap = default_chunk_rows(v, itemsize)  # without N: the 128 MiB cap alone
    assert cap == max(1, layer_module.CHUNK_BYTES // (v * itemsize))
    assert 1 <= rows <= cap
    if n >= layer_module.CHUNKS_PER_BATCH * layer_module.MIN_CHUNK_ROWS:
        assert rows <= -(-n // 4)  # ceil(n / 4) rows: a quarter of the logits, +3 rows at most
    chunks = -(-n // rows)
    assert n - (chunks - 1) * rows >= rows - (chunks - 1)  # nearly equal chunks
    assert 2 * rows >= min(layer_module.MIN_CHUNK_ROWS, cap, n)  # never tiny ones


def test_the_layer_uses_the_default_chunk_rule(monkeypatch):
    n, d, v = 2100, 3, 50  # a quarter: 525 rows, so 4 chunks
    seen = []
    real = layer_module.row_losses

    def spy(logits, *args, **kwargs):
        seen.append(logits.shape)
        return real(logits, *args, **kwargs)

    monkeypatch.setattr(layer_module, "row_losses", spy)
    r = np.random.default_rng(12)
    hidden, weight = r.standard_normal((n, d)), r.standard_normal((v, d))
    sx.linear_cross_entropy_with_grad(hidden, weight, r.integers(0, v, n), np.zeros(v))
    assert seen == [(525, v)] * 4


@pytest.mark.parametrize("chunk_size", [256, None])
def test_memory_is_bounded_by_the_chunk_not_the_logits(chunk_size, restore_threads):
    """N=2048, V=8000: the full float32 logits would be 65.5 MB; the fused call stays below."""
    sx.set_num_threads(2)  # the core's per-thread block scratch is part of the slack below
    n, d, v = 2048, 64, 8000
    r = np.random.default_rng(10)
    hidden = r.standard_normal((n, d), np.float32)
    weight = r.standard_normal((v, d), np.float32) * 0.1
    bias = np.zeros(v, np.float32)
    target = r.integers(0, v, n)
    full_logits = n * v * 4
    gradients = (n * d + v * d + v) * 4
    chunk_rows = chunk_size or default_chunk_rows(v, 4, n)
    assert chunk_rows == (chunk_size or n // 4)
    budget = min(chunk_rows, n) * v * 4
    # Per-chunk vectors and the kernels' per-thread block scratch: about 1.1 MiB with the
    # native kernels (the slack is tight enough to catch a 2 MiB d_weight scratch), a few
    # MiB with the NumPy ones.
    slack = 2 * 2**20 if sx._native.core is not None else 8 * 2**20
    peak = _peak_bytes(
        lambda: sx.linear_cross_entropy_with_grad(
            hidden, weight, target, bias, chunk_size=chunk_size
        )
    )
    # Allowed: the chunk buffer and the gradients; d_weight's partial sums go through rows
    # of d_hidden not written yet, so they need no memory of their own.
    assert peak < budget + gradients + slack, peak
    peak_fwd = _peak_bytes(
        lambda: sx.linear_cross_entropy(hidden, weight, target, bias, chunk_size=chunk_size)
    )
    assert peak_fwd < budget + slack, peak_fwd
    # By default a quarter of the logits (512 rows): 16.4 MB of the 65.5 MB, + the slack.
    assert peak - gradients < min(chunk_rows / n, 1 / 4) * full_logits + slack, peak


# ---------------------------------------------------------------------------- bad input


def _ok():
    return np.zeros((4, 3)), np.zeros((5, 3)), np.array([0, 1, 2, 4])


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (
            {"hidden": np.zeros((4, 3, 1))},
            ValueError,
            r"hidden must be 2-D \(N, D\), got shape \(4, 3, 1\)",
        ),
        ({"weight": np.zeros(5)}, ValueError, r"weight must be 2-D \(V, D\)"),
        (
            {"weight": np.zeros((5, 2))},
            ValueError,
            r"weight must have shape \(V, 3\) to match hidden",
        ),
        ({"weight": np.zeros((0, 3))}, ValueError, "weight has 0 rows"),
        (
            {"weight": np.zeros((5, 3), np.float32)},
            TypeError,
            "weight must have the dtype of hidden",
        ),
        ({"hidden": np.zeros((4, 3), int)}, TypeError, "hidden must be a floating-point array"),
        ({"bias": np.zeros(4)}, ValueError, r"bias must have shape \(5,\)"),
        ({"bias": np.zeros(5, np.float32)}, TypeError, "bias must have the dtype of hidden"),
        (
            {"target": np.array([0, 1, 2])},
            ValueError,
            r"target of class indices must have shape \(4,\)",
        ),
        ({"target": np.array([0, 1, 2, 5])}, ValueError, r"target\[3\] = 5 is out of range"),
        (
            {"target": np.zeros((4, 4))},
            ValueError,
            r"target of probabilities must have shape \(4, 5\)",
        ),
        ({"target": np.array(["a"] * 4)}, TypeError, "target must hold integer class indices"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be >= 1, got 0"),
        ({"chunk_size": 2.0}, TypeError, "chunk_size must be a positive int or None, got 2.0"),
        ({"chunk_size": True}, TypeError, "chunk_size must be a positive int"),
        ({"class_weight": np.ones(4)}, ValueError, r"class_weight must have shape \(5,\)"),
        ({"class_weight": np.full(5, np.nan)}, ValueError, "class_weight must be finite"),
        ({"reduction": "avg"}, ValueError, "reduction must be one of"),
        ({"label_smoothing": 1.5}, ValueError, r"label_smoothing must be in \[0, 1\]"),
        ({"target": np.full((4, 5), 0.2), "ignore_index": 0}, ValueError, "ignore_index=0 cannot"),
    ],
)
def test_bad_input_is_reported(change, error, match):
    hidden, weight, target = _ok()
    kwargs = {"hidden": hidden, "weight": weight, "target": target, **change}
    with pytest.raises(error, match=match):
        sx.linear_cross_entropy(**kwargs)
    with pytest.raises(error, match=match):
        sx.linear_cross_entropy_with_grad(**kwargs)


@pytest.mark.parametrize(
    ("reduction", "grad_output", "error", "match"),
    [
        ("mean", np.ones(4), ValueError, r"grad_output must be a scalar for reduction='mean'"),
        ("none", np.ones(3), ValueError, r"grad_output must have the shape of the loss \(4,\)"),
        ("sum", "x", TypeError, "grad_output must be a real number"),
    ],
)
def test_bad_grad_output_is_reported(reduction, grad_output, error, match):
    hidden, weight, target = _ok()
    with pytest.raises(error, match=match):
        sx.linear_cross_entropy_with_grad(
            hidden, weight, target, reduction=reduction, grad_output=grad_output
        )


def test_class_weight_is_not_the_layer_weight():
    """The layer's weight is positional; torch's class `weight` is called class_weight."""
    hidden, weight, target = _ok()
    with pytest.raises(TypeError, match="weight"):
        sx.linear_cross_entropy(hidden, weight, target, weight=np.ones(5))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk_size", [5, None])  # ignored rows in the first and later chunks
@pytest.mark.parametrize("garbage", [np.nan, np.inf])
def test_nonfinite_hidden_on_ignored_tokens_contributes_nothing(
    dtype, reduction, chunk_size, garbage
):
    """Issue 15: padding tokens hold garbage; 0 * NaN must not reach d_weight or d_bias."""
    hidden, weight, bias, target, cw = make_case(dtype, ignore=True, class_weight=True, seed=3)
    ignored = target == IGNORE
    assert 0 < ignored.sum() < N and ignored[:5].any()
    dirty = hidden.copy()
    dirty[ignored] = garbage
    dirty[np.flatnonzero(ignored)[0], 0] = -garbage  # NaN, or +inf and -inf in one row
    clean = np.where(ignored[:, None], 0, hidden).astype(dtype)
    g = np.random.default_rng(4).standard_normal(N) if reduction == "none" else None
    options = dict(class_weight=cw, reduction=reduction, grad_output=g)
    result = sx.linear_cross_entropy_with_grad(
        dirty, weight, target, bias, chunk_size=chunk_size, **options
    )
    for name, array in zip(result._fields, result, strict=True):
        assert np.isfinite(array).all(), name
    assert not result.d_hidden[ignored].any()
    expected = torch_linear_ce(clean, weight, bias, target, **options)
    assert_grads_close(result, expected, dtype)
    loss_only = sx.linear_cross_entropy(dirty, weight, target, bias, class_weight=cw,
                                        reduction=reduction, chunk_size=chunk_size)  # fmt: skip
    assert np.array_equal(loss_only, result.loss)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_list_of_probabilities_takes_hiddens_dtype_in_every_chunk(dtype):
    # A list converts once to hidden's dtype ("Lists take the logits' dtype"), so the result
    # is the one of the same target given in that dtype, not of a float64 computation.
    rng = np.random.default_rng(8)
    hidden = rng.normal(size=(6, 3)).astype(dtype)
    weight = rng.normal(size=(5, 3)).astype(dtype)
    probs = rng.dirichlet(np.ones(5), size=6)
    as_list = sx.linear_cross_entropy_with_grad(
        hidden, weight, probs.tolist(), reduction="none", chunk_size=2
    )
    as_array = sx.linear_cross_entropy_with_grad(
        hidden, weight, probs.astype(dtype), reduction="none", chunk_size=2
    )
    assert as_list.loss.dtype == dtype
    for got, expected in zip(as_list, as_array, strict=True):
        if got is not None:
            np.testing.assert_array_equal(got, expected)

"""The vocab-parallel losses on a world of one process (torch.distributed not initialized).

Fast checks of the per-token algebra against torch for every option, the argument checks,
the special values, and what autograd keeps; the spawned tests check the multi-rank parts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _vp_reference import make_data, option_cases, reference_loss, tolerances
from torch.utils._python_dispatch import TorchDispatchMode

import softxent as sx
from softxent.torch.distributed import (
    count_communication,
    vocab_parallel_cross_entropy,
    vocab_parallel_linear_cross_entropy,
)

N, C, H = 9, 13, 6


def _case_args(case, d):
    target = d[case["kind"]]
    opts = {k: case[k] for k in ("reduction", "label_smoothing", "z_loss", "softcap")}
    if case["weight"]:
        opts["weight"] = d["signed_weight" if case["weight"] == "signed" else "weight"]
    upstream = d["upstream"] if case["reduction"] == "none" else torch.tensor(0.7).to(target)
    return target, opts, upstream


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cross_entropy_every_option_matches_torch(dtype):
    d = make_data(N, C, H, dtype, seed=10)
    scale = float(d["logits"].abs().max())
    for case in option_cases():
        target, opts, upstream = _case_args(case, d)
        x = d["logits"].clone().requires_grad_()
        loss = vocab_parallel_cross_entropy(x, target, **opts)
        (loss * upstream.to(loss.dtype)).sum().backward()
        ref_x = d["logits"].clone().requires_grad_()
        expected = reference_loss(ref_x, target, **opts)
        (expected * upstream.to(expected.dtype)).sum().backward()
        torch.testing.assert_close(loss, expected, **tolerances(dtype, scale), msg=str(case))
        torch.testing.assert_close(x.grad, ref_x.grad, **tolerances(dtype, scale), msg=str(case))


@pytest.mark.parametrize("chunk_size", [1, 4, N, 100, None])
def test_linear_every_option_matches_torch(chunk_size):
    dtype = torch.float64
    d = make_data(N, C, H, dtype, seed=11)
    for case in option_cases(linear=True):
        target, opts, upstream = _case_args(case, d)
        leaves = [d[k].clone().requires_grad_() for k in ("input", "lin_w", "lin_b")]
        loss = vocab_parallel_linear_cross_entropy(
            leaves[0],
            leaves[1],
            target,
            local_linear_bias=leaves[2],
            chunk_size=chunk_size,
            **opts,
        )
        (loss * upstream).sum().backward()
        ref = [d[k].clone().requires_grad_() for k in ("input", "lin_w", "lin_b")]
        expected = reference_loss(F.linear(*ref), target, **opts)
        (expected * upstream).sum().backward()
        tol = tolerances(dtype, 10.0)
        torch.testing.assert_close(loss, expected, **tol, msg=str(case))
        for got, want in zip(leaves, ref, strict=True):
            torch.testing.assert_close(got.grad, want.grad, **tol, msg=str(case))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype):
    d = make_data(N, C, H, torch.float32, seed=12)
    x = d["logits"].to(dtype).requires_grad_()
    loss = vocab_parallel_cross_entropy(x, d["ignored"], label_smoothing=0.1)
    loss.backward()
    ref_x = x.detach().double().requires_grad_()
    expected = reference_loss(ref_x, d["ignored"], label_smoothing=0.1)
    expected.backward()
    assert loss.dtype == dtype and x.grad.dtype == dtype
    rtol = 1e-3 if dtype == torch.float16 else 1e-2  # bfloat16 keeps 8 bits
    torch.testing.assert_close(loss.double(), expected, rtol=rtol, atol=rtol)
    torch.testing.assert_close(x.grad.double(), ref_x.grad, rtol=rtol, atol=rtol)


def test_ignored_rows_get_zero_gradient_even_with_nonfinite_logits():
    # torch gives NaN there (pytorch/pytorch#11551); softxent promises 0.
    x = torch.tensor([[-torch.inf, -torch.inf, -torch.inf], [1.0, -torch.inf, 2.0]])
    x.requires_grad_()
    target = torch.tensor([-100, 0])
    loss = vocab_parallel_cross_entropy(x, target)
    loss.backward()
    ref = F.cross_entropy(x.detach(), target)
    torch.testing.assert_close(loss, ref)
    assert torch.equal(x.grad[0], torch.zeros(3))
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("garbage", [float("nan"), float("inf")])
def test_linear_nonfinite_input_on_ignored_tokens_contributes_nothing(reduction, garbage):
    """Issue 15: padding tokens hold garbage; 0 * NaN must not reach the layer's gradients."""
    d = make_data(N, C, H, torch.float64, seed=13)
    target = d["ignored"]
    ignored = target == -100
    grads = []
    for fill in (garbage, 0.0):
        leaves = [d[k].clone().requires_grad_() for k in ("input", "lin_w", "lin_b")]
        with torch.no_grad():
            leaves[0][ignored] = fill
        loss = vocab_parallel_linear_cross_entropy(
            leaves[0], leaves[1], target, local_linear_bias=leaves[2], reduction=reduction,
            weight=d["weight"], chunk_size=4,
        )  # fmt: skip
        (loss * d["upstream"][: loss.numel()].reshape(loss.shape)).sum().backward()
        grads.append([loss.detach()] + [leaf.grad for leaf in leaves])
    for got, want in zip(*grads, strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert not grads[0][1][ignored].any()


def test_minus_inf_on_the_target_gives_inf_loss_and_finite_gradient():
    x = torch.tensor([[1.0, -torch.inf, 2.0]], dtype=torch.float64, requires_grad=True)
    loss = vocab_parallel_cross_entropy(x, torch.tensor([1]))
    loss.backward()
    assert loss == torch.inf
    assert torch.isfinite(x.grad).all()


def test_all_ignored_mean_is_nan_with_zero_gradient():
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss = vocab_parallel_cross_entropy(
        x, torch.full((4,), -1), ignore_index=-1, label_smoothing=0.2, z_loss=0.1
    )
    loss.backward()
    assert loss.isnan()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_empty_batch():
    x = torch.zeros(0, 5, requires_grad=True)
    assert vocab_parallel_cross_entropy(x, torch.zeros(0, dtype=torch.long)).isnan()
    assert vocab_parallel_cross_entropy(x, torch.zeros(0, dtype=torch.long), reduction="sum") == 0
    out = vocab_parallel_cross_entropy(x, torch.zeros(0, dtype=torch.long), reduction="none")
    assert out.shape == (0,)


def test_leading_dimensions_are_flattened():
    d = make_data(N - 1, C, H, torch.float64, seed=13)
    logits, target = d["logits"].reshape(2, 4, C), d["index"].reshape(2, 4)
    out = vocab_parallel_cross_entropy(logits, target, reduction="none", z_loss=0.1)
    flat = vocab_parallel_cross_entropy(d["logits"], d["index"], reduction="none", z_loss=0.1)
    assert out.shape == (2, 4)
    torch.testing.assert_close(out.reshape(-1), flat, rtol=0, atol=0)
    single = vocab_parallel_cross_entropy(d["logits"][0], d["index"][0], z_loss=0.1)  # (C,), ()
    torch.testing.assert_close(single, flat[0], rtol=1e-15, atol=0)


def test_forward_saves_only_the_local_gradient():
    x = torch.randn(N, C, requires_grad=True)
    loss = vocab_parallel_cross_entropy(x, torch.zeros(N, dtype=torch.long), label_smoothing=0.1)
    saved = loss.grad_fn.saved_tensors
    assert [tuple(t.shape) for t in saved] == [(N, C)]
    frozen = vocab_parallel_cross_entropy(x.detach(), torch.zeros(N, dtype=torch.long))
    assert frozen.grad_fn is None


def test_no_communication_on_a_world_of_one():
    x = torch.randn(N, C, requires_grad=True)
    with count_communication() as stats:
        vocab_parallel_cross_entropy(x, torch.zeros(N, dtype=torch.long)).backward()
    assert (stats.collectives, stats.bytes, stats.calls) == (0, 0, [])


def test_out_of_range_target_raises_the_error_of_every_other_path():
    target = torch.tensor([[0, 1], [13, 2]])
    with pytest.raises(ValueError) as distributed:
        vocab_parallel_cross_entropy(torch.zeros(2, 2, C), target)
    with pytest.raises(ValueError) as numpy_path:
        sx.cross_entropy(np.zeros((2, 2, C)), target.numpy())
    with pytest.raises(ValueError) as linear:
        vocab_parallel_linear_cross_entropy(torch.zeros(2, 2, 3), torch.zeros(C, 3), target)
    message = str(numpy_path.value)
    assert message.startswith("target[1, 0] = 13 is out of range")
    assert str(distributed.value) == message == str(linear.value)
    with pytest.raises(ValueError, match=r"target\[0\] = -3 is out of range"):
        vocab_parallel_cross_entropy(torch.zeros(2, C), torch.tensor([-3, 1]))


_X = torch.zeros(3, 4)
_Y = torch.tensor([0, 1, 2])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"reduction": "avg"}, ValueError, "reduction must be one of"),
        ({"label_smoothing": float("nan")}, ValueError, "label_smoothing must be in"),
        ({"label_smoothing": 1.5}, ValueError, "label_smoothing must be in"),
        ({"label_smoothing": "0.1"}, TypeError, "label_smoothing must be"),
        ({"z_loss": -1.0}, ValueError, "z_loss must be"),
        ({"softcap": 0.0}, ValueError, "softcap must be"),
        ({"softcap": float("inf")}, ValueError, "softcap must be"),
        ({"ignore_index": 1.5}, TypeError, "ignore_index must be an int"),
        ({"vocab_start": -2}, ValueError, "vocab_start must be >= 0"),
        ({"vocab_start": 1}, ValueError, "tile"),
        (
            {"weight": torch.ones(5)},
            ValueError,
            r"weight must have shape \(4,\), this rank's slice",
        ),
        ({"weight": torch.ones(4, dtype=torch.float64)}, TypeError, "logits' dtype"),
        ({"weight": torch.ones(4, requires_grad=True)}, ValueError, "weight requires grad"),
    ],
)
def test_bad_options_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        vocab_parallel_cross_entropy(_X, _Y, **kwargs)


@pytest.mark.parametrize(
    ("logits", "target", "kwargs", "error", "match"),
    [
        (_X.long(), _Y, {}, TypeError, "local_logits must be a floating-point"),
        (torch.tensor(1.0), _Y, {}, ValueError, "at least 1 dimension"),
        (_X, _Y[:2], {}, ValueError, r"target of class indices must have shape \(3,\)"),
        (_X, _Y.float(), {}, TypeError, "must have an integer dtype"),
        (_X, torch.zeros(3, 4, dtype=torch.long), {}, TypeError, "must be floating point"),
        (_X, torch.zeros(3, 4), {"ignore_index": 0}, ValueError, "cannot be used with prob"),
        (_X, torch.zeros(3, 4, requires_grad=True), {}, ValueError, "target requires grad"),
    ],
)
def test_bad_tensors_raise(logits, target, kwargs, error, match):
    with pytest.raises(error, match=match):
        vocab_parallel_cross_entropy(logits, target, **kwargs)


@pytest.mark.parametrize(
    ("weight", "kwargs", "error", "match"),
    [
        (torch.zeros(4, 5), {}, ValueError, r"input must have last dimension D = 5"),
        (torch.zeros(4, 6, dtype=torch.float64), {}, TypeError, "the dtype of input"),
        (torch.zeros(4, 6), {"chunk_size": 0}, ValueError, "chunk_size must be >= 1, got 0"),
        (torch.zeros(4, 6), {"chunk_size": 2.0}, TypeError, "chunk_size must be a positive"),
        (torch.zeros(4, 6), {"local_linear_bias": torch.zeros(3)}, ValueError, "bias"),
    ],
)
def test_linear_bad_arguments_raise(weight, kwargs, error, match):
    with pytest.raises(error, match=match):
        vocab_parallel_linear_cross_entropy(torch.zeros(3, 6), weight, _Y, **kwargs)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces (a proxy for peak working memory)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_linear_never_materializes_all_logits():
    n, v, h, chunk = 64, 50, 4, 8  # N V = 3200 > every other tensor involved
    g = torch.Generator().manual_seed(5)
    inp = torch.randn(n, h, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, h, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, v, (n,), generator=g)
    with _LargestTensor() as probe:
        loss = vocab_parallel_linear_cross_entropy(
            inp, w, target, chunk_size=chunk, label_smoothing=0.1, z_loss=1e-3
        )
        saved = [tuple(t.shape) for t in loss.grad_fn.saved_tensors if t is not None]
        loss.backward()
    assert probe.largest == max(chunk * v, n * h, v * h)  # one chunk of logits at most
    assert saved == [(n, h), (v, h), (n,)]  # input, weight, target: no (N, V) tensor


def test_benchmark_rows_on_a_world_of_one():
    from softxent.torch.distributed._bench import benchmark

    (row,) = benchmark((1,), tokens=8, hidden=4, vocab=16, steps=1)
    assert row["world_size"] == 1 and row["collectives"] == 0 and row["bytes"] == 0
    assert row["seconds"] > 0 and row["loss"] == row["loss"]  # finite, not NaN


def test_in_range_ignore_index_still_takes_part_in_every_softmax():
    d = make_data(N, C, H, torch.float64, seed=14)
    target = d["index"].clone()
    target[:3] = 2
    x = d["logits"].clone().requires_grad_()
    loss = vocab_parallel_cross_entropy(x, target, ignore_index=2, label_smoothing=0.2)
    loss.backward()
    ref_x = d["logits"].clone().requires_grad_()
    expected = F.cross_entropy(ref_x, target, ignore_index=2, label_smoothing=0.2)
    expected.backward()
    torch.testing.assert_close(loss, expected, **tolerances(torch.float64, 10.0))
    torch.testing.assert_close(x.grad, ref_x.grad, **tolerances(torch.float64, 10.0))


@pytest.mark.parametrize("kind", ["ignored", "probs"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_matches_the_single_process_softxent_torch_backend(kind, reduction):
    # The oracle: softxent.torch's z_loss/softcap must mean the same thing here.
    st = pytest.importorskip("softxent.torch")
    d = make_data(N, C, H, torch.float64, seed=15)
    opts = {
        "weight": d["weight"],
        "reduction": reduction,
        "label_smoothing": 0.2,
        "z_loss": 0.05,
        "softcap": 3.0,
    }
    up = d["upstream"] if reduction == "none" else torch.tensor(0.3, dtype=torch.float64)
    x = d["logits"].clone().requires_grad_()
    (vocab_parallel_cross_entropy(x, d[kind], **opts) * up).sum().backward()
    ref_x = d["logits"].clone().requires_grad_()
    expected = st.cross_entropy(ref_x, d[kind], **opts)
    (expected * up).sum().backward()
    loss = vocab_parallel_cross_entropy(d["logits"], d[kind], **opts)
    torch.testing.assert_close(loss, expected, **tolerances(torch.float64, 10.0))
    torch.testing.assert_close(x.grad, ref_x.grad, **tolerances(torch.float64, 10.0))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("linear", [False, True])
def test_loss_is_summed_in_float64_like_every_other_path(reduction, linear):
    # 20000 float32 losses: a float32 accumulation rounds differently from float64.
    gen = torch.Generator().manual_seed(4)
    n = 20000
    x = torch.randn(n, C, generator=gen) * 3
    y = torch.randint(0, C, (n,), generator=gen)
    w = torch.rand(C, generator=gen) + 0.5

    def loss(red):
        if linear:
            eye = torch.eye(C)
            return vocab_parallel_linear_cross_entropy(x, eye, y, weight=w, reduction=red)
        return vocab_parallel_cross_entropy(x, y, weight=w, reduction=red)

    per_token = loss("none")
    total = per_token.double().sum()
    if reduction == "mean":
        total = total / w[y].sum()
    assert loss(reduction) == total.float()

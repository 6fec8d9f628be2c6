"""softxent.torch.linear_cross_entropy / LinearCrossEntropyLoss against
``F.cross_entropy(F.linear(...))``, on both paths (NumPy kernels and generic torch)."""

from __future__ import annotations

import inspect

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import softxent._linear_cross_entropy as numpy_layer  # noqa: E402
import softxent.torch._linear_cross_entropy as torch_layer  # noqa: E402
from softxent.torch import (  # noqa: E402
    LinearCrossEntropyLoss,
    default_chunk_size,
    linear_cross_entropy,
)
from softxent.torch._linear_cross_entropy import linear_cross_entropy_with_options  # noqa: E402
from softxent.torch._options import make_options  # noqa: E402

BACKENDS = ["numpy", "torch"]
REDUCTIONS = ["mean", "sum", "none"]
OPTION_SETS = [(False, 0.0, False), (True, 0.0, True), (True, 0.3, True), ("signed", 0.3, True)]
RTOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def assert_close(actual, expected, dtype):
    scale = max(1.0, float(expected.detach().double().abs().nan_to_num(0, 0, 0).max()))
    rtol = RTOL[dtype]
    torch.testing.assert_close(
        actual.detach().double(),
        expected.detach().double(),
        rtol=rtol,
        atol=rtol * scale,
        equal_nan=True,
    )


def make_layer(
    n=7,
    d=5,
    v=11,
    *,
    lead=None,
    prob=False,
    weighted=False,
    ignore=False,
    bias=True,
    dtype=torch.float64,
    seed=0,
):
    gen = torch.Generator().manual_seed(seed)
    lead = (n,) if lead is None else lead
    x = torch.randn(*lead, d, generator=gen, dtype=torch.float64).to(dtype)
    w = (torch.randn(v, d, generator=gen, dtype=torch.float64) / d**0.25).to(dtype)
    b = torch.randn(v, generator=gen, dtype=torch.float64).to(dtype) if bias else None
    if prob:
        t = torch.rand(*lead, v, generator=gen, dtype=torch.float64).softmax(-1).to(dtype)
    else:
        t = torch.randint(0, v, lead, generator=gen)
        if ignore:
            t = torch.where(torch.rand(lead, generator=gen) < 0.3, torch.full_like(t, -100), t)
    cw = torch.rand(v, generator=gen, dtype=torch.float64) + 0.5
    if weighted == "signed":  # some weights negative, as torch's own tests use
        cw = cw * (torch.randint(0, 2, (v,), generator=gen) * 2 - 1)
    return x, w, b, t, (cw.to(dtype) if weighted else None)


def leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in tensors]


def grads_of(loss, tensors, g):
    loss.backward(g)
    return [None if t is None else t.grad for t in tensors]


def reference(
    x,
    w,
    b,
    t,
    cw,
    *,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    ignore_index=-100,
):
    """torch's reference path ``F.cross_entropy(F.linear(...))``, plus z-loss and softcap
    written out with plain torch ops (float64 inputs)."""
    logits = F.linear(x, w, b)  # (..., V)
    num_classes = logits.shape[-1]
    logits = logits.reshape(-1, num_classes)
    rows = t.reshape(-1, num_classes) if t.dtype.is_floating_point else t.reshape(-1)
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    per = F.cross_entropy(
        logits,
        rows,
        cw,
        ignore_index=ignore_index,
        reduction="none",
        label_smoothing=label_smoothing,
    )
    lse = torch.logsumexp(logits, -1)
    if rows.dtype.is_floating_point:
        valid = torch.ones_like(lse, dtype=torch.bool)
        denominator = torch.tensor(float(lse.numel()), dtype=per.dtype)
    else:
        valid = rows != ignore_index
        wy = cw[torch.where(valid, rows, 0)] if cw is not None else torch.ones_like(lse)
        denominator = torch.where(valid, wy, 0).sum()
    per = per + torch.where(valid, z_loss * lse**2, 0)
    if reduction == "none":
        return per.reshape(x.shape[:-1])
    return per.sum() if reduction == "sum" else per.sum() / denominator


def run_both(x, w, b, t, cw, *, backend, seed=1, **kw):
    """(loss, grads) of ours and of the reference with the same random upstream gradient."""
    layer = leaves(x, w, b)
    options = make_options(**kw)
    loss = linear_cross_entropy_with_options(layer[0], layer[1], t, layer[2], cw, options, backend)
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(loss.shape, generator=gen, dtype=torch.float64).to(loss.dtype)
    grads = grads_of(loss, layer, g)
    ref_layer = leaves(x, w, b)
    ref_kw = {k: v for k, v in kw.items() if k != "chunk_size"}
    ref = reference(*ref_layer, t, cw, **ref_kw)
    ref_grads = grads_of(ref, ref_layer, g.to(ref.dtype))
    return (loss, grads), (ref, ref_grads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("prob", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 3, None])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_torch_float64(backend, reduction, options, prob, chunk_size, bias):
    weighted, smoothing, ignore = options
    x, w, b, t, cw = make_layer(prob=prob, weighted=weighted, ignore=ignore, bias=bias)
    (loss, grads), (ref, ref_grads) = run_both(
        x,
        w,
        b,
        t,
        cw,
        backend=backend,
        reduction=reduction,
        label_smoothing=smoothing,
        chunk_size=chunk_size,
    )
    assert loss.shape == ref.shape and loss.dtype == ref.dtype
    assert_close(loss, ref, torch.float64)
    for ours, theirs in zip(grads, ref_grads, strict=True):
        assert (ours is None) == (theirs is None)
        if ours is not None:
            assert_close(ours, theirs, torch.float64)


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("z_loss", "softcap"), [(1e-2, None), (0.0, 2.0), (0.2, 1.5)])
@pytest.mark.parametrize("prob", [False, True])
def test_z_loss_and_softcap(backend, reduction, z_loss, softcap, prob):
    x, w, b, t, cw = make_layer(prob=prob, weighted=True, ignore=True, seed=4)
    (loss, grads), (ref, ref_grads) = run_both(
        x,
        w,
        b,
        t,
        cw,
        backend=backend,
        reduction=reduction,
        label_smoothing=0.1,
        z_loss=z_loss,
        softcap=softcap,
        chunk_size=3,
    )
    assert_close(loss, ref, torch.float64)
    for ours, theirs in zip(grads, ref_grads, strict=True):
        assert_close(ours, theirs, torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("lead", "prob"), [((2, 4), False), ((2, 4), True), ((), False)])
def test_leading_dimensions(backend, lead, prob):
    x, w, b, t, cw = make_layer(lead=lead, prob=prob, seed=2)
    (loss, grads), (ref, ref_grads) = run_both(
        x, w, b, t, cw, backend=backend, reduction="none", chunk_size=3
    )
    assert loss.shape == lead
    assert_close(loss, ref, torch.float64)
    for ours, theirs in zip(grads, ref_grads, strict=True):
        assert ours.shape == theirs.shape
        assert_close(ours, theirs, torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_reduced_precision(backend, dtype, reduction):
    if backend == "numpy" and dtype == torch.bfloat16:
        pytest.skip("NumPy has no bfloat16: bfloat16 always takes the torch path")
    x, w, b, t, cw = make_layer(n=13, d=16, v=37, weighted=True, ignore=True, dtype=dtype)
    layer = leaves(x, w, b)
    loss = linear_cross_entropy_with_options(
        layer[0],
        layer[1],
        t,
        layer[2],
        cw,
        make_options(reduction=reduction, chunk_size=4),
        backend,
    )
    assert loss.dtype == dtype
    g = torch.linspace(-1, 1, loss.numel(), dtype=dtype).reshape(loss.shape)
    grads = grads_of(loss, layer, g)
    assert all(grad.dtype == dtype for grad in grads)
    # Oracle: float64 from the same rounded inputs, with the logits rounded to the layer's
    # dtype as F.linear in that dtype does.
    ref_layer = leaves(x.double(), w.double(), b.double())
    logits = F.linear(*ref_layer)
    logits = logits + (F.linear(x, w, b).double() - logits).detach()  # dtype-rounded values
    ref = F.cross_entropy(logits, t, cw.double(), reduction=reduction)
    ref_grads = grads_of(ref, ref_layer, g.double())
    assert_close(loss, ref, dtype)
    for ours, theirs in zip(grads, ref_grads, strict=True):
        assert_close(ours, theirs, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_the_grads_that_are_needed(backend):
    x, w, b, t, _ = make_layer()
    xr = x.clone().requires_grad_(True)
    loss = linear_cross_entropy_with_options(
        xr, w, t, b, None, make_options(chunk_size=2), backend
    )
    loss.backward()
    ref_x = x.clone().requires_grad_(True)
    F.cross_entropy(F.linear(ref_x, w, b), t).backward()
    assert_close(xr.grad, ref_x.grad, torch.float64)
    assert w.grad is None and b.grad is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_all_ignored(backend, reduction):
    x, w, b, _, cw = make_layer(weighted=True)
    t = torch.full((7,), -100)
    layer = leaves(x, w, b)
    loss = linear_cross_entropy_with_options(
        layer[0],
        layer[1],
        t,
        layer[2],
        cw,
        make_options(reduction=reduction, chunk_size=3),
        backend,
    )
    ref = F.cross_entropy(F.linear(x, w, b), t, cw, reduction=reduction)
    torch.testing.assert_close(loss.detach(), ref, equal_nan=True)
    for grad in grads_of(loss, layer, torch.ones_like(loss)):
        assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck(backend, reduction):
    x, w, b, t, cw = make_layer(n=5, d=3, v=4, weighted=True, ignore=True, seed=9)
    options = make_options(reduction=reduction, label_smoothing=0.1, chunk_size=2)
    layer = leaves(x, w, b)
    assert torch.autograd.gradcheck(
        lambda *a: linear_cross_entropy_with_options(a[0], a[1], t, a[2], cw, options, backend),
        layer,
    )
    if backend == "torch":
        capped = make_options(reduction=reduction, z_loss=0.1, softcap=2.0, chunk_size=2)
        assert torch.autograd.gradcheck(
            lambda *a: linear_cross_entropy_with_options(a[0], a[1], t, a[2], cw, capped, backend),
            layer,
        )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_retain_graph_backward_twice(backend, reduction):
    x, w, b, t, _ = make_layer(ignore=True)
    layer = leaves(x, w, b)
    loss = linear_cross_entropy_with_options(
        layer[0],
        layer[1],
        t,
        layer[2],
        None,
        make_options(reduction=reduction, chunk_size=3),
        backend,
    )
    loss.backward(torch.ones_like(loss), retain_graph=True)
    first = [t.grad.clone() for t in layer]
    loss.backward(torch.ones_like(loss))
    for once, tensor in zip(first, layer, strict=True):
        assert_close(tensor.grad, 2 * once, torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_upstream_of_ones_retained_accumulated_and_through_an_intermediate(backend, reduction):
    """An upstream gradient of ones hands the saved gradients to autograd as they are (no
    scaling pass on CPU): a kept graph, accumulation into .grad and a chain rule through an
    earlier op must all still see the right numbers."""
    x, w, b, t, _ = make_layer(ignore=True)
    layer = leaves(x, w, b)
    options = make_options(reduction=reduction, chunk_size=3)

    def run():
        return linear_cross_entropy_with_options(
            3.0 * layer[0], layer[1], t, layer[2], None, options, backend
        )

    loss = run()
    loss.backward(retain_graph=True)
    loss.backward()
    run().backward()
    expected = leaves(x, w, b)
    F.cross_entropy(
        F.linear(3.0 * expected[0], expected[1], expected[2]), t, reduction=reduction
    ).backward()
    for ours, ref in zip(layer, expected, strict=True):
        assert_close(ours.grad, 3.0 * ref.grad, torch.float64)


def test_double_backward_raises():
    x, w, b, t, _ = make_layer()
    layer = leaves(x, w, b)
    loss = linear_cross_entropy(layer[0], layer[1], t, linear_bias=layer[2])
    with pytest.raises(RuntimeError, match="does not support double backward"):
        torch.autograd.grad(loss, layer, create_graph=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_forward_only_without_grad(backend, context, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a gradient was computed")

    real_rows = numpy_layer.row_losses

    def rows_without_grad(x, axis, targets, grad=None, g_rows=None):
        if grad is not None:
            fail()
        return real_rows(x, axis, targets)

    monkeypatch.setattr(numpy_layer, "row_losses", rows_without_grad)
    from softxent.torch import _algebra

    monkeypatch.setattr(_algebra.RowsPass, "gradient_", fail)
    x, w, b, t, _ = make_layer()
    layer = leaves(x, w, b)
    with context():
        loss = linear_cross_entropy_with_options(
            layer[0], layer[1], t, layer[2], None, make_options(chunk_size=3), backend
        )
    assert loss.grad_fn is None
    assert_close(loss, F.cross_entropy(F.linear(x, w, b), t), torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_chunks_never_hold_all_logits(backend, chunk_size, monkeypatch):
    n, v = 2000, 9000  # default chunk: a quarter of n, 500 rows (128 MiB allows 1864)
    seen = []
    if backend == "numpy":
        real = numpy_layer.row_losses

        def spy(logits, *args, **kwargs):
            seen.append(tuple(logits.shape))
            return real(logits, *args, **kwargs)

        monkeypatch.setattr(numpy_layer, "row_losses", spy)
    else:
        real = torch_layer.rows_pass

        def spy(x, *args, **kwargs):
            seen.append(tuple(x.shape))
            return real(x, *args, **kwargs)

        monkeypatch.setattr(torch_layer, "rows_pass", spy)
    x, w, _, t, _ = make_layer(n=n, d=2, v=v, bias=False)
    layer = leaves(x, w)
    loss = linear_cross_entropy_with_options(
        layer[0], layer[1], t, None, None, make_options(chunk_size=chunk_size), backend
    )
    loss.backward()
    expected = chunk_size or default_chunk_size(v, torch.float64, num_rows=n)
    assert expected == (chunk_size or 500)
    assert max(rows for rows, _ in seen) == expected
    assert sum(rows for rows, _ in seen) == n


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_saves_nothing_logits_sized(backend, reduction):
    x, w, b, t, _ = make_layer(n=40, d=3, v=50)
    layer = leaves(x, w, b)
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = linear_cross_entropy_with_options(
            layer[0],
            layer[1],
            t,
            layer[2],
            None,
            make_options(reduction=reduction, chunk_size=8),
            backend,
        )
    sizes = sorted(s.numel() for s in saved)
    layer_sizes = sorted([x.numel(), w.numel(), b.numel()])
    if reduction == "none":  # the inputs themselves (no copies) and the small target
        assert sizes == sorted([*layer_sizes, t.numel()])
        ptrs = {s.data_ptr() for s in saved}
        assert {tensor.data_ptr() for tensor in layer} <= ptrs
    else:  # the three precomputed gradients
        assert sizes == layer_sizes
    assert max(sizes) < 40 * 50  # never the (N, V) logits
    loss.backward(torch.ones_like(loss))


# --- errors, signatures, module ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (
            (torch.zeros(3, 4), torch.zeros(5, 2), torch.zeros(3).long()),
            ValueError,
            "input must have last dimension D = 2",
        ),
        (
            (torch.zeros(3, 4), torch.zeros(5, 4, dtype=torch.float64), torch.zeros(3).long()),
            TypeError,
            "linear_weight must have the dtype of input",
        ),
        (
            (torch.zeros(3, 4), torch.zeros(5, 2, 4), torch.zeros(3).long()),
            ValueError,
            "linear_weight must be 2-D",
        ),
        (
            (torch.zeros(3, 4), torch.zeros(5, 4), torch.zeros(4).long()),
            ValueError,
            r"target of class indices must have shape \(3,\)",
        ),
        (
            (torch.zeros(3, 4), torch.zeros(5, 4), torch.tensor([0, 5, 1])),
            ValueError,
            r"target\[1\] = 5 is out of range",
        ),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_errors(args, error, match, backend):
    with pytest.raises(error, match=match):
        linear_cross_entropy_with_options(*args, None, None, make_options(), backend)


def test_bias_errors():
    with pytest.raises(ValueError, match=r"linear_bias must have shape \(5,\)"):
        linear_cross_entropy(
            torch.zeros(3, 4), torch.zeros(5, 4), torch.zeros(3).long(), linear_bias=torch.zeros(4)
        )


def parameters(function, skip=()):
    return [
        (p.name, p.kind, p.default)
        for p in inspect.signature(function).parameters.values()
        if p.name not in skip
    ]


def test_signature_mirrors_torch():
    ours = [
        (n, k)
        for n, k, _ in parameters(linear_cross_entropy, skip=("z_loss", "softcap", "chunk_size"))
    ]
    theirs = [(n, k) for n, k, _ in parameters(F.linear_cross_entropy, skip=("options",))]
    assert ours == theirs


def test_module_signature_matches_functional():
    functional = parameters(
        linear_cross_entropy, skip=("input", "linear_weight", "target", "linear_bias")
    )
    module = parameters(
        LinearCrossEntropyLoss,
        skip=("in_features", "num_classes", "out_features", "bias", "device", "dtype", "options"),
    )
    assert sorted(p[:2] for p in functional) == sorted(p[:2] for p in module)


@pytest.mark.parametrize("bias", [False, True])
def test_module_matches_torch_module(bias):
    torch.manual_seed(0)
    cw = torch.rand(6, dtype=torch.float64) + 0.5
    kw = dict(bias=bias, dtype=torch.float64, weight=cw, label_smoothing=0.2, reduction="sum")
    ours = LinearCrossEntropyLoss(4, 6, chunk_size=3, **kw)
    theirs = torch.nn.LinearCrossEntropyLoss(4, 6, **kw)
    theirs.load_state_dict(ours.state_dict())
    x, t = torch.randn(7, 4, dtype=torch.float64), torch.randint(0, 6, (7,))
    loss, ref = ours(x, t), theirs(x, t)
    loss.backward()
    ref.backward()
    assert_close(loss, ref, torch.float64)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert_close(p.grad, q.grad, torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("garbage", [float("nan"), float("inf")])
def test_nonfinite_input_on_ignored_tokens_contributes_nothing(backend, reduction, garbage):
    """Issue 15: padding tokens hold garbage; 0 * NaN must not reach the layer's gradients."""
    x, w, b, t, cw = make_layer(n=9, ignore=True, weighted=True, seed=5)
    ignored = t == -100
    assert 0 < int(ignored.sum()) < 9
    dirty = x.masked_fill(ignored[:, None], garbage)
    clean = x.masked_fill(ignored[:, None], 0.0)
    kw = dict(reduction=reduction, chunk_size=4)
    (loss, grads), _ = run_both(dirty, w, b, t, cw, backend=backend, **kw)
    _, (ref, ref_grads) = run_both(clean, w, b, t, cw, backend=backend, **kw)
    for tensor in (loss, *grads):
        assert torch.isfinite(tensor).all()
    assert not grads[0][ignored].any()
    assert_close(loss, ref, torch.float64)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        assert_close(grad, ref_grad, torch.float64)


def test_float16_is_rounded_the_same_on_cpu_and_other_devices():
    # The CPU path (NumPy kernels) and the generic path of every other device round a
    # float16 layer at the same places: entries differ only where float32 sums taken in
    # another order round to neighbouring float16 values (before: over half of them).
    gen = torch.Generator().manual_seed(0)
    h = (torch.randn(256, 32, generator=gen) * 2).half()
    w = torch.randn(300, 32, generator=gen).half()
    b = torch.randn(300, generator=gen).half()
    y = torch.randint(0, 300, (256,), generator=gen)
    results = {}
    for backend in ("numpy", "torch"):
        layer = leaves(h, w, b)
        options = make_options(reduction="none", chunk_size=64)
        loss = linear_cross_entropy_with_options(
            layer[0], layer[1], y, layer[2], None, options, backend
        )
        results[backend] = [loss.detach(), *grads_of(loss, layer, torch.ones_like(loss))]
    for ours, generic in zip(results["numpy"], results["torch"], strict=True):
        differing = int((ours != generic).sum())
        assert differing <= ours.numel() // 100, (differing, ours.numel())

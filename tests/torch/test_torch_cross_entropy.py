"""softxent.torch.cross_entropy / CrossEntropyLoss against torch (the oracle).

Every parity test runs both paths: the NumPy kernels (``backend='numpy'``) and the generic
pure-torch path (``backend='torch'``, what runs on GPUs), forced on CPU.
"""

from __future__ import annotations

import inspect
import itertools

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from softxent.torch import CrossEntropyLoss, cross_entropy  # noqa: E402
from softxent.torch._algebra import make_plan, rows_pass  # noqa: E402
from softxent.torch._cross_entropy import cross_entropy_with_options  # noqa: E402
from softxent.torch._options import make_options  # noqa: E402

BACKENDS = ["numpy", "torch"]
REDUCTIONS = ["mean", "sum", "none"]
# (weighted, label_smoothing, ignore some samples); "signed": some weights negative (torch
# computes them; its own tests use them)
OPTION_SETS = [
    (False, 0.0, False),
    (True, 0.0, True),
    (False, 0.2, True),
    (True, 0.3, True),
    ("signed", 0.2, True),
]
SHAPES = [(5,), (6, 5), (3, 5, 2, 2)]


def tolerances(dtype, values):
    """(rtol, atol) per dtype; atol scales with the magnitude of the compared values."""
    scale = (
        max(1.0, float(values.detach().abs().double().nan_to_num(0, 0, 0).max()))
        if (values.numel())
        else 1.0
    )
    rtol = {
        torch.float64: 1e-12,
        torch.float32: 2e-6,
        torch.float16: 1e-3,
        torch.bfloat16: 1e-2,
    }[dtype]
    return rtol, rtol * scale


def assert_close(actual, expected, dtype):
    rtol, atol = tolerances(dtype, expected)
    torch.testing.assert_close(
        actual.double(), expected.double(), rtol=rtol, atol=atol, equal_nan=True
    )


def make_case(shape, prob, weighted, ignore, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 3).to(dtype)
    cd = 0 if len(shape) == 1 else 1
    num_classes = shape[cd]
    batch = shape[:cd] + shape[cd + 1 :]
    if prob:
        t = torch.rand(shape, generator=gen, dtype=torch.float64).softmax(cd).to(dtype)
    else:
        t = torch.randint(0, num_classes, batch, generator=gen)
        if ignore:
            mask = torch.rand(batch, generator=gen) < 0.3
            t = torch.where(mask, torch.full_like(t, -100), t)
    w = torch.rand(num_classes, generator=gen, dtype=torch.float64) + 0.5
    if weighted == "signed":
        w = w * (torch.randint(0, 2, (num_classes,), generator=gen) * 2 - 1)
    return x, t, (w.to(dtype) if weighted else None)


def upstream(loss, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(loss.shape, generator=gen, dtype=torch.float64).to(loss.dtype)


def ours_and_grad(x, t, w, g=None, backend="torch", **options):
    x = x.detach().clone().requires_grad_(True)
    loss = cross_entropy_with_options(x, t, w, make_options(**options), backend)
    if g is None:
        g = upstream(loss)
    loss.backward(g)
    return loss.detach(), x.grad, g


def torch_and_grad(x, t, w, g, **options):
    x = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(x, t, w, **options)
    loss.backward(g)
    return loss.detach(), x.grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("prob", [False, True])
def test_matches_torch_float64(backend, reduction, options, shape, prob):
    weighted, smoothing, ignore = options
    x, t, w = make_case(shape, prob, weighted, ignore)
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    loss, grad, g = ours_and_grad(x, t, w, backend=backend, **kw)
    ref, ref_grad = torch_and_grad(x, t, w, g, **kw)
    assert loss.dtype == ref.dtype and loss.shape == ref.shape
    assert_close(loss, ref, torch.float64)
    assert_close(grad, ref_grad, torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("prob", [False, True])
def test_reduced_precision_against_float64(backend, dtype, reduction, prob):
    if backend == "numpy" and dtype == torch.bfloat16:
        pytest.skip("NumPy has no bfloat16: bfloat16 always takes the torch path")
    x, t, w = make_case((16, 37), prob, True, True, dtype=dtype, seed=3)
    kw = dict(reduction=reduction, label_smoothing=0.1)
    loss, grad, g = ours_and_grad(x, t, w, backend=backend, **kw)
    assert loss.dtype == (dtype if not prob else t.dtype) and grad.dtype == dtype
    # The oracle: torch in float64 on the very same (rounded) inputs.
    ref, ref_grad = torch_and_grad(
        x.double(), t.double() if prob else t, w.double(), g.double(), **kw
    )
    assert_close(loss, ref, dtype)
    assert_close(grad, ref_grad, dtype)


def reference_z_softcap(x, t, w, *, reduction, label_smoothing, z_loss, softcap, ignore_index):
    """z-loss and softcap written out with plain torch ops (autograd gives the gradient)."""
    cd = 0 if x.ndim == 1 else 1
    xc = softcap * torch.tanh(x / softcap) if softcap else x
    per = F.cross_entropy(
        xc, t, w, ignore_index=ignore_index, reduction="none", label_smoothing=label_smoothing
    )
    lse = torch.logsumexp(xc, cd)
    if t.dtype.is_floating_point:
        valid = torch.ones_like(lse, dtype=torch.bool)
        denominator = torch.tensor(float(lse.numel()), dtype=x.dtype)
    else:
        valid = t != ignore_index
        wy = w[torch.where(valid, t, 0)] if w is not None else torch.ones_like(lse)
        denominator = torch.where(valid, wy, 0).sum()
    per = per + torch.where(valid, z_loss * lse**2, 0)
    if reduction == "none":
        return per
    return per.sum() if reduction == "sum" else per.sum() / denominator


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize(("z_loss", "softcap"), [(1e-2, None), (0.0, 2.5), (0.3, 1.7)])
@pytest.mark.parametrize("shape", [(6, 5), (3, 5, 2)])
@pytest.mark.parametrize("prob", [False, True])
def test_z_loss_and_softcap(backend, reduction, options, z_loss, softcap, shape, prob):
    weighted, smoothing, ignore = options
    x, t, w = make_case(shape, prob, weighted, ignore, seed=5)
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    loss, grad, g = ours_and_grad(x, t, w, backend=backend, z_loss=z_loss, softcap=softcap, **kw)
    xr = x.clone().requires_grad_(True)
    ref = reference_z_softcap(xr, t, w, z_loss=z_loss, softcap=softcap, ignore_index=-100, **kw)
    ref.backward(g)
    assert_close(loss, ref.detach(), torch.float64)
    assert_close(grad, xr.grad, torch.float64)


def test_softcap_changes_the_loss():
    """Guards the reference: the options really act (a no-op would pass parity vacuously)."""
    x, t, _ = make_case((6, 5), False, False, False)
    plain = cross_entropy(x, t)
    assert not torch.allclose(cross_entropy(x, t, softcap=1.0), plain)
    assert not torch.allclose(cross_entropy(x, t, z_loss=0.1), plain)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.4])
def test_all_ignored(backend, weighted, smoothing):
    x, _, w = make_case((4, 3), False, weighted, False)
    t = torch.full((4,), -100)
    kw = dict(label_smoothing=smoothing)
    loss, grad, _ = ours_and_grad(
        x, t, w, g=torch.tensor(1.0, dtype=x.dtype), backend=backend, **kw
    )
    assert torch.isnan(loss)
    assert torch.equal(grad, torch.zeros_like(grad))  # torch: zeros too
    loss, grad, _ = ours_and_grad(x, t, w, backend=backend, reduction="sum", **kw)
    assert float(loss) == 0.0 and torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_target_weights_give_nan_like_torch(backend):
    x, _, _ = make_case((3, 3), False, False, False)
    t, w = torch.tensor([1, 1, -100]), torch.tensor([1.0, 0.0, 1.0], dtype=x.dtype)
    g = torch.tensor(1.0, dtype=x.dtype)
    loss, grad, _ = ours_and_grad(x, t, w, g=g, backend=backend)
    ref, ref_grad = torch_and_grad(x, t, w, g)
    assert torch.isnan(loss) and torch.isnan(ref)
    torch.testing.assert_close(grad, ref_grad, equal_nan=True)  # NaN rows 0-1, zero row 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_ignored_row_with_nan_logits_has_zero_gradient(backend):
    """Deliberate difference from torch (pytorch/pytorch#11551): torch gives a NaN row."""
    x = torch.tensor([[1.0, 2.0, 3.0], [float("nan"), 0.0, float("-inf")]], dtype=torch.float64)
    loss, grad, _ = ours_and_grad(
        x, torch.tensor([2, -100]), None, g=torch.tensor(1.0), backend=backend
    )
    ref, ref_grad = torch_and_grad(x[:1], torch.tensor([2]), None, torch.tensor(1.0))
    assert_close(loss, ref, torch.float64)
    assert_close(grad[0], ref_grad[0], torch.float64)
    assert torch.equal(grad[1], torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_special_values_like_torch(backend):
    inf = float("inf")
    x = torch.tensor([[1.0, -inf, 0.0], [-inf, 0.0, 1.0], [inf, 0.0, 1.0]], dtype=torch.float64)
    t = torch.tensor([0, 0, 1])
    g = torch.ones(3, dtype=torch.float64)
    loss, grad, _ = ours_and_grad(x, t, None, g=g, backend=backend, reduction="none")
    ref, ref_grad = torch_and_grad(x, t, None, g, reduction="none")
    torch.testing.assert_close(loss, ref, equal_nan=True)  # [finite, inf, nan]
    torch.testing.assert_close(grad, ref_grad, equal_nan=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_batch(backend, reduction):
    x, t = torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.int64)
    loss, grad, _ = ours_and_grad(x, t, None, backend=backend, reduction=reduction)
    ref = F.cross_entropy(x, t, reduction=reduction)
    torch.testing.assert_close(loss, ref, equal_nan=True)
    assert grad.shape == (0, 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_input(backend):
    x, t, w = make_case((6, 5), False, True, True)
    xt = x.T.contiguous().T  # same values, column-major strides
    assert not xt.is_contiguous()
    g = torch.tensor(0.7, dtype=x.dtype)
    loss, grad, _ = ours_and_grad(xt, t, w, g=g, backend=backend, label_smoothing=0.1)
    ref, ref_grad = torch_and_grad(x, t, w, g, label_smoothing=0.1)
    assert_close(loss, ref, torch.float64)
    assert_close(grad, ref_grad, torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(6, 5), (3, 5, 2, 2)])
def test_inplace_backward_consumes_the_input(backend, reduction, shape):
    x, t, w = make_case(shape, False, True, True)
    leaf = x.clone().requires_grad_(True)
    logits = leaf * 1.0  # an intermediate result, like the output of a Linear
    loss = cross_entropy_with_options(
        logits,
        t,
        w,
        make_options(reduction=reduction, label_smoothing=0.1, inplace_backward=True),
        backend,
    )
    g = upstream(loss)
    ref, ref_grad = torch_and_grad(x, t, w, g, reduction=reduction, label_smoothing=0.1)
    assert_close(loss.detach(), ref, torch.float64)
    assert not torch.allclose(logits.detach(), x)  # consumed: it now holds the gradient
    loss.backward(g)
    assert_close(leaf.grad, ref_grad, torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_inplace_backward_refuses_a_leaf(backend):
    x, t, _ = make_case((4, 3), False, False, False)
    x.requires_grad_(True)
    with pytest.raises(ValueError, match="inplace_backward=True"):
        cross_entropy_with_options(x, t, None, make_options(inplace_backward=True), backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_inplace_backward_is_detected_by_ops_that_saved_the_input(backend):
    x, t, _ = make_case((4, 3), False, False, False)
    leaf = x.clone().requires_grad_(True)
    logits = leaf.exp()  # exp saves its output for its backward
    loss = cross_entropy_with_options(
        logits, t, None, make_options(inplace_backward=True), backend
    )
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("inplace", [False, True])
def test_saves_one_logits_sized_tensor(backend, inplace):
    x, t, w = make_case((8, 7), False, True, True)
    leaf = x.clone().requires_grad_(True)
    logits = leaf * 1.0
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = cross_entropy_with_options(
            logits, t, w, make_options(inplace_backward=inplace), backend
        )
    ours = [s for s in saved if s.shape == logits.shape]
    # `leaf * 1.0` saves nothing for the grad of leaf (constant scalar): all is ours.
    assert len(saved) == 1 and len(ours) == 1
    assert (ours[0].untyped_storage().data_ptr() == logits.untyped_storage().data_ptr()) == inplace
    loss.backward()
    assert leaf.grad is not None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_retain_graph_backward_twice(backend, reduction):
    x, t, w = make_case((5, 4), False, True, True)
    xr = x.clone().requires_grad_(True)
    loss = cross_entropy_with_options(xr, t, w, make_options(reduction=reduction), backend)
    g = upstream(loss)
    loss.backward(g, retain_graph=True)
    first = xr.grad.clone()
    loss.backward(g)
    _, ref_grad = torch_and_grad(x, t, w, g, reduction=reduction)
    assert_close(first, ref_grad, torch.float64)
    assert_close(xr.grad, 2 * ref_grad, torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_upstream_of_ones_retained_accumulated_and_through_an_intermediate(backend, reduction):
    """An upstream gradient of ones skips the scaling on CPU: the saved gradient is handed
    to autograd as is, so a kept graph, accumulation into .grad and a chain rule through an
    earlier op must all still see the right numbers."""
    x, t, w = make_case((5, 4), False, True, True)
    leaf = x.clone().requires_grad_(True)
    loss = cross_entropy_with_options(leaf * 3.0, t, w, make_options(reduction=reduction), backend)
    ones = torch.ones_like(loss)
    loss.backward(ones, retain_graph=True)
    loss.backward(ones)
    again = cross_entropy_with_options(
        leaf * 3.0, t, w, make_options(reduction=reduction), backend
    )
    again.sum().backward()
    _, ref_grad = torch_and_grad(3.0 * x, t, w, ones, reduction=reduction)
    assert_close(leaf.grad, 9.0 * ref_grad, torch.float64)


def test_double_backward_raises():
    x, t, _ = make_case((5, 4), False, False, False)
    xr = x.clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match="does not support double backward"):
        torch.autograd.grad(cross_entropy(xr, t), xr, create_graph=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_forward_only_without_grad(backend, context, monkeypatch):
    x, t, w = make_case((6, 5), False, True, True)
    xr = x.clone().requires_grad_(True)
    import softxent

    def fail(*args, **kwargs):
        raise AssertionError("a gradient was computed")

    monkeypatch.setattr(softxent, "cross_entropy_with_grad", fail)
    from softxent.torch import _algebra

    monkeypatch.setattr(_algebra.RowsPass, "gradient_", fail)
    with context():
        loss = cross_entropy_with_options(xr, t, w, make_options(label_smoothing=0.2), backend)
    assert loss.grad_fn is None and not loss.requires_grad
    assert_close(loss, F.cross_entropy(x, t, w, label_smoothing=0.2), torch.float64)
    # and with an input that does not require grad
    loss = cross_entropy_with_options(x, t, w, make_options(label_smoothing=0.2), backend)
    assert loss.grad_fn is None


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("prob", [False, True])
def test_gradcheck(backend, reduction, prob):
    x, t, w = make_case((3, 4, 2), prob, True, True, seed=7)
    options = make_options(reduction=reduction, label_smoothing=0.1, z_loss=0.05, softcap=3.0)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v: cross_entropy_with_options(v, t, w, options, backend), (x,)
    )
    plain = make_options(reduction=reduction, label_smoothing=0.1)
    assert torch.autograd.gradcheck(
        lambda v: cross_entropy_with_options(v, t, w, plain, backend), (x,)
    )


@settings(max_examples=20, deadline=None)
@given(
    rows=st.integers(0, 6),
    classes=st.integers(1, 6),
    spatial=st.sampled_from([(), (2,), (1, 3)]),
    reduction=st.sampled_from(REDUCTIONS),
    smoothing=st.sampled_from([0.0, 0.25, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_random_shapes_match_torch(rows, classes, spatial, reduction, smoothing, seed):
    shape = (rows, classes, *spatial)
    x, t, w = make_case(shape, False, True, True, seed=seed)
    for backend in BACKENDS:
        loss, grad, g = ours_and_grad(
            x, t, w, backend=backend, reduction=reduction, label_smoothing=smoothing
        )
        ref, ref_grad = torch_and_grad(x, t, w, g, reduction=reduction, label_smoothing=smoothing)
        torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12, equal_nan=True)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_generic_kernel_marks_out_of_range_targets_with_nan():
    """Off CPU a bad class index cannot raise without a host sync: its loss is NaN."""
    x = torch.zeros(3, 4)
    plan = make_plan(make_options(), 4, False, torch.float32)
    rows = rows_pass(x, torch.tensor([1, 7, -100]), None, plan)
    grad = rows.gradient_(torch.ones(3))
    result = rows.stats
    assert torch.isnan(grad[1]).all() and not torch.isnan(grad[[0, 2]]).any()
    assert torch.isnan(result.loss[1]) and not torch.isnan(result.loss[[0, 2]]).any()


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("bad", [4, -1])
def test_out_of_range_target_raises_on_cpu(backend, bad):
    x = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=rf"target\[1\] = {bad} is out of range"):
        cross_entropy_with_options(x, torch.tensor([0, bad, 1]), None, make_options(), backend)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: cross_entropy(torch.zeros(3, 4, dtype=torch.int64), torch.zeros(3).long()),
            TypeError,
            "input must be a floating-point tensor",
        ),
        (
            lambda: cross_entropy(torch.zeros(3, 4), torch.zeros(2).long()),
            ValueError,
            r"target of class indices must have shape \(3,\)",
        ),
        (
            lambda: cross_entropy(torch.zeros(3, 4), torch.zeros(3)),
            TypeError,
            "must have an integer dtype",
        ),
        (
            lambda: cross_entropy(torch.zeros(3, 4), torch.zeros(3, 4).long()),
            TypeError,
            "probability targets must be floating point",
        ),
        (
            lambda: cross_entropy(torch.zeros(3, 4), torch.zeros(3, 4), ignore_index=1),
            ValueError,
            "ignore_index=1 cannot be used with probability targets",
        ),
        (
            lambda: cross_entropy(torch.zeros(3, 4), torch.zeros(3).long(), torch.ones(3)),
            ValueError,
            r"weight must have shape \(4,\)",
        ),
        (
            lambda: cross_entropy(
                torch.zeros(3, 4), torch.zeros(3).long(), torch.ones(4, requires_grad=True)
            ),
            ValueError,
            "weight requires grad",
        ),
        (
            lambda: cross_entropy(torch.zeros(3, 4), torch.zeros(3, 4, requires_grad=True)),
            ValueError,
            "target requires grad",
        ),
        (
            lambda: cross_entropy(
                torch.zeros(3, 4), torch.zeros(3).long(), weight=torch.full((4,), torch.inf)
            ),
            ValueError,
            "weight must be finite",
        ),
        (
            lambda: cross_entropy(torch.zeros(3, 4), torch.zeros(3).long(), reduction="avg"),
            ValueError,
            "reduction must be one of",
        ),
        (
            lambda: cross_entropy(torch.zeros(3, 4), torch.zeros(3).long(), label_smoothing=1.5),
            ValueError,
            "label_smoothing must be in",
        ),
        (
            lambda: cross_entropy(torch.zeros(3, 4), torch.zeros(3).long(), z_loss=-1.0),
            ValueError,
            "z_loss must be",
        ),
        (
            lambda: cross_entropy(torch.zeros(3, 4), torch.zeros(3).long(), softcap=0.0),
            ValueError,
            "softcap must be",
        ),
        (
            lambda: cross_entropy(torch.zeros(3, 0), torch.zeros(3).long()),
            ValueError,
            "input has no classes",
        ),
        (
            lambda: cross_entropy(torch.tensor(1.0), torch.tensor(0)),
            ValueError,
            "input must have at least 1 dimension",
        ),
        (
            lambda: cross_entropy_with_options(
                torch.zeros(3, 4), torch.zeros(3).long(), None, make_options(z_loss=0.1), "numpy"
            ),
            ValueError,
            "backend='numpy' needs",
        ),
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- signatures and the module ----------------------------------------------------------


def parameters(function, skip=()):
    return [
        (p.name, p.kind, p.default)
        for p in inspect.signature(function).parameters.values()
        if p.name not in skip
    ]


def test_signature_mirrors_torch():
    ours = parameters(cross_entropy, skip=("z_loss", "softcap", "inplace_backward"))
    theirs = parameters(F.cross_entropy, skip=("size_average", "reduce"))
    assert ours == theirs
    extra = parameters(cross_entropy)[-3:]
    assert [(name, kind) for name, kind, _ in extra] == [
        ("z_loss", inspect.Parameter.KEYWORD_ONLY),
        ("softcap", inspect.Parameter.KEYWORD_ONLY),
        ("inplace_backward", inspect.Parameter.KEYWORD_ONLY),
    ]


def test_module_signature_matches_functional():
    assert parameters(CrossEntropyLoss) == parameters(cross_entropy, skip=("input", "target"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        dict(ignore_index=1, reduction="sum", label_smoothing=0.2),
        dict(reduction="none", z_loss=0.1, softcap=2.0),
    ],
)
def test_module_equals_functional(kwargs):
    x, t, w = make_case((6, 5), False, True, False)
    module = CrossEntropyLoss(w, **kwargs)
    assert torch.equal(module.weight, w) and "weight" in dict(module.named_buffers())
    torch.testing.assert_close(module(x, t), cross_entropy(x, t, w, **kwargs), rtol=0, atol=0)


def test_module_matches_torch_module():
    x, t, w = make_case((6, 5), False, True, True)
    for kw in itertools.islice(
        ({"reduction": r, "label_smoothing": s} for r in REDUCTIONS for s in (0.0, 0.3)), None
    ):
        assert_close(
            CrossEntropyLoss(w, **kw)(x, t),
            torch.nn.CrossEntropyLoss(w, **kw)(x, t),
            torch.float64,
        )

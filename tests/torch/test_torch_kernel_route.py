"""Small CPU calls of ``softxent.torch.cross_entropy`` run torch's own ``F.cross_entropy``.

Checked here: the route gives torch's values and gradients bit for bit (gradients through
torch's autograd), the size limits are respected on both sides of each boundary, and every
input where softxent differs from torch on purpose keeps softxent's own path (its zero
gradient for ignored rows), as do non-CPU tensors; a class index out of range raises
softxent's error (torch's kernel finds it, the call reports it).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from softxent.torch import _torch_kernel, cross_entropy
from softxent.torch._cross_entropy import cross_entropy_with_options
from softxent.torch._options import make_options

GEN = torch.Generator().manual_seed(2013)

OPTION_SETS = {
    "default": {},
    "weight": {"weight": True},
    "smoothing": {"label_smoothing": 0.1},
    "weight+smoothing": {"weight": True, "label_smoothing": 0.2},
    "ignore_index": {"ignore": True},
    "ignore+weight+smoothing": {"ignore": True, "weight": True, "label_smoothing": 0.1},
    "probabilities": {"prob": True},
    "probabilities+weight+smoothing": {"prob": True, "weight": True, "label_smoothing": 0.3},
}


def make_call(shape, dtype=torch.float32, *, weight=False, ignore=False, prob=False, **options):
    """Logits of ``shape`` (classes on dim 1, dim 0 if 1-D), a target and the options."""
    x = (3 * torch.randn(shape, generator=GEN)).to(dtype).requires_grad_(True)
    class_dim = 0 if len(shape) == 1 else 1
    num_classes = shape[class_dim]
    batch = shape[:class_dim] + shape[class_dim + 1 :]
    if prob:
        t = torch.softmax(torch.randn(shape, generator=GEN), class_dim).to(dtype)
    else:
        t = torch.randint(0, num_classes, batch, generator=GEN)
        if ignore:
            t.view(-1)[::3] = -100
    if weight:
        options["weight"] = (torch.rand(num_classes, generator=GEN) + 0.25).to(dtype)
    return x, t, options


def runs_torch_kernel(loss: torch.Tensor) -> bool:
    """Whether ``loss`` came from torch's kernel (softxent's own path has its own node)."""
    return "_CrossEntropyFunction" not in type(loss.grad_fn).__name__


def assert_same(actual, expected):
    """Equal bit for bit (NaN where the other is NaN), dtype included."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)


def assert_torch_values_and_grads(x, t, options):
    """softxent's loss and gradient are F.cross_entropy's, bit for bit, for any upstream."""
    loss = cross_entropy(x, t, **options)
    ref = F.cross_entropy(x, t, **options)
    assert runs_torch_kernel(loss)
    assert_same(loss, ref)
    upstream = torch.rand(ref.shape, generator=GEN, dtype=ref.dtype) + 0.5
    (got,) = torch.autograd.grad(loss, x, upstream)
    (want,) = torch.autograd.grad(ref, x, upstream)
    assert_same(got, want)


@pytest.mark.parametrize("name", list(OPTION_SETS))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(3, 3), (64, 100), (7,), (4, 5, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_small_calls_are_torch_values_and_gradients(
    torch_kernel_route, name, reduction, shape, dtype
):
    x, t, options = make_call(shape, dtype, **OPTION_SETS[name])
    assert_torch_values_and_grads(x, t, {**options, "reduction": reduction})


def test_double_backward_works_where_torch_kernel_runs(torch_kernel_route):
    # The other side of softxent's own path (which refuses a second derivative): here the
    # graph is torch's, so create_graph=True gives torch's Hessian-vector products.
    x, t, _ = make_call((5, 4), torch.float64)
    (g,) = torch.autograd.grad(cross_entropy(x, t), x, create_graph=True)
    (h,) = torch.autograd.grad(g.square().sum(), x)
    (g_ref,) = torch.autograd.grad(F.cross_entropy(x, t), x, create_graph=True)
    (h_ref,) = torch.autograd.grad(g_ref.square().sum(), x)
    assert_same(h, h_ref)


def test_forward_only_is_torch_values(torch_kernel_route, monkeypatch):
    handed = []
    real = _torch_kernel.torch_cross_entropy
    spy = lambda *args: handed.append(1) or real(*args)  # noqa: E731
    monkeypatch.setattr("softxent.torch._cross_entropy.torch_cross_entropy", spy)
    monkeypatch.setattr(_torch_kernel, "torch_cross_entropy", spy)
    x, t, options = make_call((6, 40), weight=True, ignore=True, label_smoothing=0.1)
    with torch.no_grad():
        loss = cross_entropy(x, t, **options)
    assert handed
    assert_same(loss, F.cross_entropy(x, t, **options))


@pytest.mark.parametrize(
    ("shape", "routed"),
    [
        ((4096, 16), True),  # MAX_LOGITS logits, classes not narrow
        ((4097, 16), False),
        ((1024, 3), True),  # MAX_NARROW_LOGITS logits of narrow classes
        ((1025, 3), False),
        ((2, 15, 102), True),  # (N, C, d): 3060 logits of 15 classes
        ((2, 15, 103), False),
    ],
)
def test_size_limits_as_shipped(torch_kernel_route, shape, routed):
    assert (_torch_kernel.MAX_LOGITS, _torch_kernel.MAX_NARROW_LOGITS) == (65536, 3072)
    assert _torch_kernel.NARROW_CLASSES == 16
    x, t, _ = make_call(shape)
    loss = cross_entropy(x, t)
    assert runs_torch_kernel(loss) == routed
    torch.testing.assert_close(loss, F.cross_entropy(x, t), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("limit", [59, 60])
@pytest.mark.parametrize("name", ["MAX_LOGITS", "MAX_NARROW_LOGITS"])
def test_moved_limit_is_respected(torch_kernel_route, monkeypatch, name, limit):
    monkeypatch.setattr(_torch_kernel, name, limit)
    classes = 20 if name == "MAX_LOGITS" else 4  # wide or narrow rows
    x, t, _ = make_call((60 // classes, classes))  # 60 logits
    assert runs_torch_kernel(cross_entropy(x, t)) == (limit >= 60)


def own_path_loss(x, t, **options):
    loss = cross_entropy(x, t, **options)
    assert not runs_torch_kernel(loss)
    return loss


@pytest.mark.parametrize(
    "case",
    [
        "float16",
        "int32 target",
        "zero weight",
        "negative weight",
        "inplace_backward",
        "z_loss",
        "softcap",
        "float64 probabilities for float32 logits",
    ],
)
def test_inputs_where_softxent_differs_keep_its_path(torch_kernel_route, case):
    x, t, options = make_call((4, 5), prob=case.endswith("probabilities for float32 logits"))
    if case == "float16":
        x = x.detach().half().requires_grad_(True)
    elif case == "int32 target":
        t = t.int()
    elif case in ("zero weight", "negative weight"):
        options["weight"] = torch.tensor([1.0, 0.5, 0.0 if case == "zero weight" else -1.0, 2, 1])
    elif case == "inplace_backward":
        x = x * 1  # an intermediate result, as inplace_backward requires
    elif case.startswith("float64"):
        t = t.double()
    if case in ("inplace_backward", "z_loss"):
        options[case] = True if case == "inplace_backward" else 1e-3
    if case == "softcap":
        options["softcap"] = 5.0
    own_path_loss(x, t, **options)


@pytest.mark.parametrize("rows", [4, 100])  # checked as lists, and as arrays
def test_ignored_rows_with_non_finite_logits_get_a_zero_gradient(torch_kernel_route, rows):
    x, t, _ = make_call((rows, 5))
    x = x.detach()
    x[1] = -torch.inf  # an ignored row torch's autograd would give NaN gradients
    x[3, 2] = torch.nan
    x.requires_grad_(True)
    t[1] = t[3] = -100
    loss = own_path_loss(x, t)
    loss.backward()
    assert torch.equal(x.grad[[1, 3]], torch.zeros(2, 5))
    assert torch.isfinite(x.grad).all()
    with torch.no_grad():  # no gradient: torch's kernel gives the same loss
        assert_same(cross_entropy(x, t), F.cross_entropy(x, t))


@pytest.mark.parametrize("rows", [8, 100])  # checked as a list, and as a tensor
@pytest.mark.parametrize("need_grad", [True, False])
def test_out_of_range_class_index_is_softxents_error(torch_kernel_route, rows, need_grad):
    # torch's kernel finds it (IndexError); the call reports softxent's ValueError.
    x, t, _ = make_call((rows, 5))
    t[rows - 1] = 5
    with torch.set_grad_enabled(need_grad):
        with pytest.raises(ValueError, match=rf"target\[{rows - 1}\] = 5 is out of range") as e:
            cross_entropy(x, t)
        assert e.value.__context__ is None  # torch's IndexError is not shown with it
        t[rows - 1] = -100
        t[0] = -3
        with pytest.raises(ValueError, match=r"target\[0\] = -3 is out of range"):
            cross_entropy(x, t, label_smoothing=0.1)


@pytest.mark.parametrize("shape", [(5,), (4, 5, 3)])
def test_out_of_range_class_index_of_other_ranks(torch_kernel_route, shape):
    x, t, _ = make_call(shape)
    t.view(-1)[-1] = -7
    position = ", ".join(str(n - 1) for n in t.shape)
    with pytest.raises(ValueError, match=rf"target\[{position}\] = -7 is out of range"):
        cross_entropy(x, t)


@pytest.mark.parametrize("classes", [5, 100])  # weights checked as a list, and as a tensor
@pytest.mark.parametrize("bad", [float("inf"), float("nan"), 0.0])
def test_weights_not_positive_and_finite_keep_softxents_path(torch_kernel_route, classes, bad):
    x, t, _ = make_call((4, classes))
    weight = torch.ones(classes)
    weight[classes // 2] = bad
    if bad == 0.0:
        own_path_loss(x, t, weight=weight)
        return
    with pytest.raises(ValueError, match="weight must be finite"):
        cross_entropy(x, t, weight)


def test_ignore_index_inside_the_classes(torch_kernel_route):
    x, t, _ = make_call((6, 5))
    t[:] = torch.tensor([0, 2, 2, 4, 1, 2])
    assert_torch_values_and_grads(x, t, {"ignore_index": 2})


def test_forced_backends_and_other_devices_never_run_torch_kernel(torch_kernel_route):
    x, t, _ = make_call((3, 3))
    for backend in ("numpy", "torch"):
        loss = cross_entropy_with_options(x, t, None, make_options(), backend)
        assert not runs_torch_kernel(loss)
    meta = x.detach().to("meta").requires_grad_(True)
    loss = cross_entropy(meta, t.to("meta"))
    assert loss.device.type == "meta" and not runs_torch_kernel(loss)


def test_route_is_off_in_the_other_tests():
    # tests/conftest.py turns every limit off unless a test asks for torch_kernel_route, so
    # the rest of the suite checks softxent's own kernels even on 3 x 3 inputs.
    for shape in ((3, 3), (3, 20)):
        x, t, _ = make_call(shape)
        own_path_loss(x, t)


def strided(t: torch.Tensor) -> torch.Tensor:
    """``t`` as every other entry of a tensor twice its length (a view, not contiguous)."""
    wide = torch.full((2 * len(t),), 3, dtype=t.dtype)
    wide[::2] = t
    return wide[::2]


# Class indices checked as a list (8 rows) and as an array (100): contiguous ones in one
# native pass, strided ones by NumPy.
@pytest.mark.parametrize(
    ("rows", "layout"), [(8, "contiguous"), (100, "contiguous"), (100, "strided")]
)
@pytest.mark.parametrize(
    ("ignore_index", "special", "bad"),
    [
        (-100, [-100, -100], None),  # ignored rows below the classes
        (-100, [-100, -200], -200),  # an index below the ignored one
        (-100, [-100, 5], 5),  # an index above the classes
        (-100, [-100, -1], -1),
        (7, [7, 7], None),  # ignored rows above the classes
        (7, [7, 8], 8),  # an index above the ignored one
        (7, [7, -1], -1),
        (2, [2, 2], None),  # ignore_index inside the classes
        (2, [2, 5], 5),
    ],
)
def test_ignored_and_out_of_range_indices(
    torch_kernel_route, rows, layout, ignore_index, special, bad
):
    x, t, _ = make_call((rows, 5))
    t[[1, rows - 2]] = torch.tensor(special)
    if layout == "strided":
        t = strided(t)
        assert not t.is_contiguous()
    if bad is not None:
        with pytest.raises(ValueError, match=rf"= {bad} is out of range"):
            cross_entropy(x, t, ignore_index=ignore_index)
        return
    assert_torch_values_and_grads(x, t, {"ignore_index": ignore_index})


@pytest.mark.parametrize("rows", [8, 100])
def test_every_sample_ignored(torch_kernel_route, rows):
    x, t, _ = make_call((rows, 5))
    t[:] = -100
    assert_torch_values_and_grads(x, t, {})  # a NaN mean, as torch's


def plain(x, t, weight=None, **options):
    return _torch_kernel.plain_small_call(x, t, weight, make_options(**options))


def test_plain_small_call_is_torch_kernel(torch_kernel_route):
    # The commonest call, found without the full checks: torch's values and gradients.
    x, t, options = make_call((6, 40), weight=True, ignore=True, label_smoothing=0.1)
    loss = plain(x, t, **options)
    assert loss is not None
    assert_same(loss, F.cross_entropy(x, t, **options))
    assert_torch_values_and_grads(x, t, options)


@pytest.mark.parametrize(
    "case",
    [
        "3-d logits",
        "no rows",
        "target rows differ",
        "int32 target",
        "float16",
        "weight of another dtype",
        "weight of another length",
        "weight that requires grad",
        "zero weight",
        "z_loss",
        "ignored row with inf logits",
        "too many logits",
    ],
)
def test_plain_small_call_leaves_the_rest_to_the_full_checks(torch_kernel_route, case):
    x, t, options = make_call((4, 5))
    if case == "3-d logits":
        x, t = x.detach().reshape(2, 5, 2), t[:2].reshape(2, 1).expand(2, 2)
    elif case == "no rows":
        x, t = x[:0], t[:0]
    elif case == "target rows differ":
        t = t[:3]
    elif case == "int32 target":
        t = t.int()
    elif case == "float16":
        x = x.detach().half()
    elif case.startswith("weight"):
        options["weight"] = {
            "weight of another dtype": torch.ones(5, dtype=torch.float64),
            "weight of another length": torch.ones(6),
            "weight that requires grad": torch.ones(5, requires_grad=True),
        }[case]
    elif case == "zero weight":
        options["weight"] = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0])
    elif case == "z_loss":
        options["z_loss"] = 1e-3
    elif case == "ignored row with inf logits":
        x = x.detach()
        x[0, 1] = torch.inf
        x.requires_grad_(True)
        t[0] = -100
    elif case == "too many logits":
        x, t, _ = make_call((4097, 16))
    assert plain(x, t, **options) is None

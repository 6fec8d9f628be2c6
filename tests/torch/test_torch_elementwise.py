"""softxent.torch's mse_loss, binary_cross_entropy_with_logits and kl_div against torch's:
values, autograd gradients, both paths (NumPy on CPU, the generic torch path), dtypes,
signatures, what is saved for backward, and bad input."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import softxent.torch as sxt  # noqa: E402
from softxent._tolerance import rtol_for  # noqa: E402
from softxent.torch._elementwise import ElementwiseCall, elementwise_loss  # noqa: E402

NUMPY_DTYPE = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
NAMES = ["mse_loss", "binary_cross_entropy_with_logits", "kl_div"]


def _inputs(name, shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    if name == "kl_div":
        x = torch.rand(shape, generator=g, dtype=torch.float64).add(1e-3).log()
    else:
        x = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    t = torch.rand(shape, generator=g, dtype=torch.float64)
    t[torch.rand(shape, generator=g) < 0.2] = 0.0
    if name == "mse_loss":
        t = torch.randn(shape, generator=g, dtype=torch.float64)
    return x.to(dtype), t.to(dtype)


def _options(name, shape, dtype, variant, seed=0):
    """Variant 0: none; 1: weights (and pos_weight); 2: broadcast weights / log_target."""
    g = torch.Generator().manual_seed(seed + 1)
    if variant == 0:
        return {}
    if name == "mse_loss":
        return {"weight": torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)}
    if name == "kl_div":
        return {"log_target": True}
    if variant == 1:
        return {
            "weight": torch.rand(shape, generator=g, dtype=torch.float64).to(dtype),
            "pos_weight": (torch.rand(shape[-1:], generator=g, dtype=torch.float64) * 3).to(dtype),
        }
    return {"weight": torch.rand(shape[:1] + (1,) * (len(shape) - 1), generator=g).to(dtype)}


def _call(name, x, t, reduction, options, backend):
    if backend == "public":
        return getattr(sxt, name)(x, t, reduction=reduction, **options)
    call = ElementwiseCall(name, reduction, options.get("log_target", False))
    return elementwise_loss(call, x, t, options.get("weight"), options.get("pos_weight"), backend)


def _torch_reference(name, x, t, reduction, options, upstream):
    """torch's loss and gradient, in float32 for half inputs (softxent rounds once)."""
    ct = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    xr = x.detach().to(ct).requires_grad_(True)
    kw = {k: v.to(ct) if isinstance(v, torch.Tensor) else v for k, v in options.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kl_div's 'mean'
        loss = getattr(F, name)(xr, t.to(ct), reduction=reduction, **kw)
    loss.backward(upstream.to(ct))
    return loss.detach(), xr.grad


def _close(got, want, dtype, scale):
    rtol = 8e-3 if dtype == torch.bfloat16 else rtol_for(NUMPY_DTYPE[dtype])  # bfloat16: 8 bits
    torch.testing.assert_close(got.to(torch.float64), want.to(torch.float64),
                               rtol=rtol, atol=rtol * scale, equal_nan=True)  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum", "batchmean"])
@pytest.mark.parametrize("variant", [0, 1, 2])
@pytest.mark.parametrize("backend", ["public", "torch"])
def test_matches_torch(name, dtype, reduction, variant, backend):
    if reduction == "batchmean" and name != "kl_div":
        pytest.skip("batchmean is kl_div's")
    shape = (4, 3, 5)
    x, t = _inputs(name, shape, dtype)
    options = _options(name, shape, dtype, variant)
    leaf = x.clone().requires_grad_(True)
    loss = _call(name, leaf, t, reduction, options, backend)
    g = torch.Generator().manual_seed(9)
    upstream = torch.randn(loss.shape, generator=g, dtype=torch.float64).to(loss.dtype)
    loss.backward(upstream)
    want, want_grad = _torch_reference(name, x, t, reduction, options, upstream)
    expected_dtype = t.dtype if name == "binary_cross_entropy_with_logits" else x.dtype
    assert loss.dtype == expected_dtype and leaf.grad.dtype == x.dtype
    scale = max(1.0, float(x.abs().max())) * (x.numel() if reduction == "sum" else 1)
    if "weight" in options:
        scale *= 3.0
    _close(loss, want, dtype, scale)
    _close(leaf.grad, want_grad, dtype, scale * float(upstream.abs().max()))


@pytest.mark.parametrize("name", NAMES)
def test_both_paths_agree_and_special_values(name):
    """Saturated logits, zero targets, -inf log-probabilities: the NumPy and torch paths give
    torch's values, NaN and inf included."""
    x = torch.tensor(
        [[80.0, -80.0, 0.0, -torch.inf], [-80.0, 80.0, 30.0, 1.0]], dtype=torch.float64
    )
    t = torch.tensor([[1.0, 0.0, 0.5, 0.0], [1.0, 0.3, 0.0, 0.0]], dtype=torch.float64)
    if name != "kl_div":
        x[0, 3] = -30.0
    for reduction in ("none", "sum"):
        want = getattr(F, name)(x, t, reduction=reduction)
        for backend in ("numpy", "torch"):
            got = _call(name, x, t, reduction, {}, backend)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_empty_and_zero_dimensional(name, backend):
    for shape in [(0,), (2, 0, 3), ()]:
        x, t = _inputs(name, shape, torch.float64)
        for reduction in ("none", "mean", "sum"):
            leaf = x.clone().requires_grad_(True)
            loss = _call(name, leaf, t, reduction, {}, backend)
            loss.sum().backward()
            want, want_grad = _torch_reference(name, x, t, reduction, {}, torch.ones(loss.shape))
            torch.testing.assert_close(loss, want, equal_nan=True)
            torch.testing.assert_close(leaf.grad, want_grad, equal_nan=True)


@pytest.mark.parametrize("name", NAMES)
def test_only_the_gradient_is_saved(name):
    x, t = _inputs(name, (6, 7), torch.float32)
    leaf = x.requires_grad_(True)
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = getattr(sxt, name)(leaf, t)
    assert [tuple(s.shape) for s in saved] == [(6, 7)]
    loss.backward(retain_graph=True)
    first = leaf.grad.clone()
    loss.backward()  # the graph was kept: the saved gradient is intact
    torch.testing.assert_close(leaf.grad, 2 * first)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(getattr(sxt, name)(leaf, t), leaf, create_graph=True)


def test_signatures_are_torchs_without_the_deprecated_arguments():
    for name in NAMES:
        theirs = inspect.signature(getattr(F, name)).parameters
        ours = inspect.signature(getattr(sxt, name)).parameters
        expected = [(p.name, p.kind, p.default) for p in theirs.values()
                    if p.name not in ("size_average", "reduce")]  # fmt: skip
        assert [(p.name, p.kind, p.default) for p in ours.values()] == expected, name


def test_bad_input():
    x = torch.zeros(2, 3)
    with pytest.raises(TypeError, match=r"^input must be a floating-point tensor"):
        sxt.mse_loss(torch.zeros(2, 3, dtype=torch.long), x)
    with pytest.raises(ValueError, match=r"^target must have the shape of input \(2, 3\)"):
        sxt.binary_cross_entropy_with_logits(x, torch.zeros(3))
    with pytest.raises(ValueError, match=r"^target of shape \(4, 2, 3\) does not broadcast"):
        sxt.kl_div(x, torch.zeros(4, 2, 3))
    with pytest.raises(ValueError, match=r"^weight must have the shape of input \(2, 3\)"):
        sxt.mse_loss(x, x, weight=torch.ones(3))
    with pytest.raises(ValueError, match=r"^pos_weight of shape \(4,\) does not broadcast"):
        sxt.binary_cross_entropy_with_logits(x, x, pos_weight=torch.ones(4))
    with pytest.raises(ValueError, match=r"^target requires grad"):
        sxt.mse_loss(x, torch.zeros(2, 3, requires_grad=True))
    with pytest.raises(ValueError, match="reduction must be one of"):
        sxt.kl_div(x, x, reduction="avg")
    with pytest.raises(TypeError, match=r"^log_target must be a bool"):
        sxt.kl_div(x, x, log_target="yes")
    with pytest.raises(ValueError, match=r"^backend must be one of"):
        elementwise_loss(ElementwiseCall("kl_div", "sum"), x, x, None, None, "cuda")

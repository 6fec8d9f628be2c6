"""Shared test helpers: tolerances per dtype, torch oracles in softxent's layout, strategies.

The oracles call torch with the class axis moved to torch's class dim (0 for 1-D input,
else 1) and compute in a *reference* dtype: float64 for float32/float64 inputs, float32 for
float16 inputs (softxent computes float16 in float32 and rounds once, so the reference is
torch in float32 from the same float16 values, rounded once). Results are cast back to the
dtype softxent should return, so a dtype check and a value check go together.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import softxent as sx
from softxent._tolerance import logit_scale, rtol_for  # noqa: F401 (logit_scale: for the tests)
from softxent.torch import _torch_kernel as torch_kernel

# The oracles run thousands of tiny torch calls; with intra-op threads on a loaded machine
# each autograd call costs ~30 ms of spinning instead of ~0.1 ms.
torch.set_num_threads(1)

FLOAT_DTYPES = (np.float16, np.float32, np.float64)

# Relative tolerance per dtype (owned by softxent._tolerance, which `softxent demo` uses too);
# the absolute tolerance is ``rtol * scale`` where ``scale`` is chosen by the test (usually
# ``logit_scale(x)`` = ``max(1, max|logit|)``, since ``x - max(x)`` cancels).


def ref_dtype(dtype) -> np.dtype:
    """The dtype the oracle computes in for a result of ``dtype``."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float16 else np.dtype(np.float64)


def assert_close(actual, expected, dtype, *, scale: float = 1.0, check_dtype: bool = True):
    """``actual`` matches ``expected`` at the tolerance of ``dtype``.

    NaN must be NaN in both, infinities must match in sign, the shapes must be equal, and
    (unless ``check_dtype`` is False) ``actual`` must have ``dtype``.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if check_dtype:
        assert actual.dtype == np.dtype(dtype), f"dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, f"shape {actual.shape}, expected {expected.shape}"
    rtol = rtol_for(dtype)
    np.testing.assert_allclose(
        actual.astype(np.float64),
        expected.astype(np.float64),
        rtol=rtol,
        atol=rtol * scale,
        equal_nan=True,
    )


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def random_logits(shape, dtype, seed: int = 0, scale: float = 3.0) -> np.ndarray:
    return (rng(seed).standard_normal(shape) * scale).astype(dtype)


def random_probs(shape, axis: int, dtype, seed: int = 1) -> np.ndarray:
    """Random probability vectors along ``axis`` (some entries exactly 0)."""
    r = rng(seed)
    p = r.random(shape) * (r.random(shape) > 0.2)
    total = p.sum(axis=axis, keepdims=True)
    p = np.where(total > 0, p / np.where(total > 0, total, 1), 1.0 / max(1, shape[axis]))
    return p.astype(dtype)


# --------------------------------------------------------------------------- torch oracles


def _torch_dim(ndim: int) -> int:
    return 0 if ndim == 1 else 1


def _to_torch(a, dtype=None) -> torch.Tensor:
    a = np.asarray(a)
    if dtype is not None:
        a = a.astype(dtype)
    return torch.from_numpy(np.array(a, order="C"))  # ascontiguousarray makes 0-d 1-d


def torch_softmax(x, axis: int = -1, *, log: bool = False) -> np.ndarray:
    """torch's softmax / log_softmax of ``x`` along ``axis`` (reference dtype, cast back)."""
    x = np.asarray(x)
    fn = torch.log_softmax if log else torch.softmax
    if x.ndim == 0:
        out = fn(_to_torch(x, ref_dtype(x.dtype)), 0)
    else:
        out = fn(_to_torch(x, ref_dtype(x.dtype)), axis)
    return _cast(out.numpy(), x.dtype)


def _cast(a: np.ndarray, dtype) -> np.ndarray:
    """Round the reference to ``dtype`` (overflow to inf is the expected answer there)."""
    with np.errstate(over="ignore"):
        return a.astype(dtype)


def torch_logsumexp(x, axis=-1, keepdims: bool = False):
    x = np.asarray(x)
    dim = list(axis) if isinstance(axis, tuple) else axis
    out = torch.logsumexp(_to_torch(x, ref_dtype(x.dtype)), dim, keepdim=keepdims)
    return _cast(out.numpy(), x.dtype)


def _move_to_torch_layout(a: np.ndarray, axis: int) -> np.ndarray:
    return a if a.ndim == 1 else np.moveaxis(a, axis, 1)


def torch_cross_entropy(
    logits,
    target,
    *,
    axis: int = -1,
    weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    with_grad: bool = False,
    grad_output=None,
    out_dtype=None,
    nll: bool = False,
):
    """torch's ``F.cross_entropy`` (or ``F.nll_loss``) in softxent's layout.

    Returns the loss as an ndarray of ``out_dtype`` (default: the logits' dtype for class
    indices, the NumPy promotion for probabilities), and with ``with_grad`` also the
    gradient w.r.t. the logits (logits' dtype and layout) via torch autograd.
    """
    x = np.asarray(logits)
    t = np.asarray(target)
    axis = axis % x.ndim
    soft = t.dtype.kind == "f"
    if out_dtype is None:
        out_dtype = np.result_type(x.dtype, t.dtype) if soft else x.dtype
        if soft and isinstance(weight, np.ndarray) and weight.dtype.kind == "f":
            out_dtype = np.result_type(out_dtype, weight.dtype)
    rd = ref_dtype(out_dtype) if soft else ref_dtype(x.dtype)
    xt = _to_torch(_move_to_torch_layout(x, axis), rd).requires_grad_(with_grad)
    if soft:
        tt = _to_torch(_move_to_torch_layout(t, axis), rd)
    else:
        tt = _to_torch(t, np.int64)
    wt = None if weight is None else _to_torch(weight, rd)
    if nll:
        loss = F.nll_loss(xt, tt, weight=wt, ignore_index=ignore_index, reduction=reduction)
    else:
        loss = F.cross_entropy(
            xt,
            tt,
            weight=wt,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
        )
    loss_np = _cast(loss.detach().numpy(), out_dtype)
    if not with_grad:
        return loss_np
    if grad_output is None:
        g = torch.ones_like(loss)
    else:
        g = _to_torch(np.asarray(grad_output, dtype=np.float64), rd).reshape(loss.shape)
    (grad,) = torch.autograd.grad(loss, xt, g)
    grad_np = grad.numpy()
    if x.ndim > 1:
        grad_np = np.moveaxis(grad_np, 1, axis)
    return loss_np, _cast(grad_np, x.dtype)


# ------------------------------------------------------------------------- shared fixtures


@pytest.fixture
def restore_threads():
    """Restore softxent's thread count after the test."""
    before = sx.get_num_threads()
    yield
    sx.set_num_threads(before)


#: softxent.torch.cross_entropy hands small CPU calls to F.cross_entropy
#: (softxent/torch/_torch_kernel.py). The tests are there to check softxent's own kernels
#: at every size against torch, so that hand-over is off in every test except those that
#: ask for it with the ``torch_kernel_route`` fixture (tests/torch/test_torch_kernel_route.py).
SHIPPED_LIMITS = {
    name: getattr(torch_kernel, name) for name in ("MAX_LOGITS", "MAX_NARROW_LOGITS")
}


@pytest.fixture(autouse=True)
def _own_kernels_at_every_size(monkeypatch):
    for name in SHIPPED_LIMITS:
        monkeypatch.setattr(torch_kernel, name, -1)  # no input is that small


@pytest.fixture
def torch_kernel_route(_own_kernels_at_every_size, monkeypatch):
    """The hand-over of small CPU calls to torch's kernel, as shipped."""
    for name, limit in SHIPPED_LIMITS.items():
        monkeypatch.setattr(torch_kernel, name, limit)


# ---------------------------------------------------------------------- hypothesis shapes


@st.composite
def shapes_and_axis(draw, min_ndim=1, max_ndim=4, max_side=5, min_classes=1):
    """A shape of 1 to 4 dimensions and a class axis (negative half the time)."""
    ndim = draw(st.integers(min_ndim, max_ndim))
    shape = list(draw(st.lists(st.integers(0, max_side), min_size=ndim, max_size=ndim)))
    axis = draw(st.integers(0, ndim - 1))
    shape[axis] = max(shape[axis], min_classes)
    if draw(st.booleans()):
        axis -= ndim
    return tuple(shape), axis


float_dtypes = st.sampled_from(FLOAT_DTYPES)
reductions = st.sampled_from(("none", "mean", "sum"))


def pretend_missing(monkeypatch: pytest.MonkeyPatch, *libraries: str) -> None:
    """Make ``softxent bench``'s peer loader fail to import ``libraries``, as if they were
    not installed (their peers are then skipped with a note)."""
    from softxent._bench import peers

    real_import = peers._import

    def fake_import(name: str):
        if name.split(".")[0] in libraries:
            raise ImportError(f"No module named {name!r}")
        return real_import(name)

    monkeypatch.setattr(peers, "_import", fake_import)

"""The generic path never synchronises with the host: it runs on the ``meta`` device.

Meta tensors have shapes and dtypes but no data, so ``.item()``, ``bool(tensor)``, a
data-dependent shape (``nonzero``, boolean indexing) or a value check raises there. What
runs on meta therefore runs on a GPU without a device-to-host sync.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from softxent.torch._cross_entropy import cross_entropy_with_options  # noqa: E402
from softxent.torch._elementwise import ElementwiseCall, elementwise_loss  # noqa: E402
from softxent.torch._linear_cross_entropy import linear_cross_entropy_with_options  # noqa: E402
from softxent.torch._options import make_options  # noqa: E402

META = torch.device("meta")


def test_meta_tensors_refuse_host_reads():
    """Guards the premise of this file."""
    with pytest.raises((RuntimeError, NotImplementedError)):
        torch.ones(2, device=META).sum().item()
    with pytest.raises((RuntimeError, NotImplementedError)):
        bool((torch.ones(2, device=META) > 0).any())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("prob", [False, True])
@pytest.mark.parametrize("extras", [{}, dict(z_loss=0.1, softcap=2.0, label_smoothing=0.1)])
@pytest.mark.parametrize("inplace", [False, True])
def test_cross_entropy_runs_on_meta(reduction, prob, extras, inplace):
    leaf = torch.randn(6, 5, 3, device=META, requires_grad=True)
    t = torch.rand(6, 5, 3, device=META) if prob else torch.randint(0, 5, (6, 3), device=META)
    options = make_options(reduction=reduction, inplace_backward=inplace, **extras)
    loss = cross_entropy_with_options(leaf * 1.0, t, torch.rand(5, device=META), options, "auto")
    assert loss.shape == ((6, 3) if reduction == "none" else ())
    loss.backward(torch.ones_like(loss))
    assert leaf.grad.shape == leaf.shape and leaf.grad.device == META


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("prob", [False, True])
@pytest.mark.parametrize("extras", [{}, dict(z_loss=0.1, softcap=2.0, label_smoothing=0.1)])
def test_linear_cross_entropy_runs_on_meta(reduction, prob, extras):
    h = torch.randn(7, 4, device=META, requires_grad=True)
    w = torch.randn(9, 4, device=META, requires_grad=True)
    b = torch.randn(9, device=META, requires_grad=True)
    t = torch.rand(7, 9, device=META) if prob else torch.randint(0, 9, (7,), device=META)
    options = make_options(reduction=reduction, chunk_size=3, **extras)
    loss = linear_cross_entropy_with_options(
        h, w, t, b, torch.rand(9, device=META), options, "auto"
    )
    loss.backward(torch.ones_like(loss))
    assert (h.grad.shape, w.grad.shape, b.grad.shape) == (h.shape, w.shape, b.shape)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "batchmean"])
@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("mse_loss", {}),
        ("mse_loss", {"weight": (6, 5)}),
        ("binary_cross_entropy_with_logits", {"weight": (6, 1), "pos_weight": (5,)}),
        ("kl_div", {}),
        ("kl_div", {"log_target": True}),
    ],
)
def test_elementwise_losses_run_on_meta(reduction, name, options):
    if reduction == "batchmean" and name != "kl_div":
        pytest.skip("batchmean is kl_div's")
    leaf = torch.randn(6, 5, device=META, requires_grad=True)
    weights = {k: torch.rand(v, device=META) for k, v in options.items() if k != "log_target"}
    call = ElementwiseCall(name, reduction, options.get("log_target", False))
    loss = elementwise_loss(
        call, leaf * 1.0, torch.rand(6, 5, device=META), weights.get("weight"),
        weights.get("pos_weight"), "auto",
    )  # fmt: skip
    assert loss.shape == ((6, 5) if reduction == "none" else ())
    loss.backward(torch.ones_like(loss))
    assert leaf.grad.shape == leaf.shape and leaf.grad.device == META

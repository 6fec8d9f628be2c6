"""What the autograd Functions of the torch backend share: their gradient is precomputed.

Each forward computes the loss *and* its gradient for an upstream gradient of 1 and saves
that gradient; ``backward`` only scales it. These helpers make that scaling cheap (in
place, or not at all for ``loss.backward()`` on CPU) without ever being wrong (intact when
the graph is kept, refused for a second derivative).
"""

from __future__ import annotations

import torch

__all__ = ["keep_graph", "refuse_double_backward", "scale_saved_gradient"]


def keep_graph() -> bool:
    """Whether the running backward keeps the graph (``retain_graph=True``).

    Unknown (no such hook in this torch) counts as kept: the out-of-place product is
    always correct, only one gradient-sized allocation dearer.
    """
    getter = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return True if getter is None else bool(getter())


def refuse_double_backward(name: str) -> None:
    """Raise inside ``backward`` under ``create_graph=True``.

    Grad mode is on inside backward only then. The saved gradient is a constant to
    autograd, so a second derivative would silently be wrong.
    """
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"softxent.torch.{name} does not support double backward "
            "(create_graph=True): its gradient is precomputed in the forward; use "
            "torch.nn.functional for higher-order derivatives"
        )


def scale_saved_gradient(
    grad: torch.Tensor | None,
    grad_output: torch.Tensor,
    *,
    keep: bool,
    per_sample: bool = False,
) -> torch.Tensor | None:
    """``grad * grad_output`` for a gradient saved for an upstream gradient of 1.

    ``per_sample``: ``grad_output`` has one value per sample of a ``(N, C, d1, ...)``
    gradient and is broadcast along its class dim 1. Unless the graph is kept (``keep``)
    the product is taken in place, freeing the saved gradient's memory for the result, and
    on CPU an all-ones ``grad_output`` (``loss.backward()``) returns ``grad`` as it is: no
    pass over a logits-sized tensor.
    """
    if grad is None:
        return None
    if not keep and _all_ones_on_cpu(grad_output):
        return grad
    g = grad_output.to(grad.dtype)
    if per_sample:
        g = g.unsqueeze(1)  # (N, 1, d1, ...) against the gradient's (N, C, d1, ...)
    return grad * g if keep else grad.mul_(g)


def _all_ones_on_cpu(grad_output: torch.Tensor) -> bool:
    """Whether a CPU upstream gradient is all ones (read on the host: CPU only, no sync).

    On other devices the answer would need a device-to-host copy, so it is not asked.
    """
    if grad_output.device.type != "cpu":
        return False
    if grad_output.numel() == 1:  # a reduced loss: a read of one value, no tensor op
        return grad_output.item() == 1
    return bool((grad_output == 1).all())

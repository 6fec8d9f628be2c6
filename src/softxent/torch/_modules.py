"""Thin ``nn.Module`` wrappers: options at construction, the functional in ``forward``."""

from __future__ import annotations

import torch
from torch import nn

from softxent.torch._cross_entropy import _cross_entropy
from softxent.torch._linear_cross_entropy import _linear_cross_entropy
from softxent.torch._options import make_options

__all__ = ["CrossEntropyLoss", "LinearCrossEntropyLoss"]


class CrossEntropyLoss(nn.Module):
    """Module form of :func:`softxent.torch.cross_entropy` (a drop-in for
    ``torch.nn.CrossEntropyLoss`` without the deprecated ``size_average``/``reduce``).

    ``weight`` is stored as a buffer (it follows ``.to()``); the other options are checked
    here, once. See :func:`softxent.torch.cross_entropy` for their meaning.

    Examples
    --------
    >>> import torch
    >>> from softxent.torch import CrossEntropyLoss
    >>> loss_fn = CrossEntropyLoss(label_smoothing=0.1, z_loss=1e-4)
    >>> loss = loss_fn(torch.zeros(2, 4), torch.tensor([0, 3]))
    >>> round(float(loss), 6)  # log(4) + 1e-4 * log(4)**2
    1.386487
    """

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        *,
        z_loss: float = 0.0,
        softcap: float | None = None,
        inplace_backward: bool = False,
    ) -> None:
        super().__init__()
        self.options = make_options(
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
            z_loss=z_loss,
            softcap=softcap,
            inplace_backward=inplace_backward,
        )
        self.register_buffer("weight", weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _cross_entropy(input, target, self.weight, self.options)

    def extra_repr(self) -> str:
        o = self.options
        return (
            f"ignore_index={o.ignore_index}, reduction={o.reduction!r}, "
            f"label_smoothing={o.label_smoothing}, z_loss={o.z_loss}, softcap={o.softcap}, "
            f"inplace_backward={o.inplace_backward}"
        )


class LinearCrossEntropyLoss(nn.Module):
    """Module form of :func:`softxent.torch.linear_cross_entropy`, owning its layer.

    Mirrors ``torch.nn.LinearCrossEntropyLoss``: the constructor builds
    ``self.linear = nn.Linear(in_features, num_classes, bias=bias)`` and ``forward(input,
    target)`` returns the loss of ``self.linear(input)`` without materialising the logits.
    torch's ``out_features`` (K-dimensional loss) and ``options`` are not supported;
    ``chunk_size`` plays the role of the latter.

    Examples
    --------
    >>> import torch
    >>> from softxent.torch import LinearCrossEntropyLoss
    >>> loss_fn = LinearCrossEntropyLoss(8, 5, bias=True, chunk_size=3)
    >>> loss = loss_fn(torch.randn(7, 8), torch.tensor([0, 1, 2, 3, 4, 0, 1]))
    >>> loss.backward()
    >>> tuple(loss_fn.linear.weight.grad.shape)
    (5, 8)
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        bias: bool = False,
        device=None,
        dtype=None,
        reduction: str = "mean",
        weight: torch.Tensor | None = None,
        ignore_index: int | None = -100,
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
        softcap: float | None = None,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        self.options = make_options(
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
            z_loss=z_loss,
            softcap=softcap,
            chunk_size=chunk_size,
        )
        self.num_classes = num_classes
        self.linear = nn.Linear(in_features, num_classes, bias=bias, device=device, dtype=dtype)
        self.register_buffer("weight", weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _linear_cross_entropy(
            input, self.linear.weight, target, self.linear.bias, self.weight, self.options
        )

    def extra_repr(self) -> str:
        o = self.options
        return (
            f"reduction={o.reduction!r}, ignore_index={o.ignore_index}, "
            f"label_smoothing={o.label_smoothing}, z_loss={o.z_loss}, softcap={o.softcap}, "
            f"chunk_size={o.chunk_size}"
        )

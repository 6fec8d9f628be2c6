"""``nn.Module`` drop-ins for torch's loss modules: torch's attributes, buffer and repr.

Each module keeps its options as plain attributes named as torch names them (read at call
time, so ``loss.reduction = "none"`` takes effect as it does in torch), the class weight as
the persistent buffer ``weight`` (a ``state_dict`` moves between torch's module and ours,
strict), and torch's ``repr``, to which softxent's extras are appended when they are set.
The options are validated at construction (early errors) and again at every call (an
attribute may have been changed in between).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from softxent._validation import (
    KlReduction,
    Reduction,
    check_bool,
    check_kl_reduction,
    check_reduction,
)
from softxent.torch._cross_entropy import cross_entropy_with_options
from softxent.torch._elementwise import ElementwiseCall, LossName, elementwise_loss
from softxent.torch._linear_cross_entropy import linear_cross_entropy_with_options
from softxent.torch._linear_positions import linear_cross_entropy_positions
from softxent.torch._options import LossOptions, make_options

__all__ = [
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "KLDivLoss",
    "LinearCrossEntropyLoss",
    "MSELoss",
]

F = TypeVar("F", bound=Callable[..., Any])


def _eager_when_compiled(function: F) -> F:
    """``function``, or while ``torch.compile`` traces, the same run eagerly (a graph break).

    softxent's CPU path runs NumPy kernels that dynamo cannot trace; running the loss
    eagerly keeps torch's numbers exactly. ``torch.compiler.disable`` is called only while
    compiling: applying it at import time would import dynamo (seconds) for every user.
    """
    if torch.compiler.is_compiling():
        return torch.compiler.disable(function)
    return function


def _extras_repr(module: nn.Module, defaults: dict[str, Any]) -> str:
    """softxent's extra options that differ from their defaults, as ``name=value``."""
    return ", ".join(
        f"{name}={getattr(module, name)!r}"
        for name, default in defaults.items()
        if getattr(module, name) != default
    )


def _options_of(module: nn.Module, *specific: str) -> LossOptions:
    """The module's options, validated, read from its attributes now (not at construction)."""
    names = ("ignore_index", "reduction", "label_smoothing", "z_loss", "softcap", *specific)
    return make_options(**{name: getattr(module, name) for name in names})


class CrossEntropyLoss(nn.Module):
    """Module form of :func:`softxent.torch.cross_entropy`: a drop-in for
    ``torch.nn.CrossEntropyLoss`` without the deprecated ``size_average``/``reduce``.

    Attributes ``ignore_index``, ``reduction``, ``label_smoothing`` (torch's) and ``z_loss``,
    ``softcap``, ``inplace_backward`` (softxent's) are read at every call; ``weight`` is a
    persistent buffer (``None`` when not given), as in torch. See
    :func:`softxent.torch.cross_entropy` for their meaning.

    Examples
    --------
    >>> import torch
    >>> from softxent.torch import CrossEntropyLoss
    >>> loss_fn = CrossEntropyLoss(label_smoothing=0.1, z_loss=1e-4)
    >>> loss_fn
    CrossEntropyLoss(z_loss=0.0001)
    >>> loss = loss_fn(torch.zeros(2, 4), torch.tensor([0, 3]))
    >>> round(float(loss), 6)  # log(4) + 1e-4 * log(4)**2
    1.386487
    >>> loss_fn.reduction = "none"
    >>> tuple(loss_fn(torch.zeros(2, 4), torch.tensor([0, 3])).shape)
    (2,)
    """

    __constants__: ClassVar[list[str]] = ["ignore_index", "reduction", "label_smoothing"]
    _EXTRAS: ClassVar[dict[str, Any]] = {"z_loss": 0.0, "softcap": None, "inplace_backward": False}

    weight: torch.Tensor | None  #: the class weight, a buffer
    ignore_index: int
    reduction: str
    label_smoothing: float
    z_loss: float
    softcap: float | None
    inplace_backward: bool

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
        *,
        z_loss: float = 0.0,
        softcap: float | None = None,
        inplace_backward: bool = False,
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.softcap = softcap
        self.inplace_backward = inplace_backward
        self._options()

    def _options(self) -> LossOptions:
        return _options_of(self, "inplace_backward")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = _eager_when_compiled(cross_entropy_with_options)
        return loss(input, target, self.weight, self._options())

    def extra_repr(self) -> str:
        return _extras_repr(self, self._EXTRAS)  # torch's repr has no options at all


class LinearCrossEntropyLoss(nn.Module):
    """Module form of :func:`softxent.torch.linear_cross_entropy`, owning its layer: a
    drop-in for torch 2.13's ``torch.nn.LinearCrossEntropyLoss``.

    The constructor builds ``self.linear = nn.Linear(in_features, num_classes, bias=bias)``
    and ``forward(input, target)`` returns the loss of ``self.linear(input)`` without
    materialising the logits. torch's attributes (``num_classes``, ``out_features``,
    ``reduction``, ``ignore_index``, ``label_smoothing``, ``options``) and softxent's
    (``z_loss``, ``softcap``, ``chunk_size``) are read at every call; ``weight`` is a
    persistent buffer. ``out_features=(d1, ..., dk)`` gives torch's K-dimensional loss
    (``C * d1 * ... * dk`` outputs, logits read as ``(N, C, d1, ..., dk)``), computed one
    position at a time. torch's ``options`` is not supported (``ValueError``):
    ``chunk_size`` plays its role.

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

    __constants__: ClassVar[list[str]] = [
        "num_classes",
        "out_features",
        "reduction",
        "ignore_index",
        "label_smoothing",
    ]
    _EXTRAS: ClassVar[dict[str, Any]] = {"z_loss": 0.0, "softcap": None, "chunk_size": None}

    weight: torch.Tensor | None  #: the class weight, a buffer
    num_classes: int
    out_features: tuple[int, ...]
    reduction: str
    ignore_index: int | None
    label_smoothing: float
    options: None
    z_loss: float
    softcap: float | None
    chunk_size: int | None

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        out_features: tuple[int, ...] = (),
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        reduction: Reduction = "mean",
        weight: torch.Tensor | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        options: None = None,
        z_loss: float = 0.0,
        softcap: float | None = None,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(weight, torch.Tensor) and tuple(weight.shape) != (num_classes,):
            raise ValueError(  # checked here, as torch does, not only at the first call
                f"weight must have shape ({num_classes},), one entry per class, "
                f"got shape {tuple(weight.shape)}"
            )
        self.register_buffer("weight", weight)
        self.num_classes = num_classes
        self.out_features = out_features
        self.reduction = reduction
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.options = options
        self.z_loss = z_loss
        self.softcap = softcap
        self.chunk_size = chunk_size
        self._options()
        classes = math.prod(out_features, start=num_classes)
        self.linear = nn.Linear(in_features, classes, bias=bias, device=device, dtype=dtype)

    def _options(self) -> LossOptions:
        out = self.out_features
        if not isinstance(out, tuple | list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in out
        ):
            raise ValueError(
                f"out_features must be a tuple of positive ints (d1, ..., dk) for a "
                f"K-dimensional loss, or () for one loss per token, got {out!r}"
            )
        if self.options is not None:
            raise ValueError(
                f"options must be None, got {self.options!r}: softxent does not take torch's "
                "LinearCrossEntropyOptions; pass chunk_size (tokens per chunk) instead"
            )
        return _options_of(self, "chunk_size")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        options, linear = self._options(), self.linear
        if self.out_features:
            positions = _eager_when_compiled(linear_cross_entropy_positions)
            return positions(
                input, linear.weight, target, linear.bias, self.weight, options,
                self.num_classes, tuple(self.out_features),
            )  # fmt: skip
        loss = _eager_when_compiled(linear_cross_entropy_with_options)
        return loss(input, linear.weight, target, linear.bias, self.weight, options)

    def extra_repr(self) -> str:
        torch_repr = (  # torch 2.13's, word for word
            f"in_features={self.linear.in_features},"
            f" num_classes={self.num_classes},"
            f" out_features={self.out_features},"
            f" bias={self.linear.bias is not None},"
            f" reduction={self.reduction},"
            f" ignore_index={self.ignore_index},"
            f" label_smoothing={self.label_smoothing},"
            f" options={self.options}"
        )
        extras = _extras_repr(self, self._EXTRAS)
        return f"{torch_repr}, {extras}" if extras else torch_repr


def _elementwise_call(module: nn.Module, loss: LossName) -> ElementwiseCall:
    """The module's options, validated, read from its attributes now."""
    if loss == "kl_div":
        return ElementwiseCall(
            loss,
            check_kl_reduction(module.reduction),
            check_bool(module.log_target, "log_target"),
        )
    return ElementwiseCall(loss, check_reduction(module.reduction))


class MSELoss(nn.Module):
    """Module form of :func:`softxent.torch.mse_loss`: a drop-in for ``torch.nn.MSELoss``
    without the deprecated ``size_average``/``reduce`` (``reduction`` read at every call).

    Examples
    --------
    >>> import torch
    >>> from softxent.torch import MSELoss
    >>> MSELoss(reduction="sum")(torch.tensor([0.5, 2.0]), torch.tensor([1.0, 0.0])).item()
    4.25
    """

    __constants__: ClassVar[list[str]] = ["reduction"]
    reduction: str

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = reduction
        _elementwise_call(self, "mse_loss")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = _eager_when_compiled(elementwise_loss)
        return loss(_elementwise_call(self, "mse_loss"), input, target, None, None)


class BCEWithLogitsLoss(nn.Module):
    """Module form of :func:`softxent.torch.binary_cross_entropy_with_logits`: a drop-in for
    ``torch.nn.BCEWithLogitsLoss`` without ``size_average``/``reduce``; ``weight`` and
    ``pos_weight`` are buffers (``None`` when not given), as in torch.

    Examples
    --------
    >>> import torch
    >>> from softxent.torch import BCEWithLogitsLoss
    >>> loss_fn = BCEWithLogitsLoss(pos_weight=torch.tensor([3.0]))
    >>> round(loss_fn(torch.zeros(1, 1), torch.ones(1, 1)).item(), 6)  # 3 log 2
    2.079442
    """

    weight: torch.Tensor | None
    pos_weight: torch.Tensor | None
    reduction: str

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        reduction: Reduction = "mean",
        pos_weight: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)
        self.reduction = reduction
        _elementwise_call(self, "binary_cross_entropy_with_logits")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = _eager_when_compiled(elementwise_loss)
        call = _elementwise_call(self, "binary_cross_entropy_with_logits")
        return loss(call, input, target, self.weight, self.pos_weight)


class KLDivLoss(nn.Module):
    """Module form of :func:`softxent.torch.kl_div`: a drop-in for ``torch.nn.KLDivLoss``
    without ``size_average``/``reduce`` (``reduction``, ``log_target`` read at every call).

    Examples
    --------
    >>> import torch
    >>> from softxent.torch import KLDivLoss
    >>> KLDivLoss(reduction="batchmean")(torch.zeros(2, 1), torch.ones(2, 1)).item()
    0.0
    """

    __constants__: ClassVar[list[str]] = ["reduction"]
    reduction: str
    log_target: bool

    def __init__(self, reduction: KlReduction = "mean", log_target: bool = False) -> None:
        super().__init__()
        self.reduction = reduction
        self.log_target = log_target
        _elementwise_call(self, "kl_div")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = _eager_when_compiled(elementwise_loss)
        return loss(_elementwise_call(self, "kl_div"), input, target, None, None)

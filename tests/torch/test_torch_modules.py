"""softxent's loss modules are drop-ins for torch's: attributes, constructor, state_dict, repr,
copying, pickling, dtype/device moves, containers and ``torch.compile``.

Every test runs over ``PAIRS``: to cover a new loss module, append its ``Pair``.
"""

from __future__ import annotations

import copy
import inspect
import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

# torch.nn.KLDivLoss warns about its default reduction, the one it must be compared at
pytestmark = pytest.mark.filterwarnings("ignore:reduction. .mean. divides:UserWarning")

from softxent.torch import (  # noqa: E402
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    KLDivLoss,
    LinearCrossEntropyLoss,
    MSELoss,
)


def _class_inputs(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g, dtype=dtype)
    return x, torch.tensor([0, 4, 2, 2, 1, 3])


def _hidden_inputs(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, generator=g, dtype=dtype)
    return x, torch.tensor([0, 4, 2, 2, 1, 3])


def _position_inputs(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, generator=g, dtype=dtype)
    return x, torch.randint(0, 5, (3, 2, 3), generator=g)


def _elementwise_inputs(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 5, generator=g, dtype=dtype)
    return x, torch.rand(6, 5, generator=g, dtype=dtype)


def _log_prob_inputs(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    x, t = _elementwise_inputs(dtype)
    return x.log_softmax(1), t


def _class_weights() -> dict[str, torch.Tensor]:
    return {"weight": torch.tensor([1.0, 2.0, 0.5, 1.5, 3.0])}


def _binary_weights() -> dict[str, torch.Tensor]:
    return {"weight": torch.tensor([[1.0], [2.0], [0.5], [1.5], [3.0], [1.0]]),
            "pos_weight": torch.tensor([2.0, 1.0, 0.5, 3.0, 1.5])}  # fmt: skip


#: Changing one option after construction, and its value
CHANGES = (
    ("reduction", "none"),
    ("reduction", "sum"),
    ("ignore_index", 2),
    ("label_smoothing", 0.3),
)


@dataclass(frozen=True)
class Pair:
    """A softxent module, the torch module it replaces, and how to build and call both."""

    ours: type[nn.Module]
    theirs: type[nn.Module]
    args: tuple = ()  #: positional constructor arguments (both modules)
    kwargs: dict[str, Any] = field(default_factory=dict)  #: keyword arguments (both)
    inputs: Callable[[torch.dtype], tuple[torch.Tensor, ...]] = _class_inputs
    extras: tuple[str, ...] = ()  #: softxent's keyword-only options, after torch's
    omitted: tuple[str, ...] = ()  #: torch's deprecated constructor arguments we leave out
    #: the weight buffers' constructor arguments (None: the module has none)
    weights: Callable[[], dict[str, torch.Tensor]] | None = _class_weights
    changes: tuple[tuple[str, Any], ...] = CHANGES  #: options changed after construction

    def __str__(self) -> str:
        out = self.kwargs.get("out_features")
        return self.ours.__name__ + (f"-out_features={out}" if out else "")


PAIRS = [
    Pair(
        CrossEntropyLoss,
        nn.CrossEntropyLoss,
        kwargs={"label_smoothing": 0.1},
        extras=("z_loss", "softcap", "inplace_backward"),
        omitted=("size_average", "reduce"),
    ),
    Pair(
        LinearCrossEntropyLoss,
        nn.LinearCrossEntropyLoss,
        args=(4, 5),
        kwargs={"bias": True, "label_smoothing": 0.1},
        inputs=_hidden_inputs,
        extras=("z_loss", "softcap", "chunk_size"),
    ),
    Pair(  # torch's K-dimensional loss: logits (N, C, 2, 3)
        LinearCrossEntropyLoss,
        nn.LinearCrossEntropyLoss,
        args=(4, 5),
        kwargs={"out_features": (2, 3), "bias": True, "label_smoothing": 0.1},
        inputs=_position_inputs,
        extras=("z_loss", "softcap", "chunk_size"),
    ),
    Pair(
        MSELoss,
        nn.MSELoss,
        inputs=_elementwise_inputs,
        omitted=("size_average", "reduce"),
        weights=None,
        changes=(("reduction", "none"), ("reduction", "sum")),
    ),
    Pair(
        BCEWithLogitsLoss,
        nn.BCEWithLogitsLoss,
        inputs=_elementwise_inputs,
        omitted=("size_average", "reduce"),
        weights=_binary_weights,
        changes=(("reduction", "none"), ("reduction", "sum")),
    ),
    Pair(
        KLDivLoss,
        nn.KLDivLoss,
        inputs=_log_prob_inputs,
        omitted=("size_average", "reduce"),
        weights=None,
        changes=(("reduction", "none"), ("reduction", "batchmean"), ("log_target", True)),
    ),
]


def build(pair: Pair, *, weighted: bool = False, **kwargs) -> tuple[nn.Module, nn.Module]:
    """Both modules with the same options (and the same layer parameters, if any)."""
    kw = {**pair.kwargs, **kwargs}
    if weighted and pair.weights is not None:
        kw.update(pair.weights())
    theirs = pair.theirs(*pair.args, **kw)
    ours = pair.ours(*pair.args, **kw)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def public_attributes(module: nn.Module) -> set[str]:
    return {name for name in vars(module) if not name.startswith("_")}


def assert_same_loss(ours: nn.Module, theirs: nn.Module, dtype=torch.float64, pair=None):
    inputs = pair.inputs(dtype)
    torch.testing.assert_close(ours(*inputs), theirs(*inputs), rtol=1e-12, atol=1e-12)


pairs = pytest.mark.parametrize("pair", PAIRS, ids=str)


@pairs
def test_attributes_are_torchs_plus_the_extras(pair):
    ours, theirs = build(pair)
    assert public_attributes(ours) == public_attributes(theirs) | set(pair.extras)
    assert getattr(ours, "__constants__", None) == getattr(theirs, "__constants__", None)
    for name in public_attributes(theirs) - {"training"}:
        assert getattr(ours, name) == getattr(theirs, name), name


@pairs
def test_constructor_signature_is_torchs_plus_keyword_only_extras(pair):
    def parameters(cls, skip=()):
        signature = inspect.signature(cls.__init__)
        return [(p.name, p.kind, p.default) for p in signature.parameters.values()
                if p.name not in skip]  # fmt: skip

    ours = parameters(pair.ours)
    assert parameters(pair.ours, skip=pair.extras) == parameters(pair.theirs, skip=pair.omitted)
    extras = ours[len(ours) - len(pair.extras) :]
    assert [(name, kind) for name, kind, _ in extras] == [
        (name, inspect.Parameter.KEYWORD_ONLY) for name in pair.extras
    ]


@pairs
@pytest.mark.parametrize("weighted", [False, True])
def test_state_dict_moves_between_torch_and_softxent(pair, weighted):
    if weighted and pair.weights is None:
        pytest.skip("no weight buffers")
    ours, theirs = build(pair, weighted=weighted)  # theirs -> ours, strict
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert ("weight" in ours.state_dict()) == weighted
    zeros = {k: v * 0 for k, v in pair.weights().items()} if weighted and pair.weights else {}
    fresh = pair.theirs(*pair.args, **pair.kwargs, **zeros)
    fresh.load_state_dict(ours.state_dict(), strict=True)  # and back
    for key, value in theirs.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    assert_same_loss(ours.double(), theirs.double(), pair=pair)


@pytest.mark.parametrize(
    ("pair", "name", "value"),
    [(pair, name, value) for pair in PAIRS for name, value in pair.changes],
    ids=lambda v: str(v),
)
def test_changed_attribute_takes_effect(pair, name, value):
    ours, theirs = build(pair, weighted=True)
    setattr(ours, name, value)
    setattr(theirs, name, value)
    assert_same_loss(ours.double(), theirs.double(), pair=pair)


@pairs
def test_bad_changed_attribute_raises_at_call(pair):
    ours, _ = build(pair)
    ours.reduction = "average"
    with pytest.raises(ValueError, match="reduction"):
        ours(*pair.inputs(torch.float32))


@pairs
def test_repr_is_torchs_and_shows_set_extras(pair):
    ours, theirs = build(pair)
    assert repr(ours) == repr(theirs)
    if not pair.extras:
        return
    name = pair.extras[0]
    setattr(ours, name, 0.5)
    assert f"{name}=0.5" in repr(ours) and repr(ours) != repr(theirs)


@pairs
def test_deepcopy_and_pickle_keep_options_and_buffers(pair):
    ours, theirs = build(pair, weighted=True, reduction="sum")
    if pair.extras:
        setattr(ours, pair.extras[0], pair.ours._EXTRAS[pair.extras[0]])
    buffer = io.BytesIO()
    torch.save(ours, buffer)
    buffer.seek(0)
    clones = [copy.deepcopy(ours), pickle.loads(pickle.dumps(ours)),
              torch.load(buffer, weights_only=False)]  # fmt: skip
    for clone in clones:
        assert clone.reduction == "sum"
        for name in pair.weights() if pair.weights else ():
            assert torch.equal(getattr(clone, name), getattr(ours, name))
            assert getattr(clone, name) is not getattr(ours, name)
        assert_same_loss(clone.double(), theirs.double(), pair=pair)


@pairs
def test_to_and_half_move_the_weight_buffer(pair):
    if pair.weights is None:
        pytest.skip("no weight buffers")
    ours, theirs = build(pair, weighted=True)
    assert ours.to(torch.float64).weight.dtype == torch.float64
    ours.half()
    theirs.half()
    assert ours.weight.dtype == torch.float16
    inputs = pair.inputs(torch.float16)
    torch.testing.assert_close(ours(*inputs), theirs(*inputs), rtol=1e-2, atol=1e-2)
    meta = ours.to("meta")
    assert meta.weight.device.type == "meta"


@pairs
def test_inside_a_container(pair):
    ours, theirs = build(pair, weighted=True)
    model_ours = nn.Sequential(nn.Identity(), ours)
    model_theirs = nn.Sequential(nn.Identity(), theirs)
    assert list(model_ours.state_dict()) == list(model_theirs.state_dict())
    model_ours.load_state_dict(model_theirs.state_dict(), strict=True)
    model_ours.double()
    model_theirs.double()
    inputs = pair.inputs(torch.float64)
    loss = model_ours[1](model_ours[0](inputs[0]), inputs[1])
    expected = model_theirs[1](model_theirs[0](inputs[0]), inputs[1])
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)


@pairs
@pytest.mark.parametrize("z_loss", [0.0, 1e-3])  # the NumPy CPU path, the generic torch path
def test_torch_compile_gives_the_same_numbers(pair, z_loss):
    dynamo = pytest.importorskip("torch._dynamo")
    if not dynamo.is_dynamo_supported():  # e.g. a Python version this torch cannot trace
        pytest.skip("torch.compile is not supported here")
    if z_loss and "z_loss" not in pair.extras:
        pytest.skip("no z_loss: the CPU path is the only one")
    ours, _ = build(pair, weighted=True)
    if "z_loss" in pair.extras:
        ours.z_loss = z_loss
    ours.double()
    x, target = pair.inputs(torch.float64)
    x.requires_grad_(True)
    expected = ours(x, target)
    (expected_grad,) = torch.autograd.grad(expected, x)
    dynamo.reset()
    compiled = torch.compile(ours, backend="eager")  # needs no C compiler
    loss = compiled(x, target)
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.equal(loss, expected) and torch.equal(grad, expected_grad)
    ours.reduction = "none"  # an attribute changed after compiling is honoured too
    assert compiled(x, target).shape == target.shape


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("prob", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_linear_k_dimensional_loss_matches_torch(reduction, prob, weighted):
    """out_features=(d1, ..., dk): loss and layer gradients as torch's module gives them."""
    g = torch.Generator().manual_seed(3)
    kw = dict(out_features=(4, 3), bias=True, dtype=torch.float64, reduction=reduction,
              label_smoothing=0.1)  # fmt: skip
    if weighted:
        kw["weight"] = torch.rand(10, generator=g, dtype=torch.float64) + 0.5
    theirs = nn.LinearCrossEntropyLoss(5, 10, **kw)
    ours = LinearCrossEntropyLoss(5, 10, chunk_size=2, **kw)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(3, 5, generator=g, dtype=torch.float64)
    if prob:
        target = torch.randn(3, 10, 4, 3, generator=g, dtype=torch.float64).softmax(1)
    else:
        target = torch.randint(0, 10, (3, 4, 3), generator=g)
        target[0, 1, 2] = target[2, 0, 0] = -100
    upstream = torch.randn((3, 4, 3) if reduction == "none" else (), generator=g).double()
    results = []
    for module in (ours, theirs):
        inp = x.clone().requires_grad_(True)
        loss = module(inp, target)
        loss.backward(upstream)
        results.append([loss, inp.grad, module.linear.weight.grad, module.linear.bias.grad])
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_linear_refuses_what_it_does_not_support():
    for out_features in [(0,), (2, -1), ("2",), 3]:
        with pytest.raises(ValueError, match="out_features"):
            LinearCrossEntropyLoss(4, 5, out_features=out_features)
    positions = LinearCrossEntropyLoss(4, 5, out_features=(2,))
    with pytest.raises(ValueError, match=r"input must be 2-D"):
        positions(torch.randn(4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target of class indices must have shape \(3, 2\)"):
        positions(torch.randn(3, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk_size"):
        LinearCrossEntropyLoss(4, 5, options=nn.LinearCrossEntropyOptions())
    with pytest.raises(ValueError, match="label_smoothing"):
        LinearCrossEntropyLoss(4, 5, label_smoothing=2.0)
    with pytest.raises(ValueError, match=r"weight must have shape \(5,\)"):
        LinearCrossEntropyLoss(4, 5, weight=torch.ones(4))  # torch raises here too

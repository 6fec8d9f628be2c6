"""The implementations of the ``torch`` suite, built inside the child process that times them.

Imported only by :mod:`softxent._bench.child` (it needs torch). Each builder takes the
problem's shape and dtype and returns a :class:`~softxent._bench.suites.Timed` whose call
is one forward + backward; gradients come from ``torch.autograd.grad`` (not
``.backward()``, whose ``.grad`` would accumulate: one more pass) and are returned, so a
call holds its gradients until it returns and frees them after.

Two computations:

* ``cross_entropy`` on logits ``(N, C)``: ``softxent``, ``softxent_inplace``
  (``inplace_backward=True``: the gradient overwrites the logits, so the setup, untimed,
  gives each call a fresh non-leaf copy of them) and ``torch`` (``F.cross_entropy``).
* ``linear_cross_entropy`` on input ``(N, D)``, weight ``(V, D)``: ``softxent``,
  ``torch_reference`` (``F.cross_entropy(F.linear(x, W), y)``), ``torch_lce``
  (``F.linear_cross_entropy``, default ``options=None``: torch's reference path),
  ``torch_chunked`` (``options=LinearCrossEntropyOptions()``: chunking ``"auto"``, which
  for CPU float32 resolves to ``"aspect_ratio:2"``), ``torch_chunked_ar1``
  (``LinearCrossEntropyOptions(chunking_method="aspect_ratio")``: chunks twice as large),
  ``cce`` (Cut Cross-Entropy, ``impl="torch_compile"``, when installed) and ``matmuls``
  (the floor: ``x @ W.T``, ``g @ W``, ``g.T @ x`` into preallocated outputs).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from softxent._bench.suites import Timed

FLOOR = "matmuls"


def cross_entropy_inputs(
    shape: tuple[int, int], dtype: str, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    # Filled in place: a temporary here would raise the process's peak RSS before the
    # baseline and hide the same amount of the call's own memory.
    n, c = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(n, c, dtype=getattr(torch, dtype)).normal_(0.0, 2.0, generator=g)  # (N, C)
    y = torch.randint(0, c, (n,), generator=g)  # (N,) int64
    return x, y


def linear_inputs(
    shape: tuple[int, int, int], dtype: str, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, d, v = shape
    g = torch.Generator().manual_seed(seed)
    t = getattr(torch, dtype)
    x = torch.empty(n, d, dtype=t).normal_(0.0, 1.0, generator=g)  # (N, D)
    w = torch.empty(v, d, dtype=t).normal_(0.0, 0.05, generator=g)  # (V, D)
    y = torch.randint(0, v, (n,), generator=g)  # (N,) int64
    return x, w, y


def _grads(loss_fn: Callable[..., torch.Tensor], *leaves: torch.Tensor) -> Callable[[], tuple]:
    def forward_backward():
        with torch.enable_grad():
            loss = loss_fn(*leaves)
            grads = torch.autograd.grad(loss, leaves)
        return loss.detach(), *grads

    return forward_backward


def cross_entropy_call(impl: str, shape, dtype) -> Timed:
    import softxent.torch as st

    x, y = cross_entropy_inputs(shape, dtype)
    if impl == "softxent":
        return Timed(_grads(lambda a: st.cross_entropy(a, y), x.requires_grad_()))
    if impl == "torch":
        return Timed(_grads(lambda a: F.cross_entropy(a, y), x.requires_grad_()))
    if impl == "softxent_inplace":
        # inplace_backward refuses a leaf: the logits of a real model are an intermediate
        # result. The copy is the setup (untimed); the call consumes it.
        leaf = x.requires_grad_()
        state: dict[str, torch.Tensor] = {}

        def setup():
            state.clear()  # the previous copy is freed before the next is made
            state["logits"] = leaf.clone()

        def forward_backward():
            logits = state.pop("logits")
            with torch.enable_grad():
                loss = st.cross_entropy(logits, y, inplace_backward=True)
                (grad,) = torch.autograd.grad(loss, logits)
            return loss.detach(), grad

        return Timed(forward_backward, setup=setup)
    raise ValueError(f"unknown cross_entropy implementation {impl!r}")


def linear_call(impl: str, shape, dtype) -> Timed:
    x, w, y = linear_inputs(shape, dtype)
    if impl == FLOOR:
        n, v = x.shape[0], w.shape[0]
        logits = torch.empty(n, v, dtype=x.dtype)  # (N, V), also stands in for the gradient
        d_x, d_w = torch.empty_like(x), torch.empty_like(w)  # (N, D), (V, D)

        def matmuls():
            torch.mm(x, w.T, out=logits)
            torch.mm(logits, w, out=d_x)
            torch.mm(logits.T, x, out=d_w)

        return Timed(matmuls)
    leaves = (x.requires_grad_(), w.requires_grad_())
    if impl == "softxent":
        import softxent.torch as st

        return Timed(_grads(lambda a, b: st.linear_cross_entropy(a, b, y), *leaves))
    if impl == "torch_reference":
        return Timed(_grads(lambda a, b: F.cross_entropy(F.linear(a, b), y), *leaves))
    if impl == "torch_lce":
        return Timed(_grads(lambda a, b: F.linear_cross_entropy(a, b, y), *leaves))
    if impl in ("torch_chunked", "torch_chunked_ar1"):
        from torch.nn import LinearCrossEntropyOptions

        options = LinearCrossEntropyOptions()
        if impl == "torch_chunked_ar1":
            options = LinearCrossEntropyOptions(chunking_method="aspect_ratio")
        return Timed(
            _grads(lambda a, b: F.linear_cross_entropy(a, b, y, options=options), *leaves)
        )
    if impl == "cce":
        from cut_cross_entropy import linear_cross_entropy as cce

        return Timed(_grads(lambda a, b: cce(a, b, y, impl="torch_compile"), *leaves))
    raise ValueError(f"unknown linear_cross_entropy implementation {impl!r}")


def build(op: str, impl: str, shape, dtype) -> Timed:
    """The timed call of ``impl`` for ``op`` (``"cross_entropy"``/``"linear_cross_entropy"``)."""
    if op == "cross_entropy":
        return cross_entropy_call(impl, tuple(shape), dtype)
    if op == "linear_cross_entropy":
        return linear_call(impl, tuple(shape), dtype)
    raise ValueError(f"unknown torch-suite operation {op!r}")

"""The implementations softxent is compared with: torch, JAX, scipy.special, plain NumPy,
and softxent's own NumPy fallback kernels (``softxent_numpy``, on request).

Each peer implements some of the operations of :mod:`softxent._bench.suites` (by their
kernel name) and turns a case's NumPy inputs into its own types before timing. A peer whose
library is not installed is skipped with the reason; :func:`load_peers` never raises for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import numpy as np

from softxent import _native, _version
from softxent._bench.suites import OPS, Inputs, Op, Timed, softxent_call

#: The elementwise losses (torch and JAX time forward + backward of each).
ELEMENTWISE_OPS = frozenset(name for name, op in OPS.items() if op.elementwise is not None)

PEER_NAMES = ("torch", "jax", "scipy", "numpy")
#: softxent with its NumPy kernels (as with SOFTXENT_NATIVE=0): a column, not a peer.
FALLBACK = "softxent_numpy"


class PeerUnavailable(Exception):
    """A peer that cannot run here for a reason other than a missing library."""


def _import(name: str) -> ModuleType:
    """Import ``name`` (one place, so tests can pretend a peer is missing)."""
    return importlib.import_module(name)


class Peer:
    """One peer: its name, version, the operations it implements and how it calls them."""

    name = ""
    ops: frozenset[str] = frozenset()
    measures_memory = False  # True when its arrays are NumPy's, visible to tracemalloc
    version = ""

    def call(self, op: Op, inputs: Inputs) -> Timed:
        raise NotImplementedError

    def as_numpy(self, result: Any) -> list[np.ndarray]:
        """The arrays of a result (for checking that the peer computes the same thing)."""
        if isinstance(result, tuple):
            return [a for r in result for a in self.as_numpy(r)]
        return [np.asarray(result)]

    @contextlib.contextmanager
    def threads(self, n: int) -> Iterator[None]:
        """Run the peer with ``n`` threads where it lets us choose (default: it does not)."""
        yield


# --------------------------------------------------------------------------- torch


class TorchPeer(Peer):
    """``torch.nn.functional`` on CPU tensors that share memory with the NumPy inputs."""

    name = "torch"
    ops = frozenset(
        {
            "cross_entropy",
            "cross_entropy_with_grad",
            "cross_entropy_options",
            "cross_entropy_probs",
            "softmax",
            "log_softmax",
            "logsumexp",
            *ELEMENTWISE_OPS,
        }
    )

    def __init__(self, torch: ModuleType) -> None:
        self.torch = torch
        self.F = torch.nn.functional
        self.version = torch.__version__

    @contextlib.contextmanager
    def threads(self, n: int) -> Iterator[None]:
        before = self.torch.get_num_threads()
        self.torch.set_num_threads(n)
        try:
            yield
        finally:
            self.torch.set_num_threads(before)

    def as_numpy(self, result: Any) -> list[np.ndarray]:
        if isinstance(result, tuple):
            return [a for r in result for a in self.as_numpy(r)]
        return [result.detach().numpy()]

    def call(self, op: Op, inputs: Inputs) -> Timed:
        torch, F = self.torch, self.F
        x = torch.from_numpy(inputs.x)  # (N, C), no copy
        y = torch.from_numpy(inputs.y)  # (N,) int64
        name = op.kernel
        if name == "cross_entropy":
            return Timed(lambda: F.cross_entropy(x, y))
        if name == "cross_entropy_with_grad":
            leaf = x.detach().requires_grad_()

            def forward_backward():
                with torch.enable_grad():
                    loss = F.cross_entropy(leaf, y)
                    # autograd.grad, not backward(): .grad would accumulate (one more pass).
                    (grad,) = torch.autograd.grad(loss, leaf)
                return loss.detach(), grad

            return Timed(forward_backward)
        if op.elementwise is not None:
            return self._elementwise(name, x, torch.from_numpy(inputs.target))
        if name == "cross_entropy_options":
            w = torch.from_numpy(inputs.weight)
            return Timed(
                lambda: F.cross_entropy(
                    x,
                    y,
                    weight=w,
                    ignore_index=inputs.ignore_index,
                    label_smoothing=inputs.label_smoothing,
                )
            )
        if name == "cross_entropy_probs":
            p = torch.from_numpy(inputs.probs)
            return Timed(lambda: F.cross_entropy(x, p))
        if name == "softmax":
            return Timed(lambda: torch.softmax(x, -1))
        if name == "log_softmax":
            return Timed(lambda: torch.log_softmax(x, -1))
        if name == "logsumexp":
            return Timed(lambda: torch.logsumexp(x, -1))
        raise AssertionError(f"torch has no {name!r}")

    def _elementwise(self, name: str, x: Any, t: Any) -> Timed:
        """Forward + backward of torch's elementwise loss (autograd.grad, as above)."""
        torch, F = self.torch, self.F
        leaf = x.detach().requires_grad_()
        losses = {
            "binary_cross_entropy_with_logits_with_grad": F.binary_cross_entropy_with_logits,
            "kl_div_with_grad": functools.partial(F.kl_div, reduction="batchmean"),
            "mse_loss_with_grad": F.mse_loss,
        }
        loss_fn = losses[name]

        def forward_backward():
            with torch.enable_grad():
                loss = loss_fn(leaf, t)
                (grad,) = torch.autograd.grad(loss, leaf)
            return loss.detach(), grad

        return Timed(forward_backward)


# --------------------------------------------------------------------------- JAX


def _jax_functions(jax: ModuleType) -> dict[str, Callable]:
    """The jitted JAX functions, built once per process so compilations are reused."""
    jnp = jax.numpy

    def picked(x, y):  # x[n, y[n]]: (N,)
        return jnp.take_along_axis(x, y[:, None], axis=-1)[:, 0]

    def cross_entropy(x, y):
        # optax.softmax_cross_entropy_with_integer_labels, then the mean (optax not needed).
        return jnp.mean(jax.nn.logsumexp(x, axis=-1) - picked(x, y))

    def cross_entropy_options(x, y, w, ignore_index, eps):
        # As torch with label smoothing: the nll and the smoothing term are both divided by
        # sum_n w[y[n]] over valid rows, though the smoothing term weighs every class.
        valid = y != ignore_index  # (N,)
        safe = jnp.where(valid, y, 0)
        lp = jax.nn.log_softmax(x, axis=-1)  # (N, C)
        wy = jnp.where(valid, w[safe], 0)  # (N,)
        nll = -(wy * picked(lp, safe)).sum()
        smooth = -jnp.where(valid, (lp * w).sum(axis=-1), 0).sum()
        return ((1 - eps) * nll + eps / x.shape[-1] * smooth) / wy.sum()

    def cross_entropy_probs(x, p):
        return -(p * jax.nn.log_softmax(x, axis=-1)).sum(axis=-1).mean()

    def bce_with_logits(x, t):  # optax.sigmoid_binary_cross_entropy's stable form, the mean
        return jnp.mean(jnp.maximum(x, 0) - x * t + jnp.log1p(jnp.exp(-jnp.abs(x))))

    def kl_div_batchmean(x, t):  # torch's xlogy(t, t) - t x, summed over the batch's mean
        return jnp.sum(jax.scipy.special.xlogy(t, t) - t * x) / x.shape[0]

    def mse(x, t):
        return jnp.mean((x - t) ** 2)

    return {
        "cross_entropy": jax.jit(cross_entropy),
        "cross_entropy_with_grad": jax.jit(jax.value_and_grad(cross_entropy)),
        "cross_entropy_options": jax.jit(cross_entropy_options),
        "cross_entropy_probs": jax.jit(cross_entropy_probs),
        "softmax": jax.jit(lambda x: jax.nn.softmax(x, axis=-1)),
        "log_softmax": jax.jit(lambda x: jax.nn.log_softmax(x, axis=-1)),
        "logsumexp": jax.jit(lambda x: jax.nn.logsumexp(x, axis=-1)),
        "binary_cross_entropy_with_logits_with_grad": jax.jit(jax.value_and_grad(bce_with_logits)),
        "kl_div_with_grad": jax.jit(jax.value_and_grad(kl_div_batchmean)),
        "mse_loss_with_grad": jax.jit(jax.value_and_grad(mse)),
    }


_JAX_FUNCTIONS: dict[str, Callable] = {}


class JaxPeer(Peer):
    """``jax.jit``-compiled functions on the CPU device (compile time excluded by warm-up).

    XLA runs on its own thread pool (one thread per core); its size is fixed when JAX
    starts, so ``--threads`` does not apply to it.
    """

    name = "jax"
    ops = TorchPeer.ops

    def __init__(self, jax: ModuleType) -> None:
        self.jax = jax
        self.version = jax.__version__
        self.device = jax.devices("cpu")[0]  # CPU even where an accelerator is present
        if not _JAX_FUNCTIONS:
            _JAX_FUNCTIONS.update(_jax_functions(jax))

    def _precision(self, dtype: np.dtype) -> contextlib.AbstractContextManager:
        # JAX silently turns float64 into float32 unless 64-bit mode is on.
        if dtype == np.float64:
            return self.jax.enable_x64(True)
        return contextlib.nullcontext()

    def call(self, op: Op, inputs: Inputs) -> Timed:
        jax = self.jax
        name = op.kernel
        f = _JAX_FUNCTIONS[name]
        with self._precision(inputs.x.dtype):
            x = jax.device_put(inputs.x, self.device)  # (N, C), copied once, untimed
            y = jax.device_put(inputs.y.astype(np.int32), self.device)  # (N,)
            args: tuple[Any, ...]
            if name == "cross_entropy_options":
                w = jax.device_put(inputs.weight, self.device)
                args = (x, y, w, inputs.ignore_index, inputs.label_smoothing)
            elif name == "cross_entropy_probs":
                args = (x, jax.device_put(inputs.probs, self.device))
            elif name in ("cross_entropy", "cross_entropy_with_grad"):
                args = (x, y)
            elif op.elementwise is not None:
                args = (x, jax.device_put(inputs.target, self.device))
            else:
                args = (x,)
        dtype = inputs.x.dtype

        def run():
            with self._precision(dtype):
                return jax.block_until_ready(f(*args))

        return Timed(run)


# --------------------------------------------------------------------------- scipy


class ScipyPeer(Peer):
    """``scipy.special.softmax``, ``log_softmax`` and ``logsumexp`` (NumPy underneath)."""

    name = "scipy"
    ops = frozenset({"softmax", "log_softmax", "logsumexp"})
    measures_memory = True

    def __init__(self, scipy: ModuleType, special: ModuleType) -> None:
        self.special = special
        self.version = scipy.__version__

    def call(self, op: Op, inputs: Inputs) -> Timed:
        x = inputs.x
        f = getattr(self.special, op.kernel)
        return Timed(lambda: f(x, axis=-1))


# --------------------------------------------------------------------------- NumPy


def textbook_softmax(x: np.ndarray) -> np.ndarray:
    """The textbook softmax, ``exp(x) / sum exp(x)``: two ``exp`` passes, no max shift."""
    return np.exp(x) / np.sum(np.exp(x), axis=1, keepdims=True)


def textbook_one_hot(target: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The textbook one-hot (``np.zeros(shape)``, so float64), filled by indexing, not a loop."""
    one_hot = np.zeros(shape)
    one_hot[np.arange(shape[0]), target] = 1
    return one_hot


class NumpyPeer(Peer):
    """Plain NumPy as it is usually first written (the baseline a newcomer would write).

    That code has no backward; the gradient of the mean loss is ``(softmax - one_hot) / N``.
    """

    name = "numpy"
    ops = frozenset(
        {
            "cross_entropy",
            "cross_entropy_with_grad",
            "cross_entropy_probs",
            "softmax",
            "log_softmax",
            "logsumexp",
        }
    )
    measures_memory = True

    def __init__(self) -> None:
        self.version = np.__version__

    def call(self, op: Op, inputs: Inputs) -> Timed:
        x, y = inputs.x, inputs.y
        n = x.shape[0]
        name = op.kernel
        if name == "cross_entropy":
            return Timed(
                lambda: -np.sum(textbook_one_hot(y, x.shape) * np.log(textbook_softmax(x))) / n
            )
        if name == "cross_entropy_with_grad":

            def forward_backward():
                p = textbook_softmax(x)
                t = textbook_one_hot(y, x.shape)
                return -np.sum(t * np.log(p)) / n, (p - t) / n

            return Timed(forward_backward)
        if name == "cross_entropy_probs":
            return Timed(lambda: -np.sum(inputs.probs * np.log(textbook_softmax(x))) / n)
        if name == "softmax":
            return Timed(lambda: textbook_softmax(x))
        if name == "log_softmax":
            return Timed(lambda: np.log(textbook_softmax(x)))
        if name == "logsumexp":
            return Timed(lambda: np.log(np.sum(np.exp(x), axis=1)))
        raise AssertionError(f"numpy has no {name!r}")


# --------------------------------------------------------------------------- fallback


@contextlib.contextmanager
def numpy_kernels() -> Iterator[None]:
    """Run softxent on its NumPy kernels inside the block, as ``SOFTXENT_NATIVE=0`` would.

    The environment variable is read once, at import; every kernel call looks up
    ``softxent._native.core`` when it runs, so setting it to None for the duration of a
    call (worker threads included: they finish before the call returns) and restoring it
    afterwards switches the same process between the two.
    """
    core = _native.core
    _native.core = None
    try:
        yield
    finally:
        _native.core = core


class FallbackPeer(Peer):
    """softxent's public calls on its NumPy fallback kernels (:func:`numpy_kernels`)."""

    name = FALLBACK
    ops = frozenset(op.kernel for op in OPS.values())
    measures_memory = True

    def __init__(self) -> None:
        if _native.core is None:
            raise PeerUnavailable(
                "softxent already runs its NumPy kernels here (native kernels not built, or "
                "SOFTXENT_NATIVE=0)"
            )
        self.version = _version.__version__

    def call(self, op: Op, inputs: Inputs) -> Timed:
        timed = softxent_call(op, inputs)
        native_call = timed.fn

        def fallback_call() -> object:
            with numpy_kernels():
                return native_call()

        return dataclasses.replace(timed, fn=fallback_call)


# --------------------------------------------------------------------------- loading


def _load(name: str) -> Peer:
    if name == "torch":
        return TorchPeer(_import("torch"))
    if name == "jax":
        return JaxPeer(_import("jax"))
    if name == "scipy":
        return ScipyPeer(_import("scipy"), _import("scipy.special"))
    if name == "numpy":
        return NumpyPeer()
    if name == FALLBACK:
        return FallbackPeer()
    raise ValueError(f"unknown peer {name!r}; known: {', '.join((FALLBACK, *PEER_NAMES))}")


def load_peers(names: tuple[str, ...] = PEER_NAMES) -> tuple[list[Peer], dict[str, str]]:
    """The peers that can run here, and ``{name: why not}`` for the others."""
    peers, skipped = [], {}
    for name in names:
        try:
            peers.append(_load(name))
        except ImportError as error:
            skipped[name] = f"not installed ({error})"
        except PeerUnavailable as error:
            skipped[name] = str(error)
        except Exception as error:  # a broken install must not stop the benchmark
            skipped[name] = f"failed to load ({type(error).__name__}: {error})"
    return peers, skipped

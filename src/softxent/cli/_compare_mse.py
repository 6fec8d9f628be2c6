"""``softxent demo --compare-mse``: why classifiers are trained with cross-entropy, not with
the squared error between the softmax and the one-hot targets.

First the 3x3 example (or the user's logits and class indices): both losses, per sample and
reduced as torch reduces them, and their gradients with respect to the logits, checked
against torch when it is installed. Then one sample whose true-class logit sweeps from
very wrong to very right: the squared error's gradient vanishes exactly where the model is
confidently wrong, while cross-entropy's stays near -1. Every number comes from the public
API; the only formula here is the chain rule through the softmax (``_through_softmax``).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

import softxent as sx
from softxent._bench.report import write_atomically
from softxent._text import paragraph, table
from softxent._tolerance import tolerances
from softxent.cli import CLIError
from softxent.cli._score_io import check_output_path, check_outputs_are_not_inputs

WIDTH = 80
_INDENT = "  "
#: The true-class logit of the sweep's table; the plot uses a finer grid over the same range.
SWEEP = (-12.0, -8.0, -6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0, 8.0, 12.0)
_PLOT_POINTS = 241
#: The sweep's sample: 3 classes, the true one (class 0) at logit z, the others at 0.
_SWEEP_CLASSES = 3


@dataclass(frozen=True)
class Comparison:
    """Both losses of a batch and their gradients with respect to the logits."""

    probs: np.ndarray  # (N, C) softmax
    onehot: np.ndarray  # (N, C)
    ce: sx.LossAndGrad  # mean over samples; grad (N, C)
    ce_rows: np.ndarray  # (N,)
    mse: float  # torch's default: the mean over the N * C entries
    mse_rows: np.ndarray  # (N,) sum_c (p - onehot)^2
    mse_grad: np.ndarray  # (N, C) d mse / d logits


def compare(logits: np.ndarray, target: np.ndarray) -> Comparison:
    """Cross-entropy and ``mse_loss(softmax(logits), one_hot(target))`` with gradients."""
    num_classes = logits.shape[1]
    probs = sx.softmax(logits)
    onehot = sx.one_hot(target, num_classes, dtype=logits.dtype)
    ce = sx.cross_entropy_with_grad(logits, target)
    ce_rows = np.asarray(sx.cross_entropy(logits, target, reduction="none"))  # (N,)
    mse, grad_probs = sx.mse_loss_with_grad(probs, onehot)
    squared = sx.mse_loss(probs, onehot, reduction="none")
    mse_rows = squared.astype(np.float64).sum(axis=1)
    return Comparison(
        probs, onehot, ce, ce_rows, float(mse), mse_rows, _through_softmax(probs, grad_probs)
    )


def _through_softmax(probs: np.ndarray, grad_probs: np.ndarray) -> np.ndarray:
    """The chain rule through ``p = softmax(x)``: ``dL/dx = p * (dL/dp - sum_c dL/dp_c p_c)``."""
    inner = np.sum(grad_probs * probs, axis=1, keepdims=True)  # (N, 1)
    return (probs * (grad_probs - inner)).astype(probs.dtype)  # (N, C)


def sweep(z: np.ndarray) -> tuple[np.ndarray, ...]:
    """For the sweep's sample at true-class logits ``z`` (K,): p_true, cross-entropy, its
    gradient with respect to the true logit, the squared error (mean over the classes, as
    torch's default) and its gradient; each (K,)."""
    logits = np.zeros((z.size, _SWEEP_CLASSES))
    logits[:, 0] = z
    target = np.zeros(z.size, dtype=np.int64)
    ce, ce_grad = sx.cross_entropy_with_grad(logits, target, reduction="none")
    probs = sx.softmax(logits)
    onehot = sx.one_hot(target, _SWEEP_CLASSES, dtype=np.float64)
    grad_output = np.full(probs.shape, 1.0 / _SWEEP_CLASSES)  # each row's mean over C
    squared, grad_probs = sx.mse_loss_with_grad(
        probs, onehot, reduction="none", grad_output=grad_output
    )
    mse = squared.sum(axis=1) / _SWEEP_CLASSES
    mse_grad = _through_softmax(probs, grad_probs)
    return probs[:, 0], np.asarray(ce), ce_grad[:, 0], mse, mse_grad[:, 0]


# --------------------------------------------------------------------------- the text


def _cell(value: float | np.floating | np.ndarray) -> str:
    value = float(value) + 0.0
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.6f}"


def _prose(text: str) -> list[str]:
    return paragraph(text, width=WIDTH, indent=_INDENT)


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return table(headers, rows, rule=False, indent=_INDENT, width=WIDTH, lead=1)


def _matrix(values: np.ndarray, label: str) -> list[str]:
    headers = ["n", *(f"c={c}" for c in range(values.shape[1]))]
    rows = [[str(n), *map(_cell, row)] for n, row in enumerate(values)]
    return [f"{_INDENT}{label}", *_table(headers, rows)]


def report(logits: np.ndarray, target: np.ndarray, c: Comparison) -> list[str]:
    """The lines of both parts (without the torch check)."""
    n, num_classes = logits.shape
    out = ["Cross-entropy or squared error? The same logits, both losses.", ""]
    out += _prose(
        "MSE here is torch's F.mse_loss(softmax(x), one_hot(y)): the mean of (p - onehot)^2 "
        f"over all N * C = {n * num_classes} entries. Cross-entropy is -log p[n, y[n]], "
        f"averaged over the N = {n} samples."
    )
    rows = [
        [str(i), str(int(target[i])), _cell(c.probs[i, target[i]]), _cell(c.ce_rows[i]),
         _cell(c.mse_rows[i])]
        for i in range(n)
    ]  # fmt: skip
    out += _table(["n", "y", "p[n,y]", "cross-entropy", "sum_c (p-onehot)^2"], rows)
    out += [
        "",
        f"{_INDENT}cross-entropy (mean over samples)  {_cell(c.ce.loss)}",
        f"{_INDENT}MSE (mean over entries)            {_cell(c.mse)}",
        "",
    ]
    out += _prose(
        "Their gradients with respect to the logits. Cross-entropy's is (p - onehot) / N; "
        "the squared error's passes through the softmax's Jacobian, which multiplies by p: "
        "2/(N C) * p * ((p - onehot) - sum_c (p_c - onehot_c) p_c)."
    )
    out += _matrix(c.ce.grad, "d cross-entropy / dx")
    out += _matrix(c.mse_grad, "d MSE / dx")
    return [*out, "", *_sweep_report()]


def _sweep_report() -> list[str]:
    z = np.array(SWEEP)
    p_true, ce, ce_grad, mse, mse_grad = sweep(z)
    out = ["Why classifiers use cross-entropy: one sample, the true logit z sweeps.", ""]
    out += _prose(
        f"{_SWEEP_CLASSES} classes, the other logits 0, the true class at logit z: very "
        "wrong (z = -12) to very right (z = 12). MSE is the mean over the classes, as "
        "torch's default; the gradients are with respect to z."
    )
    rows = [
        [_cell(z[k]).rstrip("0").rstrip("."), _cell(p_true[k]), _cell(ce[k]), _cell(ce_grad[k]),
         _cell(mse[k]), _cell(mse_grad[k])]
        for k in range(z.size)
    ]  # fmt: skip
    out += _table(["z", "p_true", "CE", "dCE/dz", "MSE", "dMSE/dz"], rows)
    out += [""]
    out += _prose(
        f"At z = {SWEEP[0]:g} the model is confidently wrong (p_true = {p_true[0]:.1e}) and "
        f"cross-entropy pushes with a gradient of {ce_grad[0]:.4f}, near -1; the squared "
        f"error's gradient is {mse_grad[0]:.1e}: it has vanished, because the softmax "
        "Jacobian multiplies it by p_true. Cross-entropy's log cancels that factor, so "
        "gradient descent learns fastest exactly where the model is most wrong."
    )
    return out


# --------------------------------------------------------------------------- torch


def torch_check(
    logits: np.ndarray, target: np.ndarray, c: Comparison
) -> tuple[list[str], bool | None]:
    """Both losses and gradients from torch; whether they agree (None: no torch)."""
    try:
        import torch  # optional: only the comparison needs it
        import torch.nn.functional as F
    except ImportError:
        return _prose("PyTorch is not installed, so there is no comparison with torch."), None
    num_classes = logits.shape[1]
    x = torch.from_numpy(np.ascontiguousarray(logits))
    y = torch.from_numpy(np.ascontiguousarray(target)).long()
    results: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in ("cross-entropy", "MSE"):
        leaf = x.clone().requires_grad_(True)
        if name == "MSE":
            onehot = F.one_hot(y, num_classes).to(leaf.dtype)
            loss = F.mse_loss(torch.softmax(leaf, dim=1), onehot)
        else:
            loss = F.cross_entropy(leaf, y)
        loss.backward()
        assert leaf.grad is not None
        results[name] = (loss.detach().numpy(), leaf.grad.numpy())
    rtol, atol = tolerances(logits.dtype, logits)
    ours = {"cross-entropy": (c.ce.loss, c.ce.grad), "MSE": (c.mse, c.mse_grad)}
    agree = True
    out = ["", "Check against PyTorch."]
    out += _prose(
        f"torch {torch.__version__}: F.cross_entropy(x, y) and F.mse_loss(softmax(x, 1), "
        "one_hot(y)), losses and autograd gradients:"
    )
    for name, (our_loss, our_grad) in ours.items():
        torch_loss, torch_grad = results[name]
        same = bool(np.allclose(our_loss, torch_loss, rtol=rtol, atol=atol)) and bool(
            np.allclose(our_grad, torch_grad, rtol=rtol, atol=atol)
        )
        agree = agree and same
        error = float(np.max(np.abs(our_grad.astype(np.float64) - torch_grad)))
        out.append(
            f"{_INDENT}{name:<14} softxent {float(our_loss):.8f}  torch {float(torch_loss):.8f}  "
            f"grad |diff| {error:.1e}"
        )
    verdict = "they agree" if agree else "they DISAGREE"
    out += _prose(
        f"{verdict} within the {logits.dtype} tolerance (relative {rtol:.0e}, "
        f"absolute {atol:.0e})."
    )
    return out, agree


# --------------------------------------------------------------------------- the plot


def check_plot_path(path: str, inputs: list[str]) -> None:
    """Before any work: a writable .png path that is none of the inputs; matplotlib."""
    check_output_path(path, (".png",), "--plot")
    check_outputs_are_not_inputs({path: "--plot"}, [p for p in inputs if os.path.exists(p)])
    try:
        _pyplot()
    except ImportError:
        raise CLIError("--plot needs matplotlib: pip install 'softxent[plot]'") from None


def _pyplot() -> Any:
    import matplotlib  # optional (the plot extra): imported only for --plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(path: str) -> None:
    """Both losses and their gradients over the sweep, as a PNG written atomically."""
    plt = _pyplot()
    z = np.linspace(SWEEP[0], SWEEP[-1], _PLOT_POINTS)
    _, ce, ce_grad, mse, mse_grad = sweep(z)
    fig, (losses, grads) = plt.subplots(1, 2, figsize=(10, 4))
    losses.plot(z, ce, label="cross-entropy")
    losses.plot(z, mse, label="MSE(softmax, one-hot)")
    losses.set_xlabel("true-class logit z (other logits 0, 3 classes)")
    losses.set_ylabel("loss")
    losses.legend()
    grads.plot(z, ce_grad, label="d cross-entropy / dz")
    grads.plot(z, mse_grad, label="d MSE / dz")
    grads.axhline(0.0, color="black", linewidth=0.6)
    grads.set_xlabel("true-class logit z")
    grads.set_ylabel("gradient")
    grads.legend()
    fig.suptitle("Confidently wrong: cross-entropy's gradient stays near -1, MSE's vanishes")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_atomically(path, buffer.getvalue())

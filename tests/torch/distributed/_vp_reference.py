"""Oracle and case list shared by the vocab-parallel tests (single-process and spawned).

The oracle is torch's own ``F.cross_entropy`` on the concatenated classes, plus the z-loss
and softcap written out in the most direct way, so a test can fail only if the distributed
result differs from the single-device definition.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

TOLERANCE = {torch.float64: 1e-12, torch.float32: 2e-6}


def reference_loss(
    full_logits,
    target,
    *,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
):
    """Single-process loss on the full ``(N, C)`` logits (torch + a direct z-term)."""
    x = full_logits
    if softcap is not None:
        x = softcap * torch.tanh(x / softcap)
    loss = F.cross_entropy(
        x,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )
    if z_loss:
        soft = target.shape == x.shape
        lse = torch.logsumexp(x, dim=-1)  # (N,)
        valid = torch.ones_like(lse, dtype=torch.bool) if soft else target != ignore_index
        z_term = torch.where(valid, z_loss * lse**2, 0)
        if reduction == "none":
            loss = loss + z_term
        elif reduction == "sum":
            loss = loss + z_term.sum()
        else:
            if soft:
                denominator = torch.tensor(float(x.shape[0]), dtype=x.dtype)
            elif weight is not None:
                denominator = torch.where(valid, weight[torch.where(valid, target, 0)], 0).sum()
            else:
                denominator = valid.sum().to(x.dtype)
            loss = loss + z_term.sum() / denominator
    return loss


def make_data(n, num_classes, hidden, dtype, seed):
    """Seeded full-size tensors; every rank builds the same and slices its shard."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, num_classes, generator=g, dtype=torch.float64) * 3
    target = torch.randint(0, num_classes, (n,), generator=g)
    ignored = target.clone()
    ignored[::3] = -100  # every third token ignored
    probs = torch.softmax(torch.randn(n, num_classes, generator=g, dtype=torch.float64), -1)
    weight = torch.rand(num_classes, generator=g, dtype=torch.float64) + 0.5
    upstream = torch.randn(n, generator=g, dtype=torch.float64)
    inp = torch.randn(n, hidden, generator=g, dtype=torch.float64)
    lin_w = torch.randn(num_classes, hidden, generator=g, dtype=torch.float64) / hidden**0.5
    lin_b = torch.randn(num_classes, generator=g, dtype=torch.float64)
    return {
        "logits": logits.to(dtype),
        "index": target,
        "ignored": ignored,
        "probs": probs.to(dtype),
        "weight": weight.to(dtype),
        # Some classes weighted negatively: torch computes them (its own tests use them).
        "signed_weight": (weight * torch.tensor([-1.0, 1.0]).repeat(num_classes)[:num_classes]).to(
            dtype
        ),
        "upstream": upstream.to(dtype),
        "input": inp.to(dtype),
        "lin_w": lin_w.to(dtype),
        "lin_b": lin_b.to(dtype),
    }


def option_cases(linear=False):
    """Every combination of target kind, weight, smoothing, reduction, z-loss and softcap."""
    kinds = ("index", "ignored", "probs")
    weights = (False, True, "signed")
    smoothing = (0.0, 0.3)
    reductions = ("mean", "sum", "none")
    z_losses = (0.0, 1e-2)
    softcaps = (None, 4.0)
    cases = []
    for kind, w, eps, red, z, cap in itertools.product(
        kinds, weights, smoothing, reductions, z_losses, softcaps
    ):
        if linear and (z, cap) not in ((0.0, None), (1e-2, 4.0)):
            continue  # the linear variant shares the kernel: fewer combinations suffice
        cases.append(
            {
                "kind": kind,
                "weight": w,
                "label_smoothing": eps,
                "reduction": red,
                "z_loss": z,
                "softcap": cap,
            }
        )
    return cases


def tolerances(dtype, scale):
    tol = TOLERANCE[dtype]
    return {"rtol": tol, "atol": tol * max(1.0, scale), "equal_nan": True}

"""The reductions of per-token losses in the torch backend: torch's rules, written once.

* ``"none"``: the per-token losses.
* ``"sum"``: their sum (0 for no tokens).
* ``"mean"``: their sum divided by the *denominator*: the sum of the target classes'
  weights over non-ignored tokens for class indices (their count when unweighted), the
  number of tokens for probability targets. A zero denominator gives NaN (the mean of
  nothing), as in torch.

Sums over tokens are taken in float64 (one value per token, so cheap) and rounded once;
MPS has no float64 and accumulates in the compute dtype. Everything stays on the device:
the denominator is a 0-d tensor, never a Python number read back from it.
"""

from __future__ import annotations

import torch

from softxent._validation import Reduction

__all__ = ["grad_row_scale", "mean_denominator", "reduce_losses"]


def mean_denominator(
    valid: torch.Tensor | None,
    target_weight: torch.Tensor | None,
    num_tokens: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """The 0-d denominator of ``"mean"``.

    Parameters
    ----------
    valid : Tensor (N,) bool, or None
        Class indices: the tokens whose target is not ``ignore_index``. None: probability
        targets, whose denominator is ``num_tokens``.
    target_weight : Tensor (N,), or None
        The class weight of each token's target (0 for ignored tokens); None without
        class weights (each valid token counts 1).
    """
    if valid is None:
        return torch.tensor(float(num_tokens), dtype=dtype, device=device)
    if target_weight is None:
        return valid.sum().to(dtype)
    return torch.where(valid, target_weight, 0).sum().to(dtype)


def grad_row_scale(
    reduction: Reduction, denominator: torch.Tensor, num_tokens: int, dtype: torch.dtype
) -> torch.Tensor:
    """d(reduced loss) / d(loss_n), ``(N,)``: ``1 / denominator`` for mean, else 1."""
    if reduction == "mean":
        return (1.0 / denominator).to(dtype).expand(num_tokens)
    return torch.ones(num_tokens, dtype=dtype, device=denominator.device)


def reduce_losses(
    losses: torch.Tensor,
    reduction: Reduction,
    denominator: torch.Tensor,
    dtype: torch.dtype,
    shape: tuple[int, ...],
) -> torch.Tensor:
    """Reduce the flat per-token ``losses`` to ``dtype``; ``"none"`` is reshaped to ``shape``."""
    if reduction == "none":
        return losses.reshape(shape).to(dtype)
    accumulate = torch.float64 if losses.device.type != "mps" else losses.dtype
    total = losses.sum(dtype=accumulate)
    if reduction == "mean":
        total = total / denominator.to(accumulate)
    return total.to(dtype)

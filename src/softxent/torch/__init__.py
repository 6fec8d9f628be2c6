"""softxent for PyTorch: fused cross-entropy and chunked linear cross-entropy.

Needs the ``torch`` extra (``pip install softxent[torch]``). Drop-ins for
``torch.nn.functional.cross_entropy`` / ``torch.nn.CrossEntropyLoss`` and
``torch.nn.functional.linear_cross_entropy`` / ``torch.nn.LinearCrossEntropyLoss`` with
torch's numbers and gradients, plus ``z_loss`` and ``softcap``; the gradient is computed in
the forward and the ``(N, V)`` logits of the output layer are never materialised. CPU
tensors run softxent's NumPy kernels zero-copy; other devices a pure-torch path with no
host synchronisation. See ``docs/torch.md``.
"""

try:
    import torch as _torch  # noqa: F401  (only to say what is missing, clearly)
except ModuleNotFoundError as _error:
    if _error.name != "torch":
        raise
    raise ModuleNotFoundError(
        "softxent.torch needs PyTorch, which is not installed: "
        "pip install 'softxent[torch]' (or install torch yourself); "
        "the NumPy API (import softxent) works without it",
        name="torch",
    ) from None

from softxent.torch._cross_entropy import cross_entropy
from softxent.torch._elementwise import binary_cross_entropy_with_logits, kl_div, mse_loss
from softxent.torch._linear_cross_entropy import (
    CHUNK_BYTES,
    default_chunk_size,
    linear_cross_entropy,
)
from softxent.torch._modules import (
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    KLDivLoss,
    LinearCrossEntropyLoss,
    MSELoss,
)

__all__ = [
    "CHUNK_BYTES",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "KLDivLoss",
    "LinearCrossEntropyLoss",
    "MSELoss",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "default_chunk_size",
    "kl_div",
    "linear_cross_entropy",
    "mse_loss",
]

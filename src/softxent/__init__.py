"""softxent: softmax and cross-entropy done right, for NumPy and PyTorch.

PyTorch's exact semantics (weights, ``ignore_index``, label smoothing, probability targets,
N-d inputs, reductions, special values) with gradients, in NumPy, fast. The PyTorch
backend lives in :mod:`softxent.torch` (needs the ``torch`` extra).
"""

from softxent._binary import (
    binary_cross_entropy,
    binary_cross_entropy_with_grad,
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_with_grad,
)
from softxent._cross_entropy import LossAndGrad, cross_entropy, cross_entropy_with_grad, nll_loss
from softxent._kl_div import kl_div, kl_div_with_grad
from softxent._linear_cross_entropy import (
    LinearLossAndGrads,
    linear_cross_entropy,
    linear_cross_entropy_with_grad,
)
from softxent._one_hot import one_hot
from softxent._output_cache import get_output_cache, set_output_cache
from softxent._regression import mse_loss, mse_loss_with_grad
from softxent._score import ScoreResult, score
from softxent._softmax import log_softmax, logsumexp, softmax
from softxent._threads import get_num_threads, set_num_threads
from softxent._version import __version__

__all__ = [
    "LinearLossAndGrads",
    "LossAndGrad",
    "ScoreResult",
    "__version__",
    "binary_cross_entropy",
    "binary_cross_entropy_with_grad",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_with_grad",
    "cross_entropy",
    "cross_entropy_with_grad",
    "get_num_threads",
    "get_output_cache",
    "kl_div",
    "kl_div_with_grad",
    "linear_cross_entropy",
    "linear_cross_entropy_with_grad",
    "log_softmax",
    "logsumexp",
    "mse_loss",
    "mse_loss_with_grad",
    "nll_loss",
    "one_hot",
    "score",
    "set_num_threads",
    "set_output_cache",
    "softmax",
]

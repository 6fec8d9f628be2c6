"""The worked example of the demo, of ``softxent score`` without files and of the benchmark.

Three samples, three classes, float32 logits and class-index targets: small enough to check
by hand, and with a tie in every row but the last, so the max shift is visible.
"""

from __future__ import annotations

import numpy as np

#: Logits of shape (3, 3): one row per sample, one column per class.
LOGITS: tuple[tuple[float, ...], ...] = ((0.3, 0.1, 0.3), (0.9, 0.2, 0.9), (0.5, 0.4, 0.2))
#: The true class of each sample.
TARGETS: tuple[int, ...] = (1, 2, 0)
DTYPE = np.dtype(np.float32)


def logits() -> np.ndarray:
    """A fresh (3, 3) float32 array of :data:`LOGITS`."""
    return np.array(LOGITS, dtype=DTYPE)


def targets() -> np.ndarray:
    """A fresh (3,) int64 array of :data:`TARGETS`."""
    return np.array(TARGETS, dtype=np.int64)

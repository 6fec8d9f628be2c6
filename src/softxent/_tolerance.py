"""How close two results must be to count as equal: one relative tolerance per dtype.

Used by ``softxent demo`` to compare with torch and by the test suite for every comparison
with its oracles, so both speak of "agree" in the same terms.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

#: Relative tolerance per result dtype. float16 results are computed in float32 and rounded
#: once, so they are within about one float16 ulp (2**-10) of the exact value.
RTOL: dict[np.dtype, float] = {
    np.dtype(np.float16): 1e-3,
    np.dtype(np.float32): 2e-6,
    np.dtype(np.float64): 1e-12,
}


def rtol_for(dtype: DTypeLike) -> float:
    """The relative tolerance of results of ``dtype``."""
    return RTOL[np.dtype(dtype)]


def logit_scale(x: ArrayLike) -> float:
    """``max(1, max|x|)`` over the finite entries of ``x`` (1 when there are none).

    The absolute tolerance is ``rtol * logit_scale(logits)``: ``x - max(x)`` cancels, so an
    error relative to the largest logit can show up in a result near 0.
    """
    x = np.asarray(x, dtype=np.float64)
    finite = x[np.isfinite(x)]
    return max(1.0, float(np.abs(finite).max())) if finite.size else 1.0


def tolerances(dtype: DTypeLike, logits: ArrayLike) -> tuple[float, float]:
    """``(rtol, atol)`` for comparing results of ``dtype`` computed from ``logits``."""
    rtol = rtol_for(dtype)
    return rtol, rtol * logit_scale(logits)

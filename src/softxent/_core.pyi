"""Types of the C extension built from src/csrc (see softxent._native for its use)."""

import numpy as np

def softmax(x: np.ndarray, out: np.ndarray, log: bool, /) -> bool: ...
def logsumexp(x: np.ndarray, result: np.ndarray, /) -> bool: ...
def ce_index(
    x: np.ndarray,
    y: np.ndarray,
    wy: np.ndarray | None,
    valid: np.ndarray | None,
    g: np.ndarray | float,
    class_weight: np.ndarray | None,
    smoothing: float,
    weight_sum: float,
    loss: np.ndarray,
    grad: np.ndarray | None,
    ignore_index: int | None,
    /,
) -> bool: ...
def ce_prob(
    x: np.ndarray,
    t: np.ndarray,
    g: np.ndarray | float,
    scale: np.ndarray | None,
    offset: np.ndarray | None,
    loss: np.ndarray,
    grad: np.ndarray | None,
    /,
) -> bool: ...
def elementwise_loss(
    loss_kind: int,
    x: np.ndarray,
    t: np.ndarray,
    w: np.ndarray | None,
    p: np.ndarray | None,
    g: np.ndarray | float,
    loss: np.ndarray,
    grad: np.ndarray | None,
    /,
) -> bool: ...
def class_targets(
    y: np.ndarray,
    num_classes: int,
    ignore_index: int,
    class_weight: np.ndarray | None,
    y_out: np.ndarray | None,
    valid_out: np.ndarray | None,
    wy_out: np.ndarray | None,
    /,
) -> tuple[int, int, float]: ...
def elementwise(x: np.ndarray, y: np.ndarray, func: int, /) -> None: ...
def isa() -> str: ...
def isas() -> tuple[str, ...]: ...
def set_isa(name: str, /) -> None: ...

class Buffer:
    """A writable block of memory (the buffer protocol), kept for a later Buffer of its
    size when freed."""

    def __buffer__(self, flags: int, /) -> memoryview: ...

BUFFER_MIN_BYTES: int

def buffer(nbytes: int, /) -> Buffer: ...
def set_buffer_cache(limit: int, /) -> tuple[int, int]: ...

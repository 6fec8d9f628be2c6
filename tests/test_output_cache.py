"""Large outputs whose memory is kept for the next call of their size (set_output_cache).

softxent's large outputs come from the native core's buffers: freed, their memory serves
the next output of exactly that many bytes. Kept memory must never change a result (it
holds the last array's values, NaN included), layouts must be numpy.empty_like's, and the
limit must be honoured.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import softxent as sx
from softxent import _native, _output_cache

core = _native.core
needs_core = pytest.mark.skipif(core is None, reason="the NumPy fallback keeps no buffers")

ROWS, CLASSES = 256, 8192  # 8 MiB of float32: above the 4 MiB of the kept outputs


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _kept() -> tuple[int, int]:
    """(bytes, blocks) kept now."""
    return core.set_buffer_cache(-1)


@pytest.fixture
def cache():
    """A cache of 64 MiB, emptied before and after the test."""
    before = sx.get_output_cache()
    sx.set_output_cache(0)
    sx.set_output_cache(64 << 20)
    yield
    sx.set_output_cache(0)
    sx.set_output_cache(before)


def _logits(dtype=np.float32, order="C") -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((ROWS, CLASSES)) * 3
    return np.asarray(x, dtype=dtype, order=order)


@needs_core
def test_a_freed_output_serves_the_next_output_of_its_size(cache):
    x = _logits()
    first = sx.softmax(x)
    address = _address(first)
    del first
    assert _kept() == (x.nbytes, 1)
    second = sx.softmax(x)
    assert _address(second) == address
    assert _kept() == (0, 0)
    other = sx.softmax(x[:, : CLASSES // 2].copy())  # another size: a block of its own
    assert _address(other) != address


@needs_core
@pytest.mark.parametrize(
    "fn",
    [
        sx.softmax,
        sx.log_softmax,
        lambda x: sx.cross_entropy_with_grad(x, np.arange(ROWS) % CLASSES)[1],
        lambda x: sx.cross_entropy_with_grad(x, np.full_like(x, 1 / CLASSES), label_smoothing=0.1)[
            1
        ],
        lambda x: sx.binary_cross_entropy_with_logits_with_grad(x, np.full_like(x, 0.25))[1],
        lambda x: sx.mse_loss_with_grad(x, np.zeros_like(x))[1],
        lambda x: sx.kl_div(x, np.full_like(x, 0.5), reduction="none"),
    ],
)
def test_kept_memory_never_changes_a_result(cache, fn):
    # The kept block still holds the last array's values: every entry must be written.
    x = _logits()
    sx.set_output_cache(0)
    expected = fn(x)  # into fresh memory
    sx.set_output_cache(64 << 20)
    for fill in (np.nan, np.inf, 0.0):
        stale = fn(x)
        stale[...] = fill
        address = _address(stale)
        del stale
        got = fn(x)
        assert _address(got) == address
        np.testing.assert_array_equal(got, expected, strict=True)


@needs_core
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_outputs_have_numpy_empty_likes_layout(cache, order, dtype):
    x = _logits(dtype, order)
    for _ in range(2):  # fresh, then kept memory
        for as_dtype in (None, np.float64):
            out = _output_cache.empty_like(x, as_dtype)
            like = np.empty_like(x, as_dtype)
            assert (out.shape, out.dtype, out.strides) == (like.shape, like.dtype, like.strides)
            assert out.flags.writeable and out.flags.aligned
            assert out.ctypes.data % 64 == 0
            del out
    strided = x[:, ::2]
    assert _output_cache.empty_like(strided).strides == np.empty_like(strided).strides


@needs_core
def test_small_outputs_and_a_zero_limit_keep_nothing(cache):
    small = sx.softmax(_logits()[:8])  # 256 KiB
    del small
    assert _kept() == (0, 0)
    sx.set_output_cache(0)
    big = sx.softmax(_logits())
    del big
    assert _kept() == (0, 0)


@needs_core
def test_the_limit_and_the_two_blocks_are_honoured(cache):
    x = _logits()
    sx.set_output_cache(x.nbytes * 2)
    outs = [sx.softmax(x[: ROWS - k]) for k in range(3)]  # three sizes, all kept in turn
    nbytes = [o.nbytes for o in outs]
    for k in range(3):
        outs[k] = None
    assert _kept() == (nbytes[1] + nbytes[2], 2)  # the oldest pushed out
    sx.set_output_cache(nbytes[2])  # lowering the limit frees the oldest first
    assert _kept() == (nbytes[2], 1)
    sx.set_output_cache(x.nbytes - 1)
    too_big = sx.softmax(x)
    del too_big  # larger than the whole limit: freed, not kept
    assert _kept() == (nbytes[2], 1)


@needs_core
def test_kept_outputs_are_seen_by_tracemalloc(cache):
    import tracemalloc

    x = _logits()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        out = sx.softmax(x)
        during = tracemalloc.get_traced_memory()[0]
        del out
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert during - before >= x.nbytes
    assert after - before < x.nbytes


@pytest.mark.parametrize("bad", [-1, 1.5, "64", True, None])
def test_a_bad_limit_is_named(bad):
    error = ValueError if bad == -1 else TypeError
    with pytest.raises(error, match="max_bytes must be"):
        sx.set_output_cache(bad)


@pytest.mark.parametrize("setting", ["-5", "lots", "1e9"])
def test_a_bad_environment_variable_is_named_at_import(setting):
    env = dict(os.environ, SOFTXENT_OUTPUT_CACHE=setting)
    result = subprocess.run(
        [sys.executable, "-c", "import softxent"], env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "SOFTXENT_OUTPUT_CACHE must be a number of bytes >= 0" in result.stderr


def test_the_environment_variable_sets_the_limit():
    env = dict(os.environ, SOFTXENT_OUTPUT_CACHE="12345")
    result = subprocess.run(
        [sys.executable, "-c", "import softxent; print(softxent.get_output_cache())"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert result.stdout.strip() == "12345"


@needs_core
def test_with_the_numpy_kernels_forced_outputs_are_numpys(cache, monkeypatch):
    # As SOFTXENT_NATIVE=0 runs (and as the benchmark times the fallback in-process).
    x = _logits()
    assert sx.softmax(x).base is not None  # a view of a kept buffer
    monkeypatch.setattr(_native, "core", None)
    out = sx.softmax(x)
    assert out.base is None and out.flags.owndata

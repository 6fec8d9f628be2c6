"""Issue 3: memory layouts, every axis, thread counts, concurrent calls and block boundaries.

Results must not depend on how the logits are laid out in memory (beyond float rounding),
and must be *bitwise* identical for any thread count, under concurrent calls, and for any
block size (``softxent._blocks.BLOCK_BYTES``, read at each call).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import softxent as sx
from softxent import _blocks, _score

from conftest import (
    FLOAT_DTYPES,
    assert_close,
    logit_scale,
    random_logits,
    random_probs,
    torch_cross_entropy,
    torch_logsumexp,
    torch_softmax,
)


def run_everything(x, axis, seed=0):
    """Every public function on ``x`` (classes on ``axis``), as a dict of ndarrays."""
    rng = np.random.default_rng(seed)
    num_classes = x.shape[axis]
    batch = tuple(n for d, n in enumerate(x.shape) if d != axis % x.ndim)
    y = rng.integers(0, num_classes, size=batch)
    y = np.where(rng.random(batch) < 0.2, -100, y)
    t = random_probs(x.shape, axis, x.dtype, seed=seed + 1)
    w = rng.uniform(0.5, 2.0, num_classes)
    g = rng.standard_normal(batch)
    out = {
        "softmax": sx.softmax(x, axis=axis),
        "log_softmax": sx.log_softmax(x, axis=axis),
        "logsumexp": sx.logsumexp(x, axis=axis),
        "nll_loss": sx.nll_loss(x, y, axis=axis, weight=w, reduction="none"),
    }
    for reduction in ("none", "mean", "sum"):
        for name, target, kwargs in (
            ("index", y, dict(weight=w, label_smoothing=0.1)),
            ("plain", np.where(y < 0, 0, y), {}),
            ("prob", t, dict(label_smoothing=0.2)),
        ):
            key = f"ce-{name}-{reduction}"
            out[key] = sx.cross_entropy(x, target, axis=axis, reduction=reduction, **kwargs)
            loss, grad = sx.cross_entropy_with_grad(
                x,
                target,
                axis=axis,
                reduction=reduction,
                grad_output=g if reduction == "none" else None,
                **kwargs,
            )
            out[key + "-loss"] = loss
            out[key + "-grad"] = grad
    return {k: np.asarray(v) for k, v in out.items()}


def assert_bitwise_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert np.array_equal(a[key], b[key], equal_nan=True), key


def layouts(x):
    """``x`` in several memory layouts with the same values: (name, array) pairs."""
    yield "fortran", np.asfortranarray(x)
    big = np.zeros(tuple(2 * n + 1 for n in x.shape), x.dtype)
    sliced = big[(slice(1, None, 2),) * x.ndim]
    sliced[...] = x
    yield "sliced", sliced
    reversed_axes = tuple(reversed(range(x.ndim)))
    yield "transposed", np.ascontiguousarray(x.transpose(reversed_axes)).transpose(reversed_axes)
    yield "negative-stride", np.ascontiguousarray(x[..., ::-1])[..., ::-1]


# ------------------------------------------------------------------------------ layouts


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    ("shape", "axis"),
    [((6, 5), -1), ((6, 5), 0), ((3, 4, 5), 1), ((2, 3, 4, 5), 1), ((2, 3, 4, 5), 3)],
)
def test_layouts_give_the_same_results(shape, axis, dtype):
    x = random_logits(shape, dtype, seed=1)
    expected = run_everything(x, axis)
    for name, arranged in layouts(x):
        np.testing.assert_array_equal(arranged, x)
        got = run_everything(arranged, axis)
        for key in expected:
            scale = logit_scale(x) * (100 if key.endswith("sum") else 1)
            if key.endswith("grad"):
                scale = logit_scale(x) * float(np.nanmax(np.abs(expected[key])))
            try:
                assert_close(got[key], expected[key], expected[key].dtype, scale=scale)
            except AssertionError as error:
                raise AssertionError(f"{name} layout, {key}") from error


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3, 4, 5)])
@pytest.mark.parametrize("order", ["C", "F"])
def test_every_axis_matches_torch(shape, order, dtype):
    x = np.asarray(random_logits(shape, dtype, seed=len(shape)), order=order)
    rng = np.random.default_rng(0)
    for axis in range(-len(shape), len(shape)):
        scale = logit_scale(x)
        assert_close(sx.softmax(x, axis=axis), torch_softmax(x, axis), dtype, scale=scale)
        assert_close(
            sx.log_softmax(x, axis=axis), torch_softmax(x, axis, log=True), dtype, scale=scale
        )
        assert_close(sx.logsumexp(x, axis=axis), torch_logsumexp(x, axis), dtype, scale=scale)
        batch = tuple(n for d, n in enumerate(shape) if d != axis % len(shape))
        y = rng.integers(0, shape[axis], size=batch)
        w = rng.uniform(0.5, 2.0, shape[axis])
        kwargs = dict(axis=axis, weight=w, label_smoothing=0.1, reduction="none")
        loss, grad = sx.cross_entropy_with_grad(x, y, **kwargs)
        expected_loss, expected_grad = torch_cross_entropy(x, y, with_grad=True, **kwargs)
        assert_close(loss, expected_loss, dtype, scale=4 * scale)
        assert_close(grad, expected_grad, dtype, scale=4 * scale)


def test_every_axis_tuple_logsumexp_fortran():
    x = np.asfortranarray(random_logits((2, 3, 4, 5), np.float64, seed=3))
    for axis in [(0, 1), (1, 3), (0, 2, 3), (3, 0)]:
        assert_close(sx.logsumexp(x, axis=axis), torch_logsumexp(x, axis), np.float64, scale=10)


def test_broadcast_view_input():
    # A zero-stride view (np.broadcast_to) is read-only and repeats rows.
    row = random_logits((7,), np.float32, seed=4)
    x = np.broadcast_to(row, (5, 7))
    y = np.arange(5) % 7
    expected = run_everything(np.ascontiguousarray(x), -1)
    assert np.array_equal(sx.softmax(x), expected["softmax"])
    loss, grad = sx.cross_entropy_with_grad(x, y, reduction="none")
    assert_close(
        loss,
        sx.cross_entropy(np.ascontiguousarray(x), y, reduction="none"),
        np.float32,
        scale=logit_scale(row),
    )
    assert grad.shape == (5, 7) and grad.flags.writeable


# ------------------------------------------------------------------------ thread counts

CASES = [
    ((7, 3001), -1, np.float64),
    ((37, 5), -1, np.float32),
    ((5, 6, 7), 1, np.float32),
    ((4, 3, 2, 9), 0, np.float16),
    ((300, 17), 0, np.float64),
    ((150, 100), -1, np.float32),  # forward kernels: lanes across rows, 64-row tiles
]


@pytest.mark.parametrize(("shape", "axis", "dtype"), CASES)
@pytest.mark.parametrize("block_bytes", [None, 64, 1000])
def test_thread_count_does_not_change_bits(
    shape, axis, dtype, block_bytes, monkeypatch, restore_threads
):
    if block_bytes is not None:
        monkeypatch.setattr(_blocks, "BLOCK_BYTES", block_bytes)
    x = random_logits(shape, dtype, seed=5)
    sx.set_num_threads(1)
    assert sx.get_num_threads() == 1
    serial = run_everything(x, axis)
    for n in (2, 3):
        sx.set_num_threads(n)
        assert sx.get_num_threads() == n
        assert_bitwise_equal(run_everything(x, axis), serial)


@pytest.mark.parametrize(("shape", "axis", "dtype"), CASES)
@pytest.mark.parametrize("block_bytes", [64, 1000, 4096])
def test_block_size_does_not_change_bits(shape, axis, dtype, block_bytes, monkeypatch):
    x = random_logits(shape, dtype, seed=6)
    default = run_everything(x, axis)
    monkeypatch.setattr(_blocks, "BLOCK_BYTES", block_bytes)
    assert_bitwise_equal(run_everything(x, axis), default)


def score_everything(x, axis, seed=0, batch_bytes=2**30):
    """Everything :func:`softxent.score` reports for ``x``, as a dict of ndarrays."""
    rng = np.random.default_rng(seed)
    num_classes = x.shape[axis]
    batch = tuple(n for d, n in enumerate(x.shape) if d != axis % x.ndim)
    y = np.where(rng.random(batch) < 0.2, -100, rng.integers(0, num_classes, size=batch))
    w = rng.uniform(0.5, 2.0, num_classes)
    r = sx.score(x, y, axis=axis, weight=w, top_k=(1, 2, 3), per_sample=True,
                 batch_bytes=batch_bytes)  # fmt: skip
    out = {k: v for k, v in vars(r).items() if k not in ("top_k_accuracy", "nonfinite_treatment")}
    out.update({f"top-{k}": v for k, v in r.top_k_accuracy.items()})
    return {k: np.asarray(v) for k, v in out.items()}


@pytest.mark.parametrize(("shape", "axis", "dtype"), CASES)
def test_score_bits_do_not_depend_on_threads_or_blocks(shape, axis, dtype, monkeypatch,
                                                       restore_threads):  # fmt: skip
    x = random_logits(shape, dtype, seed=7)
    x.reshape(-1)[3] = 1000.0 if dtype != np.float16 else 200.0  # exp overflows: redone
    sx.set_num_threads(1)
    serial = score_everything(x, axis)
    for threads, block_bytes in [(2, None), (3, None), (1, 64), (3, 64), (2, 1000)]:
        sx.set_num_threads(threads)
        if block_bytes is not None:
            monkeypatch.setattr(_score, "_BLOCK_BYTES", block_bytes)
        assert_bitwise_equal(score_everything(x, axis), serial)
    # Batches of a few rows: the row values and counts are the same bits; the float64
    # sums over batches may round differently.
    batched = score_everything(x, axis, batch_bytes=3 * x.shape[axis] * x.itemsize)
    for key in ("per_sample", "bin_counts", "top-1", "top-2", "top-3", "n_nonfinite"):
        assert np.array_equal(batched[key], serial[key], equal_nan=True), key


def test_blocks_are_ragged_for_the_test_shapes(monkeypatch):
    # The cases above only test block boundaries if, with 64-byte blocks, there are several
    # blocks and the rows do not divide into whole blocks (float16 is computed in float32).
    monkeypatch.setattr(_blocks, "BLOCK_BYTES", 64)
    for rows, num_classes, itemsize in [(37, 5, 4), (35, 6, 4), (54, 4, 4)]:
        per_block = _blocks.rows_per_block(num_classes, itemsize)
        assert 1 < per_block < rows and rows % per_block != 0
    assert _blocks.rows_per_block(3001, 8) == 1  # a row bigger than a block: one row each
    assert _blocks.rows_per_block(300, 8) == 1


@pytest.mark.parametrize("threads", [1, 3])
def test_concurrent_calls_give_serial_bits(threads, monkeypatch, restore_threads):
    monkeypatch.setattr(_blocks, "BLOCK_BYTES", 2048)  # many blocks per call
    sx.set_num_threads(threads)
    inputs = [
        (random_logits((23, 40), np.float32, seed=s), -1)
        if s % 2
        else (random_logits((3, 11, 13), np.float64, seed=s), 1)
        for s in range(8)
    ]
    serial = [run_everything(x, axis, seed=i) for i, (x, axis) in enumerate(inputs)]
    barrier = threading.Barrier(4)

    def call(i):
        if i < 4:
            barrier.wait()  # start the first four together
        x, axis = inputs[i % len(inputs)]
        return i % len(inputs), run_everything(x, axis, seed=i % len(inputs))

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(call, range(16)))
    for i, got in results:
        assert_bitwise_equal(got, serial[i])


def test_set_num_threads_round_trip(restore_threads):
    sx.set_num_threads(3)
    assert sx.get_num_threads() == 3
    sx.set_num_threads(1)
    assert sx.get_num_threads() == 1


def _threads_in_subprocess(value: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SOFTXENT_NUM_THREADS=value)
    code = (
        "import os, softxent, softxent._threads\n"
        "print(softxent.get_num_threads(), len(os.sched_getaffinity(0)))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )


def test_num_threads_from_environment():
    result = _threads_in_subprocess("3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "3" and not result.stderr


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs os.sched_getaffinity")
@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", " "])
def test_bad_num_threads_environment_warns_once_and_uses_the_default(value):
    """Issue 15: a bad setting never makes ``import softxent`` fail."""
    result = _threads_in_subprocess(value)
    assert result.returncode == 0, result.stderr
    threads, cpus = result.stdout.split()
    assert threads == cpus
    assert result.stderr.count("RuntimeWarning") == 1, result.stderr
    assert f"SOFTXENT_NUM_THREADS={value!r} is not a positive integer" in result.stderr
    assert "using the default" in result.stderr

"""softxent.score: parity with torch and a float64 reference, streaming, memory, bad input."""

from __future__ import annotations

import math
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import softxent as sx

from conftest import (
    FLOAT_DTYPES,
    assert_close,
    logit_scale,
    random_logits,
    rtol_for,
    torch_cross_entropy,
)

DEMO_LOGITS = np.array([[0.3, 0.1, 0.3], [0.9, 0.2, 0.9], [0.5, 0.4, 0.2]], np.float32)
DEMO_TARGETS = np.array([1, 2, 0])


# ------------------------------------------------------------------ float64 reference


def reference(x, y, *, axis=-1, ignore_index=-100, weight=None, top_k=(1, 5), bins=15):
    """Everything score reports, row by row in float64 (no blocks, no threads)."""
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    C = x.shape[-1]
    x = x.reshape(-1, C)
    y = np.asarray(y).reshape(-1)
    valid = y != ignore_index
    yy = np.where(valid, y, 0)
    m = x.max(axis=1, keepdims=True)
    with np.errstate(all="ignore"):
        lse = np.log(np.exp(x - m).sum(axis=1)) + m[:, 0]
        nll = lse - x[np.arange(len(yy)), yy]
        conf = np.exp(m[:, 0] - lse)
    keep = valid & np.isfinite(nll)
    w = np.ones(C) if weight is None else np.asarray(weight, np.float64)
    wy = w[yy[keep]]
    ce = float(np.sum(wy * nll[keep]) / np.sum(wy)) if keep.any() else math.nan
    rank = np.array([np.sum(row >= row[t]) - 1 for row, t in zip(x, yy, strict=True)])
    rank = rank[keep]
    n = int(keep.sum())
    acc = {k: (float(np.mean(rank < k)) if n else math.nan) for k in top_k}
    c = conf[keep]
    b = np.minimum(np.floor(c * bins).astype(int), bins - 1)
    ece = 0.0
    counts = np.zeros(bins, np.int64)
    for i in range(bins):
        sel = b == i
        counts[i] = sel.sum()
        if sel.any():
            ece += sel.sum() / n * abs(np.mean(rank[sel] == 0) - np.mean(c[sel]))
    return {
        "ce": ce,
        "acc": acc,
        "ece": ece if n else math.nan,
        "counts": counts,
        "n_ignored": int((~valid).sum()),
        "n_nonfinite": int((valid & ~np.isfinite(nll)).sum()),
        "mean_conf": float(np.mean(c)) if n else math.nan,
    }


def check_against_reference(r: sx.ScoreResult, ref: dict, dtype, scale=1.0) -> None:
    tol = rtol_for(dtype)
    assert r.n_ignored == ref["n_ignored"]
    assert r.n_nonfinite == ref["n_nonfinite"]
    np.testing.assert_allclose(r.cross_entropy, ref["ce"], rtol=tol, atol=tol * scale)
    assert r.top_k_accuracy == pytest.approx(ref["acc"], nan_ok=True)
    np.testing.assert_array_equal(r.bin_counts, ref["counts"])
    np.testing.assert_allclose(r.ece, ref["ece"], rtol=tol, atol=tol)
    np.testing.assert_allclose(r.mean_confidence, ref["mean_conf"], rtol=tol, atol=tol)


# ---------------------------------------------------------------------------- values


def test_demo_example_matches_the_study_note():
    r = sx.score(DEMO_LOGITS, DEMO_TARGETS, per_sample=True)
    assert r.n_samples == 3 and r.n_scored == 3
    np.testing.assert_allclose(r.cross_entropy, 1.0413765907287598, rtol=2e-6)
    np.testing.assert_allclose(r.cross_entropy_bits, r.cross_entropy / math.log(2), rtol=1e-15)
    np.testing.assert_allclose(r.perplexity, math.exp(r.cross_entropy), rtol=1e-15)
    np.testing.assert_allclose(
        r.per_sample, [1.23628676, 0.91492397, 0.97291893], rtol=2e-6, atol=2e-6
    )
    # Row 1 ties classes 0 and 2 at the max: ties count against the target, so only row 2
    # is top-1 correct; with 3 classes top-5 is trivially 1.
    assert r.top_k_accuracy == {1: pytest.approx(1 / 3), 5: 1.0}
    check_against_reference(r, reference(DEMO_LOGITS, DEMO_TARGETS), np.float32)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_torch_cross_entropy(dtype, weighted):
    x = random_logits((300, 17), dtype, seed=3)
    y = np.random.default_rng(4).integers(0, 17, 300)
    y[::9] = -100
    weight = np.random.default_rng(5).random(17) + 0.1 if weighted else None
    r = sx.score(x, y, weight=weight, per_sample=True, batch_bytes=1000)
    w_t = None if weight is None else weight.astype(x.dtype)
    mean = torch_cross_entropy(x, y, weight=w_t, out_dtype=np.float64)
    none = torch_cross_entropy(x, y, weight=w_t, reduction="none")
    scale = logit_scale(x)
    assert_close(r.per_sample, none, dtype, scale=scale)
    np.testing.assert_allclose(
        r.cross_entropy, mean, rtol=rtol_for(dtype), atol=rtol_for(dtype) * scale
    )
    check_against_reference(r, reference(x, y, weight=weight), dtype, scale)


def test_per_sample_equals_cross_entropy_none():
    x = random_logits((2, 40, 9), np.float32, seed=6)
    y = np.random.default_rng(7).integers(-1, 9, (2, 9))
    r = sx.score(x, y, axis=1, ignore_index=-1, per_sample=True, batch_bytes=700)
    ref = sx.cross_entropy(x, y, axis=1, ignore_index=-1, reduction="none")
    assert r.per_sample.shape == ref.shape and r.per_sample.dtype == ref.dtype
    assert_close(r.per_sample, ref, np.float32, scale=logit_scale(x))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("classes", [10, 300, 3001])
@pytest.mark.parametrize("weighted", [False, True])
def test_per_sample_losses_are_cross_entropys_bits(dtype, classes, weighted, monkeypatch):
    # score runs the NumPy cross-entropy kernel's log-sum-exp, so its per-sample losses are
    # the bits of cross_entropy on the NumPy kernels, also for wide rows (their exponentials
    # unshifted) and for a row that is redone shifted (a logit too large for exp). (The
    # native kernels agree within float rounding: tests/test_native.py.)
    from softxent import _native

    monkeypatch.setattr(_native, "core", None)
    rng = np.random.default_rng(40)
    x = random_logits((70, classes), dtype, seed=41)
    x[3, 5] = 1000.0 if dtype != np.float16 else 200.0
    x[4, :] = -np.inf
    x[4, 1] = 0.5
    y = rng.integers(0, classes, 70)
    y[::7] = -100
    weight = rng.uniform(0.5, 2.0, classes) if weighted else None
    r = sx.score(x, y, weight=weight, per_sample=True, batch_bytes=20 * classes)
    ce = sx.cross_entropy(x, y, weight=weight, reduction="none")
    assert r.per_sample.dtype == ce.dtype
    np.testing.assert_array_equal(r.per_sample, ce)


def test_top_k_matches_torch_topk_without_ties():
    import torch

    x = random_logits((500, 50), np.float64, seed=8)
    y = np.random.default_rng(9).integers(0, 50, 500)
    r = sx.score(x, y, top_k=(1, 3, 10, 50, 60))
    top = torch.topk(torch.from_numpy(x), 10, dim=1).indices.numpy()
    for k in (1, 3, 10):
        expected = np.mean((top[:, :k] == y[:, None]).any(axis=1))
        assert r.top_k_accuracy[k] == pytest.approx(expected, abs=1e-15)
    assert r.top_k_accuracy[50] == 1.0 and r.top_k_accuracy[60] == 1.0


def test_ties_count_against_the_target():
    x = np.array([[2.0, 2.0, 1.0], [2.0, 2.0, 1.0], [1.0, 1.0, 1.0], [3.0, 1.0, 1.0]])
    r = sx.score(x, [0, 1, 2, 0], top_k=(1, 2, 3))
    # rank = other classes with a logit >= the target's: 1, 1, 2, 0
    assert r.top_k_accuracy == {1: 0.25, 2: 0.75, 3: 1.0}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rank_shortcuts_match_the_full_count(dtype):
    # Wide rows take the shortcuts: confident targets (p > 0.75) skip the count, and rows
    # beaten by k others within the first columns skip the rest. Mix in every case.
    rng = np.random.default_rng(20)
    rows, classes = 400, 700
    x = rng.standard_normal((rows, classes))
    y = rng.integers(0, classes, rows)
    r = np.arange(rows)
    order = np.argsort(-x, axis=1, kind="stable")
    x[r[:100], y[:100]] += 12.0  # confident
    y[100:200] = order[r[100:200], 1 + r[100:200] % 6]  # ranks 1..6: near the top-k borders
    y[200:230] = order[200:230, 0]  # the max itself
    x[r[230:260], 3] = x[r[230:260], y[230:260]]  # ties with an early column
    y[260:290] = rng.integers(0, 40, 30)  # targets inside the prefix
    y[290:330] = 5  # rank exactly 9, all 9 winners inside the prefix: decided by the count
    x[290:330, 5] = 6.0
    x[290:330, 10:19] = 7.0
    y[330:360] = 600  # p_y about 0.45 but rank 1: not confident enough to skip counting
    x[330:360, 50] = 12.0
    x[330:360, 600] = 11.8
    x = x.astype(dtype)
    ks = (1, 2, 3, 5, 10)
    res = sx.score(x, y, top_k=ks)
    ref = reference(x, y, top_k=ks)
    assert res.top_k_accuracy == pytest.approx(ref["acc"])
    check_against_reference(res, ref, dtype, logit_scale(x))


def test_ece_of_a_perfectly_calibrated_bin_is_zero():
    # Two classes; each row's max probability is exactly 0.75 and 3 of 4 rows are right.
    a = math.log(3.0)
    x = np.array([[a, 0.0]] * 4)
    r = sx.score(x, [0, 0, 0, 1], bins=4, top_k=1)
    np.testing.assert_array_equal(r.bin_counts, [0, 0, 0, 4])  # 0.75 is in [0.75, 1]
    assert r.ece == pytest.approx(0.0, abs=1e-15)
    assert r.bin_accuracy[3] == 0.75 and r.bin_confidence[3] == pytest.approx(0.75)
    assert np.isnan(r.bin_accuracy[0]) and np.isnan(r.bin_confidence[0])


# ----------------------------------------------------------- streaming == in memory


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((50, 7), -1), ((6, 7, 9), 1), ((7, 4, 6), 0), ((3, 5, 4, 6), 2), ((7,), 0)],
)
@pytest.mark.parametrize("batch_bytes", [1, 100, 333, 2**30])
def test_blocks_do_not_change_the_result(shape, axis, batch_bytes):
    x = random_logits(shape, np.float64, seed=10)
    batch = x.shape[: axis % x.ndim] + x.shape[axis % x.ndim + 1 :]
    y = np.random.default_rng(11).integers(-1, x.shape[axis], batch)
    kw = dict(axis=axis, ignore_index=-1, per_sample=True, top_k=(1, 2))
    whole = sx.score(x, y, batch_bytes=2**40, **kw)
    r = sx.score(x, y, batch_bytes=batch_bytes, **kw)
    # Row-wise numbers are identical up to float rounding of BLAS row sums; counts exact.
    assert_close(r.per_sample, whole.per_sample, np.float64, scale=logit_scale(x))
    np.testing.assert_allclose(r.cross_entropy, whole.cross_entropy, rtol=1e-12)
    assert r.top_k_accuracy == whole.top_k_accuracy
    np.testing.assert_array_equal(r.bin_counts, whole.bin_counts)
    np.testing.assert_allclose(r.ece, whole.ece, rtol=1e-12, atol=1e-15)
    check_against_reference(r, reference(x, y, axis=axis, ignore_index=-1, top_k=(1, 2)),
                            np.float64, logit_scale(x))  # fmt: skip


@settings(max_examples=20, deadline=None)
@given(
    rows=st.integers(0, 40),
    classes=st.integers(1, 9),
    batch_bytes=st.integers(1, 600),
    layout=st.sampled_from(["C", "F", "transposed"]),
    seed=st.integers(0, 2**16),
)
def test_streaming_matches_reference_property(rows, classes, batch_bytes, layout, seed):
    x = random_logits((rows, classes), np.float64, seed=seed)
    axis = -1
    if layout == "F":
        x = np.asfortranarray(x)
    elif layout == "transposed":
        x, axis = np.ascontiguousarray(x.T), 0
    y = np.random.default_rng(seed).integers(-1, classes, rows)
    r = sx.score(x, y, axis=axis, ignore_index=-1, top_k=(1, 2), bins=5, batch_bytes=batch_bytes)
    assert r.n_samples == rows
    ref = reference(x, y, axis=axis, ignore_index=-1, top_k=(1, 2), bins=5)
    check_against_reference(r, ref, np.float64, logit_scale(x))


def test_memmap_stays_under_batch_bytes(tmp_path):
    path = tmp_path / "big.npy"
    rows, classes = 10_000, 1000  # 40 MB of float32, 10x the block
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, classes))
    rng = np.random.default_rng(12)
    for lo in range(0, rows, 1000):
        mm[lo : lo + 1000] = rng.standard_normal((1000, classes), dtype=np.float32)
    mm.flush()
    del mm
    y = rng.integers(0, classes, rows)
    batch_bytes = 4 * 2**20
    x = np.load(path, mmap_mode="r")
    tracemalloc.start()
    try:
        r = sx.score(x, y, batch_bytes=batch_bytes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # slack: per-thread scratch chunks (1 MiB each) and per-block row arrays
    slack = 2**20 + sx.get_num_threads() * 1100 * 1024
    assert peak < batch_bytes + slack, f"peak {peak / 2**20:.1f} MiB"
    assert r.n_samples == rows
    # Same numbers as the in-memory computation on the first rows (float32: BLAS row sums
    # may round differently for different block shapes).
    head = sx.score(np.array(x[:2000]), y[:2000])
    head_mm = sx.score(x[:2000], y[:2000], batch_bytes=300_000)
    np.testing.assert_allclose(head_mm.cross_entropy, head.cross_entropy, rtol=2e-6)
    assert head_mm.top_k_accuracy == head.top_k_accuracy


def test_strided_memmap_copies_at_most_one_block(tmp_path):
    # Classes on axis 0 of a C-ordered file: blocks are column slices, copied to rows.
    path = tmp_path / "cn.npy"
    x = random_logits((100, 3000), np.float32, seed=13)
    np.save(path, x)
    y = np.random.default_rng(14).integers(0, 100, 3000)
    mm = np.load(path, mmap_mode="r")
    batch_bytes = 2**18
    tracemalloc.start()
    try:
        r = sx.score(mm, y, axis=0, batch_bytes=batch_bytes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < batch_bytes + 2**20 + sx.get_num_threads() * 1100 * 1024
    whole = sx.score(np.ascontiguousarray(x.T), y)
    np.testing.assert_allclose(r.cross_entropy, whole.cross_entropy, rtol=2e-6)


def test_writable_memmap_keeps_unflushed_changes(tmp_path):
    # Pages are only released for read-only mappings: a copy-on-write or r+ mapping keeps
    # the caller's in-memory changes.
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((64, 1024), np.float32))
    for mode in ("r+", "c"):
        mm = np.load(path, mmap_mode=mode)
        mm[:, 5] = 50.0
        y = np.full(64, 5)
        sx.score(mm, y, batch_bytes=4096)
        assert (mm[:, 5] == 50.0).all()
        assert sx.score(mm, y).top_k_accuracy[1] == 1.0
        del mm


# --------------------------------------------------------------- special values


def test_nonfinite_rows_are_excluded_and_counted():
    x = random_logits((8, 5), np.float32, seed=15)
    y = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    x[1, 3] = np.nan
    x[2, 0] = np.inf
    x[3, 3] = -np.inf  # the target: zero probability, infinite loss
    x[4, 0] = -np.inf  # another class: an ordinary zero probability
    x[5] = -np.inf  # every class
    y[6] = -100  # ignored rows never count as non-finite
    x[6] = np.nan
    r = sx.score(x, y, per_sample=True)
    assert (r.n_samples, r.n_ignored, r.n_nonfinite, r.n_scored) == (8, 1, 4, 3)
    assert r.nonfinite_treatment == "excluded"
    keep = np.array([0, 4, 7])
    clean = sx.score(x[keep], y[keep])
    assert r.cross_entropy == pytest.approx(clean.cross_entropy, rel=1e-12)
    assert r.top_k_accuracy == clean.top_k_accuracy and r.ece == pytest.approx(clean.ece)
    # per-sample losses keep torch's values, NaN and inf included
    assert_close(r.per_sample, torch_cross_entropy(x, y, reduction="none"), np.float32,
                 scale=logit_scale(x))  # fmt: skip


def assert_nothing_scored(r):
    """Every metric NaN (null in JSON), every bin empty."""
    metrics = [r.cross_entropy, r.cross_entropy_bits, r.perplexity, r.ece, r.mean_confidence]
    assert all(math.isnan(m) for m in [*metrics, *r.top_k_accuracy.values()]), r
    assert not r.bin_counts.any()
    assert np.isnan(r.bin_confidence).all() and np.isnan(r.bin_accuracy).all()
    d = r.to_dict()
    assert d["cross_entropy"] is None and d["ece"] is None and d["mean_confidence"] is None
    assert all(v is None for v in d["top_k_accuracy"].values())
    assert all(b["confidence"] is None and b["accuracy"] is None for b in d["bins"])


def test_nothing_to_score_gives_nan_for_every_metric():
    """Issue 15: all ignored, an empty input, all non-finite and zero total target weight."""
    all_ignored = sx.score(DEMO_LOGITS, [-100, -100, -100])
    assert all_ignored.n_scored == 0
    empty = sx.score(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert empty.n_samples == 0
    nonfinite = sx.score(np.full((2, 3), np.nan, np.float32), [0, 1])
    assert nonfinite.n_nonfinite == 2
    zero_weight = sx.score(DEMO_LOGITS, DEMO_TARGETS, weight=[0.0, 0.0, 0.0])
    assert zero_weight.n_scored == 3 and zero_weight.weighted
    for r in (all_ignored, empty, nonfinite, zero_weight):
        assert_nothing_scored(r)
    some_weight = sx.score(DEMO_LOGITS, DEMO_TARGETS, weight=[0.0, 0.0, 1.0])
    assert some_weight.top_k_accuracy[1] == pytest.approx(1 / 3)  # accuracy counts rows


def test_in_range_ignore_index_removes_only_those_rows():
    x = random_logits((20, 4), np.float64, seed=16)
    y = np.random.default_rng(17).integers(0, 4, 20)
    r = sx.score(x, y, ignore_index=2)
    keep = y != 2
    assert r.n_ignored == int((~keep).sum())
    # class 2 still takes part in the other rows' softmax
    assert r.cross_entropy == pytest.approx(float(sx.cross_entropy(x, y, ignore_index=2)))


def test_to_dict_is_json_ready():
    import json

    d = sx.score(DEMO_LOGITS, DEMO_TARGETS, bins=3).to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text)["top_k_accuracy"]["1"] == pytest.approx(1 / 3)
    assert [b["count"] for b in d["bins"]] == [0, 3, 0]


def test_result_is_frozen():
    r = sx.score(DEMO_LOGITS, DEMO_TARGETS)
    with pytest.raises(AttributeError):
        r.cross_entropy = 0.0  # type: ignore[misc]


def test_progress_reports_every_row():
    seen = []
    x = random_logits((103, 8), np.float32, seed=18)
    sx.score(x, np.zeros(103, int), batch_bytes=8 * 4 * 10, progress=seen.append)
    assert sum(seen) == 103 and len(seen) == 11


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(logits=np.ones((3, 3), np.int64)), TypeError, "logits must be a floating"),
        (dict(target=np.array([1.0, 2.0, 0.0])), TypeError, "probability targets are not"),
        (dict(target=np.array([True, False, True])), TypeError, "integer class ids"),
        (dict(target=np.array([1, 2])), ValueError, r"target must have shape \(3,\)"),
        (dict(target=np.array([1, 3, 0])), ValueError, r"target\[1\] = 3 is out of range"),
        (dict(target=np.array([1, -5, 0])), ValueError, r"target\[1\] = -5 is out of range"),
        (dict(logits=np.float32(1.0), target=0), ValueError, "at least 1 dimension"),
        (dict(logits=np.ones((3, 0), np.float32)), ValueError, "empty class axis"),
        (dict(axis=2), ValueError, "axis=2 is out of range"),
        (dict(top_k=(1, 0)), ValueError, "top_k must be >= 1"),
        (dict(top_k=1.5), TypeError, "top_k must be a positive int"),
        (dict(bins=0), ValueError, "bins must be >= 1"),
        (dict(batch_bytes=0), ValueError, "batch_bytes must be >= 1"),
        (dict(weight=[1.0, 2.0]), ValueError, r"weight must have shape \(3,\)"),
        (dict(weight=[1.0, np.inf, 1.0]), ValueError, "weight must be finite"),
    ],
)
def test_bad_input_names_the_argument(kwargs, error, match):
    args = dict(logits=DEMO_LOGITS, target=DEMO_TARGETS)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        sx.score(args.pop("logits"), args.pop("target"), **args)


def test_out_of_range_target_names_its_global_position():
    x = random_logits((1000, 3), np.float32)
    y = np.zeros(1000, int)
    y[777] = 9
    with pytest.raises(ValueError, match=r"target\[777\] = 9"):
        sx.score(x, y, batch_bytes=64)


def test_float16_per_sample_loss_overflows_to_inf_silently():
    # torch's float16 loss is inf here, without a warning; NumPy's cast used to warn.
    x = np.array([[-60000.0, 60000.0], [0.0, 1.0]], np.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = sx.score(x, [0, 1], per_sample=True)
    assert r.per_sample.dtype == np.float16
    assert r.per_sample[0] == np.inf and np.isfinite(r.per_sample[1])

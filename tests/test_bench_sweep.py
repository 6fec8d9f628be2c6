"""``softxent bench --sweep``: its shapes, ns per logit, the spread and its flag, the
``softxent_numpy`` column and the sweep's plot. Never asserts on times."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import softxent as sx
from softxent import _native
from softxent._bench import peers as peers_module
from softxent._bench.render import format_report, time_table
from softxent._bench.runner import Report, Row
from softxent._bench.suites import OPS, make_inputs, make_logits, sweep_groups
from softxent._bench.timing import Timing, is_noisy
from softxent.cli import main

from conftest import pretend_missing

NATIVE = pytest.mark.skipif(_native.core is None, reason="the native kernels are not built")
SHAPE_OPS = [name for name, op in OPS.items() if not op.demo]


@pytest.fixture
def numpy_peers_only(monkeypatch):
    """Keeps a whole sweep to seconds: JAX compiles every function at every shape, and on
    a loaded machine torch's spinning intra-op threads make each call cost milliseconds.
    Both peers' results are checked against softxent's in test_bench.py."""
    pretend_missing(monkeypatch, "jax", "torch")


def sweep(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(["bench", "--sweep", "--quick", "--repeat", "1", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# --------------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--shape", "8x40"),
        ("--dtype", "float64"),
        ("--suite", "linear"),
        ("--linear-shape", "8x4x40"),
    ],
)
def test_sweep_conflicts_name_both_flags(capsys, flag, value):
    status, out, err = sweep(capsys, flag, value)
    assert status == 2
    assert out == ""  # rejected before anything ran
    assert "--sweep" in err and flag in err and "cannot be combined" in err


def test_blank_shape_is_not_a_conflict_and_demo_only_plot_is_refused(capsys, tmp_path):
    status, _, err = sweep(
        capsys, "--shape", "", "--ops", "demo_cross_entropy", "--plot", str(tmp_path / "p.png")
    )
    assert status == 2
    assert "cannot be combined" not in err and "--plot" in err and "demo" in err
    assert not (tmp_path / "p.png").exists()


def test_sweep_shapes_keep_their_class_counts_when_quick():
    full, quick = sweep_groups(quick=False), sweep_groups(quick=True)
    assert [(s, d) for s, d in full if d == "float32"] == [
        ((1_000_000, 10), "float32"),
        ((262_144, 32), "float32"),
        ((65_536, 100), "float32"),
        ((16_384, 1000), "float32"),
        ((4096, 32_000), "float32"),
        ((256, 262_144), "float32"),
    ]
    assert [(s, d) for s, d in full if d != "float32"] == [
        ((4096, 32_000), "float16"),
        ((4096, 32_000), "float64"),
    ]
    assert [(s[1], d) for s, d in quick] == [(s[1], d) for s, d in full]
    for (n, c), _ in quick:
        assert n == max(1, round(1e5 / c))


# --------------------------------------------------------------------------- the run


def test_quick_sweep_json_has_every_shape_and_op(capsys, numpy_peers_only):
    status, out, err = sweep(capsys, "--json")
    assert status == 0, err
    doc = json.loads(out)
    assert doc["sweep"] is True
    cases = [(r["op"], tuple(r["shape"]), r["dtype"]) for r in doc["rows"]]
    expected = [
        (op, shape, dtype) for shape, dtype in sweep_groups(quick=True) for op in SHAPE_OPS
    ]
    assert cases == expected  # no demo rows: their 3x3 does not follow the sweep
    fallback = _native.core is not None
    assert ("softxent_numpy" in doc["peers"]) is fallback
    for row in doc["rows"]:
        times = row["times_s"]
        assert row["errors"] == {}, row["errors"]
        assert "softxent" in times and ("softxent_numpy" in times) is fallback
        assert set(row["ns_per_logit"]) == set(row["spread_s"]) == set(row["noisy"]) == set(times)
        logits = row["shape"][0] * row["shape"][1]
        for name, seconds in times.items():
            assert math.isclose(row["ns_per_logit"][name], seconds * 1e9 / logits, rel_tol=1e-12)
            assert row["spread_s"][name] == [seconds, seconds]  # --repeat 1: one sample
            assert row["noisy"][name] is False
    assert {(tuple(f["shape"]), f["dtype"]) for f in doc["floors"]} == set(
        sweep_groups(quick=True)
    )


def test_sweep_respects_ops_and_prints_ns_per_logit_with_the_kernels(capsys, numpy_peers_only):
    status, out, err = sweep(capsys, "--ops", "softmax,demo_cross_entropy")
    assert status == 0, err
    lines = out.splitlines()
    kernels = _native.kernels()
    ran = "the NumPy fallback" if kernels == "numpy" else f"native, {kernels}"
    title = next(line for line in lines if line.startswith("Sweep: ns per logit"))
    assert f"softxent kernels: {ran}" in title
    start = lines.index(title)
    header = lines[start + 1].split()
    assert header[:4] == ["operation", "shape", "dtype", "softxent"]
    assert "ns/logit" not in header  # every figure is per logit already
    body = lines[start + 3 : lines.index("", start)]
    assert [line.split()[0] for line in body] == ["softmax"] * 8 + ["demo_cross_entropy"]


# --------------------------------------------------------------------------- spread


def _report(rows: list[Row], *, sweep: bool) -> Report:
    return Report(
        threads=1,
        repeat=3,
        warmup=1,
        machine={"kernels": "x86-64-v3"},
        versions={},
        peers=["torch"],
        skipped={},
        floors=[],
        rows=rows,
        sweep=sweep,
    )


def test_noisy_flag_is_max_over_min_above_one_and_a_half():
    # Fabricated samples: this tests the flag's rule, not any timing.
    assert not is_noisy(1.0, 1.5)
    assert is_noisy(1.0, 1.51)
    assert Timing.of([2.0, 1.0, 4.0]) == Timing(median=2.0, fastest=1.0, slowest=4.0)
    row = Row("softmax", (4, 250), "float32", "copy", 1e-3)
    row.times = {"softxent": 2e-3, "torch": 4e-3}
    row.spread = {"softxent": (1.9e-3, 2.8e-3), "torch": (3e-3, 4.6e-3)}
    assert row.noisy == {"softxent": False, "torch": True}
    assert row.ns_per_logit == pytest.approx({"softxent": 2000.0, "torch": 4000.0})
    for sweep_mode in (False, True):
        report = _report([row], sweep=sweep_mode)
        cells = time_table(report)[2].split()
        flagged = [c for c in cells if c.endswith("!")]
        assert flagged == (["4000!"] if sweep_mode else ["ms!"])  # torch's figure only
        text = " ".join(format_report(report).split())  # unwrapped
        assert "!: noisy figure" in text
        assert "torch on softmax 4x250 float32: 3.00 ms to 4.60 ms" in text
        assert "softxent on softmax" not in text


def test_normal_table_has_softxent_ns_per_logit(capsys, numpy_peers_only):
    status = main(["bench", "--quick", "--repeat", "1", "--shape", "10x100", "--ops", "softmax"])
    out = capsys.readouterr().out
    assert status == 0
    header, _, body = out.splitlines()[1:4]
    assert header.split()[3:5] == ["softxent", "ns/logit"]
    float(body.split()[5])  # a number, after softxent's "12.3 us"
    assert "!: noisy figure" not in out  # one sample: no spread


# --------------------------------------------------------------------------- fallback


@NATIVE
def test_fallback_column_runs_softxent_on_the_numpy_kernels(monkeypatch):
    seen = []
    real = sx.softmax

    def spy(x):
        seen.append(_native.core is None)
        return real(x)

    monkeypatch.setattr(sx, "softmax", spy)
    x, y = make_logits((6, 11), "float64")
    inputs = make_inputs(OPS["softmax"], x, y)
    core = _native.core
    got = peers_module.FallbackPeer().call(OPS["softmax"], inputs).fn()
    assert seen == [True] and _native.core is core  # switched off for the call only
    np.testing.assert_allclose(got, real(x), rtol=1e-12, atol=0)

    def boom(x):
        raise RuntimeError("boom")

    monkeypatch.setattr(sx, "softmax", boom)
    with pytest.raises(RuntimeError):
        peers_module.FallbackPeer().call(OPS["softmax"], inputs).fn()
    assert _native.core is core  # restored after a failure too


@NATIVE
def test_with_fallback_adds_the_column_to_the_normal_suite(capsys, tmp_path, numpy_peers_only):
    path = tmp_path / "b.json"
    argv = ["--shape", "8x40", "--ops", "cross_entropy_with_grad_out,demo_cross_entropy"]
    status = main(
        ["bench", "--quick", "--repeat", "1", "--with-fallback", *argv, "--json-out", str(path)]
    )
    out = capsys.readouterr().out
    assert status == 0
    doc = json.loads(path.read_text())
    assert doc["peers"][0] == "softxent_numpy" and doc["sweep"] is False
    assert "softxent_numpy" not in doc["versions"]
    for row in doc["rows"]:
        assert "softxent_numpy" in row["times_s"] and row["errors"] == {}
        assert isinstance(row["memory_bytes"]["softxent_numpy"], int)
    assert "softxent_numpy: softxent's same calls on its NumPy fallback kernels" in out


def test_fallback_is_skipped_with_a_note_when_softxent_already_runs_numpy(
    capsys, monkeypatch, numpy_peers_only
):
    monkeypatch.setattr(_native, "core", None)  # as with SOFTXENT_NATIVE=0
    status = main(["bench", "--quick", "--repeat", "1", "--with-fallback", "--ops", "softmax"])
    out = capsys.readouterr().out
    assert status == 0
    assert "softxent_numpy skipped: softxent already runs its NumPy kernels here" in out
    header = next(line for line in out.splitlines() if line.startswith("operation"))
    assert "softxent_numpy" not in header


# --------------------------------------------------------------------------- plot


def test_sweep_plot_writes_a_png(capsys, tmp_path, numpy_peers_only):
    pytest.importorskip("matplotlib")
    path = tmp_path / "sweep.png"
    status, _, err = sweep(capsys, "--ops", "softmax,cross_entropy", "--plot", str(path))
    assert status == 0, err
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.png"]

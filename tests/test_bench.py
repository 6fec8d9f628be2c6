"""``softxent bench``: the tables, the JSON schema, the plot, skipped and failing peers, bad
flags, and that every peer computes what softxent computes. Never asserts on times."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import time

import numpy as np
import pytest

import softxent as sx
from softxent import _native
from softxent._bench import peers as peers_module
from softxent._bench.suites import OPS, Case, make_inputs, make_logits, softxent_call
from softxent._bench.timing import median_seconds, peak_extra_bytes
from softxent.cli import main

from conftest import pretend_missing

pytest.importorskip("torch")

SHAPE = "8x40"  # one tiny shape everywhere, so JAX compiles each function once per dtype
FAST_OPS = "cross_entropy,softmax,logsumexp,demo_cross_entropy"


def bench(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(["bench", "--quick", "--repeat", "1", "--shape", SHAPE, *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def table(out: str, title: str) -> list[list[str]]:
    """The rows (header first) of the table under ``title``, cut where its dashes are."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title)) + 1
    spans = [m.span() for m in re.finditer(r"-+", lines[start + 1])]
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        if line.startswith("-"):
            continue
        rows.append([line[a:b].strip() for a, b in spans])  # cells are padded to the dashes
    return rows


def test_time_and_memory_tables(capsys):
    status, out, err = bench(capsys, "--ops", FAST_OPS)
    assert status == 0, err
    times = table(out, "Time (median)")
    header = times[0]
    assert header[:4] == ["operation", "shape", "dtype", "softxent"]
    assert header[-1] == "vs floor"
    assert {"torch", "numpy"} <= set(header)
    body = times[1:]
    assert [r[0] for r in body] == FAST_OPS.split(",")
    assert all(r[1] == "8x40" and r[2] == "float32" for r in body[:3])
    assert body[3][1] == "3x3"  # the demo case ignores --shape
    assert body[0][-1].endswith("read") and body[1][-1].endswith("copy")
    memory = table(out, "Peak extra memory")
    assert memory[0][:5] == ["operation", "shape", "dtype", "logits", "softxent"]
    assert len(memory) == len(times)
    assert "Floors 8x40 float32: read" in out


def _check_schema(doc: dict) -> None:
    """The JSON schema of docs/bench.md, checked key by key."""
    number = (int, float)
    assert doc["schema"] == "softxent-bench/1"
    assert isinstance(doc["created"], str)
    for key in ("platform", "machine", "processor", "python", "cpu_count", "usable_cpus"):
        assert key in doc["machine"]
    assert doc["machine"]["kernels"] == _native.kernels()
    # The test extra installs threadpoolctl, so the BLAS and its kernel are recorded.
    assert doc["machine"]["blas"].startswith("numpy: "), doc["machine"]["blas"]
    assert isinstance(doc["versions"]["softxent"], str)
    assert isinstance(doc["versions"]["numpy"], str)
    for key in ("threads", "repeat", "warmup"):
        assert isinstance(doc[key], int) and doc[key] >= 1
    assert all(isinstance(p, str) for p in doc["peers"])
    assert all(isinstance(v, str) for v in doc["skipped"].values())
    for floor in doc["floors"]:
        assert set(floor) == {"shape", "dtype", "read_s", "copy_s"}
        assert isinstance(floor["read_s"], float) and isinstance(floor["copy_s"], float)
    assert isinstance(doc["machine"]["cpu"], str)
    assert isinstance(doc["sweep"], bool)
    expected = {"op", "shape", "dtype", "floor", "floor_s", "times_s", "ratios"}
    expected |= {"floor_ratio", "memory_bytes", "errors", "ns_per_logit", "spread_s", "noisy"}
    for row in doc["rows"]:
        assert set(row) == expected
        assert row["op"] in OPS and row["dtype"] in ("float16", "float32", "float64")
        assert len(row["shape"]) == 2 and all(isinstance(n, int) for n in row["shape"])
        assert row["floor"] in ("read", "copy", None)
        times = row["times_s"]
        assert "softxent" in times and all(isinstance(t, number) for t in times.values())
        assert set(row["ratios"]) == set(times) - {"softxent"}
        for peer, ratio in row["ratios"].items():
            assert math.isclose(ratio, times[peer] / times["softxent"], rel_tol=1e-12)
        if row["floor"] is None:
            assert row["floor_s"] is None and row["floor_ratio"] is None
        else:
            same = (row["shape"], row["dtype"])
            floor = next(f for f in doc["floors"] if (f["shape"], f["dtype"]) == same)
            assert row["floor_s"] == floor[f"{row['floor']}_s"]
            assert math.isclose(row["floor_ratio"], times["softxent"] / row["floor_s"])
        assert set(row["memory_bytes"]) == set(times)
        for name, extra in row["memory_bytes"].items():
            assert extra is None if name in ("torch", "jax") else isinstance(extra, int)
        assert set(row["ns_per_logit"]) == set(row["spread_s"]) == set(row["noisy"]) == set(times)
        logits = row["shape"][0] * row["shape"][1]
        for name, seconds in times.items():
            assert math.isclose(row["ns_per_logit"][name], seconds * 1e9 / logits, rel_tol=1e-12)
            fastest, slowest = row["spread_s"][name]
            assert fastest <= seconds <= slowest
            assert row["noisy"][name] is (slowest > 1.5 * fastest)
        assert all(isinstance(v, str) for v in row["errors"].values())


def test_json_schema_every_op_shape_and_dtype(capsys, tmp_path):
    path = tmp_path / "bench.json"
    argv = ["--shape", "5x7", "--dtype", "float32,float64", "--json-out", str(path)]
    status, _, err = bench(capsys, *argv)
    assert status == 0, err
    doc = json.loads(path.read_text())
    _check_schema(doc)
    cases = {(r["op"], tuple(r["shape"]), r["dtype"]) for r in doc["rows"]}
    for op in OPS.values():
        if op.demo:
            assert (op.name, (3, 3), "float32") in cases
            continue
        for shape in [(8, 40), (5, 7)]:
            for dtype in ["float32", "float64"]:
                assert (op.name, shape, dtype) in cases
    assert len(doc["floors"]) == 4
    assert not any(r["errors"] for r in doc["rows"])
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # no temporary left over


def test_records_which_kernels_ran(capsys, monkeypatch):
    # The text and the JSON name the kernels that ran: the native ISA, or the fallback.
    status, out, err = bench(capsys, "--ops", "softmax")
    assert status == 0, err
    assert f"softxent kernels: {_native.kernels()};" in out.splitlines()[-1]
    monkeypatch.setattr(_native, "core", None)  # as with SOFTXENT_NATIVE=0
    status, out, err = bench(capsys, "--ops", "softmax", "--json")
    assert status == 0, err
    assert json.loads(out)["machine"]["kernels"] == "numpy"


def test_json_prints_to_stdout_like_score_json(capsys, tmp_path):
    # --json means the same in every subcommand: JSON on stdout, nothing else there.
    path = tmp_path / "also.json"
    status, out, err = bench(capsys, "--ops", "softmax", "--json", "--json-out", str(path))
    assert status == 0, err
    doc = json.loads(out)
    _check_schema(doc)
    assert [r["op"] for r in doc["rows"]] == ["softmax"]
    assert "Time (median)" not in out
    written = json.loads(path.read_text())
    assert written["rows"][0]["op"] == "softmax" and set(written) == set(doc)


def test_missing_peers_are_skipped_with_a_note(capsys, monkeypatch, tmp_path):
    pretend_missing(monkeypatch, "jax", "scipy")
    path = tmp_path / "b.json"
    status, out, err = bench(capsys, "--ops", FAST_OPS, "--json-out", str(path))
    assert status == 0, err
    header = table(out, "Time (median)")[0]
    assert "jax" not in header and "scipy" not in header and "torch" in header
    assert "Peer jax skipped: not installed" in out
    assert "Peer scipy skipped: not installed" in out
    doc = json.loads(path.read_text())
    assert set(doc["skipped"]) == {"jax", "scipy"}
    assert all(set(r["times_s"]) <= {"softxent", "torch", "numpy"} for r in doc["rows"])


def test_a_failing_peer_is_reported_and_the_run_goes_on(capsys, monkeypatch):
    def broken(self, op, inputs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(peers_module.NumpyPeer, "call", broken)
    status, out, err = bench(capsys, "--ops", "cross_entropy,softmax")
    assert status == 0, err
    header, *rows = table(out, "Time (median)")
    assert all(r[header.index("numpy")] == "error" for r in rows)
    assert "numpy failed on cross_entropy 8x40 float32: RuntimeError: boom" in out
    assert "second line" not in out


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--shape", "4096by"),
        ("--shape", "0x10"),
        ("--shape", "2x3x4"),
        ("--dtype", "int8"),
        ("--repeat", "0"),
        ("--repeat", "two"),
        ("--threads", "-1"),
        ("--ops", "cross_entropy,bogus"),
        ("--suite", "numpy,bogus"),
        ("--linear-shape", "4096x512"),
        ("--linear-shape", "0x512x32000"),
    ],
)
def test_bad_flag_values_exit_2_naming_the_flag(capsys, flag, value):
    status = main(["bench", "--quick", flag, value])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""  # rejected before anything ran
    assert flag in captured.err and repr(value.split(",")[-1]) in captured.err


@pytest.mark.parametrize(
    "flags", [["--with-fallback"], ["--ops", "softmax"], ["--ops", "softmax", "--with-fallback"]]
)
def test_numpy_suite_flags_without_the_numpy_suite_are_refused(capsys, flags):
    status = main(["bench", "--quick", "--suite", "linear", *flags])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""  # rejected before anything ran
    assert flags[0] in captured.err and "numpy suite" in captured.err
    assert "--suite linear" in captured.err


def test_output_into_a_directory_is_rejected(capsys, tmp_path):
    status = main(["bench", "--quick", "--json-out", str(tmp_path)])
    assert status == 2
    assert "--json-out" in capsys.readouterr().err


def test_plot_writes_a_png(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "ratios.png"
    status, _, err = bench(capsys, "--ops", FAST_OPS, "--plot", str(path))
    assert status == 0, err
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["ratios.png"]


def test_plot_without_matplotlib_says_what_to_install(capsys, monkeypatch, tmp_path):
    from softxent._bench import plot

    def missing():
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(plot, "_pyplot", missing)
    status = main(["bench", "--quick", "--plot", str(tmp_path / "x.png")])
    captured = capsys.readouterr()
    assert status == 2
    assert "pip install 'softxent[plot]'" in captured.err
    assert captured.out == "" and not list(tmp_path.iterdir())


def test_thread_settings_are_restored(capsys):
    import torch

    before = (sx.get_num_threads(), torch.get_num_threads())
    threads = 1 if before[0] != 1 else 2
    status, out, _ = bench(capsys, "--ops", "softmax", "--threads", str(threads))
    assert status == 0
    assert f"{threads} threads" in out
    assert (sx.get_num_threads(), torch.get_num_threads()) == before


# --------------------------------------------------------------------------- peers


def _results(peer, op_name, inputs):
    timed = peer.call(OPS[op_name], inputs)
    return peer.as_numpy(timed.fn())


@pytest.mark.parametrize("op_name", [n for n, op in OPS.items() if not op.demo])
def test_every_peer_computes_what_softxent_computes(op_name):
    # float64 so that the comparison is tight (1e-12): a peer computing something else,
    # or JAX silently dropping to float32, fails here.
    op = OPS[op_name]
    x, y = make_logits((6, 11), "float64")
    inputs = make_inputs(op, x, y)
    timed = softxent_call(op, inputs)
    if timed.setup is not None:
        timed.setup()
    result = timed.fn()
    expected = [np.asarray(a) for a in (result if isinstance(result, tuple) else (result,))]
    loaded, _ = peers_module.load_peers()
    checked = 0
    for peer in loaded:
        if op.kernel not in peer.ops:
            continue
        got = _results(peer, op_name, inputs)
        assert len(got) == len(expected), peer.name
        for g, e in zip(got, expected, strict=True):
            assert g.shape == e.shape, peer.name
            np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12, err_msg=peer.name)
        checked += 1
    assert checked >= (0 if op.in_place else 1)


def test_demo_cases_use_the_note_example():
    x, y = make_logits((3, 3), "float32")
    case = Case(OPS["demo_cross_entropy"], (3, 3), "float32")
    loss = softxent_call(case.op, make_inputs(case.op, x, y)).fn()
    assert float(loss) == pytest.approx(1.0413766, abs=2e-7)  # the spec's mean loss


# --------------------------------------------------------------------------- timing


def test_median_seconds_runs_setup_before_every_call():
    calls = []
    median_seconds(lambda: calls.append("fn"), repeat=3, setup=lambda: calls.append("setup"))
    assert calls == ["setup", "fn"] * 4  # one warm-up and three timed calls


def test_median_seconds_loops_fast_calls_and_reports_the_time_per_call():
    calls = []
    seconds = median_seconds(lambda: calls.append(1), repeat=3, min_sample_seconds=0.002)
    loops = (len(calls) - 2) // 3  # one warm-up and one calibration call, then 3 samples
    assert loops > 10 and len(calls) == 2 + 3 * loops
    assert 0 < seconds < 0.002 / 10


def test_median_seconds_times_slow_calls_one_by_one():
    calls = []
    seconds = median_seconds(
        lambda: (calls.append(1), time.sleep(0.003)), repeat=3, min_sample_seconds=0.002
    )
    assert len(calls) == 5 and seconds >= 0.003


def test_a_call_slower_than_the_limit_is_timed_once_by_its_warm_up():
    from softxent._bench import timing

    calls: list[int] = []

    def call() -> None:
        calls.append(1)
        time.sleep(0.003)

    samples = timing.sample_seconds(
        call, repeat=5, min_sample_seconds=0.0, slow_call_seconds=0.002
    )
    assert len(calls) == 1 and len(samples) == 1
    calls.clear()  # without the limit (the linear and torch suites) every sample is taken
    samples = timing.sample_seconds(call, repeat=5, min_sample_seconds=0.0)
    assert len(calls) == 7 and len(samples) == 5  # warm-up, loop-size probe, 5 samples


def test_peak_extra_bytes_counts_temporaries_not_outputs_or_in_place_writes():
    x = np.ones((200, 500))
    assert peak_extra_bytes(lambda: np.exp(x), inputs=[x]) < 0.05 * x.nbytes
    assert peak_extra_bytes(lambda: np.exp(x).sum(axis=1), inputs=[x]) >= x.nbytes
    work = x.copy()
    assert peak_extra_bytes(lambda: np.exp(work, out=work), inputs=[x, work]) < 0.05 * x.nbytes


def test_in_place_case_restores_the_logits_and_counts_no_output():
    op = OPS["cross_entropy_with_grad_out"]
    x, y = make_logits((16, 300), "float32")
    timed = softxent_call(op, make_inputs(op, x, y))
    timed.setup()
    _, grad = timed.fn()
    assert np.shares_memory(grad, timed.buffers[0])
    expected = sx.cross_entropy_with_grad(x, y).grad
    np.testing.assert_allclose(grad, expected, rtol=2e-6, atol=2e-6 * max(1, np.abs(x).max()))
    timed.setup()
    np.testing.assert_array_equal(timed.buffers[0], x)


# --------------------------------------------------------------------------- other suites

IMPL_ROW_KEYS = {"op", "shape", "dtype", "floor", "floor_s", "times_s", "ratios"}
IMPL_ROW_KEYS |= {"floor_ratio", "floor_ratios", "memory_bytes", "memory_method", "errors"}


def run_suite(capsys, tmp_path, *argv: str) -> tuple[str, dict]:
    path = tmp_path / "bench.json"
    status = main(["bench", "--quick", "--repeat", "1", "--json-out", str(path), *argv])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    doc = json.loads(path.read_text())
    assert doc["schema"] == "softxent-bench/1"
    return captured.out, doc


def _check_impl_rows(rows: list[dict], memory_method: str) -> None:
    """Keys of docs/bench.md; ratios and floor ratios are quotients of the times."""
    for row in rows:
        assert set(row) == IMPL_ROW_KEYS
        assert row["memory_method"] == memory_method
        times = row["times_s"]
        assert "softxent" in times and all(t > 0 for t in times.values())
        assert set(row["ratios"]) == set(times) - {"softxent"}
        for name, ratio in row["ratios"].items():
            assert math.isclose(ratio, times[name] / times["softxent"], rel_tol=1e-12)
        if row["floor"] is None:
            assert row["floor_s"] is None and row["floor_ratios"] == {}
            assert row["floor_ratio"] is None
        else:
            assert row["floor"] == "matmuls" and row["floor_s"] > 0
            assert set(row["floor_ratios"]) == set(times)
            for name, ratio in row["floor_ratios"].items():
                assert math.isclose(ratio, times[name] / row["floor_s"], rel_tol=1e-12)
            assert row["floor_ratio"] == row["floor_ratios"]["softxent"]
        assert set(row["memory_bytes"]) == set(times)
        assert all(isinstance(m, int) and m >= 0 for m in row["memory_bytes"].values())
        assert row["errors"] == {}


def test_linear_suite(capsys, tmp_path):
    out, doc = run_suite(capsys, tmp_path, "--suite", "linear", "--linear-shape", "40x8x300")
    assert doc["suites"] == ["linear"] and doc["rows"] == [] and doc["floors"] == []
    assert "torch" not in doc and "distributed" not in doc
    (row,) = doc["linear"]
    assert row["op"] == "linear_cross_entropy_with_grad"
    assert row["shape"] == [40, 8, 300] and row["dtype"] == "float32"
    assert set(row["times_s"]) == {"softxent", "numpy_unfused"}
    _check_impl_rows(doc["linear"], "tracemalloc")
    # The unfused layer holds the (N, V) logits; the fused one only its chunk (N here).
    assert row["memory_bytes"]["numpy_unfused"] >= 40 * 300 * 4
    header, *body = table(out, "Linear suite")
    assert header[:5] == ["operation", "shape", "dtype", "implementation", "time"]
    assert [r[3] for r in body] == ["softxent", "numpy_unfused", "matmuls (floor)"]
    assert body[0][1] == "40x8x300" and body[2][-2] == "1.00x"
    assert "Time (median)" not in out  # the numpy suite did not run


def test_torch_suite(capsys, tmp_path):
    out, doc = run_suite(
        capsys, tmp_path, "--suite", "torch", "--shape", "16x50", "--linear-shape", "24x8x100"
    )
    assert doc["suites"] == ["torch"] and "torch" in doc["versions"]
    ce, linear = doc["torch"]
    assert (ce["op"], ce["shape"]) == ("cross_entropy", [16, 50])
    assert set(ce["times_s"]) == {"softxent", "softxent_inplace", "torch"}
    assert (linear["op"], linear["shape"]) == ("linear_cross_entropy", [24, 8, 100])
    expected = {"softxent", "torch_reference", "torch_lce", "torch_chunked"}
    expected |= {"torch_chunked_ar1"}
    cce = importlib.util.find_spec("cut_cross_entropy") is not None
    assert set(linear["times_s"]) == expected | ({"cce"} if cce else set())
    _check_impl_rows(doc["torch"], "ru_maxrss")
    assert doc["suite_settings"]["torch"]["parallel_processes"] >= 1
    _, *body = table(out, "Torch suite")
    assert len(body) == 3 + len(linear["times_s"]) + 1  # + the floor line
    assert [r[3] for r in body][:3] == ["softxent", "softxent_inplace", "torch"]
    if not cce:
        assert set(doc["skipped"]) == {"cce"}
        assert "Peer cce skipped: not installed" in out


def test_torch_child_sees_the_reference_paths_logits():
    # The memory method itself: torch's reference path holds the (N, V) logits and their
    # gradient, which ru_maxrss in a fresh process must see; the chunked softxent must not.
    from softxent._bench.torch_suite import run_child

    n, d, v = 512, 16, 4096
    job = {"op": "linear_cross_entropy", "shape": [n, d, v], "dtype": "float32"}
    job |= {"repeat": 1, "threads": 1, "memory": True, "tiny": [4, 8, 16]}
    reference = run_child({**job, "impl": "torch_reference"})
    fused = run_child({**job, "impl": "softxent"})
    logits = n * v * 4  # 8 MiB
    assert reference["memory_bytes"] >= logits
    assert fused["memory_bytes"] < reference["memory_bytes"]
    assert run_child({**job, "impl": "bogus"})["error"].startswith("ValueError: unknown")


def test_distributed_suite(capsys, tmp_path):
    out, doc = run_suite(capsys, tmp_path, "--suite", "distributed")
    keys = {"world_size", "tokens", "hidden", "vocab", "seconds", "collectives", "bytes"}
    keys |= {"per_token_vectors", "loss", "ratio"}
    rows = doc["distributed"]
    assert [r["world_size"] for r in rows] == [1, 2]  # --quick: world sizes 1 and 2 only
    assert doc["suite_settings"]["distributed"]["world_sizes"] == [1, 2]
    for row in rows:
        assert set(row) == keys
        assert math.isclose(row["ratio"], row["seconds"] / rows[0]["seconds"], rel_tol=1e-12)
    assert rows[0]["collectives"] == 0 and rows[0]["bytes"] == 0
    assert rows[1]["collectives"] > 0 and rows[1]["bytes"] > 0
    assert math.isclose(rows[0]["loss"], rows[1]["loss"], rel_tol=1e-5)
    header, *body = table(out, "Distributed suite")
    assert header[0] == "world size" and [r[0] for r in body] == ["1", "2"]


def test_suites_without_torch_are_skipped_with_a_note(capsys, monkeypatch, tmp_path):
    from softxent._bench import session

    monkeypatch.setattr(session, "torch_version", lambda: None)
    out, doc = run_suite(
        capsys, tmp_path, "--suite", "linear,torch,distributed", "--linear-shape", "8x4x50"
    )
    assert doc["suites"] == ["linear"]
    assert set(doc["skipped_suites"]) == {"torch", "distributed"}
    assert "torch" not in doc and "distributed" not in doc
    assert "Suite torch skipped: torch is not installed" in out
    assert "Suite distributed skipped: torch is not installed" in out


def test_suite_all_is_every_suite_in_order():
    from softxent.cli._bench import SUITES, parse_suites

    assert parse_suites(["all"]) == list(SUITES)
    assert parse_suites(None) == ["numpy"]
    assert parse_suites(["torch,numpy", "linear"]) == ["numpy", "linear", "torch"]


def test_bench_case_moved_out_of_the_layer_module():
    import softxent._linear_cross_entropy as layer

    assert not hasattr(layer, "_bench_case")


def test_blas_info_names_numpy_s_blas_first_and_the_steering_variables():
    from softxent._bench.runner import blas_info

    assert blas_info({}).startswith("numpy: ")  # the test extra installs threadpoolctl
    assert "OPENBLAS" not in blas_info({})
    steered = blas_info({"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576"})
    assert steered.endswith("(OPENBLAS_CORETYPE=Haswell, OPENBLAS_L2_SIZE=1048576)")


def test_floors_are_the_fastest_sample_and_figures_the_median(monkeypatch):
    # A floor is a lower bound (noise only slows a pass down); the figures are medians.
    from softxent._bench import runner
    from softxent._bench.suites import build_cases

    monkeypatch.setattr(runner, "sample_seconds", lambda fn, **kw: (fn(), [0.3, 0.1, 0.2])[1])
    cases = build_cases(["cross_entropy"], [(4, 5)], ["float32"])
    floors, rows = runner.run_cases(cases, [], repeat=3, threads=1)
    assert (floors[0].read, floors[0].copy) == (0.1, 0.1)
    assert rows[0].times["softxent"] == 0.2


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_floor_passes_read_and_copy_every_part_of_the_logits(dtype, threads):
    # The read pass is a max over each thread's part of the bytes; it must see all of
    # them (a part skipped would make the floor too fast), and the copy must copy them all.
    from concurrent.futures import ThreadPoolExecutor

    from softxent._bench.suites import floor_calls

    x = np.arange(7 * 13, dtype=dtype).reshape(7, 13)
    ints = x.reshape(-1).view(np.dtype(f"i{x.itemsize}"))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        calls = floor_calls(x, pool, threads=threads)
        part_maxima = calls["read"].fn()
        calls["copy"].fn()
    assert len(part_maxima) == threads
    assert max(part_maxima) == ints.max()  # the last entry is in the last part
    assert min(part_maxima) > 0  # every part was read (entry 0 is the only zero)
    (copied,) = calls["copy"].buffers
    np.testing.assert_array_equal(copied, x.reshape(-1))

"""Spawned gloo worlds (127.0.0.1, CPU): vocab-parallel results == single process.

Spawning is slow on a loaded machine, so each world size is spawned once and every rank
checks every case in it (options x dtypes x both functions, plus the edge cases), writing
its failures to a JSON file that the test then reads. Each spawn has a hard deadline.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import time
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from _vp_reference import make_data, option_cases, reference_loss, tolerances

from softxent.torch.distributed import (
    count_communication,
    even_partition,
    vocab_parallel_cross_entropy,
    vocab_parallel_linear_cross_entropy,
)

N, HIDDEN, CHUNK = 12, 8, 5  # CHUNK does not divide N
SPAWN_DEADLINE_S = 240  # generous: 2 shared cores, several workers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_world(fn, world: int, tmp_path, *args) -> list[dict]:
    """Spawn ``world`` ranks of ``fn``; return each rank's JSON report (bounded in time)."""
    port = _free_port()
    ctx = mp.start_processes(
        fn,
        args=(world, port, str(tmp_path), *args),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + SPAWN_DEADLINE_S
    while not ctx.join(timeout=2):
        if time.monotonic() > deadline:
            for process in ctx.processes:
                process.kill()
            pytest.fail(f"spawned world of {world} ranks did not finish in {SPAWN_DEADLINE_S} s")
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]


def _init(rank, world, port, seconds=120):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=seconds),
    )


class _Checker:
    def __init__(self):
        self.failures: list[str] = []
        self.checked = 0

    def close(self, name, actual, expected, dtype, scale):
        self.checked += 1
        try:
            torch.testing.assert_close(actual, expected, **tolerances(dtype, scale))
        except AssertionError as err:
            self.failures.append(f"{name}: {err}")

    def true(self, name, condition):
        self.checked += 1
        if not condition:
            self.failures.append(name)


def _target_for(case, d, start, size):
    if case["kind"] == "probs":
        return d["probs"][:, start : start + size], d["probs"]
    return d[case["kind"]], d[case["kind"]]


def _options(case, d, start, size):
    local = {k: case[k] for k in ("reduction", "label_smoothing", "z_loss", "softcap")}
    full = dict(local)
    if case["weight"]:
        key = "signed_weight" if case["weight"] == "signed" else "weight"
        local["weight"] = d[key][start : start + size]
        full["weight"] = d[key]
    return local, full


def _upstream(case, d, dtype):
    return d["upstream"] if case["reduction"] == "none" else torch.tensor(1.7, dtype=dtype)


def _check_cross_entropy(ck, rank, world, num_classes, dtype, layout):
    start, size = layout[rank]
    d = make_data(N, num_classes, HIDDEN, dtype, seed=1)
    scale = float(d["logits"].abs().max())
    vocab_start = start if layout != even_partition(num_classes, world) else None
    for case in option_cases():
        name = f"ce {dtype} {case} vocab_start={vocab_start}"
        local_target, full_target = _target_for(case, d, start, size)
        local_opts, full_opts = _options(case, d, start, size)
        up = _upstream(case, d, dtype)
        x = d["logits"][:, start : start + size].clone().requires_grad_()
        loss = vocab_parallel_cross_entropy(x, local_target, vocab_start=vocab_start, **local_opts)
        (loss * up).sum().backward()
        full = d["logits"].clone().requires_grad_()
        expected = reference_loss(full, full_target, **full_opts)
        (expected * up).sum().backward()
        ck.close(name + " loss", loss, expected, dtype, scale)
        ck.close(name + " grad", x.grad, full.grad[:, start : start + size], dtype, scale)


def _check_linear(ck, rank, world, num_classes, dtype):
    start, size = even_partition(num_classes, world)[rank]
    d = make_data(N, num_classes, HIDDEN, dtype, seed=2)
    for case in option_cases(linear=True):
        name = f"linear {dtype} {case}"
        local_target, full_target = _target_for(case, d, start, size)
        local_opts, full_opts = _options(case, d, start, size)
        up = _upstream(case, d, dtype)
        h = d["input"].clone().requires_grad_()
        w = d["lin_w"][start : start + size].clone().requires_grad_()
        b = d["lin_b"][start : start + size].clone().requires_grad_()
        loss = vocab_parallel_linear_cross_entropy(
            h, w, local_target, local_linear_bias=b, chunk_size=CHUNK, **local_opts
        )
        (loss * up).sum().backward()
        ref = [d[k].clone().requires_grad_() for k in ("input", "lin_w", "lin_b")]
        expected = reference_loss(F.linear(*ref), full_target, **full_opts)
        (expected * up).sum().backward()
        scale = float(F.linear(*ref).detach().abs().max())
        ck.close(name + " loss", loss, expected, dtype, scale)
        ck.close(name + " grad input", h.grad, ref[0].grad, dtype, scale)
        ck.close(name + " grad weight", w.grad, ref[1].grad[start : start + size], dtype, scale)
        ck.close(name + " grad bias", b.grad, ref[2].grad[start : start + size], dtype, scale)


def _check_edges(ck, rank, world, num_classes):
    dtype = torch.float64
    start, size = even_partition(num_classes, world)[rank]
    d = make_data(N, num_classes, HIDDEN, dtype, seed=3)
    local_w = d["weight"][start : start + size]

    # All targets ignored: 'mean' is NaN (0/0), 'sum' is 0, the gradient is exactly 0.
    all_ignored = torch.full((N,), -100)
    for reduction, label_smoothing in (("mean", 0.3), ("sum", 0.0)):
        x = d["logits"][:, start : start + size].clone().requires_grad_()
        loss = vocab_parallel_cross_entropy(
            x, all_ignored, weight=local_w, reduction=reduction, label_smoothing=label_smoothing
        )
        loss.backward()
        want_nan = reduction == "mean"
        ck.true(f"all ignored {reduction}: loss {loss}", bool(loss.isnan()) == want_nan)
        ck.true(f"all ignored {reduction}: grad zero", bool((x.grad == 0).all()))

    # Every rank returns the very same loss (bitwise): gather and compare.
    x = d["logits"][:, start : start + size]
    loss = vocab_parallel_cross_entropy(x, d["ignored"], weight=local_w, label_smoothing=0.1)
    gathered = [torch.empty_like(loss) for _ in range(world)]
    dist.all_gather(gathered, loss)
    ck.true(f"identical loss on all ranks {gathered}", all(bool(g == loss) for g in gathered))

    # Classes last with extra leading dims: (2, 6, V_r) == the (12, V_r) result.
    flat = vocab_parallel_cross_entropy(x, d["index"], reduction="none")
    nd = vocab_parallel_cross_entropy(
        x.reshape(2, 6, size), d["index"].reshape(2, 6), reduction="none"
    )
    ck.close("3-d logits", nd, flat.reshape(2, 6), dtype, 1.0)

    # A target id outside [0, C) raises on every rank, before any collective.
    bad = d["index"].clone()
    bad[4] = num_classes
    try:
        vocab_parallel_cross_entropy(x, bad)
        ck.true("out-of-range target raised", False)
    except ValueError as err:
        ck.true(f"out-of-range message {err}", f"target[4] = {num_classes} is out" in str(err))

    # Communication: 2 collectives, O(N) bytes, nothing in backward (plain);
    # + the (N, H) input gradient in backward (linear).
    xs = x.clone().requires_grad_()
    with count_communication() as stats:
        loss = vocab_parallel_cross_entropy(
            xs, d["index"], weight=local_w, label_smoothing=0.1, z_loss=1e-3
        )
        loss.backward()
    item = 8  # float64
    ck.true(f"plain collectives {stats.calls}", stats.collectives == 2)
    ck.true(f"plain bytes {stats.calls}", stats.bytes == N * item + (4 * N + 1) * item)
    h = d["input"].clone().requires_grad_()
    w = d["lin_w"][start : start + size].clone().requires_grad_()
    with count_communication() as stats:
        vocab_parallel_linear_cross_entropy(h, w, d["index"], chunk_size=CHUNK).backward()
    ck.true(f"linear collectives {stats.calls}", stats.collectives == 3)
    ck.true(
        f"linear bytes {stats.calls}",
        stats.bytes == N * item + 2 * N * item + N * HIDDEN * item,
    )


def _check_empty_shard(ck, rank, world):
    """``world - 1`` classes over ``world`` ranks: the last rank holds none."""
    dtype = torch.float64
    num_classes = world - 1
    start, size = even_partition(num_classes, world)[rank]
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(N, num_classes, generator=g, dtype=dtype)
    target = torch.randint(0, num_classes, (N,), generator=g)
    weight = torch.rand(num_classes, generator=g, dtype=dtype) + 0.5
    x = logits[:, start : start + size].clone().requires_grad_()
    loss = vocab_parallel_cross_entropy(
        x, target, weight=weight[start : start + size], label_smoothing=0.2, z_loss=0.01
    )
    loss.backward()
    full = logits.clone().requires_grad_()
    expected = reference_loss(full, target, weight=weight, label_smoothing=0.2, z_loss=0.01)
    expected.backward()
    ck.close("empty shard loss", loss, expected, dtype, 3.0)
    ck.close("empty shard grad", x.grad, full.grad[:, start : start + size], dtype, 3.0)


def _worker(rank, world, port, outdir, num_classes):
    ck = _Checker()
    try:
        _init(rank, world, port)
        even = even_partition(num_classes, world)
        for dtype in (torch.float64, torch.float32):
            _check_cross_entropy(ck, rank, world, num_classes, dtype, even)
            _check_linear(ck, rank, world, num_classes, dtype)
        # Explicit vocab_start with the shards in reverse rank order.
        reverse_sizes = [size for _, size in reversed(even)]
        starts = [sum(reverse_sizes[:r]) for r in range(world)]
        reverse = list(zip(starts, reverse_sizes, strict=True))
        _check_cross_entropy(ck, rank, world, num_classes, torch.float64, reverse)
        _check_edges(ck, rank, world, num_classes)
        _check_empty_shard(ck, rank, world)
        dist.destroy_process_group()
    except Exception:  # report, so the parent shows what broke
        ck.failures.append(traceback.format_exc())
    with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
        json.dump({"failures": ck.failures, "checked": ck.checked}, f)


# Per rank: plain (loss + grad) x (2 dtypes + reversed layout), linear (loss + 3 grads) x 2
# dtypes, 11 edge checks, 2 empty-shard checks: proves no case was skipped.
EXPECTED_CHECKS = len(option_cases()) * 2 * 3 + len(option_cases(linear=True)) * 4 * 2 + 11 + 2


@pytest.mark.parametrize(("world", "num_classes"), [(2, 1000), (3, 1001)])
def test_matches_single_process(tmp_path, world, num_classes):
    reports = _run_world(_worker, world, tmp_path, num_classes)
    failures = [f"rank {r}: {f}" for r, rep in enumerate(reports) for f in rep["failures"]]
    assert failures == [], "\n".join(failures[:8])
    assert [rep["checked"] for rep in reports] == [EXPECTED_CHECKS] * world


def _missing_worker(rank, world, port, outdir, timeout_s):
    _init(rank, world, port, seconds=timeout_s)
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(rank))
    target = torch.tensor([0, 3, 9, 1])
    vocab_parallel_cross_entropy(x, target)  # both ranks: works, layout cached
    done = os.path.join(outdir, "done")
    if rank == 1:  # never calls again; waits (bounded) until rank 0 is finished
        deadline = time.monotonic() + 4 * timeout_s
        while not os.path.exists(done) and time.monotonic() < deadline:
            time.sleep(0.2)
        os._exit(0)  # see below
    report = {"raised": None, "message": "", "elapsed": None}
    began = time.monotonic()
    try:
        vocab_parallel_cross_entropy(x, target)
    except RuntimeError as err:
        report = {"raised": type(err).__name__, "message": str(err)}
    report["elapsed"] = time.monotonic() - began
    with open(os.path.join(outdir, "rank0.tmp"), "w") as f:
        json.dump(report, f)
    os.replace(os.path.join(outdir, "rank0.tmp"), os.path.join(outdir, "rank0.json"))  # atomic
    with open(done, "w"):
        pass
    # After a timed-out collective the gloo group may abort during interpreter teardown
    # (SIGABRT from its destructor); what is tested here is the error raised above.
    os._exit(0)


def test_missing_rank_raises_within_timeout(tmp_path):
    timeout_s = 5
    port = _free_port()
    ctx = mp.start_processes(
        _missing_worker,
        args=(2, port, str(tmp_path), timeout_s),
        nprocs=2,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + SPAWN_DEADLINE_S
    try:
        while not (tmp_path / "rank0.json").exists():
            assert time.monotonic() < deadline, "the surviving rank hung"
            time.sleep(0.2)
        report = json.loads((tmp_path / "rank0.json").read_text())
    finally:
        (tmp_path / "done").touch()
        if not ctx.join(timeout=30):
            for process in ctx.processes:
                process.kill()
    assert report["raised"] == "RuntimeError", report
    assert "MAX all-reduce" in report["message"]
    assert "a rank died, did not call" in report["message"]
    # Bounded by the group's timeout (plus generous slack for a loaded machine).
    assert report["elapsed"] < timeout_s + 60, report

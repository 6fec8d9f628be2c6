"""Wall time and communication of the vocab-parallel linear loss for several world sizes.

For ``softxent bench --suite distributed``: spawns a gloo world (127.0.0.1, CPU) per world
size, times forward + backward of :func:`vocab_parallel_linear_cross_entropy` on identical
data, and counts what crossed the network. World size 1 runs in this process without
torch.distributed. Times on a shared machine are noisy; compare rows of one run.
"""

from __future__ import annotations

import datetime
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from softxent.torch.distributed._comm import count_communication
from softxent.torch.distributed._linear_cross_entropy import vocab_parallel_linear_cross_entropy
from softxent.torch.distributed._partition import even_partition


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _measure(rank: int, world: int, tokens: int, hidden: int, vocab: int, steps: int) -> dict:
    start, size = even_partition(vocab, world)[rank]
    g = torch.Generator().manual_seed(0)
    inp = torch.randn(tokens, hidden, generator=g)
    weight = torch.randn(vocab, hidden, generator=g)[start : start + size] / hidden**0.5
    target = torch.randint(0, vocab, (tokens,), generator=g)
    h = inp.requires_grad_()
    w = weight.requires_grad_()
    times = []
    for step in range(steps + 1):  # the first step warms up (and caches the shard layout)
        with count_communication() as stats:
            began = time.perf_counter()
            loss = vocab_parallel_linear_cross_entropy(h, w, target, label_smoothing=0.1)
            loss.backward()
            elapsed = time.perf_counter() - began
        if step:
            times.append(elapsed)
        h.grad = w.grad = None
    # Beyond the (N, H) input gradient; a world of one sends nothing at all.
    per_token = (stats.bytes - tokens * hidden * 4) / (tokens * 4) if stats.bytes else 0.0
    return {
        "world_size": world,
        "tokens": tokens,
        "hidden": hidden,
        "vocab": vocab,
        "seconds": statistics.median(times),
        "collectives": stats.collectives,
        "bytes": stats.bytes,
        "per_token_vectors": per_token,
        "loss": float(loss.detach()),
    }


def _worker(rank, world, port, queue, tokens, hidden, vocab, steps):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=120),
    )
    row = _measure(rank, world, tokens, hidden, vocab, steps)
    if rank == 0:
        queue.put(row)
    dist.destroy_process_group()


def benchmark(
    world_sizes: tuple[int, ...] = (1, 2, 4),
    *,
    tokens: int = 1024,
    hidden: int = 128,
    vocab: int = 8192,
    steps: int = 3,
) -> list[dict]:
    """One row per world size: median forward+backward seconds and communication.

    Each row has ``world_size, tokens, hidden, vocab, seconds, collectives, bytes,
    per_token_vectors`` (bytes beyond the input gradient, in float32 vectors of ``tokens``)
    and ``loss`` (identical across world sizes up to rounding).
    """
    rows = []
    for world in world_sizes:
        if world == 1:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                rows.append(_measure(0, 1, tokens, hidden, vocab, steps))
            finally:
                torch.set_num_threads(threads)
            continue
        ctx = mp.get_context("spawn")
        queue = ctx.SimpleQueue()
        mp.start_processes(
            _worker,
            args=(world, _free_port(), queue, tokens, hidden, vocab, steps),
            nprocs=world,
            join=True,
            start_method="spawn",
        )
        rows.append(queue.get())
    return rows

"""Train a tiny model whose output layer is split by vocabulary across ranks (gloo, CPU).

Run with::

    torchrun --nproc-per-node 2 examples/tensor_parallel.py

(add ``--standalone`` if the default rendezvous port 29500 is taken; any number of
processes works; without torchrun it runs as a world of one). The model is an embedding
(replicated: same initialization and, because the input gradient is summed across ranks
inside the loss, the same updates on every rank) followed by an output layer of
V = 1001 classes split unevenly: rank r holds the rows ``even_partition(1001, P)[r]`` and
never sees the other ranks' logits. Every rank prints the same loss.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from softxent.torch.distributed import (
    count_communication,
    even_partition,
    vocab_parallel_linear_cross_entropy,
)

VOCAB, HIDDEN, BATCH, STEPS = 1001, 32, 256, 40


def main() -> None:
    torch.set_num_threads(1)
    if "RANK" in os.environ:  # started by torchrun
        dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    vocab_start, local_vocab = even_partition(VOCAB, world)[rank]

    torch.manual_seed(0)  # identical replicated parameters on every rank
    embedding = torch.nn.Embedding(VOCAB, HIDDEN)
    full_out = torch.randn(VOCAB, HIDDEN) / HIDDEN**0.5
    # This rank's rows only (a real model would create just these).
    out_weight = torch.nn.Parameter(full_out[vocab_start : vocab_start + local_vocab].clone())
    del full_out
    optimizer = torch.optim.Adam([*embedding.parameters(), out_weight], lr=0.05)

    data = torch.Generator().manual_seed(1)  # identical batches on every rank
    for step in range(STEPS):
        tokens = torch.randint(0, VOCAB, (BATCH,), generator=data)
        target = (7 * tokens + 3) % VOCAB  # a learnable map from token to next class
        with count_communication() as stats:
            loss = vocab_parallel_linear_cross_entropy(
                embedding(tokens),
                out_weight,
                target,
                vocab_start=vocab_start,
                label_smoothing=0.1,
                z_loss=1e-4,
                chunk_size=64,
            )
            optimizer.zero_grad()
            loss.backward()
        optimizer.step()
        if step % 5 == 0 or step == STEPS - 1:
            print(
                f"rank {rank}/{world} classes [{vocab_start}, {vocab_start + local_vocab}) "
                f"step {step:2d} loss {loss.item():.6f} "
                f"({stats.collectives} collectives, {stats.bytes} bytes)",
                flush=True,
            )
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

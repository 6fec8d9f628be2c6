"""Vocab-parallel (tensor-parallel) cross-entropy on :mod:`torch.distributed`.

Each rank holds a contiguous slice of the classes (the output layer split by vocabulary);
the losses equal the single-process result on the concatenated classes for every option
(weights, ``ignore_index``, label smoothing over the global class count, probability
targets, reductions, z-loss, softcap), for any world size and uneven shards, while only
per-token vectors cross the network: O(N), never O(N x V).

* :func:`vocab_parallel_cross_entropy`: from this rank's logits ``(..., V_r)``.
* :func:`vocab_parallel_linear_cross_entropy`: from the hidden states and this rank's rows
  of the output layer, chunked over tokens so no rank holds ``(N, V_r)`` logits.
* :func:`count_communication`: count the collectives and bytes (see ``docs/distributed.md``).
* :func:`even_partition`: the ``(vocab_start, size)`` of each rank for ``C`` classes.
"""

from softxent.torch.distributed._comm import CommStats, count_communication
from softxent.torch.distributed._cross_entropy import vocab_parallel_cross_entropy
from softxent.torch.distributed._linear_cross_entropy import vocab_parallel_linear_cross_entropy
from softxent.torch.distributed._partition import even_partition

__all__ = [
    "CommStats",
    "count_communication",
    "even_partition",
    "vocab_parallel_cross_entropy",
    "vocab_parallel_linear_cross_entropy",
]

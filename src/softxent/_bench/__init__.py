"""``softxent bench`` internals: what is measured, the peers, timing, results, rendering.

Private: the command line (:mod:`softxent.cli._bench`) parses the flags and prints; this
package does the rest. ``session`` holds the run's settings and runs the suites one after
the other. Modules of the default ``numpy`` suite: ``suites`` (operations, inputs,
softxent's calls), ``peers`` (torch, JAX, scipy, NumPy), ``timing`` (median time, peak extra
memory), ``runner`` (runs the cases). The other suites: ``linear`` (the NumPy fused linear
layer vs its matmuls), ``torch_suite`` with ``child`` and ``torch_impls`` (softxent.torch vs
torch, one process per implementation), ``distributed`` (vocab-parallel world sizes);
``results`` holds their rows. Output: ``render`` (the tables), ``report`` (JSON), ``plot``
(the ratios' bar chart, or the sweep's ns per logit against the number of classes).
``--sweep`` runs the numpy suite over ``suites.sweep_groups``; its ``softxent_numpy``
column is ``peers.FallbackPeer``.
"""

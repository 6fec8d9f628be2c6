"""``softxent bench`` internals: what is measured, the peers, timing, results.

Private: the command line (:mod:`softxent.cli._bench`) is the interface. Modules:
``suites`` (operations, inputs, softxent's calls), ``peers`` (torch, JAX, scipy, NumPy),
``timing`` (median time, peak extra memory), ``runner`` (runs the cases), ``report``
(JSON), ``plot`` (bar chart).
"""

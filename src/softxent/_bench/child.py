"""One implementation of the ``torch`` suite, timed and measured in a process of its own.

:func:`run_job` runs in a fresh process per implementation (started by
:mod:`softxent._bench.torch_suite`); ``python -m softxent._bench.child '<job as JSON>'``
does the same by hand and prints the result as one JSON line. A fresh process,
because torch's allocations are invisible to :mod:`tracemalloc` and the process-wide peak
resident set size (``ru_maxrss``) only ever grows: measured in a process that has run
nothing else, its growth is the implementation's own peak.

The job: ``op``, ``impl``, ``shape``, ``dtype``, ``repeat``, ``threads``, ``memory``
(bool) and ``tiny`` (a shape run once before the baseline, so that the one-off
initialisations of torch's kernels and thread pool do not count as the call's memory).
"""

from __future__ import annotations

import json
import resource
import sys


def max_rss_bytes() -> int:
    """The process's peak resident set size so far (``ru_maxrss``: KiB on Linux, B on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def run_job(job: dict) -> dict:
    """Time ``job``'s implementation; its peak extra memory is the growth of ``ru_maxrss``.

    .. math::

        \\text{extra} = \\text{ru\\_maxrss after all calls} - \\text{ru\\_maxrss after
        the inputs (and the first call's setup) exist}

    So the gradients and every temporary count; the inputs do not.
    """
    import torch

    import softxent as sx
    from softxent._bench.timing import median_seconds
    from softxent._bench.torch_impls import build

    torch.set_num_threads(job["threads"])
    sx.set_num_threads(job["threads"])
    tiny = build(job["op"], job["impl"], job["tiny"], job["dtype"])
    if tiny.setup is not None:
        tiny.setup()
    tiny.fn()
    del tiny
    timed = build(job["op"], job["impl"], job["shape"], job["dtype"])
    if timed.setup is not None:
        timed.setup()  # the first call's input exists before the baseline, like the others'
    before = max_rss_bytes()
    # The setup runs once more before the warm-up: the same allocation, freed first.
    seconds = median_seconds(timed.fn, repeat=job["repeat"], setup=timed.setup)
    extra = max(0, max_rss_bytes() - before)
    return {"seconds": seconds, "memory_bytes": extra if job.get("memory", True) else None}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(json.dumps(run_job(json.loads(argv[0]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

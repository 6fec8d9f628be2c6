"""The benchmark's results as JSON (the schema is documented in ``docs/bench.md``)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import tempfile

from softxent._bench.results import ImplRow, WorldRow
from softxent._bench.runner import Report

SCHEMA = "softxent-bench/1"


def to_json(report: Report) -> dict:
    """A JSON-ready dict of ``report``: times in seconds, memory in bytes, shapes as lists."""
    doc = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": report.machine,
        "versions": report.versions,
        "threads": report.threads,
        "repeat": report.repeat,
        "warmup": report.warmup,
        "peers": report.peers,
        "skipped": report.skipped,
        "floors": [
            {"shape": list(f.shape), "dtype": f.dtype, "read_s": f.read, "copy_s": f.copy}
            for f in report.floors
        ],
        "rows": [
            {
                "op": r.op,
                "shape": list(r.shape),
                "dtype": r.dtype,
                "floor": r.floor,
                "floor_s": r.floor_seconds,
                "times_s": r.times,
                "ratios": r.ratios,
                "floor_ratio": r.floor_ratio,
                "memory_bytes": r.memory,
                "errors": r.errors,
                "ns_per_logit": r.ns_per_logit,
                "spread_s": {k: list(span) for k, span in r.spread.items()},
                "noisy": r.noisy,
            }
            for r in report.rows
        ],
        "sweep": report.sweep,
        "suites": report.suites,
        "skipped_suites": report.skipped_suites,
        "suite_settings": report.settings,
    }
    for suite, rows in report.suite_rows.items():
        doc[suite] = [_suite_row(r) for r in rows]
    return doc


def _suite_row(row: ImplRow | WorldRow) -> dict:
    if isinstance(row, WorldRow):
        return dataclasses.asdict(row)
    return {
        "op": row.op,
        "shape": list(row.shape),
        "dtype": row.dtype,
        "floor": row.floor,
        "floor_s": row.floor_seconds,
        "times_s": row.times,
        "ratios": row.ratios,
        "floor_ratio": row.floor_ratio,
        "floor_ratios": row.floor_ratios,
        "memory_bytes": row.memory,
        "memory_method": row.memory_method,
        "errors": row.errors,
    }


def write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` under a temporary name, then rename: never a partial file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def json_text(report: Report) -> str:
    """``report`` as indented JSON text, ending in a newline."""
    return json.dumps(to_json(report), indent=2, allow_nan=False) + "\n"


def write_json(report: Report, path: str) -> None:
    """Write :func:`json_text` to ``path`` atomically."""
    write_atomically(path, json_text(report).encode())

"""``softxent score LOGITS TARGETS``: evaluate saved model outputs.

Reads the arrays (``.npy`` memory-mapped, ``.npz``, small ``.csv``/``.txt``), calls
:func:`softxent.score` and prints the metrics as a table or JSON; optional per-sample
losses and a reliability diagram are written atomically (all or nothing).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from typing import Any

import numpy as np

import softxent as sx
from softxent import _example as example
from softxent._score import DEFAULT_BATCH_BYTES, ScoreResult
from softxent._text import table
from softxent.cli import CLIError, user_input
from softxent.cli._progress import Progress
from softxent.cli._score_io import (
    AtomicOutputs,
    check_output_path,
    check_outputs_are_not_inputs,
    load_array,
    write_per_sample,
)

#: Draw a progress bar only for inputs at least this large (and only on a terminal).
_PROGRESS_MIN_BYTES = 256 * 2**20

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "score",
        help="evaluate saved logits: loss, perplexity, top-k accuracy, calibration",
        description=(
            "Score saved logits against integer class ids: mean cross-entropy (nats, bits), "
            "perplexity, top-k accuracy and expected calibration error. Files larger than "
            "memory are streamed in blocks. Without files, scores a 3-sample demo."
        ),
        epilog=(
            "Files: .npy (memory-mapped), .npz (pick arrays with --key/--target-key; a "
            "file holding one array needs no key), .csv/.txt (small, one sample per line). "
            "Pickled/object arrays are always refused. Rows whose loss is NaN or inf are "
            "excluded from the metrics and counted (see --nonfinite)."
        ),
    )
    p.add_argument("logits", nargs="?", metavar="LOGITS", help="logits file, classes on --axis")
    p.add_argument("targets", nargs="?", metavar="TARGETS", help="integer class ids file")
    p.add_argument("--key", help="name of the logits array in an .npz LOGITS file")
    p.add_argument("--target-key", help="name of the targets array in an .npz TARGETS file")
    p.add_argument("--axis", type=int, default=-1, help="class axis of the logits (default -1)")
    p.add_argument(
        "--ignore-index",
        type=int,
        default=-100,
        help="target value of rows to leave out (default -100)",
    )
    p.add_argument("--weight", metavar="FILE", help="per-class loss weights, shape (C,)")
    p.add_argument(
        "--top-k",
        default="1,5",
        metavar="K[,K...]",
        help="comma-separated k of the top-k accuracies (default 1,5)",
    )
    p.add_argument("--bins", type=int, default=15, help="confidence bins of the ECE (default 15)")
    p.add_argument(
        "--batch-bytes",
        default=str(DEFAULT_BATCH_BYTES),
        metavar="SIZE",
        help="logits bytes per block, e.g. 64M or 1G (default 64 MiB); bounds memory",
    )
    p.add_argument(
        "--per-sample", metavar="FILE", help="write per-sample losses to FILE (.npy or .csv)"
    )
    p.add_argument(
        "--plot", metavar="FILE", help="write a reliability diagram to FILE.png (needs matplotlib)"
    )
    p.add_argument(
        "--nonfinite",
        choices=("exclude", "error"),
        default="exclude",
        help="rows with a NaN/inf loss: exclude and count them (default) or fail (exit 2)",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON to stdout")
    p.add_argument("--no-progress", action="store_true", help="never draw a progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    top_k = _parse_top_k(args.top_k)
    batch_bytes = parse_size(args.batch_bytes)
    _check_outputs(args)
    logits, targets, weight, names = _load_inputs(args)
    result = _score(args, logits, targets, weight, names, top_k, batch_bytes)
    _report_nonfinite(result, names["logits"], args.nonfinite)
    with AtomicOutputs() as outputs:
        if args.per_sample and result.per_sample is not None:  # asked for: always computed
            with outputs.open(args.per_sample) as f:
                write_per_sample(f, result.per_sample, args.per_sample)
        if args.plot:
            with outputs.open(args.plot) as f:
                _plot(result, f)
        outputs.commit()
    if args.json:
        report = {"logits": names["logits"], "targets": names["target"], **result.to_dict()}
        print(json.dumps(report, indent=2, allow_nan=False))
    else:
        if args.logits is None:
            print("Scoring the demo example (pass LOGITS TARGETS to score your own files):")
            print(f"  logits  = {json.dumps(example.LOGITS)}")
            print(f"  targets = {json.dumps(example.TARGETS)}\n")
        print(format_table(result, names["logits"], names["target"], logits))
    return 0


def _check_outputs(args: argparse.Namespace) -> None:
    """Every output path is writable, of a known kind and none of the inputs: before any work."""
    if args.per_sample:
        check_output_path(args.per_sample, (".npy", ".csv"), "--per-sample")
    if args.plot:
        check_output_path(args.plot, (".png",), "--plot")
        _import_matplotlib()  # fail before the work, not after
    if (args.logits is None) != (args.targets is None):
        raise CLIError("give both LOGITS and TARGETS, or neither to score the demo example")
    output_paths = {
        path: option
        for path, option in ((args.per_sample, "--per-sample"), (args.plot, "--plot"))
        if path
    }
    inputs = [path for path in (args.logits, args.targets, args.weight) if path]
    check_outputs_are_not_inputs(output_paths, inputs)


def _load_inputs(args: argparse.Namespace) -> tuple[Any, Any, Any, dict[str, str]]:
    """The logits, targets and class weights (the demo example without files), and the name
    of the file or flag behind each of :func:`softxent.score`'s arguments."""
    if args.logits is None:
        logits_name, targets_name = "demo logits", "demo targets"
        logits, targets = example.logits(), example.targets()
    else:
        logits_name, targets_name = args.logits, args.targets
        logits = load_array(args.logits, key=args.key)
        targets = load_array(args.targets, key=args.target_key, integer=True)
    weight = None
    if args.weight:
        weight = np.asarray(load_array(args.weight)).reshape(-1)  # text is read as (1, C)
    _check_inputs(logits, targets, args.axis, logits_name, targets_name)
    names = {"logits": logits_name, "target": targets_name, "weight": args.weight}
    names |= {"axis": "--axis", "top_k": "--top-k", "bins": "--bins"}
    return logits, targets, weight, names


def _score(args, logits, targets, weight, names, top_k, batch_bytes) -> ScoreResult:
    """:func:`softxent.score` with a progress bar for large inputs; its input errors name
    the file or flag."""
    row_bytes = logits.itemsize * (logits.shape[args.axis] if logits.ndim else 1)
    total_rows = logits.size // max(1, logits.shape[args.axis]) if logits.ndim else 0
    show = not args.no_progress and logits.nbytes >= _PROGRESS_MIN_BYTES
    progress = Progress(
        total_rows, desc="score", unit="MB", scale=row_bytes / 1e6, enabled=None if show else False
    )
    with progress as bar, user_input(names):
        return sx.score(
            logits,
            targets,
            axis=args.axis,
            ignore_index=args.ignore_index,
            weight=weight,
            top_k=top_k,
            bins=args.bins,
            batch_bytes=batch_bytes,
            per_sample=bool(args.per_sample),
            progress=bar.update,
        )


def _report_nonfinite(result: ScoreResult, logits_name: str, policy: str) -> None:
    """Rows with a NaN or inf loss: an error (``--nonfinite error``) or a one-line warning."""
    if not result.n_nonfinite:
        return
    message = (
        f"{logits_name}: {result.n_nonfinite} row(s) with a NaN or inf loss "
        "(NaN/+inf logits, or -inf on the target class)"
    )
    if policy == "error":
        raise CLIError(message)
    print(f"softxent score: warning: {message}; excluded from all metrics", file=sys.stderr)


# ----------------------------------------------------------------------------- helpers


def parse_size(text: str) -> int:
    """``'64M'`` -> 67108864; plain integers are bytes; K/M/G are powers of 1024."""
    match = _SIZE.match(str(text))
    if not match:
        raise CLIError(f"--batch-bytes: expected a size such as 4194304, 64M or 1G, got {text!r}")
    value = int(match.group(1))
    unit = (match.group(2) or "b")[0].lower()
    value *= {"b": 1, "k": 2**10, "m": 2**20, "g": 2**30}[unit]
    if value < 1:
        raise CLIError(f"--batch-bytes must be at least 1 byte, got {text!r}")
    return value


def _parse_top_k(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise CLIError(
            f"--top-k: expected comma-separated integers such as 1,5, got {text!r}"
        ) from None
    if not ks or min(ks) < 1:
        raise CLIError(f"--top-k: every k must be >= 1, got {text!r}")
    return ks


def _check_inputs(logits, targets, axis, logits_name, targets_name) -> None:
    """The checks that need the file names; the library checks the rest."""
    if logits.dtype.kind != "f":
        raise CLIError(
            f"{logits_name}: logits must be floating point (float16/32/64), got dtype "
            f"{logits.dtype}"
        )
    if targets.dtype.kind not in "iu":
        hint = (
            " (probability targets are not supported by score)"
            if targets.dtype.kind == "f"
            else ""
        )
        raise CLIError(
            f"{targets_name}: targets must be integer class ids, got dtype {targets.dtype}{hint}"
        )
    if logits.ndim == 0:
        raise CLIError(f"{logits_name}: logits must have a class axis, got a 0-d array")
    if not -logits.ndim <= axis < logits.ndim:
        raise CLIError(f"--axis {axis} is out of range for logits of shape {logits.shape}")
    expected = logits.shape[: axis % logits.ndim] + logits.shape[axis % logits.ndim + 1 :]
    if targets.shape != expected:
        raise CLIError(
            f"{targets_name}: targets have shape {targets.shape}, expected {expected} (logits "
            f"{logits_name} of shape {logits.shape} without axis {axis})"
        )


def _fmt(value: float | None, digits: int = 4) -> str:
    """``digits`` decimals; very large or small magnitudes in exponent form (never 300 digits)."""
    if value is None or math.isnan(value):
        return "-"
    if value != 0 and math.isfinite(value) and not 1e-3 <= abs(value) < 1e6:
        return f"{value:.{digits}e}"
    return f"{value:.{digits}f}"


def _zero_weight_note(r: ScoreResult) -> str:
    """Why every metric is blank although rows were scored: their class weights sum to 0,
    so the weighted mean is 0/0 and :func:`softxent.score` leaves every metric undefined
    (the confidence bins stay empty)."""
    if r.n_scored and not r.bin_counts.any():
        return "  (their target weights sum to 0: no metric is defined)"
    return ""


def format_table(r: ScoreResult, logits_name: str, targets_name: str, logits) -> str:
    """The metrics as an aligned text table."""
    shape = " x ".join(str(n) for n in logits.shape)
    lines = [
        f"logits   {logits_name} ({shape}, {logits.dtype})",
        f"targets  {targets_name}",
        "",
        f"{'samples':<18}{r.n_samples:>12}",
        f"{'ignored':<18}{r.n_ignored:>12}",
        f"{'non-finite':<18}{r.n_nonfinite:>12}  ({r.nonfinite_treatment} from all metrics)",
        f"{'scored':<18}{r.n_scored:>12}" + _zero_weight_note(r),
        f"{'cross-entropy':<18}{_fmt(r.cross_entropy):>12}  nats"
        + ("  (class-weighted mean)" if r.weighted else ""),
        f"{'':<18}{_fmt(r.cross_entropy_bits):>12}  bits",
        f"{'perplexity':<18}{_fmt(r.perplexity):>12}",
    ]
    for k, acc in r.top_k_accuracy.items():
        lines.append(f"{f'top-{k} accuracy':<18}{_fmt(acc):>12}")
    lines += [
        f"{'mean confidence':<18}{_fmt(r.mean_confidence):>12}",
        f"{f'ECE ({len(r.bin_counts)} bins)':<18}{_fmt(r.ece):>12}",
        "",
    ]
    bins = []
    for i, count in enumerate(r.bin_counts):
        lo, hi = r.bin_edges[i], r.bin_edges[i + 1]
        bracket = "]" if i == len(r.bin_counts) - 1 else ")"
        interval = f"[{lo:.3f}, {hi:.3f}{bracket}"
        bins.append(
            [interval, str(int(count)), _fmt(r.bin_confidence[i]), _fmt(r.bin_accuracy[i])]
        )
    header = ["confidence bin", "count", "confidence", "accuracy"]
    return "\n".join([*lines, *table(header, bins, left=1, rule=False)])


def _import_matplotlib():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise CLIError(
            "--plot needs matplotlib, which is not installed: pip install 'softxent[plot]'"
        ) from None
    return Figure


def _plot(r: ScoreResult, f) -> None:
    """A reliability diagram: top-1 accuracy per confidence bin against the diagonal."""
    Figure = _import_matplotlib()
    fig = Figure(figsize=(5, 5), dpi=100)  # no pyplot: no global state, no GUI backend
    ax = fig.add_subplot()
    width = r.bin_edges[1:] - r.bin_edges[:-1]
    filled = r.bin_counts > 0
    ax.bar(
        r.bin_edges[:-1][filled],
        r.bin_accuracy[filled],
        width=width[filled],
        align="edge",
        edgecolor="black",
        label="accuracy",
    )
    ax.bar(
        r.bin_edges[:-1][filled],
        (r.bin_confidence - r.bin_accuracy)[filled],
        bottom=r.bin_accuracy[filled],
        width=width[filled],
        align="edge",
        color="tab:red",
        alpha=0.3,
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max softmax probability)")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(f"Reliability diagram, ECE = {_fmt(r.ece)} ({r.n_scored} samples)")
    ax.legend(loc="upper left")
    fig.savefig(f, format="png")

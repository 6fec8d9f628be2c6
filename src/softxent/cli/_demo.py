"""``softxent demo``: softmax and cross-entropy, step by step, on the study note's example.

The walk-through takes the note's logits and targets (or the user's), prints every
intermediate -- the shift by the row max, the softmax, the (smoothed) one-hot targets, the
per-sample losses, their (weighted) mean and the gradient -- and checks the result against
``torch.nn.CrossEntropyLoss`` when torch is installed. Every number comes from the public
API (``import softxent as sx``); this module only arranges and explains them.

All output is ASCII and at most 80 columns wide: wide inputs are shown with their middle
classes (and middle samples) elided as ``...``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import textwrap
from dataclasses import dataclass
from typing import Any

import numpy as np

import softxent as sx
from softxent.cli import CLIError

# The study note's example (seed/, spec section 0): 3 samples, 3 classes, float32.
NOTE_LOGITS = [[0.3, 0.1, 0.3], [0.9, 0.2, 0.9], [0.5, 0.4, 0.2]]
NOTE_TARGETS = [1, 2, 0]

WIDTH = 80
_INDENT = "  "
_MAX_ROWS = 12  # longer tables show their first and last rows around a "..." row


def register(subparsers: Any) -> None:
    """Add the ``demo`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "demo",
        help="walk through softmax and cross-entropy step by step",
        description=(
            "Walk through softmax and cross-entropy step by step on the study note's "
            "example (or your own logits and targets), and compare the result with "
            "torch.nn.CrossEntropyLoss when PyTorch is installed. Array options take JSON "
            "text (read as float32 logits / int64 class indices) or a path to a .npy file. "
            "Exit status: 0 on success, 1 if softxent and torch disagree, 2 on bad input."
        ),
    )
    parser.add_argument(
        "--logits",
        metavar="JSON|FILE.npy",
        help="logits, shape (N, C) or (C,); default: the note's 3x3 example",
    )
    parser.add_argument(
        "--targets",
        metavar="JSON|FILE.npy",
        help=(
            "class indices, shape (N,) (integers), or class probabilities, shape (N, C) "
            "(floats); default: [1, 2, 0]"
        ),
    )
    parser.add_argument("--weight", metavar="JSON|FILE.npy", help="per-class weights, shape (C,)")
    parser.add_argument(
        "--ignore-index",
        type=int,
        default=-100,
        metavar="INT",
        help="samples whose target equals this class index are ignored (default: -100)",
    )
    parser.add_argument(
        "--label-smoothing",
        type=float,
        default=0.0,
        metavar="EPS",
        help="smooth the targets: q = (1 - EPS) * onehot + EPS / C, EPS in [0, 1] (default: 0)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the walk-through; return 0, or 1 when softxent and torch disagree."""
    case = _load_case(args)
    with np.errstate(all="ignore"):  # -inf/nan logits are shown as they come out
        lines, agree = _walkthrough(case)
    print("\n".join(lines))
    return 0 if agree in (True, None) else 1


# --------------------------------------------------------------------------- input


@dataclass(frozen=True)
class _Case:
    """The inputs of one walk-through, as the library receives them."""

    logits: np.ndarray  # (N, C) float
    target: np.ndarray  # (N,) integer class ids, or (N, C) float probabilities
    weight: np.ndarray | None  # (C,)
    ignore_index: int
    label_smoothing: float
    source: str  # where the numbers come from, for the header

    @property
    def probabilities(self) -> bool:
        return self.target.dtype.kind == "f" and self.target.shape == self.logits.shape


def _load_case(args: argparse.Namespace) -> _Case:
    if args.logits is not None and args.targets is None:
        raise CLIError("--targets is required when --logits is given")
    if args.logits is None:
        logits = np.array(NOTE_LOGITS, dtype=np.float32)
    else:
        logits = _load_array(args.logits, "--logits")
        if logits.dtype.kind in "iub":  # JSON like [[1, 2, 3]]: still logits
            logits = logits.astype(np.float32)
    if args.targets is None:
        target = np.array(NOTE_TARGETS, dtype=np.int64)
    else:
        target = _load_array(args.targets, "--targets", integer=True)
    weight = None if args.weight is None else _load_array(args.weight, "--weight")

    if logits.ndim == 1:  # one sample of C classes
        logits = logits[np.newaxis]
        target = target[np.newaxis]
    if logits.ndim != 2:
        raise CLIError(f"--logits must have shape (N, C) or (C,), got shape {logits.shape}")
    if 0 in logits.shape:
        raise CLIError(
            f"--logits needs at least one sample and one class, got shape {logits.shape}"
        )
    if target.dtype.kind == "f" and logits.dtype.kind == "f":
        # Probabilities typed in as JSON are float32 like the logits; a .npy keeps its dtype.
        if args.targets is not None and not args.targets.endswith(".npy"):
            target = target.astype(logits.dtype)
    return _Case(
        logits=logits,
        target=target,
        weight=weight,
        ignore_index=args.ignore_index,
        label_smoothing=args.label_smoothing,
        source=_SOURCES[args.logits is None, args.targets is None],
    )


_SOURCES = {  # (default logits, default targets) -> the header's words
    (True, True): "the study note's example",
    (True, False): "the study note's logits with your targets",
    (False, False): "your logits and targets",
}


def _load_array(text: str, option: str, *, integer: bool = False) -> np.ndarray:
    """``text`` as an array: a .npy file when it names one, else JSON numbers."""
    if text.endswith(".npy") or os.path.isfile(text):
        try:
            loaded = np.load(text, allow_pickle=False)
        except FileNotFoundError:
            raise CLIError(f"{option}: no such file: {text!r}") from None
        except (OSError, ValueError, EOFError) as error:
            reason = " ".join(str(error).split())  # one line
            raise CLIError(f"{option}: cannot read {text!r} as a .npy file: {reason}") from None
        if not isinstance(loaded, np.ndarray):  # an .npz archive
            raise CLIError(f"{option}: {text!r} holds several arrays; give a single .npy")
        if loaded.dtype.kind not in "biuf":
            raise CLIError(f"{option}: {text!r} must hold numbers, got dtype {loaded.dtype}")
        return loaded
    shown = text if len(text) <= 40 else text[:37] + "..."
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise CLIError(
            f"{option}: {shown!r} is neither JSON ({error.msg}, column {error.colno}) "
            "nor a .npy file"
        ) from None
    if not _only_numbers(data):  # NumPy would quietly turn true into 1
        raise CLIError(f"{option}: {shown!r} must hold only numbers (JSON arrays of numbers)")
    try:
        array = np.array(data)
    except ValueError:  # ragged nesting
        raise CLIError(f"{option}: {shown!r} is not a rectangular array of numbers") from None
    if array.dtype.kind not in "iuf":
        raise CLIError(f"{option}: {shown!r} is not a rectangular array of numbers")
    if array.dtype.kind in "iu":
        return array.astype(np.int64) if integer else array.astype(np.float32)
    return array.astype(np.float32)


def _only_numbers(data: Any) -> bool:
    if isinstance(data, list):
        return all(_only_numbers(item) for item in data)
    return isinstance(data, (int, float)) and not isinstance(data, bool)


# The library names its arguments; the user typed options.
_OPTION_OF = {
    "logits": "--logits",
    "target": "--targets",
    "weight": "--weight",
    "ignore_index": "--ignore-index",
    "label_smoothing": "--label-smoothing",
}


def _library_call(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the library; its ValueError/TypeError becomes a CLIError naming the option."""
    try:
        return function(*args, **kwargs)
    except (ValueError, TypeError) as error:
        message = " ".join(str(error).split())
        # The argument the message talks about first is the one to fix.
        found = [(message.find(name), option) for name, option in _OPTION_OF.items()]
        named = sorted((position, option) for position, option in found if position >= 0)
        raise CLIError(f"{named[0][1] if named else 'input'}: {message}") from None


# --------------------------------------------------------------------------- formatting


def _cell(value: float) -> str:
    """A computed number in a table, with 8 significant digits (7 just above 0.01)."""
    value = float(value) + 0.0  # -0.0 -> 0.0
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if value == 0.0 or 0.01 <= magnitude < 1.0:
        return f"{value:.8f}"  # fixed decimals keep probability columns aligned
    if 1.0 <= magnitude < 1e5:
        return f"{value:.{7 - math.floor(math.log10(magnitude))}f}"
    return f"{value:.7e}"


def _input(value: float) -> str:
    """An input number as typed: the shortest repr, at most 8 significant digits."""
    if not isinstance(value, np.floating):
        value = np.float64(value)
    value = value + value.dtype.type(0.0)  # -0.0 -> 0.0
    if not np.isfinite(value):
        return str(float(value))
    if value == 0.0 or 1e-4 <= abs(float(value)) < 1e8:
        # Shortest repr in the value's own dtype: float32 0.3 prints as 0.3, not 0.30000001.
        return np.format_float_positional(value, precision=8, unique=True, trim="-")
    return f"{float(value):.7e}"


def _num(value: float) -> str:
    """A scalar in prose: 8 significant digits."""
    return f"{float(value) + 0.0:#.8g}"


def _sum_cell(value: float) -> str:
    """A row sum: 6 decimals, so float rounding (1 - 6e-8) does not distract."""
    return f"{round(float(value), 6) + 0.0:.6f}"


def _prose(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=_INDENT, subsequent_indent=_INDENT)


def _table(headers: list[str], rows: list[list[str]], *, lead: int, trail: int) -> list[str]:
    """Right-aligned columns; the middle columns and rows are elided to fit the screen.

    The first ``lead`` and last ``trail`` columns (labels, row sums) are always shown; the
    columns between them are the classes, of which the first few and the last are kept.
    """
    if len(rows) > _MAX_ROWS:
        rows = [*rows[: _MAX_ROWS - 3], ["..."] * len(headers), *rows[-2:]]
    columns = [[h, *(row[i] for row in rows)] for i, h in enumerate(headers)]
    widths = [max(len(s) for s in column) for column in columns]
    middle = list(range(lead, len(headers) - trail))
    fixed = [*range(lead), *range(len(headers) - trail, len(headers))]

    def used(keep: list[int]) -> int:
        shown = len(keep) + len(fixed) + (len(keep) < len(middle))
        return len(_INDENT) + sum(widths[i] for i in (*fixed, *keep)) + 2 * shown + 3

    keep = middle
    while len(keep) > 2 and used(keep) > WIDTH:
        keep = [*keep[:-2], keep[-1]]  # drop the last-but-one kept class
    order: list[int | None] = list(range(lead))
    for position, i in enumerate(keep):
        if position == len(keep) - 1 and len(keep) < len(middle):
            order.append(None)  # the "..." column before the last class
        order.append(i)
    order.extend(range(len(headers) - trail, len(headers)))

    def line(cells: list[str]) -> str:
        parts = ["..." if i is None else cells[i].rjust(widths[i]) for i in order]
        return (_INDENT + "  ".join(parts)).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def _matrix(
    values: np.ndarray,
    *,
    fmt: Any = _cell,
    lead: dict[str, list[str]] | None = None,
    trail: dict[str, list[str]] | None = None,
) -> list[str]:
    """An (N, C) table with a sample column ``n``, class columns, and extra columns."""
    lead = {"n": [str(n) for n in range(values.shape[0])], **(lead or {})}
    trail = trail or {}
    headers = [*lead, *(f"c={c}" for c in range(values.shape[1])), *trail]
    rows = []
    for n, row in enumerate(values):
        rows.append(
            [
                *(column[n] for column in lead.values()),
                *(fmt(v) for v in row),
                *(column[n] for column in trail.values()),
            ]
        )
    return _table(headers, rows, lead=len(lead), trail=len(trail))


def _vector(values: Any, fmt: Any = _input) -> str:
    values = list(values)
    if len(values) > 8:
        return "[" + ", ".join([*map(fmt, values[:6]), "...", fmt(values[-1])]) + "]"
    return "[" + ", ".join(map(fmt, values)) + "]"


def _step(number: int, title: str) -> list[str]:
    return ["", f"Step {number}. {title}"]


# --------------------------------------------------------------------------- the walk


def _tolerance(dtype: np.dtype, logits: np.ndarray) -> tuple[float, float]:
    """(rtol, atol) for comparing with torch: the project's per-dtype tolerances."""
    finite = logits[np.isfinite(logits)]
    scale = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    rtol = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 2e-6}.get(dtype, 1e-3)
    return rtol, rtol * scale


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> bool:
    return bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))


def _walkthrough(case: _Case) -> tuple[list[str], bool | None]:
    """The lines to print, and whether torch agrees (None: torch not installed)."""
    x, y, w = case.logits, case.target, case.weight
    eps, ignore_index = case.label_smoothing, case.ignore_index
    options = {"weight": w, "ignore_index": ignore_index, "label_smoothing": eps}
    # The library validates everything first, so bad input fails before anything prints.
    result = _library_call(sx.cross_entropy_with_grad, x, y, **options)
    losses = sx.cross_entropy(x, y, reduction="none", **options)  # (N,)
    probs = sx.softmax(x)  # (N, C)
    log_probs = sx.log_softmax(x)  # (N, C)
    lse = sx.logsumexp(x)  # (N,)
    mean = result.loss

    n_samples, n_classes = x.shape
    w64 = np.ones(n_classes) if w is None else np.asarray(w, dtype=np.float64)  # (C,)
    soft = case.probabilities
    if soft:
        valid = np.ones(n_samples, dtype=bool)
        ids = np.zeros(n_samples, dtype=np.int64)
        q = np.asarray(y, dtype=np.float64)  # (N, C)
        onehot = None
    else:
        ids = np.asarray(y).astype(np.int64)
        valid = ids != ignore_index  # (N,)
        ids = np.where(valid, ids, 0)
        onehot = sx.one_hot(ids, n_classes, dtype=np.float64) * valid[:, None]  # (N, C)
        q = onehot
    if eps > 0:
        q = np.where(valid[:, None], (1 - eps) * q + eps / n_classes, 0.0)
    weighted = w is not None

    out: list[str] = []
    title = "softxent demo: softmax and cross-entropy, step by step"
    out += [title, "=" * len(title)]
    kind = "class probabilities" if soft else "class indices"
    samples = "sample" if n_samples == 1 else "samples"
    out += _prose(
        f"Input: {case.source}, N = {n_samples} {samples}, C = {n_classes} classes, "
        f"{x.dtype} logits, targets as {kind}."
    )
    if x.dtype == np.float16:
        out += _prose("float16 is computed in float32 and rounded once at the end.")
    chosen = []
    if weighted:
        chosen.append(f"weight w = {_vector(w64)}")
    if ignore_index != -100:
        chosen.append(f"ignore_index = {ignore_index}")
    if eps > 0:
        chosen.append(f"label_smoothing eps = {_input(eps)}")
    if chosen:
        out += _prose("Options: " + "; ".join(chosen) + ".")

    # Step 1: the logits.
    out += _step(1, "The logits x: one row per sample n, one column per class c.")
    if soft:
        out += _matrix(x, fmt=_input)
    else:
        out += _matrix(x, fmt=_input, trail={"target y": [str(int(v)) for v in y]})

    # Step 2: shift by the row max.
    row_max = np.max(x, axis=1, keepdims=True)  # (N, 1)
    overflow = float(np.log(np.finfo(x.dtype).max))
    out += _step(2, "Subtract each row's max m[n] = max_c x[n, c].")
    out += _prose(
        "Adding a constant to a row does not change its softmax, and after the shift every "
        f"exponent is <= 0: the note's np.exp(x) overflows to inf above ~{overflow:.4g} "
        f"in {x.dtype} (then inf/inf = nan); exp(x - m) never does."
    )
    out += _matrix(x - row_max, fmt=_input, trail={"m[n]": [_input(v) for v in row_max[:, 0]]})

    # Step 3: softmax.
    out += _step(3, "Softmax p[n, c] = exp(x[n, c] - m[n]) / sum_k exp(x[n, k] - m[n]).")
    out += _prose("Each row is a probability distribution: it sums to 1.")
    sums = probs.astype(np.float64).sum(axis=1)
    out += _matrix(probs, trail={"row sum": [_sum_cell(v) for v in sums]})

    # Step 4: the targets.
    if soft:
        out += _step(4, "The target distributions q[n, c], given directly.")
        out += _matrix(np.asarray(y, dtype=np.float64), fmt=_input)
    else:
        ignored_note = [("" if v else "ignored") for v in valid]
        out += _step(4, "One-hot targets: onehot[n, c] = 1 if c == y[n] else 0.")
        out += _matrix(
            onehot,
            fmt=lambda v: str(int(v)),
            trail={"y": [str(int(v)) for v in y], "": ignored_note},
        )
        if not valid.all():
            out += _prose(
                f"Samples with y == ignore_index ({ignore_index}) are ignored: they add "
                "nothing to the loss, its denominator or the gradient (their own row of "
                "the gradient is 0), but their classes stay in everyone's softmax."
            )
    if eps > 0:
        out += _prose(
            f"Label smoothing moves eps = {_input(eps)} of each target's mass onto all "
            f"classes evenly: q = (1 - eps) * target + eps / C (eps / C = "
            f"{_input(eps / n_classes)})."
        )
        out += _matrix(q, trail={"": ["" if v else "ignored" for v in valid]})

    # Step 5: per-sample losses.
    out += _per_sample(case, x, ids, valid, q, w64, lse, probs, log_probs, losses)

    # Step 6: the mean.
    out += _step(6, "The loss is the mean over the samples.")
    total = float(np.sum(losses, dtype=np.float64))
    if soft:
        denominator, name = float(n_samples), "N"
        explain = "L = sum_n l[n] / N"
        if weighted:
            explain += " (for probability targets torch divides by N, not by the weights)"
    elif weighted:
        denominator, name = float(np.sum(w64[ids] * valid)), "sum_n w[y[n]]"
        explain = "weighted mean L = sum_n w[y[n]] * l[n] / sum_n w[y[n]]"
        if eps > 0:
            explain = (
                "weighted mean L = sum_n l[n] / sum_n w[y[n]] (the smoothing term is "
                "weighted by every w[c] but divided by the target weights, as in torch)"
            )
    else:
        denominator, name = float(np.sum(valid)), "N"
        explain = "L = sum_n l[n] / N"
    if not valid.all():
        explain += ", over the non-ignored samples only"
    out += _prose(explain + ":")
    out += [
        f"{_INDENT}L = {_num(total)} / {_input(denominator)} ({name}) = {_num(mean)}"
        + (" (0 / 0: the mean of no samples)" if denominator == 0 else "")
    ]

    # Step 7: the gradient.
    out += _step(7, "The gradient dL/dx, what backpropagation sends back to the logits.")
    if weighted:
        formula = "dL/dx[n, c] = (p[n, c] * sum_k w[k] q[n, k] - w[c] q[n, c]) / D, with"
    elif soft:  # q need not sum to 1
        formula = "dL/dx[n, c] = (p[n, c] * sum_k q[n, k] - q[n, c]) / D, with"
    else:
        formula = "dL/dx = (p - q) / D, with"
    if soft or eps > 0:
        target_text = "q the targets of step 4"
    else:
        target_text = "q the one-hot targets"
    if weighted and not soft:
        denominator_text = "D = sum_n w[y[n]] as in step 6"
    elif valid.all():
        denominator_text = "D = N"
    else:
        denominator_text = "D the number of non-ignored samples"
    if not (weighted or soft or eps > 0) and valid.all():
        formula, target_text, denominator_text = "dL/dx = (p - onehot) / N, with", "", ""
    explain = f"{formula} p the softmax"
    explain += f", {target_text} and {denominator_text}." if target_text else "."
    out += _prose(
        explain + " Each row sums to 0: raising every logit of a sample by the same amount "
        "changes nothing."
    )
    out += _matrix(
        result.grad,
        trail={"row sum": [_sum_cell(v) for v in result.grad.astype(np.float64).sum(axis=1)]},
    )

    # Step 8: torch.
    check, agree = _torch_check(case, result, losses)
    out += _step(8, "Check against PyTorch.")
    out += check

    # Units.
    out += ["", "Units"]
    out += _prose(
        f"log is the natural log, so losses are in nats: L = {_num(mean)} nats = "
        f"{_num(float(mean) / math.log(2))} bits (bits = nats / ln 2). The note's "
        '"|1*log0.5| = 0.3" used log base 10: -log10(0.5) = 0.30103; the natural value '
        "is -ln(0.5) = 0.69314718 nats (= 1 bit), which is what torch computes."
    )
    return out, agree


def _per_sample(
    case: _Case,
    x: np.ndarray,
    ids: np.ndarray,
    valid: np.ndarray,
    q: np.ndarray,
    w64: np.ndarray,
    lse: np.ndarray,
    probs: np.ndarray,
    log_probs: np.ndarray,
    losses: np.ndarray,
) -> list[str]:
    out = _step(5, "The loss of each sample.")
    n_samples = x.shape[0]
    eps, weighted = case.label_smoothing, case.weight is not None
    if case.probabilities or eps > 0:
        out += _prose(
            "Cross-entropy of the target q against the prediction p: "
            + (
                "l[n] = -sum_c w[c] q[n, c] log p[n, c]"
                if weighted
                else "l[n] = -sum_c q[n, c] log p[n, c]"
            )
            + ". The matrix of -log p[n, c] = lse[n] - x[n, c], where lse[n] = m[n] + "
            "log sum_c exp(x[n, c] - m[n]) (log-softmax without dividing):"
        )
        labels = ["" if v else "ignored" for v in valid]
        out += _matrix(-log_probs, trail={"l[n]": [_cell(v) for v in losses], "": labels})
        return out

    out += _prose(
        "With a one-hot target only the true class counts: l[n] = -log p[n, y[n]] = "
        "lse[n] - x[n, y[n]], where lse[n] = m[n] + log sum_c exp(x[n, c] - m[n]) "
        "(computed this way, not as the log of the rounded p)."
        + (" Class weights scale each sample by w[y[n]]." if weighted else "")
    )
    headers = ["n", "y", "x[n,y]", "lse[n]", "p[n,y]", "l[n]"]
    if weighted:
        headers += ["w[y]", "w[y]*l[n]"]
    rows = []
    for n in range(n_samples):
        if not valid[n]:
            rows.append([str(n), str(int(case.target[n])), "ignored", *[""] * (len(headers) - 3)])
            continue
        c = int(ids[n])
        row = [
            str(n),
            str(c),
            _input(x[n, c]),
            _cell(lse[n]),
            _cell(probs[n, c]),
            _cell(-log_probs[n, c]),
        ]
        if weighted:
            row += [_input(w64[c]), _cell(losses[n])]
        rows.append(row)
    out += _table(headers, rows, lead=len(headers), trail=0)
    return out


def _torch_check(case: _Case, result: Any, losses: np.ndarray) -> tuple[list[str], bool | None]:
    try:
        import torch  # optional: only the comparison needs it
    except ImportError:
        return _prose("PyTorch is not installed, so there is no comparison with torch."), None

    x = torch.from_numpy(np.ascontiguousarray(case.logits)).requires_grad_(True)
    if case.probabilities:
        y = torch.from_numpy(np.ascontiguousarray(case.target))
    else:
        y = torch.from_numpy(np.asarray(case.target).astype(np.int64))
    arguments = []
    weight = None
    if case.weight is not None:
        weight = torch.from_numpy(np.asarray(case.weight).astype(case.logits.dtype))
        arguments.append("weight=w")
    if case.ignore_index != -100:
        arguments.append(f"ignore_index={case.ignore_index}")
    if case.label_smoothing > 0:
        arguments.append(f"label_smoothing={_input(case.label_smoothing)}")
    module = torch.nn.CrossEntropyLoss(
        weight=weight, ignore_index=case.ignore_index, label_smoothing=case.label_smoothing
    )
    try:
        loss = module(x, y)
        loss.backward()
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        reason = " ".join(str(error).split())
        return _prose(f"torch could not compute it: {type(error).__name__}: {reason}"), None
    torch_loss = loss.detach().numpy()
    torch_grad = x.grad.numpy()

    ours_loss = np.asarray(result.loss)
    ours_grad = np.asarray(result.grad)
    rtol, atol = _tolerance(np.result_type(ours_loss), case.logits)
    out = _prose(
        f"torch {torch.__version__}: nn.CrossEntropyLoss({', '.join(arguments)})(x, y), "
        "loss and gradient:"
    )
    # softxent gives 0 where torch's gradient is NaN in an ignored row (pytorch#11551).
    nan_rows = np.isnan(torch_grad).any(axis=1) & (np.asarray(losses) == 0)
    if not case.probabilities:
        nan_rows &= np.asarray(case.target) == case.ignore_index
    else:
        nan_rows[:] = False
    grad_error = np.abs(ours_grad[~nan_rows].astype(np.float64) - torch_grad[~nan_rows])
    max_error = float(np.nanmax(grad_error)) if grad_error.size else 0.0
    out += [
        f"{_INDENT}softxent  L = {float(ours_loss):#.8g}",
        f"{_INDENT}torch     L = {float(torch_loss):#.8g}",
        f"{_INDENT}|difference| = {abs(float(ours_loss) - float(torch_loss)):.1e} (loss), "
        f"{max_error:.1e} (largest in the gradient)",
    ]
    agree = _close(ours_loss, torch_loss, rtol, atol) and _close(
        ours_grad[~nan_rows], torch_grad[~nan_rows], rtol, atol
    )
    verdict = "they agree" if agree else "they DISAGREE"
    out += _prose(
        f"{verdict} within the {ours_loss.dtype} tolerance (relative {rtol:.0e}, "
        f"absolute {atol:.0e})."
    )
    if nan_rows.any():
        rows = ", ".join(str(int(n)) for n in np.flatnonzero(nan_rows))
        out += _prose(
            f"torch's gradient is NaN in ignored row(s) {rows} (pytorch/pytorch#11551); "
            "softxent gives 0 there by design, so those rows are not compared."
        )
    return out, agree

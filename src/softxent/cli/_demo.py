"""``softxent demo``: softmax and cross-entropy, step by step, on a 3x3 example.

The walk-through first shows the textbook NumPy code (softmax as ``exp(x) / sum exp(x)``,
one-hot targets filled in a loop, the mean of ``-sum(onehot * log p)``), then takes the
built-in example's logits and targets (or the user's) and prints every intermediate -- the
shift by the row max, the softmax, the (smoothed) one-hot targets, the per-sample losses,
their (weighted) mean and the gradient -- saying at each step what it does better than the
textbook code, and checks the result against ``torch.nn.CrossEntropyLoss`` when torch is
installed. Every number comes from the public API (``import softxent as sx``) or from the
library's own reduction and tolerance rules; this module only arranges and explains them.

All output is ASCII and at most 80 columns wide: wide inputs are shown with their middle
classes (and middle samples) elided as ``...``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

import softxent as sx
from softxent import _example as example
from softxent._reduction import mean_denominator
from softxent._text import paragraph, table
from softxent._tolerance import tolerances
from softxent.cli import CLIError, user_input

WIDTH = 80
_INDENT = "  "
_MAX_ROWS = 12  # longer tables show their first and last rows around a "..." row


def register(subparsers: Any) -> None:
    """Add the ``demo`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "demo",
        help="walk through softmax and cross-entropy step by step",
        description=(
            "Walk through softmax and cross-entropy step by step on a 3x3 example (or "
            "your own logits and targets), next to the textbook NumPy code, and compare "
            "the result with torch.nn.CrossEntropyLoss when PyTorch is installed. Array "
            "options take JSON text (read as float32 logits / int64 class indices) or a "
            "path to a .npy file. Exit status: 0 on success, 1 if softxent and torch "
            "disagree, 2 on bad input."
        ),
    )
    parser.add_argument(
        "--logits",
        metavar="JSON|FILE.npy",
        help=f"logits, shape (N, C) or (C,); default: {_json(example.LOGITS)}",
    )
    parser.add_argument(
        "--targets",
        metavar="JSON|FILE.npy",
        help=(
            "class indices, shape (N,) (integers), or class probabilities, shape (N, C) "
            f"(floats); default: {_json(example.TARGETS)}"
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
    parser.add_argument(
        "--compare-mse",
        action="store_true",
        help=(
            "instead: compare cross-entropy with the squared error between softmax and "
            "one-hot targets, and show why classifiers use cross-entropy"
        ),
    )
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help="with --compare-mse: draw both losses and gradients (needs softxent[plot])",
    )
    parser.set_defaults(func=run)


def _json(value: Any) -> str:
    return json.dumps(value)  # tuples print as JSON lists


def run(args: argparse.Namespace) -> int:
    """Print the walk-through; return 0, or 1 when softxent and torch disagree."""
    if args.plot is not None and not args.compare_mse:
        raise CLIError("--plot draws the curves of --compare-mse; add --compare-mse")
    case = _load_case(args)
    if args.compare_mse:
        return _run_compare_mse(args, case)
    with np.errstate(all="ignore"):  # -inf/nan logits are shown as they come out
        results = _compute(case)
        lines = _walkthrough(case, results)
        check, agree = _torch_check(case, results)
    print("\n".join([*lines, *_step(8, "Check against PyTorch."), *check, *_units(results)]))
    return 0 if agree in (True, None) else 1


def _run_compare_mse(args: argparse.Namespace, case: _Case) -> int:
    """``--compare-mse``: both losses on the case, then the sweep; the plot if asked."""
    from softxent.cli import _compare_mse  # the lesson of its own module

    if case.probabilities or case.weight is not None or case.label_smoothing > 0:
        raise CLIError(
            "--compare-mse takes logits and class-index targets only (no probability "
            "targets, --weight or --label-smoothing)"
        )
    if args.plot is not None:
        _compare_mse.check_plot_path(args.plot, [p for p in (args.logits, args.targets) if p])
    with user_input(_OPTION_OF), np.errstate(all="ignore"):
        if np.any(case.target == case.ignore_index):
            raise ValueError("target holds ignore_index, which --compare-mse does not take")
        comparison = _compare_mse.compare(case.logits, case.target)
    with np.errstate(all="ignore"):
        lines = _compare_mse.report(case.logits, case.target, comparison)
        check, agree = _compare_mse.torch_check(case.logits, case.target, comparison)
    print("\n".join([*lines, *check]))
    if args.plot is not None:
        _compare_mse.plot(args.plot)
        print(f"\nwrote {args.plot}")
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
        logits = example.logits()
    else:
        logits = _load_array(args.logits, "--logits")
        if logits.dtype.kind in "iub":  # JSON like [[1, 2, 3]]: still logits
            logits = logits.astype(np.float32)
    if args.targets is None:
        target = example.targets()
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
    (True, True): "the built-in 3x3 example",
    (True, False): "the built-in 3x3 example's logits with your targets",
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
    if array.dtype.kind in "iu" and integer:
        return array.astype(np.int64)
    _check_fits_float32(array, option)
    return array.astype(np.float32)


def _check_fits_float32(array: np.ndarray, option: str) -> None:
    """JSON numbers are read as float32: refuse those that would round to inf."""
    largest = float(np.finfo(np.float32).max)
    with np.errstate(invalid="ignore"):
        too_big = np.isfinite(array) & (np.abs(array) > largest)
    if too_big.any():
        value = array[tuple(np.argwhere(too_big)[0])].item()
        raise CLIError(
            f"{option}: {value!r} does not fit float32 (largest finite value {largest:.8g}); "
            "pass a float64 .npy file for larger values"
        )


def _only_numbers(data: Any) -> bool:
    if isinstance(data, list):
        return all(_only_numbers(item) for item in data)
    return isinstance(data, (int, float)) and not isinstance(data, bool)


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


def _input(given: float | np.floating) -> str:
    """An input number as typed: the shortest repr, at most 8 significant digits."""
    value = given if isinstance(given, np.floating) else np.float64(given)
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
    return paragraph(text, width=WIDTH, indent=_INDENT)


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


# Right-aligned columns, middle classes and samples elided to fit the screen.
_table = functools.partial(table, rule=False, indent=_INDENT, width=WIDTH, max_rows=_MAX_ROWS)


def _vector(values: Any, fmt: Any = _input) -> str:
    values = list(values)
    if len(values) > 8:
        return "[" + ", ".join([*map(fmt, values[:6]), "...", fmt(values[-1])]) + "]"
    return "[" + ", ".join(map(fmt, values)) + "]"


def _step(number: int, title: str) -> list[str]:
    return ["", f"Step {number}. {title}"]


# --------------------------------------------------------------------------- the walk

# The library names its arguments; the user typed options.
_OPTION_OF = {
    "logits": "--logits",
    "target": "--targets",
    "weight": "--weight",
    "ignore_index": "--ignore-index",
    "label_smoothing": "--label-smoothing",
}


@dataclass(frozen=True)
class _Results:
    """What the public API returns for one case, and the targets as the loss sees them."""

    result: sx.LossAndGrad  # the mean loss and its gradient, (N, C)
    losses: np.ndarray  # (N,) per-sample losses
    probs: np.ndarray  # (N, C) softmax
    log_probs: np.ndarray  # (N, C)
    lse: np.ndarray  # (N,) log-sum-exp
    ids: np.ndarray  # (N,) class indices, 0 where ignored (and for probability targets)
    valid: np.ndarray  # (N,) False where the target is ignore_index
    onehot: np.ndarray  # (N, C) one-hot of ids (0 where ignored); probability targets: q
    q: np.ndarray  # (N, C) the targets the loss uses (smoothed, zero where ignored)
    w64: np.ndarray  # (C,) the class weights, ones when none were given
    denominator: float  # of the mean


def _compute(case: _Case) -> _Results:
    """Every number of the walk-through, from the public API; validates first."""
    x, y = case.logits, case.target
    options: dict[str, Any] = {"weight": case.weight, "ignore_index": case.ignore_index}
    options["label_smoothing"] = case.label_smoothing
    with user_input(_OPTION_OF):  # bad input fails here, before anything prints
        result = sx.cross_entropy_with_grad(x, y, **options)
    losses = np.asarray(sx.cross_entropy(x, y, reduction="none", **options))  # (N,)
    probs, log_probs, lse = sx.softmax(x), sx.log_softmax(x), np.asarray(sx.logsumexp(x))
    return _Results(result, losses, probs, log_probs, lse, *_targets(case))


def _targets(
    case: _Case,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """The ``_Results`` fields from ``ids`` on: the targets as the loss sees them."""
    y, w = case.target, case.weight
    n_samples, n_classes = case.logits.shape
    w64 = np.ones(n_classes) if w is None else np.asarray(w, dtype=np.float64)  # (C,)
    if case.probabilities:
        valid = np.ones(n_samples, dtype=bool)
        ids = np.zeros(n_samples, dtype=np.int64)
        onehot = q = np.asarray(y, dtype=np.float64)  # (N, C)
        denominator = mean_denominator(n_samples)
    else:
        valid = np.asarray(y) != case.ignore_index  # (N,)
        ids = np.where(valid, np.asarray(y).astype(np.int64), 0)
        onehot = sx.one_hot(ids, n_classes, dtype=np.float64) * valid[:, None]  # (N, C)
        q = onehot
        denominator = mean_denominator(n_samples, ids, valid, None if w is None else w64)
    eps = case.label_smoothing
    if eps > 0:
        q = np.where(valid[:, None], (1 - eps) * q + eps / n_classes, 0.0)
    return ids, valid, onehot, q, w64, denominator


def _walkthrough(case: _Case, r: _Results) -> list[str]:
    """Steps 1 to 7: the lines to print, from the results of the public API."""
    return [
        *_header(case, r),
        *_textbook(),
        *_step_logits(case),
        *_step_shift(case),
        *_step_softmax(r),
        *_step_targets(case, r),
        *_step_per_sample(case, r),
        *_step_mean(case, r),
        *_step_gradient(case, r),
    ]


def _header(case: _Case, r: _Results) -> list[str]:
    title = "softxent demo: softmax and cross-entropy, step by step"
    n_samples, n_classes = case.logits.shape
    kind = "class probabilities" if case.probabilities else "class indices"
    samples = "sample" if n_samples == 1 else "samples"
    out = [title, "=" * len(title)]
    out += _prose(
        f"Input: {case.source}, N = {n_samples} {samples}, C = {n_classes} classes, "
        f"{case.logits.dtype} logits, targets as {kind}."
    )
    if case.logits.dtype == np.float16:
        out += _prose("float16 is computed in float32 and rounded once at the end.")
    chosen = []
    if case.weight is not None:
        chosen.append(f"weight w = {_vector(r.w64)}")
    if case.ignore_index != -100:
        chosen.append(f"ignore_index = {case.ignore_index}")
    if case.label_smoothing > 0:
        chosen.append(f"label_smoothing eps = {_input(case.label_smoothing)}")
    if chosen:
        out += _prose("Options: " + "; ".join(chosen) + ".")
    return out


_TEXTBOOK = """\
e = np.exp(x)                           # softmax
p = e / e.sum(axis=1, keepdims=True)
onehot = np.zeros_like(p)               # one-hot targets
for n in range(len(y)):
    onehot[n, y[n]] = 1
loss = np.mean(-np.sum(onehot * np.log(p), axis=1))"""


def _textbook() -> list[str]:
    out = ["", "The textbook NumPy code"]
    out += _prose("Cross-entropy as it is usually first written, for logits x and targets y:")
    out += [_INDENT * 2 + line for line in _TEXTBOOK.splitlines()]
    out += _prose(
        "It gives the right number on small, tame logits. The steps below compute the "
        "same loss the way softxent (and torch) do, and say where the textbook code fails."
    )
    return out


def _step_logits(case: _Case) -> list[str]:
    out = _step(1, "The logits x: one row per sample n, one column per class c.")
    if case.probabilities:
        return out + _matrix(case.logits, fmt=_input)
    targets = [str(int(v)) for v in case.target]
    return out + _matrix(case.logits, fmt=_input, trail={"target y": targets})


def _step_shift(case: _Case) -> list[str]:
    x = case.logits
    row_max = np.max(x, axis=1, keepdims=True)  # (N, 1)
    overflow = float(np.log(np.finfo(x.dtype).max))
    out = _step(2, "Subtract each row's max m[n] = max_c x[n, c].")
    out += _prose(
        "Adding a constant to a row does not change its softmax, and after the shift every "
        f"exponent is <= 0: the textbook e = np.exp(x) overflows to inf above "
        f"~{overflow:.4g} in {x.dtype} (then inf/inf = nan); exp(x - m) never does."
    )
    return out + _matrix(
        x - row_max, fmt=_input, trail={"m[n]": [_input(v) for v in row_max[:, 0]]}
    )


def _step_softmax(r: _Results) -> list[str]:
    out = _step(3, "Softmax p[n, c] = exp(x[n, c] - m[n]) / sum_k exp(x[n, k] - m[n]).")
    out += _prose(
        "Each row is a probability distribution: it sums to 1. softxent takes exp once "
        "per logit and gets both p and the log-sum-exp of step 5 from it; the textbook "
        "code takes exp, divides, then takes np.log(p) of the rounded result."
    )
    sums = r.probs.astype(np.float64).sum(axis=1)
    return out + _matrix(r.probs, trail={"row sum": [_sum_cell(v) for v in sums]})


def _ignored_labels(r: _Results) -> list[str]:
    return ["" if v else "ignored" for v in r.valid]


def _step_targets(case: _Case, r: _Results) -> list[str]:
    if case.probabilities:
        out = _step(4, "The target distributions q[n, c], given directly.")
        out += _matrix(np.asarray(case.target, dtype=np.float64), fmt=_input)
    else:
        out = _step(4, "One-hot targets: onehot[n, c] = 1 if c == y[n] else 0.")
        out += _prose("The textbook loop, without the loop: y picks one column per row.")
        trail = {"y": [str(int(v)) for v in case.target], "": _ignored_labels(r)}
        out += _matrix(r.onehot, fmt=lambda v: str(int(v)), trail=trail)
        if not r.valid.all():
            out += _prose(
                f"Samples with y == ignore_index ({case.ignore_index}) are ignored: they add "
                "nothing to the loss, its denominator or the gradient (their own row of "
                "the gradient is 0), but their classes stay in everyone's softmax."
            )
    eps = case.label_smoothing
    if eps > 0:
        out += _prose(
            f"Label smoothing moves eps = {_input(eps)} of each target's mass onto all "
            f"classes evenly: q = (1 - eps) * target + eps / C (eps / C = "
            f"{_input(eps / case.logits.shape[1])})."
        )
        out += _matrix(r.q, trail={"": _ignored_labels(r)})
    return out


def _step_per_sample(case: _Case, r: _Results) -> list[str]:
    out = _step(5, "The loss of each sample.")
    weighted = case.weight is not None
    if case.probabilities or case.label_smoothing > 0:
        w = "w[c] " if weighted else ""
        out += _prose(
            f"Cross-entropy of the target q against the prediction p: l[n] = -sum_c {w}q[n, c] "
            "log p[n, c]. The matrix of -log p[n, c] = lse[n] - x[n, c], where lse[n] = m[n] "
            "+ log sum_c exp(x[n, c] - m[n]) (log-softmax without dividing):"
        )
        trail = {"l[n]": [_cell(v) for v in r.losses], "": _ignored_labels(r)}
        return out + _matrix(-r.log_probs, trail=trail)
    out += _prose(
        "With a one-hot target only the true class counts: the textbook sum over "
        "onehot * log p keeps one term, l[n] = -log p[n, y[n]] = lse[n] - x[n, y[n]], "
        "where lse[n] = m[n] + log sum_c exp(x[n, c] - m[n]) (computed this way, not as "
        "the log of the rounded p, and without building onehot)."
        + (" Class weights scale each sample by w[y[n]]." if weighted else "")
    )
    headers = ["n", "y", "x[n,y]", "lse[n]", "p[n,y]", "l[n]"]
    headers += ["w[y]", "w[y]*l[n]"] if weighted else []
    rows = []
    for n, c in enumerate(int(v) for v in r.ids):
        if not r.valid[n]:
            rows.append([str(n), str(int(case.target[n])), "ignored", *[""] * (len(headers) - 3)])
            continue
        x_c, p_c = case.logits[n, c], r.probs[n, c]
        row = [str(n), str(c), _input(x_c), _cell(r.lse[n]), _cell(p_c), _cell(-r.log_probs[n, c])]
        rows.append(row + ([_input(r.w64[c]), _cell(r.losses[n])] if weighted else []))
    return out + _table(headers, rows, lead=len(headers), trail=0)


def _step_mean(case: _Case, r: _Results) -> list[str]:
    out = _step(6, "The loss is the mean over the samples.")
    weighted, eps = case.weight is not None, case.label_smoothing
    if case.probabilities:
        name, explain = "N", "L = sum_n l[n] / N"
        if weighted:
            explain += " (for probability targets torch divides by N, not by the weights)"
    elif weighted:
        name = "sum_n w[y[n]]"
        explain = "weighted mean L = sum_n w[y[n]] * l[n] / sum_n w[y[n]]"
        if eps > 0:
            explain = (
                "weighted mean L = sum_n l[n] / sum_n w[y[n]] (the smoothing term is "
                "weighted by every w[c] but divided by the target weights, as in torch)"
            )
    else:
        name, explain = "N", "L = sum_n l[n] / N"
    if not r.valid.all():
        explain += ", over the non-ignored samples only"
    total = float(np.sum(r.losses, dtype=np.float64))
    empty = " (0 / 0: the mean of no samples)" if r.denominator == 0 else ""
    equation = (
        f"L = {_num(total)} / {_input(r.denominator)} ({name}) = {_num(float(r.result.loss))}"
    )
    return [*out, *_prose(explain + ":"), f"{_INDENT}{equation}{empty}"]


def _gradient_formula(case: _Case, r: _Results) -> str:
    weighted, soft, eps = case.weight is not None, case.probabilities, case.label_smoothing
    if not (weighted or soft or eps > 0) and r.valid.all():
        return "dL/dx = (p - onehot) / N, with p the softmax."
    if weighted:
        formula = "dL/dx[n, c] = (p[n, c] * sum_k w[k] q[n, k] - w[c] q[n, c]) / D"
    elif soft:  # q need not sum to 1
        formula = "dL/dx[n, c] = (p[n, c] * sum_k q[n, k] - q[n, c]) / D"
    else:
        formula = "dL/dx = (p - q) / D"
    targets = "the targets of step 4" if soft or eps > 0 else "the one-hot targets"
    if weighted and not soft:
        denominator = "D = sum_n w[y[n]] as in step 6"
    elif r.valid.all():
        denominator = "D = N"
    else:
        denominator = "D the number of non-ignored samples"
    return f"{formula}, with p the softmax, q {targets} and {denominator}."


def _step_gradient(case: _Case, r: _Results) -> list[str]:
    out = _step(7, "The gradient dL/dx, what backpropagation sends back to the logits.")
    out += _prose(
        _gradient_formula(case, r) + " The textbook code has no gradient: autograd through "
        "it would keep e, p, log p and onehot and differentiate each; the closed form needs "
        "only p. Each row sums to 0: raising every logit of a sample by the same amount "
        "changes nothing."
    )
    grad = r.result.grad
    sums = [_sum_cell(v) for v in grad.astype(np.float64).sum(axis=1)]
    return out + _matrix(grad, trail={"row sum": sums})


def _units(r: _Results) -> list[str]:
    mean = float(r.result.loss)
    return [
        "",
        "Units",
        *_prose(
            f"log is the natural log, so losses are in nats: L = {_num(mean)} nats = "
            f"{_num(mean / math.log(2))} bits (bits = nats / ln 2). Beware of log base 10: "
            "-log10(0.5) = 0.30103, while -ln(0.5) = 0.69314718 nats (= 1 bit) is what torch "
            "and np.log compute."
        ),
    ]


# --------------------------------------------------------------------------- torch


def _torch_check(case: _Case, r: _Results) -> tuple[list[str], bool | None]:
    """The comparison's lines, and whether torch agrees (None: no torch, or it failed)."""
    try:
        import torch  # optional: only the comparison needs it
    except ImportError:
        return _prose("PyTorch is not installed, so there is no comparison with torch."), None
    call, module = _torch_module(case, torch)
    x = torch.from_numpy(np.ascontiguousarray(case.logits)).requires_grad_(True)
    y = torch.from_numpy(np.ascontiguousarray(case.target))
    if not case.probabilities:
        y = y.long()
    try:
        loss = module(x, y)
        loss.backward()
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        reason = " ".join(str(error).split())
        return _prose(f"torch could not compute it: {type(error).__name__}: {reason}"), None
    assert x.grad is not None  # backward() filled it
    out = _prose(f"torch {torch.__version__}: {call}(x, y), loss and gradient:")
    lines, agree = _compare(case, r, loss.detach().numpy(), x.grad.numpy())
    return out + lines, agree


def _torch_module(case: _Case, torch: Any) -> tuple[str, Any]:
    """``nn.CrossEntropyLoss`` with the case's options, and how to write the call."""
    arguments, weight = [], None
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
    return f"nn.CrossEntropyLoss({', '.join(arguments)})", module


def _compare(
    case: _Case, r: _Results, torch_loss: np.ndarray, torch_grad: np.ndarray
) -> tuple[list[str], bool]:
    ours_loss, ours_grad = np.asarray(r.result.loss), np.asarray(r.result.grad)
    rtol, atol = tolerances(ours_loss.dtype, case.logits)
    # softxent gives 0 where torch's gradient is NaN in an ignored row (pytorch#11551).
    nan_rows = np.isnan(torch_grad).any(axis=1) & ~r.valid
    kept = ~nan_rows
    grad_error = np.abs(ours_grad[kept].astype(np.float64) - torch_grad[kept])
    max_error = float(np.nanmax(grad_error)) if grad_error.size else 0.0
    out = [
        f"{_INDENT}softxent  L = {float(ours_loss):#.8g}",
        f"{_INDENT}torch     L = {float(torch_loss):#.8g}",
        f"{_INDENT}|difference| = {abs(float(ours_loss) - float(torch_loss)):.1e} (loss), "
        f"{max_error:.1e} (largest in the gradient)",
    ]
    agree = _close(ours_loss, torch_loss, rtol, atol)
    agree = agree and _close(ours_grad[kept], torch_grad[kept], rtol, atol)
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


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> bool:
    return bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))

"""``softxent demo``: the walk-through prints the spec's numbers, fits 80 columns, follows
its options as torch does, and turns bad input into a one-line error (exit 2)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import softxent
from softxent.cli import main

torch = pytest.importorskip("torch")
F = torch.nn.functional

SRC = Path(__file__).resolve().parents[1] / "src"
NOTE_X = [[0.3, 0.1, 0.3], [0.9, 0.2, 0.9], [0.5, 0.4, 0.2]]
NOTE_Y = [1, 2, 0]
_NUMBER = re.compile(r"-?\d+\.\d+(?:e[-+]\d+)?")

# spec section 0 (float32, torch 2.13.0)
SPEC_LOSSES = [1.23628676, 0.91492397, 0.97291893]
SPEC_SOFTMAX = [
    [0.35476959, 0.29046077, 0.35476959],
    [0.40054709, 0.19890580, 0.40054709],
    [0.37797815, 0.34200877, 0.28001308],
]
SPEC_GRAD = [
    [0.11825653, -0.23651308, 0.11825653],
    [0.13351570, 0.06630193, -0.19981764],
    [-0.20734063, 0.11400293, 0.09333770],
]
SPEC_LSE = [1.33628678, 1.81492400, 1.47291899]


def run_demo(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(["demo", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def numbers(text: str) -> np.ndarray:
    return np.array([float(s) for s in _NUMBER.findall(text)])


def assert_printed(text: str, expected: float, *, atol: float = 2e-7) -> None:
    # float32 results may differ from the spec's by an ulp (6e-8 near 0.5, 1.2e-7 near 1).
    found = numbers(text)
    assert np.any(np.abs(found - expected) <= atol), f"{expected} not printed"


def printed_loss(out: str) -> float:
    match = re.search(r"softxent {2}L = (\S+)", out)
    assert match, "no softxent loss line"
    return float(match.group(1))


def section(out: str, start: str, end: str) -> str:
    return out[out.index(start) : out.index(end)]


def test_note_example_numbers(capsys):
    status, out, err = run_demo(capsys)
    assert status == 0
    assert err == ""
    assert "1.0413766" in out  # the mean loss, 8 significant digits
    assert_printed(section(out, "Step 3.", "Step 4."), 1.0)  # row sums
    softmax = section(out, "Step 3.", "Step 4.")
    for value in np.ravel(SPEC_SOFTMAX):
        assert_printed(softmax, value)
    per_sample = section(out, "Step 5.", "Step 6.")
    for value in [*SPEC_LOSSES, *SPEC_LSE]:
        assert_printed(per_sample, value)
    gradient = section(out, "Step 7.", "Step 8.")
    for value in np.ravel(SPEC_GRAD):
        assert_printed(gradient, value)
    assert "(p - onehot) / N" in gradient


def test_note_example_explains_shift_and_units(capsys):
    _, out, _ = run_demo(capsys)
    shift = section(out, "Step 2.", "Step 3.")
    assert "88.72" in shift  # float32 exp overflows above ln(max float32)
    for value in [0.3, 0.9, 0.5, -0.2, -0.7]:  # the row maxima and shifted logits
        assert_printed(shift, value)
    units = out[out.index("Units") :]
    assert "nats" in units and "0.69314718" in units and "0.30103" in units
    assert_printed(units, 1.0413766 / np.log(2), atol=1e-6)  # bits


def test_shows_the_textbook_code_runs_it_and_refers_to_it(capsys):
    _, out, _ = run_demo(capsys)
    shown = section(out, "The textbook NumPy code", "Step 1.").splitlines()
    code = "\n".join(line[4:].split("  #")[0] for line in shown if line.startswith("    "))
    pieces = ["e = np.exp(x)", "p = e / e.sum(axis=1, keepdims=True)", "for n in range"]
    pieces += ["onehot[n, y[n]] = 1", "np.mean(-np.sum(onehot * np.log(p), axis=1))"]
    assert all(piece in code for piece in pieces), code
    scope = {"np": np, "x": np.float32(NOTE_X), "y": np.int64(NOTE_Y)}
    exec(code, scope)  # the code shown is real code, and computes the demo's loss
    assert float(scope["loss"]) == pytest.approx(printed_loss(out), rel=2e-6)
    # Each improvement is explained against it: the max shift, one exp, the gradient.
    words = " ".join(out.split())  # prose is wrapped at 80 columns
    assert "the textbook e = np.exp(x) overflows" in section(words, "Step 2.", "Step 3.")
    assert "exp once per logit" in section(words, "Step 3.", "Step 4.")
    assert "textbook code has no gradient" in section(words, "Step 7.", "Step 8.")
    assert not re.search(r"\bnote\b|note's|spec|seed", out, re.IGNORECASE)


def test_weighted_mean_shows_the_libraries_denominator(capsys):
    _, out, _ = run_demo(capsys, "--weight", "[1, 10, 1]", "--ignore-index", "0")
    # targets [1, 2, 0], sample 2 ignored: w[1] + w[2] = 11
    assert re.search(r"L = \S+ / 11 \(sum_n w\[y\[n\]\]\) = ", out)


def test_lines_fit_80_columns_and_are_ascii(capsys, tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(scale=30, size=(40, 300)))
    np.save(tmp_path / "y.npy", rng.integers(0, 300, size=40))
    np.save(tmp_path / "w.npy", rng.uniform(0.5, 2, size=300))
    runs = [
        (),
        ("--weight", "[1, 10, 1]", "--ignore-index", "2", "--label-smoothing", "0.3"),
        ("--logits", str(tmp_path / "x.npy"), "--targets", str(tmp_path / "y.npy")),
        (
            "--logits",
            str(tmp_path / "x.npy"),
            "--targets",
            str(tmp_path / "y.npy"),
            "--weight",
            str(tmp_path / "w.npy"),
            "--label-smoothing",
            "0.1",
        ),
    ]
    for argv in runs:
        status, out, _ = run_demo(capsys, *argv)
        assert status == 0
        lines = out.splitlines()
        # large inputs are elided, not dumped (40 rows in six tables would be > 280 lines)
        assert len(lines) < 170
        too_long = [line for line in lines if len(line) > 80]
        assert not too_long, too_long
        assert out.isascii()
    assert "..." in out  # the 300 classes were elided


def test_torch_agreement_line(capsys):
    _, out, _ = run_demo(capsys)
    check = out[out.index("Step 8.") :]
    assert f"torch {torch.__version__}" in check
    assert "nn.CrossEntropyLoss()(x, y)" in check
    assert re.search(r"torch {5}L = 1\.041376[56]", check)
    assert "they agree within the float32 tolerance" in check


def test_without_torch_says_so(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    status, out, _ = run_demo(capsys)
    assert status == 0
    assert "PyTorch is not installed" in out
    assert "torch     L" not in out
    assert "1.0413766" in out


def test_disagreement_exits_1(capsys, monkeypatch):
    real = softxent.cross_entropy_with_grad

    def off_by_a_bit(*args, **kwargs):
        loss, grad = real(*args, **kwargs)
        return softxent.LossAndGrad(loss + np.float32(1e-3), grad)

    monkeypatch.setattr(softxent, "cross_entropy_with_grad", off_by_a_bit)
    status, out, _ = run_demo(capsys)
    assert status == 1
    assert "they DISAGREE" in out


def torch_mean(x, y, **options) -> float:
    options = {k: v for k, v in options.items() if v is not None}
    if "weight" in options:
        options["weight"] = torch.tensor(options["weight"], dtype=torch.float32)
    return float(F.cross_entropy(torch.tensor(x), torch.tensor(y), **options))


@pytest.mark.parametrize(
    ("argv", "options", "explained"),
    [
        (("--weight", "[1, 10, 1]"), {"weight": [1, 10, 1]}, "sum_n w[y[n]] * l[n]"),
        (("--label-smoothing", "0.3"), {"label_smoothing": 0.3}, "q = (1 - eps)"),
        (("--ignore-index", "2"), {"ignore_index": 2}, "ignored"),
        (
            ("--weight", "[1, 10, 1]", "--ignore-index", "0", "--label-smoothing", "0.3"),
            {"weight": [1, 10, 1], "ignore_index": 0, "label_smoothing": 0.3},
            "divided by the target weights",
        ),
    ],
)
def test_options_match_torch(capsys, argv, options, explained):
    status, out, _ = run_demo(capsys, *argv)
    assert status == 0
    expected = torch_mean(np.float32(NOTE_X), np.int64(NOTE_Y), **options)
    assert abs(expected - 1.0413766) > 1e-3  # the option really changes the loss
    assert printed_loss(out) == pytest.approx(expected, rel=2e-6, abs=2e-6)
    assert explained in out
    assert "they agree" in out


def test_ignored_rows_are_shown_as_ignored(capsys):
    _, out, _ = run_demo(capsys, "--ignore-index", "2")
    per_sample = section(out, "Step 5.", "Step 6.")
    assert re.search(r"^\s+1\s+2\s+ignored$", per_sample, re.MULTILINE)
    assert "over the non-ignored samples only" in out
    gradient = section(out, "Step 7.", "Step 8.")
    row = next(line for line in gradient.splitlines() if line.strip().startswith("1 "))
    assert np.all(numbers(row) == 0)  # the ignored sample's gradient row


def test_probability_targets_match_torch(capsys):
    y = [[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]
    status, out, _ = run_demo(
        capsys, "--targets", str(y), "--weight", "[1, 2, 3]", "--label-smoothing", "0.1"
    )
    assert status == 0
    assert "class probabilities" in out
    expected = float(
        F.cross_entropy(
            torch.tensor(NOTE_X),
            torch.tensor(y),
            weight=torch.tensor([1.0, 2.0, 3.0]),
            label_smoothing=0.1,
        )
    )
    assert printed_loss(out) == pytest.approx(expected, rel=2e-6, abs=2e-6)


def test_npy_inputs(capsys, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 4))  # float64 stays float64
    y = rng.integers(0, 4, size=5)
    np.save(tmp_path / "logits.npy", x)
    np.save(tmp_path / "targets.npy", y)
    status, out, _ = run_demo(
        capsys,
        "--logits",
        str(tmp_path / "logits.npy"),
        "--targets",
        str(tmp_path / "targets.npy"),
    )
    assert status == 0
    assert "float64 logits" in out
    expected = float(F.cross_entropy(torch.from_numpy(x), torch.from_numpy(y)))
    assert printed_loss(out) == pytest.approx(expected, rel=1e-7)  # 8 digits printed
    assert "they agree within the float64 tolerance" in out


def test_one_sample_of_c_classes(capsys):
    status, out, _ = run_demo(capsys, "--logits", "[2.0, 1.0, 0.1]", "--targets", "0")
    assert status == 0
    expected = float(F.cross_entropy(torch.tensor([2.0, 1.0, 0.1]), torch.tensor(0)))
    assert printed_loss(out) == pytest.approx(expected, rel=2e-6)


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (("--logits", "[[1, 2]"), "--targets"),  # --logits alone
        (("--logits", "[[1, 2]", "--targets", "[0]"), "--logits"),  # bad JSON
        (("--logits", "[[1, 2], [3]]", "--targets", "[0, 1]"), "--logits"),  # ragged
        (("--targets", "[0, 1, true]"), "--targets"),
        (("--targets", "[0, 1]"), "--targets"),  # wrong shape
        (("--targets", "[0, 3, 1]"), "--targets"),  # out of range
        (("--targets", "[0, -1, 1]"), "--targets"),
        (("--weight", "[1, 2]"), "--weight"),
        (("--weight", '{"a": 1}'), "--weight"),
        (("--label-smoothing", "1.5"), "--label-smoothing"),
        (("--label-smoothing", "nan"), "--label-smoothing"),
        (("--logits", "[[[1.0]]]", "--targets", "[[0]]"), "--logits"),
        (("--logits", "/no/such/file.npy", "--targets", "[0]"), "--logits"),
    ],
)
def test_bad_input_exits_2_naming_the_option(capsys, argv, option):
    status, out, err = run_demo(capsys, *argv)
    assert status == 2
    assert out == ""  # nothing half-printed
    assert err.count("\n") == 1
    assert err.startswith(f"softxent demo: error: {option}")


def test_unreadable_npy_exits_2(capsys, tmp_path):
    path = tmp_path / "broken.npy"
    path.write_text("not numpy")
    status, _, err = run_demo(capsys, "--logits", str(path), "--targets", "[0]")
    assert status == 2
    assert err.startswith("softxent demo: error: --logits: cannot read")
    assert err.count("\n") == 1


def test_python_dash_m(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "softxent", "demo"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "1.0413766" in done.stdout
    assert "they agree" in done.stdout


def test_ignored_minus_inf_row_regression_11551(capsys):
    # torch's gradient is NaN in an ignored all -inf row; softxent's is 0 (by design).
    status, out, err = run_demo(
        capsys,
        "--logits",
        "[[-Infinity, -Infinity, -Infinity], [1, 2, 3]]",
        "--targets",
        "[-100, 0]",
    )
    assert status == 0
    assert err == ""  # no NumPy warnings leak out
    assert "pytorch/pytorch#11551" in out
    assert "they agree" in out
    gradient = section(out, "Step 7.", "Step 8.")
    row = next(line for line in gradient.splitlines() if line.strip().startswith("0 "))
    assert np.all(numbers(row) == 0)


def test_torch_failure_is_reported_not_raised(capsys, monkeypatch):
    class Refuses:
        def __init__(self, **kwargs):
            pass

        def __call__(self, x, y):
            raise RuntimeError("no\nthanks")

    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", Refuses)
    status, out, _ = run_demo(capsys)
    assert status == 0
    assert "torch could not compute it: RuntimeError: no thanks" in out

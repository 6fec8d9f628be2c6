"""The command line as a whole: input errors name the flag or file (exit 2), bugs keep their
traceback, no library warning reaches the user, and user text points at nothing unseen."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import softxent as sx
from softxent import _example as example
from softxent.cli import CLIError, main, user_input

ROOT = Path(__file__).resolve().parents[1]


def test_user_input_names_the_argument_the_message_mentions_first():
    names = {"logits": "x.npy", "target": "--targets", "weight": None}
    with pytest.raises(CLIError, match=r"^--targets: target\[1\] = 3 is out of range"):
        with user_input(names):
            sx.cross_entropy(example.logits(), [0, 3, 1])
    with pytest.raises(CLIError, match=r"^x\.npy: logits"):
        with user_input(names):
            raise ValueError("logits must be\nfloating point")  # and on one line
    with pytest.raises(CLIError, match=r"^bins must be positive$"):
        with user_input(names):  # no name mentioned: the message alone
            raise ValueError("bins must be positive")


@pytest.mark.parametrize(
    ("argv", "module", "name"),
    [
        (["demo"], "softxent.cli._demo", "_step_softmax"),
        (["score"], "softxent.cli._score", "format_table"),
        (["bench", "--quick", "--ops", "softmax"], "softxent._bench.session", "build_cases"),
    ],
)
def test_a_bug_outside_the_library_calls_shows_its_traceback(monkeypatch, argv, module, name):
    # Only the library's input errors become "error: ..." and exit 2; a TypeError raised by
    # the CLI's own code is a bug, and hiding it behind exit 2 would hide where it is.
    def broken(*args, **kwargs):
        raise TypeError("an internal bug")

    monkeypatch.setattr(importlib.import_module(module), name, broken)
    with pytest.raises(TypeError, match="an internal bug"):
        main(argv)


def run_strict(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -W error -m softxent ...``: any warning becomes an exception and fails."""
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "softxent", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    ("argv", "flag", "value"),
    [
        (("--logits", "[[1e39, 0]]", "--targets", "[0]"), "--logits", "1e+39"),
        (
            ("--logits", "[[1, 0]]", "--targets", "[0]", "--weight", "[1, -4e38]"),
            "--weight",
            "-4e+38",
        ),
        (("--logits", "[[1, 0]]", "--targets", "[[0.5, 1e40]]"), "--targets", "1e+40"),
    ],
)
def test_demo_values_beyond_float32_are_a_one_line_error_not_a_warning(
    tmp_path, argv, flag, value
):
    done = run_strict("demo", *argv, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"softxent demo: error: {flag}: {value} does not fit float32")


def test_no_warning_reaches_the_user_on_extreme_inputs(tmp_path):
    x16 = np.array([[60000, -60000, 0], [np.inf, 0, 1], [-np.inf, -np.inf, -np.inf]], np.float16)
    np.save(tmp_path / "x.npy", x16)
    np.save(tmp_path / "y.npy", np.array([0, 1, 2]))
    demo = run_strict("demo", "--logits", str(tmp_path / "x.npy"), "--targets", "[0, -100, 2]",
                      cwd=tmp_path)  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    assert demo.stderr == ""
    score = run_strict("score", "x.npy", "y.npy", cwd=tmp_path)
    assert score.returncode == 0, score.stderr
    assert "Warning" not in score.stderr  # the non-finite rows are counted in words
    bench = run_strict("bench", "--quick", "--repeat", "1", "--shape", "8x40", "--dtype",
                       "float16", "--ops", "cross_entropy_with_grad,softmax,demo_cross_entropy",
                       cwd=tmp_path)  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    assert bench.stderr == ""


def test_user_text_points_at_no_unseen_document():
    # Users never saw a "study note", a "seed" folder or "spec section 6.3": say the thing.
    pattern = re.compile(r"study note|the note\b|note's|seed/|\bspec\b ?(§|section|\d)", re.I)
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "src").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, "\n".join(hits)


def test_examples_use_only_the_public_api():
    private = re.compile(r"^\s*(from|import)\s+softxent(\.\w+)*\.(_\w+|cli)\b", re.M)
    for path in sorted((ROOT / "examples").glob("*.py")):
        assert not private.search(path.read_text()), path.name

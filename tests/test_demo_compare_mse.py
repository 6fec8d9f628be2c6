"""``softxent demo --compare-mse``: both losses and gradients as torch computes them, the
sweep showing the squared error's gradient vanishing, the plot, and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from softxent.cli import _compare_mse, main

torch = pytest.importorskip("torch")
F = torch.nn.functional

SRC = Path(__file__).resolve().parents[1] / "src"
X = [[0.3, 0.1, 0.3], [0.9, 0.2, 0.9], [0.5, 0.4, 0.2]]
Y = [1, 2, 0]


def run_demo(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(["demo", "--compare-mse", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_both_losses_and_gradients_are_torchs():
    x = np.array(X, np.float64)
    y = np.array(Y)
    c = _compare_mse.compare(x, y)
    leaf = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    loss = F.mse_loss(leaf.softmax(1), F.one_hot(torch.tensor(Y), 3).double())
    loss.backward()
    np.testing.assert_allclose(c.mse, loss.item(), rtol=1e-12)
    np.testing.assert_allclose(c.mse_grad, leaf.grad.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(c.mse_rows, ((leaf.softmax(1) - F.one_hot(torch.tensor(Y), 3))
                                            ** 2).sum(1).detach().numpy(), rtol=1e-12)  # fmt: skip


def test_sweep_matches_torch_and_shows_the_vanishing_gradient():
    z = np.array(_compare_mse.SWEEP)
    p_true, ce, ce_grad, mse, mse_grad = _compare_mse.sweep(z)
    leaf = torch.zeros(z.size, 3, dtype=torch.float64)
    leaf[:, 0] = torch.from_numpy(z)
    leaf.requires_grad_(True)
    target = torch.zeros(z.size, dtype=torch.long)
    want_ce = F.cross_entropy(leaf, target, reduction="none")
    (want_ce_grad,) = torch.autograd.grad(want_ce.sum(), leaf)
    want_mse = F.mse_loss(leaf.softmax(1), F.one_hot(target, 3).double(), reduction="none").mean(1)
    (want_mse_grad,) = torch.autograd.grad(want_mse.sum(), leaf)
    np.testing.assert_allclose(ce, want_ce.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ce_grad, want_ce_grad[:, 0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(mse, want_mse.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(mse_grad, want_mse_grad[:, 0].numpy(), rtol=1e-9, atol=1e-20)
    # the lesson: confidently wrong, CE pushes with ~ -1, the squared error hardly at all
    assert ce_grad[0] < -0.999 and abs(mse_grad[0]) < 1e-4
    assert p_true[0] < 1e-5 and p_true[-1] > 0.9999


def test_prints_both_parts_and_agrees_with_torch(capsys):
    status, out, err = run_demo(capsys)
    assert status == 0 and err == ""
    assert "cross-entropy (mean over samples)  1.041377" in out
    assert "they agree" in out
    assert "At z = -12 the model is confidently wrong" in out
    assert all(len(line) <= 80 and line.isascii() for line in out.splitlines())


def test_plot_is_written_and_never_overwrites_an_input(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    status, out, _ = run_demo(capsys, "--plot", str(path))
    assert status == 0 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {path}" in out
    logits = tmp_path / "x.png"  # an input file that happens to end in .png
    np.save(tmp_path / "x.npy", np.array(X, np.float32))
    os.replace(tmp_path / "x.npy", logits)
    before = logits.read_bytes()
    argv = ["--logits", str(logits), "--targets", "[1, 2, 0]", "--plot", str(logits)]
    status, out, err = run_demo(capsys, *argv)
    assert status == 2 and out == "" and "would overwrite an input" in err
    assert logits.read_bytes() == before


def test_plot_without_matplotlib_is_refused_before_any_output(capsys, tmp_path, monkeypatch):
    def missing():
        raise ImportError("no matplotlib")

    monkeypatch.setattr(_compare_mse, "_pyplot", missing)
    path = tmp_path / "curves.png"
    status, out, err = run_demo(capsys, "--plot", str(path))
    assert status == 2 and out == "" and "pip install 'softxent[plot]'" in err
    assert not path.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--weight", "[1, 2, 3]"], "class-index targets only"),
        (["--targets", "[[0.5, 0.5, 0.0], [0, 1, 0], [0, 0, 1]]"], "class-index targets only"),
        (["--targets", "[1, 2, 3]"], "--targets"),
        (["--plot", "curves.txt"], "--plot needs a file ending in .png"),
    ],
)
def test_bad_input_exits_2(capsys, argv, message):
    status, out, err = run_demo(capsys, *argv)
    assert status == 2 and out == "" and message in err


def test_plot_needs_compare_mse(capsys, tmp_path):
    status = main(["demo", "--plot", str(tmp_path / "a.png")])
    assert status == 2 and "add --compare-mse" in capsys.readouterr().err


def test_no_raw_warnings(tmp_path):
    """-W error: any warning (NumPy's overflow, matplotlib's) would fail the run."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "MPLCONFIGDIR": str(tmp_path)}
    argv = [sys.executable, "-W", "error", "-m", "softxent", "demo", "--compare-mse"]
    if _has_matplotlib():
        argv += ["--plot", str(tmp_path / "c.png")]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True

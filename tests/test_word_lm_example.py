"""examples/word_lm.py: its pieces (gradients, Adam, data) and a --quick run (issue 7)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

import word_lm  # noqa: E402


def small_model(seed: int = 0, dtype=np.float64) -> word_lm.Model:
    rng = np.random.default_rng(seed)
    model = word_lm.Model(7, 2, 3, 4, rng.uniform(1, 5, 7), rng)
    for name, value in model.params.items():  # float64 so finite differences are exact enough
        model.params[name] = (value + rng.normal(0, 0.3, value.shape)).astype(dtype)
    return model


def test_model_gradients_match_finite_differences():
    """The example's hand-written backward pass (tanh layer, embedding scatter) is right."""
    model = small_model()
    rng = np.random.default_rng(1)
    contexts = rng.integers(0, 8, (9, 2))  # id 7 is <s>, an input only
    contexts[0] = 3  # a repeated id: its embedding gradient must add up both uses
    targets = rng.integers(0, 7, 9)
    _, grads = model.loss_and_grads(contexts, targets)
    h = 1e-6
    for name, array in model.params.items():
        for index in [tuple(int(rng.integers(0, s)) for s in array.shape) for _ in range(4)]:
            saved = array[index]
            array[index] = saved + h
            up, _ = model.loss_and_grads(contexts, targets)
            array[index] = saved - h
            down, _ = model.loss_and_grads(contexts, targets)
            array[index] = saved
            numeric = (up - down) / (2 * h)
            assert abs(numeric - grads[name][index]) < 1e-7 * max(1.0, abs(numeric)), name


def test_mean_loss_equals_the_training_loss():
    model = small_model(2)
    rng = np.random.default_rng(3)
    data = word_lm.Dataset(rng.integers(0, 8, (10, 2)), rng.integers(0, 7, 10))
    loss, _ = model.loss_and_grads(data.contexts, data.targets)
    assert model.mean_loss(data, batch=3) == pytest.approx(loss, rel=1e-12)


def test_adam_matches_torch():
    rng = np.random.default_rng(4)
    params = {"a": rng.normal(size=(3, 2)).astype(np.float32)}
    tparam = torch.tensor(params["a"], requires_grad=True)
    optimizer = word_lm.Adam(params, 0.01)
    torch_optimizer = torch.optim.Adam([tparam], lr=0.01, eps=1e-8)
    for _ in range(3):
        g = rng.normal(size=(3, 2)).astype(np.float32)
        optimizer.step(params, {"a": g}, 0.01)
        tparam.grad = torch.tensor(g)
        torch_optimizer.step()
    np.testing.assert_allclose(params["a"], tparam.detach().numpy(), rtol=2e-6, atol=2e-6)


def test_dataset_pads_contexts_and_maps_unknown_words():
    vocabulary = word_lm.build_vocabulary([["b", "a", "b", "c"], ["a", "b"]], 2)
    assert vocabulary == ["b", "a", word_lm.UNK]  # by count, ties alphabetical, then <unk>
    index = {w: i for i, w in enumerate(vocabulary)}
    data = word_lm.make_dataset([["a", "zzz", "b"], [], ["b"]], index, 2)
    bos, unk = 3, 2
    np.testing.assert_array_equal(data.targets, [1, unk, 0, 0])
    np.testing.assert_array_equal(data.contexts, [[bos, bos], [bos, 1], [1, unk], [bos, bos]])


def test_unigram_perplexity_is_add_one_smoothed():
    train = word_lm.Dataset(np.zeros((3, 1), np.int64), np.array([0, 0, 1]))
    valid = word_lm.Dataset(np.zeros((2, 1), np.int64), np.array([0, 2]))
    # counts + 1 = [3, 2, 1] over 6: p(0) = 1/2, p(2) = 1/6
    expected = np.exp(-(np.log(1 / 2) + np.log(1 / 6)) / 2)
    assert word_lm.unigram_perplexity(train, valid, 3) == pytest.approx(expected, rel=1e-12)


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(SystemExit, match=r"--plot needs matplotlib.*softxent\[plot\]"):
        word_lm.check_matplotlib()


def test_plot_is_saved(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curve.png"
    word_lm.save_plot(str(path), [(100, 900.0, 800.0), (200, 700.0, 650.0)], 750.0)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--hidden", "0"], ["--batch", "-1"]])
def test_bad_arguments_are_rejected(argv, capsys):
    with pytest.raises(SystemExit):
        word_lm.parse_args(argv)
    assert "must be" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_run_beats_the_unigram_baseline(tmp_path):
    """``--quick`` trains, prints falling validation perplexities below the baseline."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    plot = tmp_path / "curve.png"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "word_lm.py"), "--quick", "--plot", str(plot)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    vocabulary = int(re.search(r"vocabulary ([\d,]+)", out).group(1).replace(",", ""))
    assert vocabulary >= 10_001  # 10,000 words and <unk>
    baseline = float(re.search(r"unigram baseline perplexity.*: ([\d.]+)", out).group(1))
    curve = [float(x) for x in re.findall(r"validation perplexity\s+([\d.]+)", out)]
    final = float(re.search(r"final validation perplexity: ([\d.]+)", out).group(1))
    assert len(curve) >= 2 and curve[-1] < curve[0]
    assert final == curve[-1] < baseline
    assert result.stderr == ""  # no progress bar (not a terminal) and no warnings
    assert plot.read_bytes()[:4] == b"\x89PNG"

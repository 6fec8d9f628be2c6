"""``softxent score``: files in, metrics out; every bad file is one line and exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import softxent as sx
from softxent.cli import main

SRC = str(Path(sx.__file__).resolve().parents[1])  # the package under test
DEMO_LOGITS = np.array([[0.3, 0.1, 0.3], [0.9, 0.2, 0.9], [0.5, 0.4, 0.2]], np.float32)
DEMO_TARGETS = np.array([1, 2, 0])


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """``python -m softxent score ...`` in a fresh interpreter."""
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "softxent", "score", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def score_main(*args: str) -> int:
    return main(["score", *map(str, args)])


def assert_one_line_error(capsys, code: int, *needles: str) -> str:
    captured = capsys.readouterr()
    assert code == 2
    err = captured.err.strip()
    assert "\n" not in err, err
    assert err.startswith("softxent score: error: "), err
    for needle in needles:
        assert needle in err, err
    assert captured.out == ""
    return err


@pytest.fixture
def files(tmp_path):
    """The demo as .npy files, plus a directory listing helper."""
    logits, targets = tmp_path / "logits.npy", tmp_path / "targets.npy"
    np.save(logits, DEMO_LOGITS)
    np.save(targets, DEMO_TARGETS)
    return tmp_path, str(logits), str(targets)


# ------------------------------------------------------------ end to end, subprocess


def test_no_arguments_scores_the_demo():
    proc = run_cli()
    assert proc.returncode == 0, proc.stderr
    assert "demo example" in proc.stdout
    assert "1.0414" in proc.stdout and "top-1 accuracy" in proc.stdout
    assert proc.stderr == ""


def test_end_to_end_json_per_sample_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 11)).astype(np.float32)
    y = rng.integers(0, 11, 500)
    y[::10] = -100
    np.savez(tmp_path / "run.npz", logits=x, targets=y)
    out, png = tmp_path / "losses.csv", tmp_path / "rel.png"
    proc = run_cli(
        str(tmp_path / "run.npz"), str(tmp_path / "run.npz"), "--key", "logits",
        "--target-key", "targets", "--json", "--per-sample", str(out), "--plot", str(png),
        "--top-k", "1,3", "--bins", "10", "--batch-bytes", "1K",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    expected = sx.score(x, y, top_k=(1, 3), bins=10, per_sample=True)
    assert report["n_samples"] == 500 and report["n_ignored"] == 50
    assert report["cross_entropy"] == pytest.approx(expected.cross_entropy, rel=2e-6)
    assert report["top_k_accuracy"] == pytest.approx(
        {"1": expected.top_k_accuracy[1], "3": expected.top_k_accuracy[3]}
    )
    assert len(report["bins"]) == 10
    losses = np.loadtxt(out, skiprows=1)
    np.testing.assert_allclose(losses, expected.per_sample, rtol=1e-6, atol=1e-6)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["losses.csv", "rel.png", "run.npz"]


def test_bad_file_in_a_subprocess_is_one_line_and_status_2(tmp_path):
    (tmp_path / "t.npy").write_bytes(b"not an npy file at all")
    proc = run_cli(str(tmp_path / "t.npy"), str(tmp_path / "t.npy"), "--per-sample",
                   str(tmp_path / "out.npy"))  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "t.npy: not a valid .npy file" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npy"]


# ------------------------------------------------------------------ in process


def test_npy_table_output(files, capsys):
    _, logits, targets = files
    assert score_main(logits, targets, "--top-k", "1,2") == 0
    out = capsys.readouterr().out
    assert "logits.npy (3 x 3, float32)" in out
    assert "top-2 accuracy" in out and "0.6667" in out and "1.0414" in out


def test_per_sample_npy_matches_api(files, capsys):
    tmp, logits, targets = files
    out = tmp / "losses.npy"
    assert score_main(logits, targets, "--per-sample", out) == 0
    np.testing.assert_allclose(
        np.load(out), sx.cross_entropy(DEMO_LOGITS, DEMO_TARGETS, reduction="none"), rtol=2e-6
    )


@pytest.mark.parametrize("weights", [[1.0, 2.0, 3.0], [1.0, -2.0, 3.0]])  # negative: as torch
def test_text_inputs_and_weight(tmp_path, capsys, weights):
    np.savetxt(tmp_path / "x.csv", DEMO_LOGITS, delimiter=",")
    (tmp_path / "y.txt").write_text("1\n2\n0\n")
    np.savetxt(tmp_path / "w.csv", [weights], delimiter=",")
    code = score_main(tmp_path / "x.csv", tmp_path / "y.txt", "--weight", tmp_path / "w.csv",
                      "--json")  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    expected = sx.cross_entropy(DEMO_LOGITS.astype(np.float64), DEMO_TARGETS, weight=weights)
    assert report["cross_entropy"] == pytest.approx(float(expected), rel=1e-12)
    assert report["weighted"] is True


@pytest.mark.parametrize("weights", [[0.0, 0.0, 0.0], [1.0, 0.0, 3.0], [0.0, 2.0, 0.0]])
def test_table_says_why_metrics_are_blank_when_target_weights_sum_to_zero(
    tmp_path, capsys, weights
):
    np.savetxt(tmp_path / "x.csv", DEMO_LOGITS, delimiter=",")
    (tmp_path / "y.txt").write_text("1\n1\n1\n")  # every target is class 1
    np.savetxt(tmp_path / "w.csv", [weights], delimiter=",")
    code = score_main(tmp_path / "x.csv", tmp_path / "y.txt", "--weight", tmp_path / "w.csv")
    assert code == 0
    scored = next(line for line in capsys.readouterr().out.splitlines() if "scored" in line)
    zero = weights[1] == 0.0
    assert ("target weights sum to 0" in scored) is zero, scored


def test_axis_and_ignore_index(tmp_path, capsys):
    x = np.random.default_rng(1).standard_normal((4, 5, 6))
    y = np.random.default_rng(2).integers(-1, 5, (4, 6))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    code = score_main(tmp_path / "x.npy", tmp_path / "y.npy", "--axis", "1",
                      "--ignore-index", "-1", "--json", "--batch-bytes", "100")  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    expected = sx.cross_entropy(x, y, axis=1, ignore_index=-1)
    assert report["cross_entropy"] == pytest.approx(float(expected), rel=1e-12)
    assert report["n_ignored"] == int((y == -1).sum())


def test_nonfinite_rows_are_reported(files, capsys):
    tmp, _, targets = files
    x = DEMO_LOGITS.copy()
    x[0, 1] = np.nan
    np.save(tmp / "nan.npy", x)
    assert score_main(tmp / "nan.npy", targets) == 0
    captured = capsys.readouterr()
    assert "nan.npy: 1 row(s) with a NaN or inf loss" in captured.err
    assert "excluded from all metrics" in captured.err
    assert "non-finite                   1" in captured.out
    code = score_main(tmp / "nan.npy", targets, "--nonfinite", "error", "--per-sample",
                      tmp / "o.npy")  # fmt: skip
    assert_one_line_error(capsys, code, "nan.npy: 1 row(s) with a NaN or inf loss")
    assert not (tmp / "o.npy").exists()


def test_missing_matplotlib_is_a_clear_error(files, capsys, monkeypatch):
    tmp, logits, targets = files
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code = score_main(logits, targets, "--plot", tmp / "p.png")
    assert_one_line_error(capsys, code, "--plot needs matplotlib", "softxent[plot]")
    assert not (tmp / "p.png").exists()


# ------------------------------------------------------------------ bad files


def _npy_with_header(path: Path, header: dict, data: bytes) -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(data)


def make_bad(tmp: Path, case: str) -> tuple[list[str], list[str]]:
    """(arguments, strings the error must contain) for one hostile input."""
    logits, targets = str(tmp / "logits.npy"), str(tmp / "targets.npy")
    if case == "nonexistent":
        return [str(tmp / "nope.npy"), targets], ["nope.npy: no such file"]
    if case == "directory":
        (tmp / "d.npy").mkdir()
        return [str(tmp / "d.npy"), targets], ["d.npy: is a directory"]
    if case == "truncated":
        data = (tmp / "logits.npy").read_bytes()
        (tmp / "trunc.npy").write_bytes(data[:-5])
        return [str(tmp / "trunc.npy"), targets], ["trunc.npy: truncated", "36 bytes"]
    if case == "corrupt header":
        (tmp / "bad.npy").write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': garbage}\n")
        return [str(tmp / "bad.npy"), targets], ["bad.npy: not a valid .npy file"]
    if case == "object npy":
        header = {"descr": "|O", "fortran_order": False, "shape": (3,)}
        # a pickle that would run code if it were ever loaded
        payload = b"cos\nsystem\n(S'echo pwned'\ntR."
        _npy_with_header(tmp / "obj.npy", header, payload)
        return [logits, str(tmp / "obj.npy")], ["obj.npy: holds Python objects", "unpickle"]
    if case == "object npz":
        np.savez(tmp / "obj.npz", t=np.array([1, "a", None], dtype=object))
        return [logits, str(tmp / "obj.npz")], ["obj.npz: array 't' cannot be loaded"]
    if case == "corrupt npz":
        with zipfile.ZipFile(tmp / "bad.npz", "w") as z:
            z.writestr("x.npy", b"junk")
        return [str(tmp / "bad.npz"), targets], ["bad.npz: "]
    if case == "missing key":
        np.savez(tmp / "two.npz", a=DEMO_LOGITS, b=DEMO_LOGITS)
        return [str(tmp / "two.npz"), targets, "--key", "logits"], [
            "two.npz: no array named 'logits'; it holds: a, b"
        ]
    if case == "no key, several arrays":
        np.savez(tmp / "two.npz", a=DEMO_LOGITS, b=DEMO_LOGITS)
        return [str(tmp / "two.npz"), targets], ["two.npz: holds 2 arrays (a, b)", "--key"]
    if case == "integer logits":
        np.save(tmp / "int.npy", np.ones((3, 3), np.int64))
        return [str(tmp / "int.npy"), targets], ["int.npy: logits must be floating point"]
    if case == "float targets":
        np.save(tmp / "ft.npy", DEMO_TARGETS.astype(np.float64))
        return [logits, str(tmp / "ft.npy")], ["ft.npy: targets must be integer class ids"]
    if case == "float targets text":
        (tmp / "ft.txt").write_text("1.0\n2.5\n0\n")
        return [logits, str(tmp / "ft.txt")], ["ft.txt: expected integer class ids"]
    if case == "mismatched lengths":
        np.save(tmp / "short.npy", DEMO_TARGETS[:2])
        return [logits, str(tmp / "short.npy")], ["short.npy: targets have shape (2,)", "(3,)"]
    if case == "wrong shape":
        np.save(tmp / "flat.npy", DEMO_LOGITS.reshape(-1))
        return [str(tmp / "flat.npy"), targets], ["targets.npy: targets have shape (3,)"]
    if case == "target out of range":
        np.save(tmp / "big.npy", np.array([1, 7, 0]))
        return [logits, str(tmp / "big.npy")], ["big.npy: target[1] = 7 is out of range"]
    if case == "bad weight":
        np.save(tmp / "w.npy", np.array([1.0, 2.0]))
        return [logits, targets, "--weight", str(tmp / "w.npy")], ["w.npy: weight must have"]
    if case == "unknown suffix":
        (tmp / "x.pt").write_bytes(b"")
        return [str(tmp / "x.pt"), targets], ["x.pt: unsupported file type '.pt'"]
    if case == "only logits":
        return [logits], ["give both LOGITS and TARGETS"]
    if case == "bad top-k":
        return [logits, targets, "--top-k", "1,x"], ["--top-k"]
    if case == "bad batch bytes":
        return [logits, targets, "--batch-bytes", "lots"], ["--batch-bytes"]
    if case == "bad output suffix":
        return [logits, targets, "--per-sample", str(tmp / "o.txt")], ["o.txt: --per-sample"]
    raise AssertionError(case)


BAD_CASES = [
    "nonexistent", "directory", "truncated", "corrupt header", "object npy", "object npz",
    "corrupt npz", "missing key", "no key, several arrays", "integer logits", "float targets",
    "float targets text", "mismatched lengths", "wrong shape", "target out of range",
    "bad weight", "unknown suffix", "only logits", "bad top-k", "bad batch bytes",
    "bad output suffix",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_files_are_one_line_errors_with_no_output(files, capsys, case):
    tmp, _, _ = files
    args, needles = make_bad(tmp, case)
    before = set(tmp.iterdir())
    extra = [] if "--per-sample" in args else ["--per-sample", str(tmp / "out.npy")]
    code = score_main(*args, *extra)
    assert_one_line_error(capsys, code, *needles)
    assert set(tmp.iterdir()) == before, "no output and no temporary file may be left"


def test_failed_write_leaves_no_partial_file(files, capsys, monkeypatch):
    tmp, logits, targets = files
    from softxent.cli import _score

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(_score, "write_per_sample", broken)
    with pytest.raises(OSError, match="disk full"):
        score_main(logits, targets, "--per-sample", tmp / "out.npy")
    assert sorted(p.name for p in tmp.iterdir()) == ["logits.npy", "targets.npy"]


def test_existing_output_is_replaced_whole(files, capsys):
    tmp, logits, targets = files
    out = tmp / "out.csv"
    out.write_text("old\n")
    assert score_main(logits, targets, "--per-sample", out) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "loss" and len(lines) == 4


def test_table_prints_huge_losses_in_exponent_form(tmp_path):
    """A loss of 1e30 nats is one short number in the table, not 31 digits."""
    logits = np.array([[1e30, 0.0], [0.0, 1.0]], dtype=np.float64)
    np.save(tmp_path / "l.npy", logits)
    np.save(tmp_path / "t.npy", np.array([1, 1]))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "softxent",
            "score",
            str(tmp_path / "l.npy"),
            str(tmp_path / "t.npy"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("cross-entropy"))
    assert "e+29" in line and len(line) < 60, line


# ------------------------------------------------------- outputs never overwrite inputs


def _same_file_spellings(tmp, path):
    """The input ``path`` itself, another spelling of it, a symlink and a hard link."""
    name = os.path.basename(path)
    symlink, hardlink = tmp / f"link-{name}", tmp / f"hard-{name}"
    os.symlink(path, symlink)
    os.link(path, hardlink)
    return {
        "same": path,
        "respelled": str(tmp / "." / ".." / tmp.name / name),
        "symlink": str(symlink),
        "hardlink": str(hardlink),
    }


@pytest.mark.parametrize("spelling", ["same", "respelled", "symlink", "hardlink"])
@pytest.mark.parametrize("which", ["logits", "targets", "weight"])
def test_output_that_is_an_input_is_refused_before_writing(files, capsys, spelling, which):
    tmp, logits, targets = files
    weight = tmp / "weight.npy"
    np.save(weight, np.ones(3))
    inputs = {"logits": logits, "targets": targets, "weight": str(weight)}
    out = _same_file_spellings(tmp, inputs[which])[spelling]
    before = {p.name: p.read_bytes() for p in tmp.iterdir()}
    code = score_main(logits, targets, "--weight", weight, "--per-sample", out)
    assert_one_line_error(capsys, code, out, "--per-sample would overwrite an input")
    assert {p.name: p.read_bytes() for p in tmp.iterdir()} == before


def test_the_two_outputs_may_not_be_one_file(files, capsys):
    pytest.importorskip("matplotlib")
    tmp, logits, targets = files
    plot = tmp / "plot.png"
    plot.write_bytes(b"old")
    os.link(plot, tmp / "also.npy")
    code = score_main(logits, targets, "--plot", plot, "--per-sample", tmp / "also.npy")
    assert_one_line_error(capsys, code, "--plot would overwrite the --per-sample output")
    assert plot.read_bytes() == b"old"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_outputs_follow_the_umask(files, capsys, umask):
    tmp, logits, targets = files
    old = os.umask(umask)
    try:
        assert score_main(logits, targets, "--per-sample", tmp / "out.npy") == 0
    finally:
        os.umask(old)
    assert (tmp / "out.npy").stat().st_mode & 0o777 == 0o666 & ~umask


def test_replaced_output_keeps_its_permissions(files, capsys):
    tmp, logits, targets = files
    out = tmp / "out.csv"
    out.write_text("old\n")
    out.chmod(0o640)
    assert score_main(logits, targets, "--per-sample", out) == 0
    assert out.stat().st_mode & 0o777 == 0o640
    assert out.read_text().startswith("loss")


@pytest.mark.parametrize("content", ["", "# only a comment\n"])
@pytest.mark.parametrize("which", ["logits", "targets", "weight"])
def test_empty_text_file_names_itself_without_a_warning(files, content, which):
    tmp, logits, targets = files
    empty = tmp / "empty.csv"
    empty.write_text(content)
    args = {"logits": logits, "targets": targets, "weight": None}
    args[which] = str(empty)
    extra = ["--weight", args["weight"]] if args["weight"] else []
    result = run_cli(args["logits"], args["targets"], *extra)
    assert result.returncode == 2
    assert result.stderr.startswith("softxent score: error: "), result.stderr
    assert f"{empty}: holds no" in result.stderr
    assert "Warning" not in result.stderr and result.stderr.count("\n") == 1

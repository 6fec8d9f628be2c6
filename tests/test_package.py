"""Package-level contracts: the public surface, no torch on import, the entry points."""

import subprocess
import sys
from pathlib import Path

import softxent

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _run(code: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )


def test_import_does_not_import_torch():
    result = _run("import sys, softxent; print('torch' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_all_names_exist_and_are_documented():
    for name in softxent.__all__:
        obj = getattr(softxent, name)
        if callable(obj):
            assert obj.__doc__, name


def test_python_dash_m_version():
    result = subprocess.run(
        [sys.executable, "-m", "softxent", "--version"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"softxent {softxent.__version__}"


def test_py_typed_is_shipped():
    assert (Path(softxent.__file__).parent / "py.typed").exists()

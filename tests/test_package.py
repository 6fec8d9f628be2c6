"""Package-level contracts: the public surface, no torch on import, the entry points."""

import subprocess
import sys
from pathlib import Path

import pytest

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


ROOT = Path(__file__).resolve().parents[1]


def test_sdist_ships_what_its_tests_and_readme_need(tmp_path):
    """The source distribution can run its own tests: every conftest.py, docs/ (the README
    links there), examples/ (tested) and the LICENSE are in it."""
    import tarfile

    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip("SPDX license metadata needs setuptools >= 77 (pyproject's build-system)")
    build = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from setuptools import build_meta; "
            "print(build_meta.build_sdist(sys.argv[1]))",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    archive = tmp_path / build.stdout.strip().splitlines()[-1]
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    expected_conftests = {
        str(p.relative_to(ROOT)) for p in ROOT.glob("**/conftest.py") if ".venv" not in p.parts
    }
    assert expected_conftests >= {"conftest.py", "tests/conftest.py"}
    assert expected_conftests <= names
    for path in ("LICENSE", "docs/torch.md", "examples/word_lm.py", "tests/test_package.py"):
        assert path in names, path
    with tarfile.open(archive) as tar:
        pkg_info = tar.extractfile(f"{archive.name[: -len('.tar.gz')]}/PKG-INFO").read().decode()
    assert "License-Expression: MIT" in pkg_info

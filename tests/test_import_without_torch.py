"""Without torch installed, ``import softxent.torch`` says what to install (a subprocess
with torch hidden by a meta-path finder, as if it were not installed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import softxent as sx

SRC = str(Path(sx.__file__).resolve().parents[1])

HIDE_TORCH = """
import sys

class HideTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, HideTorch())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-c", HIDE_TORCH + code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_import_softxent_torch_without_torch_says_to_install_the_extra():
    result = _run(
        "try:\n"
        "    import softxent.torch\n"
        "except ImportError as error:\n"
        "    print(type(error).__name__, '|', error)\n"
    )
    assert result.returncode == 0, result.stderr
    kind, message = result.stdout.strip().split(" | ")
    assert kind == "ModuleNotFoundError"  # an ImportError, as code that probes for torch expects
    assert "pip install 'softxent[torch]'" in message


def test_numpy_api_works_without_torch():
    result = _run("import softxent as sx; print(float(sx.cross_entropy([[0.0, 0.0]], [1])))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0.6931471805599453"

"""README.md and docs/ stay true: public names are documented and documented names exist.

(Their ``>>>`` examples run as doctests: see ``testpaths`` and ``--doctest-glob`` in
pyproject.toml.) A new public module is covered by appending it to ``PUBLIC_MODULES``.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HAS_TORCH = importlib.util.find_spec("torch") is not None

#: Every module with a public ``__all__``
PUBLIC_MODULES = ["softxent", "softxent.torch", "softxent.torch.distributed"]


def _code(text: str) -> str:
    """The code of a Markdown text: fenced blocks and inline code spans."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    inline = re.findall(r"`([^`]+)`", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))
    return "\n".join(fenced + inline)


CODE = "\n".join(_code(path.read_text(encoding="utf-8")) for path in DOCS)


def _needs_torch(name: str) -> bool:
    return name == "softxent.torch" or name.startswith("softxent.torch.")


def _skip_without_torch(name: str) -> None:
    if _needs_torch(name) and not HAS_TORCH:
        pytest.skip("needs torch")


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_is_documented(module_name):
    _skip_without_torch(module_name)
    module = importlib.import_module(module_name)
    missing = [
        name for name in module.__all__ if not re.search(rf"(?<!\w){re.escape(name)}\b", CODE)
    ]
    assert not missing, f"{module_name}: not in README.md or docs/ (as code): {missing}"


def _resolve(dotted: str) -> object:
    """The object a dotted name refers to: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)  # AttributeError: the name does not exist
        return obj
    raise ModuleNotFoundError(dotted)


DOTTED = sorted(set(re.findall(r"(?<![\w./-])softxent(?:\.[A-Za-z_]\w*)+", CODE)))


def test_documents_name_some_dotted_names():
    assert "softxent.torch.cross_entropy" in DOTTED and "softxent.set_num_threads" in DOTTED


@pytest.mark.parametrize("dotted", DOTTED)
def test_every_documented_dotted_name_exists(dotted):
    _skip_without_torch(dotted)
    try:
        _resolve(dotted)
    except (ImportError, AttributeError) as error:
        pytest.fail(f"README.md or docs/ mention {dotted}, which does not exist: {error}")

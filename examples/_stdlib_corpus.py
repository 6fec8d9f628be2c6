"""English text that every Python installation has: the standard library's docstrings.

Three sources, each read in a fixed, sorted order so the corpus is deterministic for a given
Python version:

* the docstrings of every module, class and function in the standard library's ``.py``
  files, read with :mod:`ast` (nothing is imported, so no module runs any code);
* the docstrings of the compiled modules (``math``, ``_io``, ...), read with :mod:`inspect`
  (importing a compiled standard module has no side effects);
* the help topics that ``pydoc``/``help()`` shows (the language reference, ``pydoc_data``).

Test suites, demos and tool packages are skipped. Each docstring is one document;
duplicates (inherited or copied docstrings) are kept once.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib
import re
import sys
import sysconfig
import warnings
import zlib

_SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "lib2to3",
               "turtledemo", "idlelib", "__pycache__", "ensurepip"}  # fmt: skip
_WORD = re.compile(r"[a-z][a-z0-9_]*")  # lowercased words; identifiers like max_size stay whole


def _source_docstrings(root: pathlib.Path) -> list[str]:
    docs = []
    files = sorted(
        p for p in root.rglob("*.py") if not _SKIP_PARTS & set(p.relative_to(root).parts)
    )
    for path in files:
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):  # a few files are templates or need another Python
            continue
        for node in ast.walk(tree):
            if isinstance(
                node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
            ):
                doc = ast.get_docstring(node)
                if doc:
                    docs.append(doc)
    return docs


def _compiled_module_names(root: pathlib.Path) -> list[str]:
    names = set(sys.builtin_module_names)
    dynload = root / "lib-dynload"
    if dynload.is_dir():
        names.update(
            p.name.split(".")[0] for p in dynload.iterdir() if p.suffix in (".so", ".pyd")
        )
    return sorted(
        n for n in names if n not in ("__main__", "_testcapi") and not n.startswith("_test")
    )


def _compiled_docstrings(root: pathlib.Path) -> list[str]:
    docs = []
    for name in _compiled_module_names(root):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
        except Exception:  # e.g. a module for another platform
            continue
        docs.append(inspect.getdoc(module))
        for _, obj in sorted(vars(module).items()):
            if inspect.isclass(obj):
                docs.append(inspect.getdoc(obj))
                for _, member in sorted(vars(obj).items()):
                    doc = getattr(member, "__doc__", None)
                    docs.append(inspect.cleandoc(doc) if isinstance(doc, str) else None)
            elif callable(obj):
                docs.append(inspect.getdoc(obj))
    return [d for d in docs if isinstance(d, str)]


def _help_topics() -> list[str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        return []
    return [topics[key] for key in sorted(topics)]


def documents() -> list[str]:
    """Every distinct docstring and help topic, in a fixed order."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    docs = []
    for doc in _source_docstrings(root) + _compiled_docstrings(root) + _help_topics():
        doc = doc.strip()
        if doc and doc not in seen:
            seen.add(doc)
            docs.append(doc)
    return docs


def is_validation(doc: str) -> bool:
    """About one document in ten, chosen by a hash of its text (independent of the order)."""
    return zlib.crc32(doc.encode("utf-8", "surrogatepass")) % 10 == 0


def words(doc: str) -> list[str]:
    """The lowercased word tokens of a document."""
    return _WORD.findall(doc.lower())

"""Files for ``softxent score``: load arrays safely, write outputs atomically.

Loading never unpickles (``allow_pickle=False`` everywhere): a ``.npy`` or ``.npz`` holding
Python objects could run code when loaded, so it is refused. ``.npy`` files are checked
(header, dtype, size) before they are memory-mapped, so a truncated or corrupt file is a
one-line error instead of a crash or a silent short read. Every error is a
:class:`~softxent.cli.CLIError` whose message starts with the file's name.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import warnings
import zipfile
from collections.abc import Iterator

import numpy as np
from numpy.lib import format as npy_format

from softxent.cli import CLIError

#: Text files are parsed whole in memory: refuse anything larger (use .npy instead).
TEXT_LIMIT_BYTES = 64 * 2**20
SUFFIXES = (".npy", ".npz", ".csv", ".txt")


def load_array(path: str, *, key: str | None = None, integer: bool = False) -> np.ndarray:
    """The array stored in ``path``: ``.npy`` (memory-mapped), ``.npz`` (``key``), or text.

    ``integer`` says how text is parsed: as int64 class ids (a value such as ``1.5`` is an
    error) or as float64. Binary files keep their dtype; the caller checks it.
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        raise CLIError(
            f"{path}: unsupported file type {suffix or '(none)'!r}; expected "
            + ", ".join(SUFFIXES)
        )
    _check_readable(path)
    if key is not None and suffix != ".npz":
        raise CLIError(f"{path}: a key ({key!r}) was given but only .npz files hold named arrays")
    try:
        if suffix == ".npy":
            return _load_npy(path)
        if suffix == ".npz":
            return _load_npz(path, key)
        return _load_text(path, integer)
    except OSError as error:
        raise CLIError(f"{path}: cannot read: {error.strerror or error}") from None


def _check_readable(path: str) -> None:
    if not os.path.exists(path):
        raise CLIError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CLIError(f"{path}: is a directory, expected a file")
    if not os.access(path, os.R_OK):
        raise CLIError(f"{path}: permission denied")


def _load_npy(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        try:
            version = npy_format.read_magic(f)
            if version == (1, 0):
                shape, _fortran, dtype = npy_format.read_array_header_1_0(f)
            else:
                shape, _fortran, dtype = npy_format.read_array_header_2_0(f)
        except Exception as error:  # a hostile header can fail in any way: ast, tokenize...
            raise CLIError(f"{path}: not a valid .npy file ({_first_line(error)})") from None
        offset = f.tell()
    if dtype.hasobject:
        raise CLIError(
            f"{path}: holds Python objects (dtype {dtype}); refusing to unpickle them "
            "(loading could run code); save a numeric array instead"
        )
    expected = math.prod(shape) * dtype.itemsize
    found = os.path.getsize(path) - offset
    if found < expected:
        raise CLIError(
            f"{path}: truncated: the header promises {expected} bytes of data for shape "
            f"{shape} {dtype}, the file has {found}"
        )
    if expected == 0:  # an empty file region cannot be mapped
        return np.load(path, allow_pickle=False)
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _load_npz(path: str, key: str | None) -> np.ndarray:
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, zipfile.BadZipFile, EOFError) as error:
        raise CLIError(f"{path}: not a valid .npz file ({_first_line(error)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise CLIError(f"{path}: not a .npz archive (it holds a single .npy array)")
    with archive:
        names = list(archive.files)
        if key is None:
            if len(names) != 1:
                listed = ", ".join(names) or "none"
                raise CLIError(
                    f"{path}: holds {len(names)} arrays ({listed}); choose one with a key "
                    "(--key for the logits, --target-key for the targets)"
                )
            key = names[0]
        elif key not in names:
            raise CLIError(
                f"{path}: no array named {key!r}; it holds: {', '.join(names) or 'none'}"
            )
        try:
            array = archive[key]
        except ValueError as error:  # object arrays: "Object arrays cannot be loaded..."
            raise CLIError(
                f"{path}: array {key!r} cannot be loaded without unpickling ({_first_line(error)})"
            ) from None
        except (zipfile.BadZipFile, EOFError, OSError) as error:
            raise CLIError(f"{path}: array {key!r} is corrupt ({_first_line(error)})") from None
        if not isinstance(array, np.ndarray):  # a member that is not .npy comes back as bytes
            raise CLIError(f"{path}: member {key!r} is not a .npy array")
        return array


def _load_text(path: str, integer: bool) -> np.ndarray:
    size = os.path.getsize(path)
    if size > TEXT_LIMIT_BYTES:
        raise CLIError(
            f"{path}: {size} bytes is too large for a text file (limit "
            f"{TEXT_LIMIT_BYTES // 2**20} MiB); save it as .npy"
        )
    delimiter = "," if path.lower().endswith(".csv") else None
    what = "integer class ids" if integer else "numbers"
    try:
        # NumPy warns (a UserWarning with a source line) on a file with no data: that is
        # this file's error, said in one line, never a library warning on the user's screen.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return np.loadtxt(
                path,
                delimiter=delimiter,
                dtype=np.int64 if integer else np.float64,
                ndmin=1 if integer else 2,
                comments="#",
            )
    except UserWarning as warning:
        if "no data" in str(warning):
            raise CLIError(
                f"{path}: holds no {what} (the file is empty or only comments)"
            ) from None
        raise CLIError(f"{path}: cannot read {what}: {_first_line(warning)}") from None
    except ValueError as error:
        raise CLIError(f"{path}: expected {what}: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def check_output_path(path: str, suffixes: tuple[str, ...], option: str) -> None:
    """Fail before any work if ``path`` cannot be written (bad suffix, missing directory)."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in suffixes:
        raise CLIError(
            f"{path}: {option} needs a file ending in {' or '.join(suffixes)}, got "
            f"{suffix or 'no suffix'}"
        )
    if os.path.isdir(path):
        raise CLIError(f"{path}: is a directory, {option} needs a file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CLIError(f"{path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise CLIError(f"{path}: directory {directory} is not writable")


def check_outputs_are_not_inputs(outputs: dict[str, str], inputs: list[str]) -> None:
    """Refuse an output path that names one of the ``inputs`` (or another output).

    "The same file" is decided by device and inode (:func:`os.path.samefile`), so a
    symbolic link, a hard link or another spelling of the path counts too. ``outputs``
    maps each output path to its option (e.g. ``"--per-sample"``).
    """
    seen: list[tuple[str, str]] = [(path, "an input") for path in inputs]
    for path, option in outputs.items():
        if os.path.exists(path):
            for other, role in seen:
                if os.path.exists(other) and os.path.samefile(path, other):
                    what = role if role == "an input" else f"the {role} output"
                    raise CLIError(
                        f"{path}: {option} would overwrite {what} ({other}); "
                        "choose another output file"
                    )
        seen.append((path, option))


def _new_file_mode(path: str) -> int:
    """The permissions an ordinary write would give ``path``: its current ones when it
    exists, else ``0o666`` less the umask (a temporary file starts at ``0o600``)."""
    with contextlib.suppress(OSError):
        return os.stat(path).st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class AtomicOutputs:
    """Write several output files so that each appears whole or not at all.

    Each file is written under a temporary name in its own directory; :meth:`commit`
    renames them all at the end (``os.replace``, atomic on one file system). On any error,
    or without a commit, the temporary files are removed and no output is left behind.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[str, str]] = []  # (temporary, final)

    def __enter__(self) -> AtomicOutputs:
        return self

    @contextlib.contextmanager
    def open(self, path: str) -> Iterator:
        """A binary file object for ``path`` (written under a temporary name)."""
        directory = os.path.dirname(os.path.abspath(path))
        name = os.path.basename(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        self._pending.append((tmp, path))
        os.fchmod(fd, _new_file_mode(path))
        with os.fdopen(fd, "wb") as f:
            yield f

    def commit(self) -> None:
        for tmp, path in self._pending:
            os.replace(tmp, path)
        self._pending.clear()

    def __exit__(self, *exc: object) -> None:
        for tmp, _ in self._pending:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        self._pending.clear()


def write_per_sample(f, losses: np.ndarray, path: str) -> None:
    """``.npy``: the array as is; ``.csv``: one loss per line, in C order of the batch."""
    if path.lower().endswith(".npy"):
        np.save(f, losses, allow_pickle=False)
    else:
        np.savetxt(f, losses.reshape(-1, 1), fmt="%.9g", header="loss", comments="")

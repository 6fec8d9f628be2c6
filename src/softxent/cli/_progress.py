"""A minimal progress bar for the command line (stderr, redrawn in place).

Written here rather than taken from tqdm because the runtime dependency is numpy alone; it
draws only when stderr is a terminal, so logs and tests stay clean.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Progress of ``total`` units of work, with throughput.

    Use as a context manager; call :meth:`update` with the units just finished. Nothing is
    drawn when ``enabled`` is False (default: only when ``stream`` is a terminal).

    Examples
    --------
    >>> import io
    >>> with Progress(10, desc="blocks", enabled=False) as bar:
    ...     bar.update(4)
    ...     bar.update(6)
    >>> bar.done
    10
    """

    def __init__(
        self,
        total: float,
        *,
        desc: str = "",
        unit: str = "",
        scale: float = 1.0,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        width: int = 24,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.scale = scale  # units shown in the throughput = done * scale / seconds
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.width = width
        self.done: float = 0
        self._start = time.perf_counter()
        self._last_draw = 0.0

    def __enter__(self) -> Progress:
        self._start = time.perf_counter()
        self._draw(force=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._draw(force=True)
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()

    def update(self, n: float = 1) -> None:
        """Mark ``n`` more units as finished."""
        self.done += n
        self._draw()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last_draw < 0.1:  # redraw at most 10 times a second
            return
        self._last_draw = now
        fraction = min(1.0, self.done / self.total) if self.total else 1.0
        filled = round(fraction * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = now - self._start
        rate = ""
        if self.unit and elapsed > 0:
            rate = f"  {self.done * self.scale / elapsed:,.1f} {self.unit}/s"
        line = f"\r{self.desc} [{bar}] {fraction:4.0%}{rate}  {elapsed:5.1f}s"
        self.stream.write(line[:80].ljust(80) if len(line) < 80 else line[:80])
        self.stream.flush()

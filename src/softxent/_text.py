"""Plain-text tables and paragraphs for the command line's output (demo, score, bench).

ASCII only; columns are padded to their widest cell. A table too wide for the screen keeps
its label columns and drops middle columns, shown as one ``...`` column; a long table keeps
its first and last rows around a ``...`` row.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

ELIDED = "..."


def paragraph(text: str, *, width: int, indent: str = "") -> list[str]:
    """``text`` wrapped to ``width`` columns, every line starting with ``indent``."""
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent)


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    left: int = 0,
    rule: bool = True,
    indent: str = "",
    width: int | None = None,
    lead: int = 0,
    trail: int = 0,
    max_rows: int | None = None,
) -> list[str]:
    """The lines of a table: the header, a rule of dashes (if ``rule``), then the rows.

    Parameters
    ----------
    header, rows
        The cells, as text; every row has as many cells as the header.
    left
        The first ``left`` columns are left-aligned, the others right-aligned.
    rule
        Draw a line of dashes under the header.
    indent
        Text before every line.
    width
        The screen width. Columns between the first ``lead`` and the last ``trail`` are
        dropped (the last of them always stays) until the table fits; None: keep all.
    max_rows
        More rows than this are shown as the first ``max_rows - 3``, a ``...`` row and the
        last two; None: keep all.
    """
    body = [list(row) for row in rows]
    if max_rows is not None and len(body) > max_rows:
        body = [*body[: max_rows - 3], [ELIDED] * len(header), *body[-2:]]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    order = _columns(widths, len(indent), width, lead, trail)

    def line(cells: Sequence[str]) -> str:
        parts = [
            ELIDED
            if i is None
            else cells[i].ljust(widths[i])
            if i < left
            else cells[i].rjust(widths[i])
            for i in order
        ]
        return (indent + "  ".join(parts)).rstrip()

    lines = [line(header)]
    if rule:
        lines.append(line(["-" * w for w in widths]))
    return [*lines, *(line(row) for row in body)]


def _columns(
    widths: list[int], indent: int, width: int | None, lead: int, trail: int
) -> list[int | None]:
    """The columns to show, in order; None where the dropped middle columns were."""
    count = len(widths)
    if width is None:
        return list(range(count))
    middle = list(range(lead, count - trail))
    fixed = [*range(lead), *range(count - trail, count)]

    def used(keep: list[int]) -> int:
        shown = len(keep) + len(fixed) + (len(keep) < len(middle))
        return indent + sum(widths[i] for i in (*fixed, *keep)) + 2 * shown + len(ELIDED)

    keep = middle
    while len(keep) > 2 and used(keep) > width:
        keep = [*keep[:-2], keep[-1]]  # drop the last-but-one kept column
    order: list[int | None] = list(range(lead))
    for position, i in enumerate(keep):
        if position == len(keep) - 1 and len(keep) < len(middle):
            order.append(None)  # the "..." column before the last one
        order.append(i)
    order.extend(range(count - trail, count))
    return order

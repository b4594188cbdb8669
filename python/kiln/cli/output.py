"""What the commands print: tables and lines for people, or one JSON document for programs.

With ``--json`` a command writes exactly one JSON document on stdout and nothing else there
(progress and notes go to stderr, as they always do). Its records are the Python SDK's, field
for field (snake_case): sizes in bytes, times in Unix seconds (``null`` when none).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import orjson
from pydantic_core import to_jsonable_python


def print_json(document: object) -> None:
    """Write ``document`` (dicts, lists, dataclasses, pydantic models) as one JSON document on stdout."""
    sys.stdout.buffer.write(orjson.dumps(to_jsonable_python(document), option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def note(line: str) -> None:
    """A line for the person watching, on stderr (never in the way of what stdout carries)."""
    print(line, file=sys.stderr, flush=True)


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` (the header first) in columns two spaces apart."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def ago(then: float | None, now: float) -> str:
    if then is None:
        return "never"
    seconds = max(0.0, now - then)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def when(seconds: float | None) -> str:
    return "-" if seconds is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))

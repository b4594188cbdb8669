"""Container paths: the one rule of protocol kiln.v1 that JSON Schema cannot say.

The schema marks every container path with ``"format": "container-path"``; this module
(and ``js-client/src/protocol/paths.js``, its twin) says what that format means. The
vectors in ``protocol/v1/vectors/`` hold both to the same verdicts.
"""

from __future__ import annotations

from typing import Final

FORMAT: Final = "container-path"
"""The JSON Schema ``format`` of a container path."""
MAX_PATH_LENGTH: Final = 4096


def path_problem(path: str) -> str | None:
    """Why ``path`` is not a container path, or None when it is one.

    A container path is absolute and normalized: ``/`` itself, or ``/`` followed by
    components separated by single slashes, none empty (no ``//``, no trailing ``/``),
    ``.`` or ``..``; it holds no NUL byte and at most 4096 characters.
    """
    if not path.startswith("/"):
        return f"container path must be absolute: {path[:64]}"
    if len(path) > MAX_PATH_LENGTH:
        return f"container path is longer than {MAX_PATH_LENGTH} characters"
    if "\x00" in path:
        return "container path contains a NUL byte"
    if path == "/":
        return None
    parts = path[1:].split("/")
    if ".." in parts:
        return f"container path must not contain '..': {path[:256]}"
    if "" in parts or "." in parts:
        return f"container path is not normalized: {path[:256]}"
    return None

"""Container paths: the one rule of protocol kiln.v1 that JSON Schema cannot say.

The schema marks every container path with ``"format": "container-path"``; this module
(and ``js-client/src/protocol/paths.js``, its twin) says what that format means. The
vectors in ``protocol/v1/vectors/`` hold both to the same verdicts.
"""

from __future__ import annotations

import posixpath
from typing import Final

FORMAT: Final = "container-path"
"""The JSON Schema ``format`` of a container path."""
MAX_PATH_LENGTH: Final = 4096


def path_problem(path: str) -> str | None:
    """Why ``path`` is not a container path, or None when it is one.

    A container path is absolute, normalized (no ``//``, no ``/./``, no trailing ``/``
    except ``/`` itself), free of ``..`` components and of NUL bytes.
    """
    if not path.startswith("/"):
        return f"container path must be absolute: {path}"
    if "\x00" in path:
        return "container path contains a NUL byte"
    if ".." in path.split("/"):
        return f"container path must not contain '..': {path}"
    if path != "/" and posixpath.normpath(path) != path.rstrip("/"):
        return f"container path is not normalized: {path}"
    return None

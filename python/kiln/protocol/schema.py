"""Write the JSON Schema of protocol kiln.v1: ``python -m kiln.protocol.schema > protocol/v1/schema.json``.

Besides the messages (``$defs``, from the pydantic models) the document carries what the
models cannot say, under keys of its own that validators ignore; the JavaScript client
generates its codes and limits from them (``js-client/scripts/generate.mjs``):

- ``x-kiln-protocol``: the protocol's name and version;
- ``x-kiln-error-codes``: every error code, what it means, who sends it (``hub``,
  ``provider``, or ``client``: an SDK raises it itself, never sends it) and the class of the
  error tree an ``error`` message with it becomes (Python's name; JavaScript adds ``Error``);
- ``x-kiln-close-codes``: every WebSocket close code, by name, with its number and meaning;
- ``x-kiln-limits``: the default limits (``kiln.protocol.limits``, ``welcome.limits``
  announces those in force) and the protocol's fixed bounds, by name.
"""

from __future__ import annotations

import sys
from typing import Any, Final

import orjson

from kiln.protocol import frames, limits, messages, paths
from kiln.protocol.codes import CloseCode, ErrorCode
from kiln.protocol.errors import error_class

FIXED_BOUNDS: Final = {
    "max_id": messages.MAX_ID,
    "max_exclude": messages.MAX_EXCLUDE,
    "max_listed": messages.MAX_LISTED,
    "max_text": messages.MAX_TEXT,
    "max_hello_bytes": messages.MAX_HELLO_BYTES,
    "max_path_length": paths.MAX_PATH_LENGTH,
    "header_size": frames.HEADER_SIZE,
    "max_reason_bytes": frames.MAX_REASON_BYTES,
    "max_stream_id": frames.MAX_STREAM_ID,
    "max_task_reason": messages.MAX_REASON,
    "max_task_attempt": messages.MAX_TASK_ATTEMPT,
    "max_usage_activities": messages.MAX_USAGE_ACTIVITIES,
}
"""The protocol's bounds that no ``welcome`` changes, beside the default limits."""


def default_limits() -> dict[str, int]:
    """Every constant of :mod:`kiln.protocol.limits`, by its name in lower case."""
    return {name.lower(): value for name, value in vars(limits).items() if name.isupper() and isinstance(value, int)}


def document() -> dict[str, Any]:
    """The JSON Schema of every message, with the ``x-kiln-*`` tables (see the module's docstring)."""
    schema = messages.json_schema()
    schema["x-kiln-protocol"] = {
        "name": messages.PROTOCOL_NAME,
        "version": messages.PROTOCOL_VERSION,
        "major": messages.MAJOR_VERSION,
        "minor": messages.MINOR_VERSION,
    }
    schema["x-kiln-error-codes"] = {
        code.value: {"meaning": code.meaning, "sent_by": list(code.sent_by), "error": error_class(code).__name__}
        for code in ErrorCode
    }
    schema["x-kiln-close-codes"] = {
        code.name.lower(): {"code": code.value, "meaning": code.meaning} for code in CloseCode
    }
    schema["x-kiln-limits"] = default_limits() | FIXED_BOUNDS
    return schema


def render() -> bytes:
    return orjson.dumps(document(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


if __name__ == "__main__":
    sys.stdout.buffer.write(render())

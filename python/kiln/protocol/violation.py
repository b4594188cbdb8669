"""The one exception the pure protocol core raises."""

from __future__ import annotations

from kiln.protocol.codes import ErrorCode


class ProtocolViolation(Exception):
    """A frame or message broke protocol kiln.v1.

    ``code`` is the stable error code to answer with; ``re`` is the id of the
    request the bad message carried, when it could be read.
    """

    def __init__(self, code: ErrorCode, message: str, re: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.re = re

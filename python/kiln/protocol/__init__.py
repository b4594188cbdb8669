"""Protocol kiln.v1, pure: messages, binary frames, limits and error codes. No I/O here."""

from kiln.protocol.codes import ErrorCode
from kiln.protocol.frames import Frame, FrameKind
from kiln.protocol.messages import (
    PROTOCOL_NAME,
    PROTOCOL_VERSION,
    Message,
    parse,
    serialize,
)
from kiln.protocol.violation import ProtocolViolation

__all__ = [
    "PROTOCOL_NAME",
    "PROTOCOL_VERSION",
    "ErrorCode",
    "Frame",
    "FrameKind",
    "Message",
    "ProtocolViolation",
    "parse",
    "serialize",
]

"""Binary frames: the data of file streams.

Layout (all integers big-endian)::

    byte 0      kind: 0 = DATA, 1 = END, 2 = ABORT
    bytes 1-3   zero
    bytes 4-7   stream id: the id of the request that opened the stream
    bytes 8-    DATA: up to ``chunk_bytes`` of file data; END: nothing;
                ABORT: a UTF-8 reason, at most 1024 bytes

Each DATA frame spends one credit of the stream; END and ABORT spend none.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from kiln.protocol.codes import ErrorCode
from kiln.protocol.errors import RemoteProtocolError

HEADER: Final = struct.Struct(">B3xI")
HEADER_SIZE: Final = HEADER.size
MAX_REASON_BYTES: Final = 1024
MAX_STREAM_ID: Final = 2**31 - 1
"""A stream's id is its request's id."""


class FrameKind(enum.IntEnum):
    DATA = 0
    END = 1
    ABORT = 2


@dataclass(frozen=True, slots=True)
class Frame:
    kind: FrameKind
    stream: int
    payload: memoryview


def encode(kind: FrameKind, stream: int, *payload: bytes | memoryview) -> bytes:
    """The bytes of one binary frame; a payload given in parts is joined (one copy in all)."""
    return b"".join((HEADER.pack(kind, stream), *payload))


def decode(data: bytes, max_payload: int) -> Frame:
    """Split one binary frame into kind, stream and payload (a view, no copy).

    Raises :class:`~kiln.protocol.errors.RemoteProtocolError` (``bad_frame``) on a short header, an unknown
    kind, a zero stream id or a payload over ``max_payload``.
    """
    if len(data) < HEADER_SIZE:
        raise RemoteProtocolError(f"binary frame shorter than its {HEADER_SIZE}-byte header", ErrorCode.BAD_FRAME)
    raw_kind, stream = HEADER.unpack_from(data)
    if data[1:4] != b"\x00\x00\x00":
        raise RemoteProtocolError("binary frame header bytes 1-3 must be zero", ErrorCode.BAD_FRAME)
    try:
        kind = FrameKind(raw_kind)
    except ValueError:
        raise RemoteProtocolError(f"unknown binary frame kind {raw_kind}", ErrorCode.BAD_FRAME) from None
    if not 1 <= stream <= MAX_STREAM_ID:
        raise RemoteProtocolError(f"binary frame for stream {stream}: a stream id is 1 to 2^31-1", ErrorCode.BAD_FRAME)
    payload = memoryview(data)[HEADER_SIZE:]
    limit = max_payload if kind is FrameKind.DATA else (0 if kind is FrameKind.END else MAX_REASON_BYTES)
    if len(payload) > limit:
        raise RemoteProtocolError(
            f"{kind.name} frame payload of {len(payload)} bytes exceeds {limit}", ErrorCode.BAD_FRAME, stream
        )
    return Frame(kind, stream, payload)


def with_stream(data: bytes, stream: int) -> bytes:
    """The same frame re-addressed to ``stream`` (how the hub relays between legs)."""
    return HEADER.pack(data[0], stream) + memoryview(data)[HEADER_SIZE:]

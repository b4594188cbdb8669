"""Protocol kiln.v1, pure: messages, binary frames, limits, error codes and the session core.

Nothing here does I/O or reads a clock; it imports no other Kiln package. The hub, the
provider and the requestor SDK all build on it.

- ``messages``: every message as a frozen pydantic model (the source of the schema); ``schema``: its JSON Schema
- ``frames``: binary stream frames; ``limits``: sizes and windows
- ``codes``: error codes and close codes; ``errors``: the one error tree
- ``session``: a peer's side of a session, sans I/O
- ``paths``: container paths from the wire; ``sizes``: sizes as people write them; ``layers``: tar layers metered
"""

from kiln.protocol.codes import ErrorCode
from kiln.protocol.errors import KilnError, LocalProtocolError, RemoteProtocolError
from kiln.protocol.frames import Frame, FrameKind
from kiln.protocol.messages import (
    PROTOCOL_NAME,
    PROTOCOL_VERSION,
    Message,
    parse,
    serialize,
)

__all__ = [
    "PROTOCOL_NAME",
    "PROTOCOL_VERSION",
    "ErrorCode",
    "Frame",
    "FrameKind",
    "KilnError",
    "LocalProtocolError",
    "Message",
    "RemoteProtocolError",
    "parse",
    "serialize",
]

"""What the hub's core asks its I/O layer to do: the actions :class:`~kiln.hub.core.HubCore` returns.

Send a frame to a peer, close a peer, log a line; hand a request or a stream frame to the
image store, or to the listener of published ports; write a change to the hub's state
(:mod:`kiln.hub.records`). The I/O layer carries them out in the order given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from kiln.hub.access import Credential
from kiln.hub.records import Change
from kiln.protocol.frames import FrameKind
from kiln.protocol.messages import Blob, ListImages, PushImage, RemoveImage, ShareImage


@dataclass(frozen=True, slots=True)
class Send:
    peer: int
    data: bytes
    binary: bool = False


@dataclass(frozen=True, slots=True)
class Close:
    peer: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Log:
    level: Literal["info", "warning"]
    text: str


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """A requestor's request to the image store; answer it with :meth:`~kiln.hub.core.HubCore.store_reply`."""

    peer: int
    message: PushImage | ListImages | RemoveImage | ShareImage
    credential: Credential | None = None
    """The credential its requestor joined with (``None`` on an open hub or with the shared token)."""


@dataclass(frozen=True, slots=True)
class PushFrame:
    """A frame of a requestor's push stream: DATA (within the credit the store granted), END or ABORT."""

    peer: int
    request: int
    kind: FrameKind
    payload: bytes


@dataclass(frozen=True, slots=True)
class PushCancelled:
    """A push is cancelled (answer it: ``cancelled``) or its requestor is gone (``answer`` false)."""

    peer: int
    request: int
    answer: bool


@dataclass(frozen=True, slots=True)
class ServeBlobs:
    """Send provider ``peer`` these blobs, one after another, on ``stream``
    (see :meth:`~kiln.hub.core.HubCore.serve_data`)."""

    peer: int
    stream: int
    blobs: tuple[Blob, ...]


@dataclass(frozen=True, slots=True)
class ServeCredit:
    """The provider lets the store send ``chunks`` more DATA frames on ``stream``."""

    peer: int
    stream: int
    chunks: int


@dataclass(frozen=True, slots=True)
class ServeStop:
    """Stop sending on ``stream``: its create ended or its provider is gone."""

    peer: int
    stream: int


@dataclass(frozen=True, slots=True)
class PortCredit:
    """(1.7) The service of published connection ``conn`` lets the hub send ``chunks`` more DATA frames."""

    conn: int
    chunks: int


@dataclass(frozen=True, slots=True)
class PortFrame:
    """(1.7) A frame from the service of published connection ``conn``: DATA, END (it closed its
    side) or ABORT (it reset the connection). The listener grants credit as it writes DATA out."""

    conn: int
    kind: FrameKind
    payload: bytes


@dataclass(frozen=True, slots=True)
class PortClosed:
    """(1.7) The connect of published connection ``conn`` is over: ``error`` says why it failed (None: done)."""

    conn: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """(1.7) ``token`` is published no more: close the connections it carries; 404 from now on."""

    token: str


PortAction: TypeAlias = PortCredit | PortFrame | PortClosed | Withdrawn
"""What the publish listener (:mod:`kiln.hub.io.published`) carries out."""
StoreAction: TypeAlias = StoreRequest | PushFrame | PushCancelled | ServeBlobs | ServeCredit | ServeStop
Action: TypeAlias = Send | Close | Log | StoreAction | PortAction | Change

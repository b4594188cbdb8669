"""What the hub's server keeps per connection: its WebSocket connection counted by its source
address (:class:`HubConnection`), the bounded outbox of frames waiting for it (:class:`Outbox`),
and the log's rate limit (:class:`LogLimiter`). :mod:`kiln.hub.io.server` drives them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from websockets.asyncio.server import ServerConnection
from websockets.protocol import Protocol, State
from websockets.typing import Subprotocol

from kiln.hub.access import Viewer
from kiln.hub.actions import Close, Send
from kiln.hub.gate import Gate, source
from kiln.protocol.messages import PROTOCOL_NAME
from kiln.wire import TakesMessages

log = logging.getLogger("kiln.hub")

SUBPROTOCOL = Subprotocol(PROTOCOL_NAME)
LOG_LINES_PER_SECOND: Final = 20
LOG_BURST: Final = 100
MAX_HANDSHAKE_BYTES: Final = 16 * 1024
"""Bytes a connection may send before its WebSocket opening handshake is done (its HTTP request:
nginx's default allows 32 KiB, browsers send 1-2): websockets itself would take 128 lines of 8 KiB."""
UNREAD_BYTES: Final = 64 * 1024
"""Bytes a peer yet to be welcomed may leave unread toward it (what the hub writes unasked: pongs);
a welcomed one may leave twice ``max_frame_bytes``. Past it, it is cut: a ping flood never read
would otherwise grow the hub's write buffer without bound."""


class LogLimiter:
    """At most ``rate`` lines a second (bursts of ``burst``), so that no peer can flood the log.

    What is held back is counted, and the count logged once lines flow again.
    """

    def __init__(self, rate: float = LOG_LINES_PER_SECOND, burst: int = LOG_BURST) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()
        self.suppressed = 0

    def emit(self, level: int, text: str) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            self.suppressed += 1
            return
        self._tokens -= 1
        if self.suppressed:
            log.warning("%d log lines were suppressed (more than %g a second)", self.suppressed, self.rate)
            self.suppressed = 0
        log.log(level, "%s", text)


class OutboxFull(Exception):
    """More bytes wait for a peer than the hub will hold for it."""


@dataclass(slots=True)
class Outbox:
    """Frames waiting to be written to one peer, bounded in bytes.

    The server writes them at the end of each turn of the event loop when the socket takes them
    at once; its writer task (:meth:`take`) writes them when it must wait, and closes.
    """

    limit: int
    items: deque[Send | Close] = field(default_factory=deque)
    size: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Set for the writer task: what waits is its to write."""
    closing: bool = False
    due: bool = False
    """A write at the end of this turn of the event loop is on its way."""
    busy: bool = False
    """The writer task is writing: what comes meanwhile waits for it."""

    def put(self, item: Send | Close) -> None:
        if self.closing:
            return
        if isinstance(item, Close):
            self.closing = True
            self.ready.set()
        else:
            if self.size + len(item.data) > self.limit:
                raise OutboxFull
            self.size += len(item.data)
        self.items.append(item)

    async def take(self) -> list[Send | Close]:
        """Everything waiting, in order (at least one item; a Close is always the last)."""
        while not self.items:
            self.ready.clear()
            await self.ready.wait()
        items = list(self.items)
        self.items.clear()
        self.size = 0
        return items


LINK_PATH: Final = "/hub/link/"
"""Where another hub of the database opens a link to a provider connected here (:mod:`kiln.hub.io.links`)."""


@dataclass(frozen=True, slots=True)
class LinkAsk:
    """A link's upgrade, let in by the HTTP front (:mod:`kiln.hub.io.http`): from which hub (and
    its slot), to which provider (:mod:`kiln.hub.io.links`)."""

    hub: str
    slot: int
    provider: str


class HubConnection(TakesMessages, ServerConnection):
    """A connection counted by its source address from the moment it is accepted (:class:`Gate`),
    whose messages go to the server's handler as they are read (:class:`~kiln.wire.TakesMessages`)."""

    gate: Gate = Gate()
    """The server's gate (a subclass per server sets it: see :func:`connection_class`)."""
    viewer: Viewer | None = None
    """Set for the dashboard's live feed, to whom its upgrade showed (:mod:`kiln.hub.io.http`): no kiln.v1 peer."""
    link: LinkAsk | None = None
    """Set for a link from another hub of the database to a provider here (:mod:`kiln.hub.io.links`)."""
    blob: str | None = None
    """Set for another hub fetching a blob, its digest (:mod:`kiln.hub.io.http`): no kiln.v1 peer either."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.source = source(transport.get_extra_info("peername"))
        self.waiting = True
        self.handshake_bytes = 0
        self.unread_bound = UNREAD_BYTES
        self.refusal = self.gate.opened(self.source)
        # Refusals are said politely (an error, a close code) after the WebSocket handshake, which
        # holds its bytes for up to OPEN_TIMEOUT; past twice the cap, not even that is spent.
        flooding = self.gate.waiting[self.source] > 2 * self.gate.waiting_per_address
        if flooding and isinstance(transport, asyncio.Transport):
            transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.protocol.state is State.CONNECTING:
            self.handshake_bytes += len(data)
            if self.handshake_bytes > MAX_HANDSHAKE_BYTES:
                self.transport.abort()  # not even parsed: nothing of it is kept
                return
        super().data_received(data)
        # The hub's own sends wait for the buffer to drain; what the protocol answers on its own does not.
        if self.transport.get_write_buffer_size() > self.unread_bound:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.gate.closed(self.source, waiting=self.waiting)


def connection_class(gate: Gate) -> type[HubConnection]:
    """The connections of a server whose caps ``gate`` keeps."""
    return type("HubConnection", (HubConnection,), {"gate": gate})


def allow_frames(protocol: Protocol, size: int) -> None:
    """Let ``protocol`` take frames and messages of up to ``size`` bytes from now on."""
    # websockets >= 15 splits max_size into max_message_size and max_fragment_size.
    name = "max_message_size" if hasattr(protocol, "max_message_size") else "max_size"
    setattr(protocol, name, size)


def select_subprotocol(connection: ServerConnection, subprotocols: Sequence[Subprotocol]) -> Subprotocol | None:
    # A client that offers no kiln.v1 still gets in: the version in its hello decides.
    return SUBPROTOCOL if SUBPROTOCOL in subprotocols else None

"""What the hub's server keeps per connection: its WebSocket connection counted by its source
address (:class:`HubConnection`), the bounded outbox of frames waiting for it (:class:`Outbox`),
and the log's rate limit (:class:`LogLimiter`). :mod:`kiln.hub.io.server` drives them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from websockets.asyncio.server import ServerConnection
from websockets.frames import BINARY, CONT, TEXT, CloseCode, Frame
from websockets.protocol import Event, Protocol, State
from websockets.typing import Subprotocol

from kiln.hub.actions import Close, Send
from kiln.hub.gate import Gate, source
from kiln.protocol.messages import PROTOCOL_NAME

log = logging.getLogger("kiln.hub")

SUBPROTOCOL = Subprotocol(PROTOCOL_NAME)
LOG_LINES_PER_SECOND: Final = 20
LOG_BURST: Final = 100
MAX_HANDSHAKE_BYTES: Final = 16 * 1024
"""Bytes a connection may send before its WebSocket opening handshake is done (its HTTP request:
nginx's default allows 32 KiB, browsers send 1-2): websockets itself would take 128 lines of 8 KiB."""
MAX_FRAGMENTS: Final = 4096
"""The most fragments one message may come in (as websockets' own ``recv()`` allows)."""
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
    """Frames waiting to be written to one peer, bounded in bytes."""

    limit: int
    items: deque[Send | Close] = field(default_factory=deque)
    size: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False

    def put(self, item: Send | Close) -> None:
        if self.closing:
            return
        if isinstance(item, Close):
            self.closing = True
        else:
            if self.size + len(item.data) > self.limit:
                raise OutboxFull
            self.size += len(item.data)
        self.items.append(item)
        self.ready.set()

    async def take(self) -> list[Send | Close]:
        """Everything waiting, in order (at least one item; a Close is always the last)."""
        while not self.items:
            self.ready.clear()
            await self.ready.wait()
        items = list(self.items)
        self.items.clear()
        self.size = 0
        return items


async def send_frames(ws: ServerConnection, frames: list[Send]) -> None:
    """Write ``frames`` to ``ws`` in order, as :meth:`~ServerConnection.send` would one by one, but
    with one write to the socket for them all: a frame relayed costs the hub a system call, and
    the peers as many wake-ups, only once per batch. Raises ``ConnectionClosed`` as ``send`` does.
    """
    if len(frames) == 1:
        await ws.send(frames[0].data, text=not frames[0].binary)
        return
    # send_context checks the connection is open, and on the way out writes what the protocol
    # holds and waits while the socket's buffer is over its high-water mark (flow control).
    async with ws.send_context():
        protocol = ws.protocol
        for frame in frames:
            if frame.binary:
                protocol.send_binary(frame.data)
            else:
                protocol.send_text(frame.data)
        ws.transport.writelines(protocol.data_to_send())


class HubConnection(ServerConnection):
    """A connection counted by its source address from the moment it is accepted (:class:`Gate`),
    whose messages are handed to :attr:`on_message` as they are read.

    websockets would queue each message for a task to take with ``recv()``: a wake-up of that
    task per message, the cost of a relayed message as much as its parsing. Here a message is
    taken as soon as its last frame is read (and the hub's answers go out with the next write:
    see :func:`send_frames`). What ``recv()`` checks, this checks alike: a text message must be
    UTF-8 (else the connection fails with 1007), a message has at most :data:`MAX_FRAGMENTS`
    fragments (else 1009); websockets' protocol bounds its size.
    """

    gate: Gate = Gate()
    """The server's gate (a subclass per server sets it: see :func:`connection_class`)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.on_message: Callable[[bytes, bool], None] | None = None
        """Called with each message (its bytes, and whether it is text) once set; none is taken before."""
        self.early: list[tuple[bytes, bool]] = []
        """Messages read before :attr:`on_message` was set, for it to take first."""
        self.first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done when the first message is taken, or the connection ended."""
        self.ended: asyncio.Future[Failure | None] = asyncio.get_running_loop().create_future()
        """Done when the connection is lost (None), or when a message failed (what went wrong):
        nothing more is taken then."""
        self._parts: list[bytes] = []  # the fragments of a message being read
        self._text = False
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

    def process_event(self, event: Event) -> None:
        if not isinstance(event, Frame) or event.opcode not in (TEXT, BINARY, CONT):
            super().process_event(event)  # the opening handshake, a ping, a pong, a close
            return
        if self.ended.done():
            return
        if event.opcode is not CONT:
            self._text = event.opcode is TEXT
            self._parts = []
        elif len(self._parts) >= MAX_FRAGMENTS:
            self.ended.set_result(Failure(CloseCode.MESSAGE_TOO_BIG, "too many fragments"))
            return
        self._parts.append(bytes(event.data))  # the same bytes: no copy
        if not event.fin:
            return
        data, self._parts = b"".join(self._parts) if len(self._parts) > 1 else self._parts[0], []
        if self._text:
            try:
                data.decode()
            except UnicodeDecodeError as e:
                self.ended.set_result(Failure(CloseCode.INVALID_DATA, f"{e.reason} at position {e.start}"))
                return
        if self.on_message is None:
            self.early.append((data, self._text))
        else:
            self._deliver(self.on_message, data, self._text)

    def take_messages(self, on_message: Callable[[bytes, bool], None]) -> None:
        """From now on, hand each message to ``on_message`` (first those read already)."""
        self.on_message = on_message
        early, self.early = self.early, []
        for data, text in early:
            self._deliver(on_message, data, text)

    def stop_taking(self) -> None:
        """Take no more messages (the connection is being closed)."""
        if not self.ended.done():
            self.ended.set_result(None)

    def _deliver(self, on_message: Callable[[bytes, bool], None], data: bytes, text: bool) -> None:
        if self.ended.done():
            return
        if not self.first.done():
            self.first.set_result(None)
        try:
            on_message(data, text)
        except Exception as e:  # noqa: BLE001 - a bug of the hub's: raised by its handler, as from recv()
            self.ended.set_result(Failure(CloseCode.INTERNAL_ERROR, "", e))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.gate.closed(self.source, waiting=self.waiting)
        if not self.first.done():
            self.first.set_result(None)
        if not self.ended.done():
            self.ended.set_result(None)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a connection's messages stopped being taken: close it with ``code`` and ``reason``, or
    raise ``error`` (a bug of the hub's, which closes it with 1011)."""

    code: CloseCode
    reason: str
    error: Exception | None = None


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

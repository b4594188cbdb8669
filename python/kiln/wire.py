"""What the hub's connections and the peers' share under kiln.v1: WebSocket messages taken as
they are read, and frames written in batches.

websockets' asyncio connection queues each message it reads for a task to take with
``recv()``, and writes each frame it is given with a system call of its own. At the rate a
hub relays small messages, that wake-up and that call cost as much as the message itself.
A connection with :class:`TakesMessages` among its bases hands each message to a callback as
soon as its last frame is read (in the transport's ``data_received``), and
:func:`send_frames` writes several frames with one call. Nothing changes on the wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from websockets.asyncio.connection import Connection
from websockets.frames import BINARY, CONT, TEXT, CloseCode, Frame
from websockets.protocol import Event, State

MAX_FRAGMENTS: Final = 4096
"""The most fragments one message may come in (as websockets' own ``recv()`` allows)."""

OnMessage = Callable[[bytes, bool], None]
"""What takes a message: its bytes, and whether it came as text (then valid UTF-8)."""


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a connection's messages stopped being taken: close it with ``code`` and ``reason``,
    or raise ``error`` (a bug of the callback's, which ``recv()`` would have raised too)."""

    code: CloseCode
    reason: str
    error: Exception | None = None


class TakesMessages(Connection):
    """A websockets connection whose messages go to :meth:`take_messages`' callback as they are read.

    What ``recv()`` checks, this checks alike: a text message must be UTF-8 (else the connection
    fails with 1007), a message comes in at most :data:`MAX_FRAGMENTS` fragments (else 1009);
    websockets' protocol bounds its size. Put it first among a connection class's bases.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        loop = asyncio.get_running_loop()
        self.on_message: OnMessage | None = None
        self.early: list[tuple[bytes, bool]] = []
        """Messages read while no callback takes them, for the next one to take first."""
        self.first: asyncio.Future[None] = loop.create_future()
        """Done when the first message is taken, or the connection ended."""
        self.ended: asyncio.Future[Failure | None] = loop.create_future()
        """Done when the connection is lost (None), or when a message failed (why): nothing more
        is taken then; close the connection as the :class:`Failure` says, or raise its error."""
        self._parts: list[bytes] = []  # the fragments of the message being read
        self._text = False

    def take_messages(self, on_message: OnMessage) -> None:
        """Hand each message to ``on_message`` from now on (first those read while none did)."""
        self.on_message = on_message
        early, self.early = self.early, []
        for data, text in early:
            self._deliver(on_message, data, text)
        self.transport.resume_reading()

    def pause_taking(self) -> None:
        """Keep the messages read from now on until :meth:`take_messages` is called again; meanwhile
        no more is read than what the socket gave already (as websockets' own queue would do)."""
        self.on_message = None
        self.transport.pause_reading()

    def stop_taking(self) -> None:
        """Take no more messages (the connection is being closed)."""
        if not self.ended.done():
            self.ended.set_result(None)

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
            self._fail(Failure(CloseCode.MESSAGE_TOO_BIG, "too many fragments"))
            return
        self._parts.append(bytes(event.data))  # the same bytes: no copy
        if not event.fin:
            return
        data, self._parts = b"".join(self._parts) if len(self._parts) > 1 else self._parts[0], []
        if self._text:
            try:
                data.decode()
            except UnicodeDecodeError as e:
                self._fail(Failure(CloseCode.INVALID_DATA, f"{e.reason} at position {e.start}"))
                return
        if self.on_message is None:
            self.early.append((data, self._text))
        else:
            self._deliver(self.on_message, data, self._text)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.first.done():
            self.first.set_result(None)
        if not self.ended.done():
            self.ended.set_result(None)

    def _deliver(self, on_message: OnMessage, data: bytes, text: bool) -> None:
        if self.ended.done():
            return
        if not self.first.done():
            self.first.set_result(None)
        try:
            on_message(data, text)
        except Exception as e:  # noqa: BLE001 - a bug of the callback's: raised where recv() would raise it
            self._fail(Failure(CloseCode.INTERNAL_ERROR, "", e))

    def _fail(self, failure: Failure) -> None:
        """Take nothing more: ``ended`` says why, and ``first`` is done too (a peer whose first
        message fails is closed at once, not after the wait for its hello)."""
        self.ended.set_result(failure)
        if not self.first.done():
            self.first.set_result(None)


class Outbound(Protocol):
    """A frame to write: a message's UTF-8 text, or a binary stream frame."""

    @property
    def data(self) -> bytes: ...

    @property
    def binary(self) -> bool: ...


async def send_frames(ws: Connection, frames: Sequence[Outbound]) -> None:
    """Write ``frames`` to ``ws`` in order, as ``ws.send`` would one by one, but with one write to
    the socket for them all. Raises websockets' ``ConnectionClosed`` as ``send`` does."""
    if len(frames) == 1:
        await ws.send(frames[0].data, text=not frames[0].binary)
        return
    # send_context checks the connection is open, and on the way out writes what the protocol
    # holds and waits while the socket's buffer is over its high-water mark (flow control).
    async with ws.send_context():
        _serialize(ws, frames)


def send_frames_now(ws: Connection, frames: Sequence[Outbound]) -> bool:
    """Write ``frames`` to ``ws`` at once when that needs no waiting: the connection is open and
    the socket's buffer stays under its high-water mark. False (nothing written) otherwise: then
    :func:`send_frames` them."""
    transport = ws.transport
    if ws.protocol.state is not State.OPEN or ws.send_in_progress is not None or transport.is_closing():
        return False
    if (
        transport.get_write_buffer_size() + sum(len(frame.data) for frame in frames)
        > transport.get_write_buffer_limits()[1]
    ):
        return False
    _serialize(ws, frames)
    return True


def _serialize(ws: Connection, frames: Sequence[Outbound]) -> None:
    protocol = ws.protocol
    for frame in frames:
        if frame.binary:
            protocol.send_binary(frame.data)
        else:
            protocol.send_text(frame.data)
    ws.transport.writelines(protocol.data_to_send())

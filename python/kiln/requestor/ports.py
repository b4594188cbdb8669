"""Connections to a port of a container (protocol 1.7): asyncio streams, local forwards, published URLs.

:func:`open_connection` carries one TCP connection to ``127.0.0.1:port`` inside an activity's
container over a ``connect`` request's two streams, and hands back what
:func:`asyncio.open_connection` would: a :class:`asyncio.StreamReader` and a
:class:`asyncio.StreamWriter`, over a :class:`PortTransport`. Both ways are flow-controlled
end to end, as downloads and uploads are:

- out of the container, credit goes back as the reader takes the bytes, half a window at a
  time; a reader that stops reading pauses the transport (``pause_reading``), no credit goes
  back, and the service's writes stop in the container. What waits here is at most the
  window and the reader's ``limit``.
- into it, ``writer.write`` queues bytes that go out in DATA frames of at most
  ``chunk_bytes``, each within the provider's credit; past the write buffer's high-water
  mark the writer's ``drain()`` waits for credit, as it waits for a socket.

``writer.write_eof()`` is a half-close (END: the service reads EOF), and the reader reads
EOF when the service closed its side. ``writer.close()`` sends what is queued, then END,
and stops the connection if the service has not closed its side; ``transport.abort()``
resets it (ABORT). A failure (the provider lost, the service reset the connection) is the
:class:`~kiln.protocol.errors.KilnError` a read, or ``drain()``, raises.

:class:`Forward` listens on a local port and carries each connection it accepts over one
connection of its own (:func:`forward`); :class:`Publication` is a port the hub serves as an
HTTP URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final

from kiln.connection import Connection, Incoming, Outgoing
from kiln.protocol.errors import ConnectionClosed, KilnError, UsageError
from kiln.protocol.messages import Connect, Message

log = logging.getLogger("kiln.ports")

STREAM_LIMIT: Final = 64 * 1024
"""The reader's limit, as :func:`asyncio.open_connection`'s: it pauses the transport past twice this."""
PIPE_BYTES: Final = 256 * 1024
"""What a forward reads from one side at a time."""
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Opener = Callable[[], Awaitable[Streams]]
"""What opens one connection to a service (``act.connect(port)``, bound): what a Forward carries each local one over."""


def check_port(port: object, what: str = "port") -> int:
    """``port`` if it is a TCP port number (1 to 65535), else :class:`UsageError` (nothing is sent)."""
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise UsageError(f"{what} must be a TCP port number from 1 to 65535, not {port!r}")
    return port


async def open_connection(conn: Connection, activity: str, port: int, *, limit: int = STREAM_LIMIT) -> Streams:
    """Open a TCP connection to ``127.0.0.1:port`` in ``activity``'s container; return its streams
    once the provider says it is open.

    Raises :class:`~kiln.protocol.errors.ConnectionRefused` when nothing listens there, and
    the request's error otherwise (the activity gone, a provider older than 1.7: ``UnsupportedVersion``).
    """
    check_port(port)
    window = conn.session.limits.max_window // 2 or 1  # as a download's: the data may be a transfer's
    message = Connect(type="connect", id=conn.new_id(), activity=activity, port=port, window=window)
    sender, receiver, reply = await conn.open_connect(message)
    try:
        await sender.ready()  # the provider's first credit: the connection is open
    except BaseException:
        if not reply.done():
            reply.cancel()
            with contextlib.suppress(KilnError):
                await conn.cancel(message.id)
        elif not reply.cancelled():
            reply.exception()  # the same error is what we raise
        raise
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    extra = {"activity": activity, "port": port, "peername": (activity, port)}
    transport = PortTransport(conn, message.id, sender, receiver, reply, protocol, extra)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


class PortTransport(asyncio.Transport):
    """An asyncio transport over a ``connect`` request's two streams (see the module's docstring).

    Two tasks of its own move the bytes, and end by themselves when it closes: one takes the
    chunks that come (and so grants credit) while reading is not paused, one sends what was
    written as credit allows. The protocol's ``connection_lost`` comes once both are done.
    """

    def __init__(
        self,
        conn: Connection,
        request: int,
        sender: Outgoing,
        receiver: Incoming,
        reply: asyncio.Future[Message],
        protocol: asyncio.Protocol,
        extra: dict[str, Any],
    ) -> None:
        super().__init__(extra)
        self._name = f"{extra['activity']}:{extra['port']}"
        self._conn = conn
        self._request = request
        self._sender = sender
        self._receiver = receiver
        self._reply = reply
        self._protocol = protocol
        self._chunk = conn.session.limits.chunk_bytes
        self._buffer = bytearray()
        self._high = self._chunk
        self._low = self._chunk // 4
        self._writing_paused = False  # the protocol was told to pause writing
        self._reading = asyncio.Event()
        self._reading.set()
        self._poked = asyncio.Event()  # the sending task has something to do
        self._eof = False  # write_eof was called
        self._received_eof = False  # the service closed its side
        self._closing = False
        self._aborting = False
        self._lost = False  # connection_lost was called
        protocol.connection_made(self)
        reply.add_done_callback(self._replied)
        loop = asyncio.get_running_loop()
        self._tasks = (
            loop.create_task(self._receive(), name=f"kiln-connect-{request}-in"),
            loop.create_task(self._send(), name=f"kiln-connect-{request}-out"),
        )

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        if not isinstance(protocol, asyncio.Protocol):
            raise TypeError("a connection's transport takes a streaming asyncio.Protocol")
        self._protocol = protocol

    # --- reading -----------------------------------------------------------------------------

    def is_reading(self) -> bool:
        return self._reading.is_set() and not self._closing

    def pause_reading(self) -> None:
        """Take no more chunks (so grant no more credit) until :meth:`resume_reading`."""
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    async def _receive(self) -> None:
        try:
            while True:
                await self._reading.wait()
                try:
                    chunk = await anext(self._receiver)  # taking it grants credit, in batches
                except StopAsyncIteration:
                    break
                if not self._closing:
                    self._protocol.data_received(bytes(chunk))
                # Closed, it takes and drops what comes while what was written goes out: a
                # service blocked writing to nobody would read no more of it.
        except KilnError as e:
            if not self._closing:  # closing, the sending task ends the connection
                self._lose(e)
            return
        self._received_eof = True
        if not self._closing and not self._protocol.eof_received():
            self.close()

    # --- writing -------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._closing or not data:
            return  # as a socket's transport: what is written after close goes nowhere
        self._buffer += data
        self._poked.set()
        if not self._writing_paused and len(self._buffer) > self._high:
            self._writing_paused = True
            self._protocol.pause_writing()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Half-close: once what was written is sent, the service reads EOF."""
        if self._closing or self._eof:
            return
        self._eof = True
        self._poked.set()

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = self._chunk if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low

    async def _send(self) -> None:
        failure: KilnError | None = None
        try:
            await self._send_all()
        except KilnError as e:
            failure = e
        if self._aborting or (failure is not None and not self._lost):
            with contextlib.suppress(KilnError):
                await self._sender.abort("the requestor reset the connection")
        if not self._reply.done() and (self._aborting or failure is not None or not self._received_eof):
            # The service has more to say that nobody will read: stop it, rather than let it wait for credit.
            with contextlib.suppress(KilnError):
                await self._conn.cancel(self._request)
        self._lose(None if self._closing else failure)

    async def _send_all(self) -> None:
        """Send what is written, within the credit granted; END once it is sent and write_eof
        or close was called; then wait for close (or a failure)."""
        while not self._aborting and not self._lost:
            if not self._buffer:
                if self._eof or self._closing:
                    break
                self._poked.clear()
                await self._poked.wait()
                continue
            await self._sender.ready()
            if self._stopped():  # reset or lost meanwhile
                return
            size = min(len(self._buffer), self._chunk)
            chunk = bytes(self._buffer[:size])
            del self._buffer[:size]
            await self._sender.send(chunk)
            if self._writing_paused and len(self._buffer) <= self._low:
                self._writing_paused = False
                self._protocol.resume_writing()
        if self._aborting or self._lost:
            return
        await self._sender.end()
        while not (self._closing or self._lost):
            self._poked.clear()
            await self._poked.wait()

    # --- the end ---------------------------------------------------------------------------------

    def _stopped(self) -> bool:
        return self._aborting or self._lost

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Send what is written, then END; stop the connection (cancel) unless the service closed
        its side. What comes meanwhile is dropped. The protocol's ``connection_lost(None)`` follows
        (what ``writer.wait_closed()`` waits for)."""
        if self._closing:
            return
        self._closing = True
        self._reading.set()  # a paused receiving task drops what comes from now on
        self._poked.set()

    def abort(self) -> None:
        """Reset the connection (ABORT, then cancel): what was written and not sent is dropped."""
        self._aborting = True
        self._buffer.clear()
        self._sender.fail(ConnectionClosed("the connection was reset by this side"))
        self.close()
        self._poked.set()

    def _replied(self, reply: asyncio.Future[Message]) -> None:
        if not reply.cancelled() and (error := reply.exception()) is not None:
            assert isinstance(error, KilnError)
            self._lose(error)

    def _lose(self, error: KilnError | None) -> None:
        """The end: no more bytes either way; the protocol hears of it once."""
        if self._lost:
            return
        if error is not None and self._closing:
            error = None  # what failed after we closed concerns no reader
        self._lost = True
        self._closing = True
        self._buffer.clear()
        self._reading.set()
        self._poked.set()
        self._receiver.fail(error or ConnectionClosed("the connection was closed by this side"))
        self._protocol.connection_lost(error)

    def __repr__(self) -> str:
        state = "closed" if self._lost else "closing" if self._closing else "open"
        return f"<PortTransport {self._name} {state}>"


def _reset(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until EOF, then half-close ``writer``."""
    while data := await reader.read(PIPE_BYTES):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof() and not writer.is_closing():
        writer.write_eof()


class Forward:
    """A local listener whose every accepted connection is carried over a connection of its own
    to a port of a container (each with its own credit); get one from :func:`forward` or
    ``act.forward(port)``.

    A connection the far side refuses closes the local one (and is logged). ``close`` stops
    listening and resets the connections it carries; ``async with`` closes it on the way out.
    """

    def __init__(self, opener: Opener, target: str) -> None:
        self._opener = opener
        self.target = target
        """What it carries to, for messages (``<activity>:<port>``)."""
        self._server: asyncio.Server | None = None
        self._carrying: dict[asyncio.Task[None], list[asyncio.StreamWriter]] = {}  # each with its writers
        self._closed = False
        self.host = ""
        self.port = 0
        self.accepted = 0
        """Local connections accepted so far."""

    async def _listen(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._carry, host, port, limit=PIPE_BYTES)
        address = self._server.sockets[0].getsockname()
        self.host, self.port = address[0], address[1]

    @property
    def active(self) -> int:
        """Connections carried now."""
        return len(self._carrying)

    async def _carry(self, local_reader: asyncio.StreamReader, local_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        writers = self._carrying[task] = [local_writer]
        self.accepted += 1
        try:
            try:
                remote_reader, remote_writer = await self._opener()
            except KilnError as e:
                log.warning("a connection to %s failed: %s [%s]", self.target, e.message, e.code)
                local_writer.close()
                return
            writers.append(remote_writer)
            if self._closed:
                _reset(writers)
                return
            try:
                async with asyncio.TaskGroup() as both:
                    both.create_task(_pipe(local_reader, remote_writer))
                    both.create_task(_pipe(remote_reader, local_writer))
            except ExceptionGroup as e:  # one side broke off: reset both
                _reset(writers)
                if (unexpected := e.split((KilnError, OSError))[1]) is not None:
                    raise unexpected from None
                log.info("a connection to %s broke off: %s", self.target, e.exceptions[0])
                return
            remote_writer.close()
            local_writer.close()
        finally:
            del self._carrying[task]

    async def close(self) -> None:
        """Stop listening and reset every connection carried now (they end by themselves: a
        reset transport reads EOF)."""
        self._closed = True
        if self._server is not None:
            self._server.close()
        for writers in self._carrying.values():
            _reset(writers)
        await asyncio.gather(*self._carrying, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Forward:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Forward {self.host}:{self.port} -> {self.target}>"


async def forward(opener: Opener, target: str, *, local_port: int = 0, host: str = "127.0.0.1") -> Forward:
    """Listen on ``host:local_port`` (0: a free port; see ``.port``) and carry each connection
    accepted over one that ``opener`` opens. Raises OSError when the address cannot be used."""
    if local_port != 0:
        check_port(local_port, "local_port")
    fwd = Forward(opener, target)
    await fwd._listen(host, local_port)
    return fwd


class Publication:
    """A port the hub serves as HTTP at :attr:`url` (from ``act.publish(port)``), until :meth:`revoke`
    or the activity's end. Whoever knows the URL (its token) reaches the port: keep it as a secret."""

    def __init__(
        self, url: str, token: str, activity: str, port: int, revoke: Callable[[str], Awaitable[None]]
    ) -> None:
        self.url = url
        self.token = token
        self.activity = activity
        self.port = port
        self._revoke = revoke

    async def revoke(self) -> None:
        """Serve it no more: its URL is 404 from now on, and the connections it carries close."""
        await self._revoke(self.token)

    def __repr__(self) -> str:
        return f"<Publication of {self.activity}:{self.port}>"  # never the token

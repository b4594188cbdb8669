"""One peer's connection to the hub: handshake, requests and replies, and file streams.

Both the requestor library and the provider runtime sit on an :class:`Endpoint`. Its
reader (:meth:`Endpoint.run`, owned by the caller's task group) never blocks: replies
resolve futures, credits wake stream senders, data frames land in a stream's buffer
(bounded by the credit its receiver granted), anything else goes to ``on_message``.

Use: ``ws, welcome = await handshake(url, role=..., name=...)``, then
``Endpoint(ws, welcome, on_message)``, start ``endpoint.run()`` in a task group, and
call :meth:`Endpoint.request`, :meth:`Endpoint.open_upload` /
:meth:`Endpoint.open_download` (requestor) or :meth:`Endpoint.incoming` /
:meth:`Endpoint.outgoing` (provider).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Final, Literal

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.exceptions import InvalidHandshake
from websockets.typing import Subprotocol

from kiln.__about__ import __version__
from kiln.protocol import frames
from kiln.protocol.codes import ErrorCode
from kiln.protocol.errors import (
    ConnectionClosed,
    KilnError,
    RemoteProtocolError,
    UnsupportedVersion,
    error_from_code,
)
from kiln.protocol.frames import FrameKind
from kiln.protocol.messages import (
    MAJOR_VERSION,
    MAX_ID,
    PROTOCOL_NAME,
    PROTOCOL_VERSION,
    Credit,
    DownloadInfo,
    Error,
    Hello,
    Message,
    Welcome,
    parse,
    serialize,
)

log = logging.getLogger("kiln.endpoint")

HANDSHAKE_TIMEOUT: Final = 10.0
FINAL_REPLIES: Final = frozenset({"done", "error", "exec_result", "rented", "market_info"})


async def handshake(
    url: str,
    *,
    role: Literal["requestor", "provider"],
    name: str,
    token: str | None = None,
    open_timeout: float = HANDSHAKE_TIMEOUT,
) -> tuple[ClientConnection, Welcome]:
    """Dial the hub at ``url`` and exchange hello/welcome.

    Raises :class:`ConnectionClosed` when the hub cannot be reached,
    :class:`UnsupportedVersion` when it speaks another protocol, or the error the hub
    answered with (e.g. :class:`~kiln.errors.Unauthorized`).
    """
    try:
        ws = await connect(
            url,
            subprotocols=[Subprotocol(PROTOCOL_NAME)],
            max_size=None,
            open_timeout=open_timeout,
            ping_interval=5,
            ping_timeout=10,
            compression=None,
        )
    except (OSError, InvalidHandshake, TimeoutError) as e:
        raise ConnectionClosed(f"cannot reach the hub at {url}: {e}") from e
    try:
        if ws.subprotocol not in (None, PROTOCOL_NAME):
            raise UnsupportedVersion(f"the hub at {url} speaks {ws.subprotocol}, not {PROTOCOL_NAME}")
        software = f"kiln-python/{__version__}"
        hello = Hello(type="hello", version=PROTOCOL_VERSION, role=role, name=name, token=token, software=software)
        await ws.send(serialize(hello).decode())
        async with asyncio.timeout(open_timeout):
            raw = await ws.recv()
        reply = parse(raw.encode() if isinstance(raw, str) else raw)
        if isinstance(reply, Error):
            raise error_from_code(reply.code, f"the hub refused us: {reply.message}")
        if not isinstance(reply, Welcome):
            raise RemoteProtocolError(f"expected welcome from the hub, got {reply.type!r}")
        if int(reply.version.split(".")[0]) != MAJOR_VERSION:
            raise UnsupportedVersion(f"the hub speaks protocol version {reply.version}; we speak {PROTOCOL_VERSION}")
    except RemoteProtocolError as e:
        await ws.close()
        raise RemoteProtocolError(f"the hub sent an invalid handshake reply: {e.message}", e.code) from e
    except WsConnectionClosed as e:
        raise ConnectionClosed(f"the hub closed the connection during the handshake: {e}") from e
    except TimeoutError as e:
        await ws.close()
        raise ConnectionClosed(f"the hub at {url} did not answer hello within {open_timeout:g} s") from e
    except BaseException:
        await ws.close()
        raise
    return ws, reply


class Incoming:
    """The receiving end of a stream. Iterate it for chunks; credit is granted as you go."""

    def __init__(self, endpoint: Endpoint, stream: int, window: int) -> None:
        self._endpoint = endpoint
        self.stream = stream
        self.window = window
        self.info: asyncio.Future[DownloadInfo] = asyncio.get_running_loop().create_future()
        self._chunks: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._ended = False
        self._error: KilnError | None = None
        self._consumed = 0

    def feed(self, kind: FrameKind, payload: memoryview) -> None:
        if kind is FrameKind.DATA:
            if len(self._chunks) >= self.window:
                self.fail(
                    RemoteProtocolError(f"stream {self.stream}: peer sent beyond its credit", ErrorCode.FLOW_CONTROL)
                )
                return
            self._chunks.append(bytes(payload))
        elif kind is FrameKind.END:
            self._ended = True
        else:
            reason = bytes(payload).decode(errors="replace")
            self.fail(error_from_code(ErrorCode.TRANSFER_FAILED, f"the sender aborted the stream: {reason}"))
        self._wake.set()

    def fail(self, error: KilnError) -> None:
        if self._error is None and not self._ended:
            self._error = error
        if not self.info.done():
            self.info.set_exception(error)
            self.info.exception()  # retrieved here so an unawaited info never warns
        self._wake.set()

    def __aiter__(self) -> Incoming:
        return self

    async def __anext__(self) -> bytes:
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._ended:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        chunk = self._chunks.popleft()
        self._consumed += 1
        # Grant credit back in batches of half a window: few messages, never a stall.
        if self._consumed * 2 >= self.window and not self._ended:
            grant, self._consumed = self._consumed, 0
            await self._endpoint.send(Credit(type="credit", stream=self.stream, chunks=grant))
        return chunk


class Outgoing:
    """The sending end of a stream: :meth:`write` waits for credit, :meth:`end` finishes it."""

    def __init__(self, endpoint: Endpoint, stream: int, chunk_bytes: int) -> None:
        self._endpoint = endpoint
        self.stream = stream
        self.chunk_bytes = chunk_bytes
        self._credit = 0
        self._wake = asyncio.Event()
        self._error: KilnError | None = None

    def grant(self, chunks: int) -> None:
        self._credit += chunks
        self._wake.set()

    def fail(self, error: KilnError) -> None:
        if self._error is None:
            self._error = error
        self._wake.set()

    async def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        for start in range(0, len(view), self.chunk_bytes):
            while self._credit <= 0:
                if self._error is not None:
                    raise self._error
                self._wake.clear()
                await self._wake.wait()
            if self._error is not None:
                raise self._error
            self._credit -= 1
            await self._endpoint.send_binary(
                frames.encode(FrameKind.DATA, self.stream, view[start : start + self.chunk_bytes])
            )

    async def end(self) -> None:
        if self._error is not None:
            raise self._error
        await self._endpoint.send_binary(frames.encode(FrameKind.END, self.stream))

    async def abort(self, reason: str) -> None:
        await self._endpoint.send_binary(frames.encode(FrameKind.ABORT, self.stream, reason.encode()[:1024]))


class Endpoint:
    """A live connection to the hub after the handshake."""

    def __init__(
        self,
        ws: ClientConnection,
        welcome: Welcome,
        on_message: Callable[[Message], None] | None = None,
    ) -> None:
        self.ws = ws
        self.welcome = welcome
        self.limits = welcome.limits
        self._on_message = on_message
        self._next_id = 0
        self._replies: dict[int, asyncio.Future[Message]] = {}
        self._incoming: dict[int, Incoming] = {}
        self._outgoing: dict[int, Outgoing] = {}
        self.closed: KilnError | None = None

    def new_id(self) -> int:
        self._next_id = self._next_id + 1 if self._next_id < MAX_ID else 1
        return self._next_id

    async def send(self, message: Message) -> None:
        if self.closed is not None:
            raise self.closed
        try:
            await self.ws.send(serialize(message).decode())
        except WsConnectionClosed as e:
            raise ConnectionClosed(f"the connection to the hub is closed: {e}") from e

    async def send_binary(self, data: bytes) -> None:
        if self.closed is not None:
            raise self.closed
        try:
            await self.ws.send(data)
        except WsConnectionClosed as e:
            raise ConnectionClosed(f"the connection to the hub is closed: {e}") from e

    def expect(self, request_id: int) -> asyncio.Future[Message]:
        """Register interest in the final reply to ``request_id`` (call before sending it)."""
        if self.closed is not None:
            raise self.closed
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = future
        return future

    async def request(self, message: Message) -> Message:
        """Send a request and wait for its final reply; an ``error`` reply is raised as a KilnError."""
        request_id = getattr(message, "id")  # noqa: B009 - every request has an id
        future = self.expect(request_id)
        try:
            await self.send(message)
            return await future
        finally:
            self._replies.pop(request_id, None)

    def forget(self, request_id: int) -> None:
        self._replies.pop(request_id, None)
        self._incoming.pop(request_id, None)
        self._outgoing.pop(request_id, None)

    def incoming(self, stream: int, window: int) -> Incoming:
        receiver = Incoming(self, stream, window)
        self._incoming[stream] = receiver
        return receiver

    def outgoing(self, stream: int) -> Outgoing:
        sender = Outgoing(self, stream, self.limits.chunk_bytes)
        self._outgoing[stream] = sender
        return sender

    async def run(self) -> None:
        """Read frames until the connection ends; then fail everything still waiting."""
        reason: KilnError = ConnectionClosed("the connection to the hub closed")
        try:
            async for data in self.ws:
                if isinstance(data, str):
                    self._take_text(data)
                else:
                    self._take_binary(data)
        except WsConnectionClosed as e:
            reason = ConnectionClosed(f"the connection to the hub was lost: {e}")
        finally:
            self.closed = reason
            for future in self._replies.values():
                if not future.done():
                    future.set_exception(reason)
            for receiver in self._incoming.values():
                receiver.fail(reason)
            for sender in self._outgoing.values():
                sender.fail(reason)
            if self._on_message is not None:
                self._on_message(Error(type="error", code=ErrorCode.CONNECTION_CLOSED, message=reason.message))

    def _take_text(self, data: str) -> None:
        try:
            message = parse(data.encode())
        except RemoteProtocolError as e:
            log.warning("ignoring an invalid message from the hub: %s", e.message)
            # A reply we cannot read must still end the request it answers, not leave it hanging.
            future = self._replies.get(_reply_to(data) or 0)
            if future is not None and not future.done():
                future.set_exception(RemoteProtocolError(f"the hub sent an invalid reply: {e.message}", e.code))
            return
        re = getattr(message, "re", None)
        if isinstance(message, Credit):
            sender = self._outgoing.get(message.stream)
            if sender is not None:
                sender.grant(message.chunks)
            return
        if isinstance(message, DownloadInfo):
            receiver = self._incoming.get(message.re)
            if receiver is not None and not receiver.info.done():
                receiver.info.set_result(message)
            return
        if re is not None and message.type in FINAL_REPLIES:
            error = error_from_code(message.code, message.message) if isinstance(message, Error) else None
            if error is not None:
                # The stream of a failed request fails with it.
                if (receiver := self._incoming.pop(re, None)) is not None:
                    receiver.fail(error)
                if (sender := self._outgoing.pop(re, None)) is not None:
                    sender.fail(error)
            future = self._replies.get(re)
            if future is not None and not future.done():
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(message)
            return
        if isinstance(message, Error) and re is None:
            log.warning("the hub reports %s: %s", message.code, message.message)
        if self._on_message is not None:
            self._on_message(message)

    def _take_binary(self, data: bytes) -> None:
        try:
            frame = frames.decode(data, self.limits.chunk_bytes)
        except RemoteProtocolError as e:
            log.warning("ignoring an invalid binary frame: %s", e.message)
            return
        receiver = self._incoming.get(frame.stream)
        if receiver is None:
            return  # a stream we already gave up on
        receiver.feed(frame.kind, frame.payload)
        if frame.kind is not FrameKind.DATA:
            self._incoming.pop(frame.stream, None)


def _reply_to(data: str) -> int | None:
    """The ``re`` of a text frame that failed validation, if it has a usable one."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    re = raw.get("re") if isinstance(raw, dict) else None
    return re if type(re) is int else None

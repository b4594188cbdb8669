"""The publish listener (1.7): published ports served as HTTP, for a browser.

The hub listens on an address of its own for them (``kiln hub --publish-listen``; by default its
port + 1), over TLS when the hub has a certificate. Each connection sends an HTTP/1.1 request
whose path is ``/s/<token>/...``: its head (at most :data:`HEAD_BYTES`, else ``431``; within
:data:`HEAD_TIMEOUT` seconds, else ``408``) is read and checked, an unknown or withdrawn token is
``404``, and the request goes to the published port with the ``/s/<token>`` prefix removed (the
service sees ``/`` for the URL itself), ``X-Forwarded-Prefix: /s/<token>`` added, and
``Connection: close`` in place of the client's (one request per connection: a later one would
reach the service with its prefix). A WebSocket upgrade (``Connection: upgrade``) keeps its
headers, and the connection then carries raw bytes both ways.

The bytes go over a ``connect`` the hub opens itself (:mod:`kiln.hub.ports`): toward the
service within the credit it grants, out of it within :data:`WINDOW` chunks per connection,
granted again as they are written to the client. So a connection holds at most ``WINDOW``
chunks here, and the listener at most :data:`MAX_CONNECTIONS` connections (those whose head it
still reads too). A service that cannot
be reached before it answered anything is ``502``. ``unpublish``, the end of the activity or of
its session close every connection of the token at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from kiln.hub.actions import Action, PortAction, PortClosed, PortCredit, PortFrame, Withdrawn
from kiln.hub.core import HubCore
from kiln.protocol.frames import FrameKind

log = logging.getLogger("kiln.hub.published")

HEAD_BYTES: Final = 16 * 1024
"""The longest request head taken (``431`` past it)."""
HEAD_TIMEOUT: Final = 10.0
"""Seconds a client has to send its request head (``408`` after)."""
MAX_CONNECTIONS: Final = 1024
"""Connections the listener holds at once, those whose head it reads among them (``503`` past it)."""
WINDOW: Final = 8
"""Chunks out of a service one connection may have in flight (the most the listener holds for it)."""
LINGER: Final = 1.0
"""Seconds a refused client's further bytes are read (and dropped) before the connection closes."""
LINGER_READS: Final = 16
"""Reads of them at most (of :data:`HEAD_BYTES` each)."""
MAX_HEADERS: Final = 128
"""Header lines in a request head."""

_METHOD: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
_TARGET: Final = re.compile(r"[\x21-\x7e]+")
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_DROPPED: Final = frozenset({"connection", "keep-alive", "proxy-connection", "x-forwarded-prefix"})
_REASONS: Final = {
    400: "Bad Request",
    404: "Not Found",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class Refused(Exception):
    """A request the listener answers itself, with ``status`` and ``text``."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


@dataclass(frozen=True, slots=True)
class Request:
    """A request head, as it goes on to the service."""

    token: str
    method: str
    path: str
    """The target without the ``/s/<token>`` prefix (``/`` at least)."""
    version: str
    headers: list[tuple[str, str]]
    upgrade: bool
    """A WebSocket (or other protocol) upgrade: its ``Connection`` header passes."""

    def head(self) -> bytes:
        """The head the service is sent."""
        lines = [f"{self.method} {self.path} {self.version}"]
        lines += [
            f"{name}: {value}"
            for name, value in self.headers
            if name.lower() not in _DROPPED or (self.upgrade and name.lower() == "connection")
        ]
        lines.append(f"X-Forwarded-Prefix: /s/{self.token}")
        if not self.upgrade:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse(head: bytes) -> Request:
    """Read a request head (up to and with its blank line); raises :class:`Refused` for one that is
    not HTTP/1.x (400) or names no published path (404)."""
    lines = head.decode("latin-1").split("\r\n")
    if lines[-2:] != ["", ""]:
        raise Refused(400, "a request head ends with a blank line")
    request_line, fields = lines[0], lines[1:-2]
    parts = request_line.split(" ")
    if len(parts) != 3 or not _METHOD.fullmatch(parts[0]) or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise Refused(400, "not an HTTP/1.x request line")
    method, target, version = parts
    if not _TARGET.fullmatch(target):
        raise Refused(400, "a request target is printable ASCII without spaces")
    if not target.startswith("/s/"):
        raise Refused(404, "published ports are served under /s/<token>/")
    rest = target[3:]
    cut = min((at for at in (rest.find("/"), rest.find("?")) if at >= 0), default=len(rest))
    token, path = rest[:cut], rest[cut:]
    if not _TOKEN.fullmatch(token):
        raise Refused(404, "no such published port")
    path = path if path.startswith("/") else "/" + path
    if len(fields) > MAX_HEADERS:
        raise Refused(400, f"more than {MAX_HEADERS} header lines")
    headers: list[tuple[str, str]] = []
    for line in fields:
        name, colon, value = line.partition(":")
        if not colon or not _HEADER_NAME.fullmatch(name) or any(c in value for c in "\r\n\x00"):
            raise Refused(400, "a header line is not NAME: VALUE")
        headers.append((name, value.strip(" \t")))
    connection = {
        word.strip().lower() for name, value in headers if name.lower() == "connection" for word in value.split(",")
    }
    upgrade = "upgrade" in connection and any(name.lower() == "upgrade" for name, _ in headers)
    return Request(token, method, path, version, headers, upgrade)


def answer(status: int, text: str) -> bytes:
    """A short plain-text response that closes the connection."""
    body = (text + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, text: str) -> None:
    """Answer ``status`` and close this side; what the client still sends is read (a while, and a
    little of it) so that closing does not reset the connection before the client read the answer
    (over TLS, which cannot close one side alone, the connection closes at once)."""
    writer.write(answer(status, text))
    await writer.drain()
    if not writer.can_write_eof():  # TLS: a client waits for the close itself
        return
    writer.write_eof()
    with contextlib.suppress(TimeoutError, ConnectionError, OSError):
        async with asyncio.timeout(LINGER):
            for _ in range(LINGER_READS):
                if not await reader.read(HEAD_BYTES):
                    break


@dataclass(eq=False, slots=True)
class _Carried:
    """One connection the listener carries."""

    token: str
    credit: int = 0  # DATA frames it may still send toward the service
    credited: asyncio.Event = field(default_factory=asyncio.Event)
    frames: asyncio.Queue[PortFrame | PortClosed | Withdrawn] = field(default_factory=asyncio.Queue)
    answered: bool = False  # the service sent the client something


class PublishedFront:
    """Serves the connections of the publish listener: :meth:`serve` each, :meth:`handle` the core's port actions."""

    def __init__(self, core: HubCore, apply: Callable[[list[Action]], None]) -> None:
        self.core = core
        self._apply = apply
        self._ids = itertools.count(1)
        self._carried: dict[int, _Carried] = {}
        self._reading = 0  # connections whose request head is being read
        self._by_token: dict[str, set[int]] = {}
        self._chunk = core.limits.chunk_bytes

    def handle(self, action: PortAction) -> None:
        """Take one action of the core's (from the event loop, in order)."""
        if isinstance(action, Withdrawn):
            for conn in sorted(self._by_token.get(action.token, ())):
                self._carried[conn].frames.put_nowait(action)
            return
        carried = self._carried.get(action.conn)
        if carried is None:
            return  # a connection already gone
        if isinstance(action, PortCredit):
            carried.credit += action.chunks
            carried.credited.set()
        else:
            carried.frames.put_nowait(action)  # bounded: at most WINDOW DATA frames, then the end

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Carry one client connection (see the module's docstring)."""
        try:
            request = await self._request(reader, writer)
            if request is not None:
                await self._carry(request, reader, writer)
        except (ConnectionError, OSError):
            pass  # the client went away
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
        """The request head, or None once the client was answered (or left)."""
        try:
            if len(self._carried) + self._reading >= MAX_CONNECTIONS:
                raise Refused(503, f"the hub holds {MAX_CONNECTIONS} connections of published ports already")
            self._reading += 1
            try:
                async with asyncio.timeout(HEAD_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
            finally:
                self._reading -= 1
            request = parse(head)
            if self.core.published.get(request.token) is None:
                raise Refused(404, "no such published port")
        except Refused as e:
            await _refuse(reader, writer, e.status, e.text)
            return None
        except TimeoutError:
            await _refuse(reader, writer, 408, f"no request head within {HEAD_TIMEOUT:g} s")
            return None
        except asyncio.LimitOverrunError:
            await _refuse(reader, writer, 431, f"a request head is at most {HEAD_BYTES} bytes")
            return None
        except asyncio.IncompleteReadError:
            return None
        return request

    async def _carry(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = next(self._ids)
        carried = self._carried[conn] = _Carried(request.token)
        self._by_token.setdefault(request.token, set()).add(conn)
        graceful = False
        upstream: asyncio.Task[None] | None = None
        try:
            self._apply(self.core.port_open(request.token, conn, WINDOW))
            upstream = asyncio.create_task(self._upstream(conn, carried, request.head(), reader))
            graceful = await self._downstream(conn, carried, writer)
        finally:
            if upstream is not None:
                upstream.cancel()
            del self._carried[conn]
            tokens = self._by_token[request.token]
            tokens.discard(conn)
            if not tokens:
                del self._by_token[request.token]
            # A service that closed its side: the client's side closes too (its answer is whole).
            # Anything else resets the connection to the service.
            if graceful:
                self._apply(self.core.port_send(conn, FrameKind.END))
            else:
                self._apply(self.core.port_close(conn))

    async def _upstream(self, conn: int, carried: _Carried, head: bytes, reader: asyncio.StreamReader) -> None:
        """The client's bytes toward the service, within its credit: the head first; END at the client's
        EOF. A client that reset ends the connection."""
        data = head
        while data:
            for start in range(0, len(data), self._chunk):
                while carried.credit == 0:
                    carried.credited.clear()
                    await carried.credited.wait()
                carried.credit -= 1
                self._apply(self.core.port_send(conn, FrameKind.DATA, data[start : start + self._chunk]))
            try:
                data = await reader.read(self._chunk)
            except (ConnectionError, OSError):
                carried.frames.put_nowait(PortClosed(conn))
                return
        self._apply(self.core.port_send(conn, FrameKind.END))

    async def _downstream(self, conn: int, carried: _Carried, writer: asyncio.StreamWriter) -> bool:
        """The service's bytes toward the client, until it ends: whether it closed its side (else it
        failed, reset, or the token was withdrawn)."""
        consumed = 0
        while True:
            frame = await carried.frames.get()
            if isinstance(frame, PortFrame) and frame.kind is FrameKind.DATA:
                writer.write(frame.payload)
                carried.answered = True
                await writer.drain()
                consumed += 1
                if consumed * 2 >= WINDOW:  # credit back in batches of half the window
                    self._apply(self.core.port_grant(conn, consumed))
                    consumed = 0
                continue
            if isinstance(frame, PortFrame):
                return frame.kind is FrameKind.END
            if isinstance(frame, PortClosed) and frame.error is not None and not carried.answered:
                writer.write(answer(502, f"the published port cannot be reached: {frame.error}"))
                await writer.drain()
            return False

    def close(self) -> None:
        """The hub stops: every connection carried ends (as if its token were withdrawn)."""
        for carried in self._carried.values():
            carried.frames.put_nowait(Withdrawn(carried.token))

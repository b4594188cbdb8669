"""A peer's connection to the hub: a websockets client pumping a protocol :class:`Session`.

The session (:mod:`kiln.protocol.session`) decides everything: ids, which reply ends which
request, credit, what a lost connection means. This module only moves frames. Its reader
(:meth:`Connection.run`, owned by the caller's task group) feeds every frame into the
session and turns the events into wake-ups: a request's future, a stream's buffer or
credit. Events it has no use for (a provider's requests, an activity lost, the end) go to
``on_event``. Every call writes what the session wants sent, in order.

Both the requestor SDK and the provider runtime sit on a :class:`Connection`::

    conn = await Connection.open(url, role="requestor", name="me", on_event=...)
    # run conn.run() in a task you own, then:
    reply = await conn.request(MarketQuery(type="market", id=conn.new_id()))

A hub's URL is checked before anything is dialled (:func:`check_hub_url`): ``ws://`` or
``wss://``, a host, a port if any; anything else is the caller's :class:`UsageError`.
A client may be given several hubs of one market (:func:`hub_urls`); a :class:`HubRing`
says which to dial, and in which order, when the one it is on dies.
A ``wss://`` hub is verified: against the system's trust store, or against the CA of
``ssl=`` (a context, or the path of a PEM file: :func:`tls_options`). A certificate that
does not verify is a :class:`ConnectionLost` that says so (:func:`dial_error`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl as ssl_module
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final, cast
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.exceptions import InvalidHandshake, InvalidMessage, InvalidURI
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from kiln.__about__ import __version__
from kiln.protocol import limits
from kiln.protocol.errors import ConnectionLost, KilnError, UnsupportedVersion, UsageError
from kiln.protocol.messages import (
    PROTOCOL_NAME,
    Connect,
    Download,
    DownloadInfo,
    Exec,
    Message,
    PushImage,
    Upload,
)
from kiln.protocol.session import (
    CancelRequested,
    Closed,
    Credited,
    DataReceived,
    Event,
    Failed,
    Informed,
    Interim,
    Notification,
    Notified,
    Replied,
    Reply,
    Request,
    Requested,
    Role,
    Session,
    StreamEnded,
    StreamFailed,
    Violated,
    Welcomed,
)
from kiln.wire import TakesMessages, send_frames, send_frames_now

log = logging.getLogger("kiln.connection")

HANDSHAKE_TIMEOUT: Final = 10.0
DEFER_BYTES: Final = 16 * 1024
"""Frames queued up to this size go out with the next ones of the same turn of the event loop."""
NOTIFY_BACKLOG: Final = 256
"""Frames waiting for the socket past which a notification is dropped rather than queued."""


class HubLink(TakesMessages, ClientConnection):
    """A peer's WebSocket connection to the hub, whose messages :meth:`Connection.run` takes as they are read."""


WEBSOCKET_OPTIONS: Final[dict[str, Any]] = {
    "create_connection": HubLink,
    "subprotocols": [Subprotocol(PROTOCOL_NAME)],
    "max_size": None,  # the session judges frames; the hub never sends more than max_frame_bytes
    "ping_interval": 3,  # as the hub: a hub silent for 7 s after a ping is gone
    "ping_timeout": 7,
    "close_timeout": 1,
    "compression": None,
}
"""How every peer dials the hub (also for websockets' reconnecting iterator)."""
EventHandler = Callable[[Event], None]
InterimHandler = Callable[[Interim], None]
Trust = ssl_module.SSLContext | str | os.PathLike[str]
"""What verifies a ``wss://`` hub: a client context, or the path of the PEM file of the CA that signed it."""


HUB_URL_FORM: Final = "a hub URL looks like ws://host:7465 or wss://host:7465"
_SCHEME: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_HOST_PORT: Final = re.compile(r"(\[[^\]]*\]|[^:]*)(?::(.*))?", re.DOTALL)


def check_hub_url(url: object) -> str:
    """``url`` when it is a hub's address: ``ws://`` or ``wss://``, a host, and a port from 1 to
    65535 if it names one (``ws://hub.example:7465``, ``wss://10.0.0.2:7465/``).

    Raises :class:`~kiln.protocol.errors.UsageError` saying what is wrong with it (no scheme,
    ``http://``, no host, a bad port) and what a hub URL looks like. The JavaScript client's
    ``checkHubUrl`` judges alike.
    """

    def bad(why: str) -> UsageError:
        return UsageError(f"{url!r} is not a hub URL ({why}): {HUB_URL_FORM}")

    if not isinstance(url, str) or not url.strip():
        raise UsageError(f"no hub URL given: {HUB_URL_FORM}")
    scheme = _SCHEME.match(url)
    if scheme is None:
        raise bad("no ws:// or wss:// in front")
    name = scheme.group(1).lower()
    if name in ("http", "https"):
        raise bad(f"a hub speaks WebSocket, not {name.upper()}")
    if name not in ("ws", "wss"):
        raise bad(f"its scheme is {name}://, not ws:// or wss://")
    authority = re.split(r"[/?#]", url[scheme.end() :], maxsplit=1)[0]
    host_port = _HOST_PORT.fullmatch(authority.rpartition("@")[2])
    assert host_port is not None  # the pattern takes any text
    host, port = host_port.groups()
    if re.search(r"\s", url):
        raise bad("it holds white space")
    if host in ("", "[]"):
        raise bad("it names no host")
    if host.startswith("[") != host.endswith("]"):
        raise bad("an IPv6 address goes between [ and ]")
    if port is not None and not (port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
        raise bad("its port must be a number from 1 to 65535")
    try:
        parse_uri(url)
    except InvalidURI as e:
        raise bad(e.msg) from e
    return url


MAX_HUB_URLS: Final = 16
"""The most hub URLs one client takes (the hubs of one market it may move between)."""


def hub_urls(urls: str | Iterable[str]) -> tuple[str, ...]:
    """The hub URLs ``urls`` names, in order, each once: one URL, several separated by commas
    (``"ws://a:7465,ws://b:7465"``, as ``KILN_HUB`` holds them), or a sequence of those.

    Raises :class:`~kiln.protocol.errors.UsageError` naming the first that is not a hub's
    (:func:`check_hub_url`), for none at all, or for more than :data:`MAX_HUB_URLS`.
    """
    given = [urls] if isinstance(urls, str) else list(urls)
    found: list[str] = []
    for text in given:
        if not isinstance(text, str) or not text.strip():
            check_hub_url(text)  # raises, saying that no URL was given
        for part in text.split(","):
            if not part.strip():
                raise UsageError(f"{text!r} holds an empty hub URL between its commas: {HUB_URL_FORM}")
            url = check_hub_url(part.strip())
            if url not in found:
                found.append(url)
    if not found:
        raise UsageError(f"no hub URL given: {HUB_URL_FORM}")
    if len(found) > MAX_HUB_URLS:
        raise UsageError(f"{len(found)} hub URLs given; a client takes at most {MAX_HUB_URLS}")
    return tuple(found)


class HubRing:
    """The hubs a client may dial (:func:`hub_urls`) and the one it is on.

    A client dials them in :meth:`order`: the one it is on (at first, the first given), then
    each other in turn, round robin; the one that answers becomes the one it is on
    (:meth:`moved`). Its backoff counts full rounds, not single dials.
    """

    def __init__(self, urls: str | Iterable[str]) -> None:
        self.urls = hub_urls(urls)
        self._at = 0

    @property
    def current(self) -> str:
        """The hub the client is on (or was on last)."""
        return self.urls[self._at]

    def order(self) -> list[str]:
        """One round of dials: the current hub, then the others in turn."""
        return [*self.urls[self._at :], *self.urls[: self._at]]

    def moved(self, url: str) -> None:
        """The client is on ``url`` now (one of :attr:`urls`)."""
        self._at = self.urls.index(url)

    def skip(self) -> None:
        """The hub it is on refused it for now: the next round starts at the next one."""
        self._at = (self._at + 1) % len(self.urls)


def client_context(ca: str | os.PathLike[str] | None = None) -> ssl_module.SSLContext:
    """A TLS 1.2+ client context that verifies the hub's certificate and name against ``ca``
    (a PEM file of one or more CA certificates), or the system's trust store without it.

    Raises :class:`~kiln.protocol.errors.UsageError` when ``ca`` cannot be read or holds no certificate.
    """
    try:
        context = ssl_module.create_default_context(cafile=ca)
    except ssl_module.SSLError as e:
        raise UsageError(f"{os.fspath(ca or '')} holds no PEM certificate of a CA to trust ({e.reason})") from e
    except OSError as e:
        raise UsageError(f"cannot read the CA certificate {os.fspath(ca or '')}: {e.strerror or e}") from e
    context.minimum_version = ssl_module.TLSVersion.TLSv1_2
    return context


def tls_options(url: str, trust: Trust | None = None) -> dict[str, Any]:
    """The ``ssl`` argument of websockets' ``connect`` for ``url``: none for ``ws://``; for
    ``wss://``, ``trust`` (a context, or a CA file for :func:`client_context`) or the system's CAs.

    Raises :class:`~kiln.protocol.errors.UsageError` for ``trust`` with a ``ws://`` url.
    """
    if urlsplit(url).scheme != "wss":
        if trust is not None:
            raise UsageError(f"a CA or TLS context is for a wss:// hub, and {url} is not one")
        return {}
    if isinstance(trust, ssl_module.SSLContext):
        return {"ssl": trust}
    return {"ssl": client_context(trust)}


NAME_MISMATCH: Final = frozenset({62, 64})
"""OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH: trusted, for another name."""


def dial_error(url: str, error: Exception) -> ConnectionLost:
    """Why dialling the hub at ``url`` failed, said plainly: a certificate this side does
    not trust above all, and a hint when ``ws://`` and ``wss://`` seem mixed up."""
    if isinstance(error, ssl_module.SSLCertVerificationError) and error.verify_code in NAME_MISMATCH:
        return ConnectionLost(
            f"the hub at {url} presented a certificate for another address ({error.verify_message}): "
            "dial it by a name or IP address its certificate lists"
        )
    if isinstance(error, ssl_module.SSLCertVerificationError):
        return ConnectionLost(
            f"the hub at {url} presented a certificate that is not trusted ({error.verify_message}): "
            "trust the CA that signed it (ssl= in Python, --ca FILE on the command line)"
        )
    text = str(error) or type(error).__name__
    tls = urlsplit(url).scheme == "wss"
    if tls and isinstance(error, ssl_module.SSLError | ConnectionResetError):
        text += " (does the hub serve TLS? a hub without --tls-cert has a ws:// address)"
    elif not tls and isinstance(error, InvalidMessage):
        text += " (a hub that serves TLS has a wss:// address)"
    return ConnectionLost(f"cannot reach the hub at {url}: {text}")


class Incoming:
    """The receiving end of a stream. Iterate it for chunks; credit goes back as you consume them.

    What it buffers is bounded by the credit granted: the session fails a stream whose
    sender overruns it.
    """

    def __init__(self, conn: Connection, stream: int, window: int, *, grant_first: bool) -> None:
        self._conn = conn
        self.stream = stream
        self.window = window
        self._grant_first = grant_first  # a provider's upload: the receiver opens the window
        self.info: asyncio.Future[DownloadInfo] = asyncio.get_running_loop().create_future()
        self._chunks: deque[memoryview] = deque()
        self._wake = asyncio.Event()
        self._ended = False
        self._error: KilnError | None = None
        self._consumed = 0

    @property
    def ready(self) -> int:
        """Chunks that came and are not taken yet (the next ones return without waiting)."""
        return len(self._chunks)

    def _feed(self, data: memoryview) -> None:
        self._chunks.append(data)
        self._wake.set()

    def _end(self) -> None:
        self._ended = True
        self._wake.set()

    def fail(self, error: KilnError) -> None:
        """End the stream with ``error`` (what a reader waiting on it then raises)."""
        if self._error is None and not self._ended:
            self._error = error
        if not self.info.done():
            self.info.set_exception(error)
            self.info.exception()  # retrieved here so an unawaited info never warns
        self._wake.set()

    def __aiter__(self) -> Incoming:
        return self

    async def __anext__(self) -> memoryview:
        if self._grant_first:
            self._grant_first = False
            await self._conn.grant(self.stream, self.window)
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._ended:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        chunk = self._chunks.popleft()
        self._consumed += 1
        # Credit goes back in batches of half a window: few messages, never a stall.
        if self._consumed * 2 >= self.window and not self._ended:
            grant, self._consumed = self._consumed, 0
            await self._conn.grant(self.stream, grant)
        return chunk


class Outgoing:
    """The sending end of a stream: :meth:`write` waits for credit, :meth:`end` finishes it."""

    def __init__(self, conn: Connection, stream: int) -> None:
        self._conn = conn
        self.stream = stream
        self._wake = asyncio.Event()
        self._error: KilnError | None = None

    def _credited(self) -> None:
        self._wake.set()

    def fail(self, error: KilnError) -> None:
        """Stop the stream: a writer waiting for credit raises ``error``."""
        if self._error is None:
            self._error = error
        self._wake.set()

    async def write(self, data: bytes | memoryview) -> None:
        """Send ``data`` in DATA frames of at most ``chunk_bytes``, each within the credit granted."""
        view = memoryview(data)
        size = self._conn.session.limits.chunk_bytes
        for start in range(0, len(view), size):
            await self.send(view[start : start + size])

    async def ready(self) -> None:
        """Wait until the receiver lets us send a DATA frame (its first credit also says it is
        ready: a connect's is the sign that it is open); raise the stream's failure instead."""
        while self._error is None and self._conn.session.credit(self.stream) <= 0:
            self._wake.clear()
            await self._wake.wait()
        if self._error is not None:
            raise self._error

    async def send(self, *parts: bytes | memoryview) -> None:
        """Send one DATA frame made of ``parts`` (at most ``chunk_bytes`` in all), within the credit granted."""
        await self.ready()
        self._conn.session.send_data(self.stream, *parts)
        await self._conn.flush()

    async def end(self) -> None:
        if self._error is not None:
            raise self._error
        self._conn.session.end_stream(self.stream)
        await self._conn.flush()

    async def abort(self, reason: str) -> None:
        """Give up the stream (best effort: the connection may be gone)."""
        self._conn.session.abort_stream(self.stream, reason)
        await self._conn.flush()


class Connection:
    """A live, welcomed connection to the hub. Get one from :meth:`open`."""

    def __init__(self, ws: HubLink, session: Session, on_event: EventHandler | None = None) -> None:
        self.ws = ws
        self._wake: asyncio.Future[None] | None = None  # the reader's, while it waits (see run)
        self._write_due = False  # a write at the end of this turn of the event loop (see flush)
        self.session = session
        self.on_event = on_event
        self._replies: dict[int, asyncio.Future[Message]] = {}
        self._incoming: dict[int, Incoming] = {}
        self._outgoing: dict[int, Outgoing] = {}
        self._interim: dict[int, InterimHandler] = {}
        self._writing = asyncio.Lock()
        self._room = asyncio.Event()  # set, then replaced, when a request of ours ends while others wait
        self._waiting_room = 0

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        role: Role,
        name: str,
        token: str | None = None,
        ssl: Trust | None = None,
        open_timeout: float = HANDSHAKE_TIMEOUT,
        on_event: EventHandler | None = None,
        resume: str | None = None,
        activities: list[str] | None = None,
    ) -> Connection:
        """Dial the hub at ``url`` and exchange hello/welcome (see :meth:`handshake`).

        A ``wss://`` hub's certificate is verified against ``ssl`` (see :func:`tls_options`).
        Raises :class:`ConnectionLost` when the hub cannot be reached or its certificate is
        not trusted, :class:`~kiln.protocol.errors.UsageError` for a URL that is not a hub's
        (:func:`check_hub_url`) or ``ssl`` with a ``ws://`` url.
        """
        check_hub_url(url)
        options = tls_options(url, ssl)
        try:
            ws = await connect(url, open_timeout=open_timeout, **options, **WEBSOCKET_OPTIONS)
        except (OSError, InvalidHandshake, TimeoutError) as e:
            raise dial_error(url, e) from e
        return await cls.handshake(
            ws,
            role=role,
            name=name,
            token=token,
            open_timeout=open_timeout,
            on_event=on_event,
            resume=resume,
            activities=activities,
        )

    @classmethod
    async def handshake(
        cls,
        ws: ClientConnection,
        *,
        role: Role,
        name: str,
        token: str | None = None,
        open_timeout: float = HANDSHAKE_TIMEOUT,
        on_event: EventHandler | None = None,
        resume: str | None = None,
        activities: list[str] | None = None,
    ) -> Connection:
        """Exchange hello/welcome over an open WebSocket; the socket is closed if that fails.

        ``resume`` (a requestor's): the ``welcome.resume`` of an earlier connection, whose
        activities this one takes over (``welcome.resumed`` lists them). ``activities`` (a
        provider's, 1.3): the activities it still runs, for the hub to keep or destroy.

        Raises :class:`ConnectionLost` when the hub does not answer or goes away,
        :class:`UnsupportedVersion` when it speaks another protocol, or the error the hub
        refused us with (e.g. :class:`~kiln.protocol.errors.Unauthorized`).
        """
        session = Session(
            role, name, token=token, software=f"kiln-python/{__version__}", resume=resume, activities=activities
        )
        if not isinstance(ws, HubLink):
            raise UsageError("dial the hub with WEBSOCKET_OPTIONS: its connection must be a kiln.connection.HubLink")
        conn = cls(ws, session, on_event)
        answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def greet(data: bytes, text: bool) -> None:
            conn._take(data, text)
            for event in session.events_received():
                if isinstance(event, Closed) and not answered.done():
                    answered.set_exception(event.error)
            if session.welcome is not None and not answered.done():
                answered.set_result(None)
            if answered.done():
                ws.pause_taking()  # what comes after the welcome is the reader's (see run)

        try:
            if ws.subprotocol not in (None, PROTOCOL_NAME):
                raise UnsupportedVersion(f"the hub speaks {ws.subprotocol}, not {PROTOCOL_NAME}")
            await conn.flush()
            ws.take_messages(greet)
            async with asyncio.timeout(open_timeout):
                await asyncio.wait(
                    [answered, cast("asyncio.Future[None]", ws.ended)], return_when=asyncio.FIRST_COMPLETED
                )
            if not answered.done():
                await conn._failed()
                raise ConnectionLost(f"the hub closed the connection during the handshake: {_describe(ws)}")
            answered.result()
        except TimeoutError as e:
            await ws.close()
            raise ConnectionLost(f"the hub did not answer hello within {open_timeout:g} s") from e
        except BaseException:
            await ws.close()
            raise
        return conn

    def new_id(self) -> int:
        return self.session.new_id()

    async def connected(self) -> Connection:
        """This connection (what an activity asks of its requestor's link to the hub)."""
        return self

    # --- sending ---------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write everything the session has queued, in order (one writer at a time).

        Small frames, while the reader runs, go out at the end of this turn of the event loop
        with whatever else is queued by then (one write for the requests of many tasks); the
        reader writes them itself if the socket's buffer is full then.
        """
        if not self._writing.locked():
            if self._wake is not None and self._deferrable():
                self._write_soon()
                return
            if self._write_now():
                return
        await self._flush()

    async def _flush(self) -> None:
        """Write everything queued, waiting while the socket's buffer is full."""
        async with self._writing:
            while out := self.session.data_to_send():
                try:
                    await send_frames(self.ws, out)
                except WsConnectionClosed:
                    return  # the reader reports the loss to the session

    def _deferrable(self) -> bool:
        return sum(len(frame.data) for frame in self.session.frames_to_send()) <= DEFER_BYTES

    def _write_soon(self) -> None:
        """Write what the session queued at the end of this turn of the event loop (see :meth:`flush`)."""
        if not self._write_due:
            self._write_due = True
            asyncio.get_running_loop().call_soon(self._write_queued)

    def _write_queued(self) -> None:
        self._write_due = False
        if not self._write_now():  # the answers wait for the socket: read no more until written
            self.ws.transport.pause_reading()
            self._poke()

    def _write_now(self) -> bool:
        """Write what the session queued if that needs no waiting (see :func:`~kiln.wire.send_frames_now`)."""
        if not self.session.has_data_to_send():
            return True
        if self._writing.locked() or not send_frames_now(self.ws, self.session.frames_to_send()):
            return False
        self.session.data_to_send()  # written
        return True

    def notify(self, message: Notification) -> bool:
        """Send a notification (see :meth:`Session.notify`) without waiting: it goes out with the
        next write, at the end of this turn of the event loop at the latest while the reader runs.

        False, and nothing sent, while more than :data:`NOTIFY_BACKLOG` frames wait for the socket:
        what notifications say is worth less than slowing what waits. Raises as
        :meth:`Session.notify` does.
        """
        if len(self.session.frames_to_send()) > NOTIFY_BACKLOG:
            return False
        self.session.notify(message)
        self._write_soon()
        return True

    async def start(self, message: Request, on_interim: InterimHandler | None = None) -> asyncio.Future[Message]:
        """Send a request; the future resolves to its final reply, or fails with a KilnError.

        With as many requests (or streams) open as the hub allows, it first waits for one to
        end: a caller may start any number at once. ``on_interim`` is called (by the reader:
        keep it quick, let it raise nothing) with each interim reply before the final one:
        ``want`` for a push, ``rent_progress`` for a rent.
        """
        while not self.session.has_room(message):
            self._waiting_room += 1
            try:
                await self._room.wait()
            finally:
                self._waiting_room -= 1
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self.session.request(message)
        self._replies[message.id] = future
        if on_interim is not None:
            self._interim[message.id] = on_interim
        await self.flush()
        return future

    async def request(self, message: Request) -> Message:
        """Send a request and wait for its final reply; an ``error`` reply is raised as a KilnError."""
        future = await self.start(message)
        try:
            return await future
        finally:
            if not future.done():
                future.cancel()  # abandoned: its reply, when it comes, is dropped

    async def open_upload(
        self, message: Upload | PushImage, on_interim: InterimHandler | None = None
    ) -> tuple[Outgoing, asyncio.Future[Message]]:
        """Start an upload (or a push): its sending end (credit comes from the receiver) and its final reply."""
        sender, _, reply = await self._open(message, sends=True, window=None, on_interim=on_interim)
        assert sender is not None
        return sender, reply

    async def open_download(self, message: Download) -> tuple[Incoming, asyncio.Future[Message]]:
        """Start a download: its receiving end (``info`` first, then the chunks) and its final reply."""
        _, receiver, reply = await self._open(message, sends=False, window=message.window)
        assert receiver is not None
        return receiver, reply

    async def open_exec(self, message: Exec) -> tuple[Outgoing | None, Incoming | None, asyncio.Future[Message]]:
        """Start an exec with streams (1.2): the sending end of its stdin (with ``stdin``), the
        receiving end of its output (with ``stream``), and its final reply."""
        window = message.window or min(limits.OUTPUT_WINDOW, self.session.limits.max_window)
        return await self._open(message, sends=bool(message.stdin), window=window if message.stream else None)

    async def open_connect(self, message: Connect) -> tuple[Outgoing, Incoming, asyncio.Future[Message]]:
        """Start a connect (1.7): the sending end toward the container's port (its first credit
        says the connection is open), the receiving end out of it, and its final reply."""
        window = message.window or min(limits.OUTPUT_WINDOW, self.session.limits.max_window)
        sender, receiver, reply = await self._open(message, sends=True, window=window)
        assert sender is not None and receiver is not None
        return sender, receiver, reply

    async def _open(
        self, message: Request, *, sends: bool, window: int | None, on_interim: InterimHandler | None = None
    ) -> tuple[Outgoing | None, Incoming | None, asyncio.Future[Message]]:
        """Start a request with its streams: one to send on, and one to receive on (``window``: its first credit)."""
        sender = receiver = None
        if sends:
            sender = self._outgoing[message.id] = Outgoing(self, message.id)
        if window is not None:
            receiver = self._incoming[message.id] = Incoming(self, message.id, window, grant_first=False)
        try:
            return sender, receiver, await self.start(message, on_interim)
        except BaseException:
            self._outgoing.pop(message.id, None)
            self._incoming.pop(message.id, None)
            raise

    async def cancel(self, request: int) -> None:
        """Ask the hub to stop ``request`` (best effort); it still ends with its one reply."""
        self.session.cancel(request)
        await self.flush()

    async def grant(self, stream: int, chunks: int) -> None:
        self.session.grant(stream, chunks)
        await self.flush()

    # --- a provider's side ------------------------------------------------------------------

    def incoming(self, stream: int, window: int) -> Incoming:
        """The receiving end of the hub's upload ``stream``; it opens the window on first read."""
        receiver = self._incoming[stream] = Incoming(self, stream, window, grant_first=True)
        return receiver

    def outgoing(self, stream: int) -> Outgoing:
        """The sending end of the hub's download ``stream`` (its first credit came with the request)."""
        sender = self._outgoing[stream] = Outgoing(self, stream)
        return sender

    async def reply(self, message: Reply) -> None:
        """Answer one of the hub's requests (see :meth:`Session.reply`); its stream is forgotten."""
        self.reply_soon(message)
        await self.flush()

    def reply_soon(self, message: Reply) -> None:
        """:meth:`reply` without waiting, for an ``on_event`` handler that answers at once (the
        reader calls the handler as messages come): the reply goes out with the reader's next write."""
        self.session.reply(message)
        if message.type != "download_info" and message.re is not None:
            self._incoming.pop(message.re, None)
            self._outgoing.pop(message.re, None)

    # --- reading -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Read frames until the connection ends; then everything still waiting fails.

        Each message is taken as the connection reads it (:class:`HubLink`); what the session
        and ``on_event`` answer goes out at once, or, when the socket's buffer is full, from
        here, with reading paused meanwhile.
        """
        reason = "the hub closed the connection"
        ws = self.ws
        loop = asyncio.get_running_loop()
        ws.ended.add_done_callback(lambda _: self._poke())
        self._wake = loop.create_future()
        try:
            ws.take_messages(self._on_message)
            while not ws.ended.done():
                await self._wake
                self._wake = loop.create_future()
                await self._flush()  # what could not be written at once
                if not self._wake.done():
                    ws.transport.resume_reading()
            await self._failed()
            reason = _describe(ws)
        finally:
            self._wake = None  # no reader: flush writes itself
            self.session.connection_lost(reason)
            self._dispatch()

    def _on_message(self, data: bytes, text: bool) -> None:
        self._take(data, text)
        self._dispatch()
        if self.session.has_data_to_send():
            self._write_soon()  # with the answers to the other messages of this read

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _failed(self) -> None:
        """When a message from the hub failed websockets' checks or ours, close as it says (or raise its bug)."""
        failure = self.ws.ended.result() if self.ws.ended.done() else None
        if failure is not None and failure.error is not None:
            raise failure.error
        if failure is not None:
            await self.ws.close(failure.code, failure.reason)

    async def close(self) -> None:
        """End the session from this side (what is open fails with ConnectionClosed) and close the socket."""
        self._write_now()  # what waits for the end of this turn goes first, if the socket takes it
        self.session.close()
        self._dispatch()
        await self.ws.close()

    def _take(self, data: bytes, text: bool) -> None:
        if text:
            self.session.receive_text(data)
        else:
            self.session.receive_binary(data)

    def _dispatch(self) -> None:
        for event in self.session.events_received():
            match event:
                case Replied(request, reply):
                    self._settle(request, reply, None)
                case Failed(request, error):
                    self._settle(request, None, error)
                case Requested():  # a provider's most frequent event: before the rarer ones
                    self._emit(event)
                case Informed(request, info):
                    receiver = self._incoming.get(request)
                    if (handler := self._interim.get(request)) is not None:
                        handler(info)
                    elif receiver is not None and isinstance(info, DownloadInfo) and not receiver.info.done():
                        receiver.info.set_result(info)
                case Credited(stream):
                    if (sender := self._outgoing.get(stream)) is not None:
                        sender._credited()
                case DataReceived(stream, data):
                    if (receiver := self._incoming.get(stream)) is not None:
                        receiver._feed(data)
                case StreamEnded(stream):
                    if (receiver := self._incoming.get(stream)) is not None:
                        receiver._end()
                case StreamFailed(stream, error):
                    self._fail_streams(error, [self._incoming.get(stream), self._outgoing.get(stream)])
                case Closed(error):
                    self._fail_streams(error, [*self._incoming.values(), *self._outgoing.values()])
                    self._incoming.clear()
                    self._outgoing.clear()
                    self._emit(event)
                case Violated(error):
                    log.warning("the hub sent something invalid (%s): %s", error.code, error.message)
                    self._emit(event)
                case CancelRequested() | Notified() | Welcomed():
                    self._emit(event)

    def _settle(self, request: int, reply: Message | None, error: KilnError | None) -> None:
        if self._waiting_room:
            self._room.set()
            self._room = asyncio.Event()
        future = self._replies.pop(request, None)
        self._interim.pop(request, None)
        ends = [self._incoming.pop(request, None), self._outgoing.pop(request, None)]
        if error is not None:
            self._fail_streams(error, ends)  # the stream of a failed request fails with it
        if future is None or future.done():
            return
        if error is not None:
            future.set_exception(error)
            future.exception()  # seen here: a caller that let its request go must not get a warning for it
        else:
            assert reply is not None
            future.set_result(reply)

    @staticmethod
    def _fail_streams(error: KilnError, ends: list[Incoming | Outgoing | None]) -> None:
        for end in ends:
            if end is not None:
                end.fail(error)

    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)


def _describe(ws: ClientConnection) -> str:
    """How ``ws`` ended, once it has: the close frame the hub sent, or none."""
    said = ws.protocol.close_rcvd
    if said is None:
        return "connection lost without a close frame"
    return f"the hub closed it with code {said.code}" + (f" ({said.reason})" if said.reason else "")

"""The hub's I/O: a websockets server that pumps every frame through :class:`HubCore`.

Each connection has a reader (this coroutine) and a writer task draining a bounded
outbox, so a slow peer never stalls the others: when more than ``outbox_bytes`` wait
for one peer, that peer is closed (code 4005) and everyone else carries on.

Before its hello a peer is a stranger, and holds little: a frame of at most
:data:`~kiln.protocol.messages.MAX_HELLO_BYTES` (a larger one closes it, 1009, before its
bytes are read), for at most :data:`HELLO_TIMEOUT` seconds, within its address's share of
connections (:mod:`kiln.hub.gate`). Once welcomed, it may send frames of ``max_frame_bytes``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import resource
import signal
import socket
import ssl as ssl_module
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, cast

from websockets.asyncio.connection import Connection
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from kiln.__about__ import __version__
from kiln.hub.access import Viewer
from kiln.hub.actions import Action, Close, Log, PortClosed, PortCredit, PortFrame, Send, Withdrawn
from kiln.hub.catalog import DEFAULT_MAX_EXPANSION, DEFAULT_MAX_IMAGE
from kiln.hub.core import (
    CREATE_TIMEOUT,
    CREDIT_TIMEOUT,
    DESTROY_TIMEOUT,
    GRACE,
    MAX_ACTIVITIES,
    PER_CREDENTIAL,
    HubCore,
)
from kiln.hub.gate import FAILED_HELLOS, PER_ADDRESS, WAITING_PER_ADDRESS, Gate
from kiln.hub.io.blobs import BlobStore, default_data_dir
from kiln.hub.io.connections import (
    SUBPROTOCOL,
    HubConnection,
    LogLimiter,
    Outbox,
    OutboxFull,
    allow_frames,
    connection_class,
    select_subprotocol,
)
from kiln.hub.io.http import Front, Logins
from kiln.hub.io.links import LinkAsk, LinkConnection, LinkHost, Links, OnFrame, Router
from kiln.hub.io.live import Live
from kiln.hub.io.metrics import Metrics
from kiln.hub.io.published import HEAD_BYTES, PublishedFront
from kiln.hub.io.seat import Seat
from kiln.hub.io.shared import SharedStore
from kiln.hub.io.state import USAGE_RETENTION, HubState
from kiln.hub.io.store import ImageService
from kiln.hub.ledger import CAPTURE_INTERVAL
from kiln.hub.records import Change
from kiln.protocol import limits
from kiln.protocol.codes import CLOSE_FAILED_HELLOS, CLOSE_HANDSHAKE, CLOSE_SLOW, CLOSE_TOO_MANY, CloseCode, ErrorCode
from kiln.protocol.errors import KilnError, UsageError
from kiln.protocol.messages import MAX_HELLO_BYTES
from kiln.wire import send_frames, send_frames_now

log = logging.getLogger("kiln.hub")

HELLO_TIMEOUT = 10.0
# A ping every 3 s; one unanswered for 7 s drops the peer: a stopped peer is gone 8 to 11 s later.
PING_INTERVAL: Final = 3.0
PING_TIMEOUT: Final = 7.0
CLOSE_TIMEOUT: Final = 1.0
MAX_UNWELCOMED: Final = 1024
"""Connections that have not said hello yet the hub keeps; a new one beyond closes the oldest."""
OPEN_TIMEOUT: Final = 5.0
"""Seconds a connection may take over the WebSocket opening handshake."""
EXPIRE_EVERY: Final = 1.0
"""How often the hub looks for providers that left a create or destroy unanswered too long,
and for requestors gone past their grace period."""
ROLL_UP_EVERY: Final = 3600.0
"""How often the hub rolls up the usage record's rows past their retention (:meth:`HubState.roll_up`)."""
REVOCATION_CHECK: Final = 2.0
"""How often the hub looks for revoked credentials among its peers' (and closes those peers)."""


class HubServer(LinkHost):
    """Accepts connections and carries out what the core decides."""

    def __init__(
        self,
        core: HubCore,
        *,
        outbox_bytes: int = limits.OUTBOX_BYTES,
        store: BlobStore | None = None,
        max_unwelcomed: int = MAX_UNWELCOMED,
        state: HubState | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.core = core
        self.state = state
        """Where the changes the core asks for are written."""
        self.stopping = False
        """Set when the hub stops: frames are no longer taken, and departures no longer written (see :func:`start`)."""
        self.outbox_bytes = outbox_bytes
        self._outboxes: dict[int, Outbox] = {}
        self._sockets: dict[int, Connection] = {}
        self._log = LogLimiter()
        self._ids = itertools.count(1)
        self.images = ImageService(core, store, self._apply, state) if store is not None else None
        self.max_unwelcomed = max_unwelcomed
        self._unwelcomed: dict[int, Outbox] = {}  # connections yet to say hello, oldest first
        self.gate = gate or Gate()
        self.live = Live(core)
        """The dashboards connected to ``/api/live`` (:mod:`kiln.hub.io.live`), and the hub's history."""
        self.links: Links | None = None
        """The providers of the other hubs of the database this hub sells, and its links to them."""
        self.router: Router | None = None
        """The links other hubs opened to the providers connected here (several hubs only)."""
        self.ports: PublishedFront | None = None
        """The listener of published ports (:mod:`kiln.hub.io.published`), once it listens."""

    async def expire(self) -> None:
        """Drop stuck providers (see :meth:`HubCore.expire`) until cancelled."""
        while True:
            await asyncio.sleep(EXPIRE_EVERY)
            self._apply(self.core.expire())

    async def handle(self, ws: ServerConnection) -> None:
        assert isinstance(ws, HubConnection)  # start() serves HubConnections only
        if ws.viewer is not None:  # a dashboard on /api/live, let in by its HTTP request (kiln.hub.io.http)
            await self._watch(ws, ws.viewer)
            return
        if ws.link is not None:  # another hub of the database, to a provider connected here
            await self._route(ws, ws.link)
            return
        if ws.blob is not None and self.images is not None and self.images.shared is not None:
            await self.images.shared.lend(ws, ws.blob)  # another hub's fetch, let in the same way
            return
        peer = next(self._ids)
        outbox = Outbox(self.outbox_bytes)
        self._outboxes[peer] = outbox
        self._sockets[peer] = ws
        self.core.connect(peer)
        # Idle connections cannot crowd out the peers that say hello: past the cap, the
        # oldest silent one makes room (for a connection the gate lets in: one turned away takes none).
        if not self._gatekeep(peer, ws):
            if len(self._unwelcomed) >= self.max_unwelcomed:
                oldest, waiting = next(iter(self._unwelcomed.items()))
                del self._unwelcomed[oldest]
                waiting.put(Close(oldest, CLOSE_HANDSHAKE, "too many connections waiting to say hello"))
            self._unwelcomed[peer] = outbox
        reason = "connection closed"
        try:
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(self._write(peer, ws, outbox))
                try:
                    reason = await self._read(peer, ws)
                finally:
                    writer.cancel()
        finally:
            del self._outboxes[peer]
            del self._sockets[peer]
            self._unwelcomed.pop(peer, None)
            # A peer that closed with 1000 is done; any other end may be a blip it comes back from.
            # One that closed with 1001 (going away: a provider stopped) left on purpose too.
            said = ws.protocol.close_rcvd
            code = None if said is None else said.code
            ended = code == CloseCode.NORMAL
            if self.router is not None:
                self.router.gone(peer)
            self._apply(self.core.disconnect(peer, reason, ended=ended, leaving=ended or code == CloseCode.GOING_AWAY))

    async def _route(self, ws: HubConnection, ask: LinkAsk) -> None:
        """Carry a link another hub opened (:class:`~kiln.hub.io.links.Router`); it says no hello."""
        if ws.refusal is not None or self.router is None:
            ws.stop_taking()
            await ws.close(CLOSE_TOO_MANY, ws.refusal or "this hub shares no database with others")
            return
        ws.waiting = False
        ws.unread_bound = 2 * self.core.limits.max_frame_bytes
        allow_frames(ws.protocol, self.core.limits.max_frame_bytes)
        self.gate.welcomed(ws.source)
        await self.router.serve(ws, ask)

    # --- what links use (kiln.hub.io.links.LinkHost) -------------------------------------------

    def new_peer(self) -> int:
        return next(self._ids)

    def open_outbox(self, peer: int) -> Outbox:
        outbox = self._outboxes[peer] = Outbox(self.outbox_bytes)
        return outbox

    def close_outbox(self, peer: int) -> None:
        """Close ``peer``'s link (if it has one, its writer closes it), and forget its outbox."""
        outbox = self._outboxes.get(peer)
        if outbox is None:
            return
        if peer in self._sockets:
            outbox.put(Close(peer, CloseCode.NORMAL, "link no longer needed"))
        else:
            del self._outboxes[peer]

    def apply(self, actions: list[Action]) -> None:
        self._apply(actions)

    async def carry(self, peer: int, ws: LinkConnection | HubConnection, on_message: OnFrame | None = None) -> None:
        outbox = self._outboxes.get(peer)
        if outbox is None:
            return
        self._sockets[peer] = ws
        take = on_message or (lambda data, text: self._take(peer, data, text))
        try:
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(self._write(peer, ws, outbox))
                ws.take_messages(take)
                if outbox.items:
                    outbox.ready.set()
                try:
                    ended: asyncio.Future[Any] = asyncio.shield(ws.ended)
                    await asyncio.wait([ended, writer], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    writer.cancel()
        finally:
            self._sockets.pop(peer, None)
            if outbox.closing:
                self._outboxes.pop(peer, None)
            else:  # what waited for this link was failed by the core when it broke
                outbox.items.clear()
                outbox.size = 0

    async def _watch(self, ws: HubConnection, viewer: Viewer) -> None:
        """Serve a dashboard (:meth:`Live.serve`) within its address's share of connections; it says no hello."""
        if ws.refusal is not None:
            ws.stop_taking()
            await ws.close(CLOSE_TOO_MANY, ws.refusal)
            return
        ws.waiting = False
        self.gate.welcomed(ws.source)
        await self.live.serve(ws, viewer)

    async def _read(self, peer: int, ws: HubConnection) -> str:
        """Take ``peer``'s messages as the connection reads them, until it ends; why it ended."""
        greeted = False

        def take(data: bytes, text: bool) -> None:
            nonlocal greeted
            if not greeted:
                greeted = True
                self._unwelcomed.pop(peer, None)
                self._take(peer, data, text)
                self._judged(peer, ws)
            else:
                self._take(peer, data, text)

        ws.take_messages(take)
        try:
            # A peer that connects and says nothing is not kept waiting forever.
            async with asyncio.timeout(HELLO_TIMEOUT):
                await asyncio.shield(ws.first)
        except TimeoutError:
            reason = f"no hello within {HELLO_TIMEOUT:g} s"
            ws.stop_taking()
            await ws.close(CLOSE_HANDSHAKE, reason)
            return reason
        failure = await asyncio.shield(ws.ended)
        if failure is not None and failure.error is not None:
            raise failure.error
        if failure is not None:
            await ws.close(failure.code, failure.reason)
        return _describe(ws)

    def _gatekeep(self, peer: int, ws: ServerConnection) -> bool:
        """Turn ``peer`` away before its hello if its address holds too much or failed too often (True)."""
        if not isinstance(ws, HubConnection):
            return False
        if ws.refusal is not None:
            self._apply(self.core.turn_away(peer, ws.refusal, CLOSE_TOO_MANY))
        elif (wait := self.gate.refusing(ws.source)) is not None:
            why = f"too many failed hellos from {ws.source}: try again in {math.ceil(wait)} s"
            self._apply(self.core.turn_away(peer, why, CLOSE_FAILED_HELLOS))
        else:
            return False
        return True

    def _judged(self, peer: int, ws: ServerConnection) -> None:
        """``peer``'s first frame was taken: welcomed, it may send full frames; refused, its address is told."""
        p = self.core.peers.get(peer)
        if p is None:
            return
        if p.role is not None:
            allow_frames(ws.protocol, self.core.limits.max_frame_bytes)
            if isinstance(ws, HubConnection) and ws.waiting:
                ws.waiting = False
                ws.unread_bound = 2 * self.core.limits.max_frame_bytes
                self.gate.welcomed(ws.source)
        elif isinstance(ws, HubConnection) and p.refused not in (None, ErrorCode.NAME_TAKEN, ErrorCode.TOO_MANY):
            self.gate.failed(ws.source)

    def _take(self, peer: int, data: bytes, text: bool) -> None:
        if self.stopping:
            return  # nothing more is told to anyone: the state on disk is what the next start takes back
        if self.router is not None and self.router.route(peer, data, text):
            return  # a provider's answer to another hub of the database
        if text:
            self._apply(self.core.receive_text(peer, data))
        else:
            self._apply(self.core.receive_binary(peer, data))

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if type(action) is not Send and type(action) is not Close:  # frames first: the most of them
                if isinstance(action, Log):
                    self._log.emit(logging.WARNING if action.level == "warning" else logging.INFO, action.text)
                elif isinstance(action, Change):
                    self._save(action)
                elif isinstance(action, PortCredit | PortFrame | PortClosed | Withdrawn):
                    if self.ports is not None:
                        self.ports.handle(action)
                elif self.images is not None and not isinstance(action, Send | Close):
                    self.images.handle(action)
                continue
            outbox = self._outboxes.get(action.peer)
            if outbox is None:
                continue
            if self.links is not None:
                if type(action) is Close and self.links.closed(action.peer):
                    continue
                self.links.sent(action.peer)
            try:
                outbox.put(action)
            except OutboxFull:
                log.warning("peer %d reads too slowly (%d bytes waiting); closing it", action.peer, outbox.size)
                outbox.items.clear()
                outbox.size = 0
                outbox.put(Close(action.peer, CLOSE_SLOW, "too slow: the hub's buffer for this peer is full"))
            if not outbox.due:
                outbox.due = True
                asyncio.get_running_loop().call_soon(self._flush, action.peer, outbox)

    def _flush(self, peer: int, outbox: Outbox) -> None:
        """Write what waits for ``peer`` (all that this turn of the event loop queued) if the socket
        takes it at once; else its writer task writes it, waiting as it must (or closes)."""
        outbox.due = False
        ws = self._sockets.get(peer)
        if ws is None or outbox.busy or not outbox.items:
            return  # gone, or the writer task takes them next
        frames = cast(deque[Send], outbox.items)  # Sends only, unless closing
        if outbox.closing or not send_frames_now(ws, frames):
            outbox.ready.set()
            return
        streamed = sum(len(frame.data) for frame in frames if frame.binary)
        frames.clear()
        outbox.size = 0
        if streamed:
            self._apply(self.core.delivered(peer, streamed))

    def _save(self, change: Change) -> None:
        """Commit a change before the actions after it (the messages that tell of it) go out.

        A write that fails is logged and the hub goes on: its peers are served, and only a
        restart would lose what was not written.
        """
        if self.state is None or self.stopping:
            return
        try:
            self.state.apply(change)
        except (*self.state.errors, KilnError) as e:  # type: ignore[misc]  # a tuple of exception types
            self._log.emit(logging.ERROR, f"could not write {type(change).__name__} to {self.state.where}: {e}")

    async def watch_credentials(self, state: HubState, logins: Logins | None = None) -> None:
        """Close each peer and dashboard whose credential is revoked, and forget the dashboard's sessions
        opened with one (``logins``), within :data:`REVOCATION_CHECK` seconds."""
        while True:
            await asyncio.sleep(REVOCATION_CHECK)
            in_use = self.core.credentials_in_use() | self.live.credentials()
            if logins is not None:
                in_use |= logins.credentials()
            if in_use:
                revoked = state.revoked(in_use)
                self._apply(self.core.revoked(revoked))
                self.live.revoke(revoked)
                if logins is not None:
                    logins.revoke(revoked)

    def roll_up_usage(self, state: HubState, days: float) -> None:
        """Roll up the usage record's rows older than ``days`` days (:meth:`HubState.roll_up`)."""
        try:
            gone = state.roll_up(days)
        except (*state.errors, KilnError) as e:  # type: ignore[misc]  # a tuple of exception types
            self._log.emit(logging.ERROR, f"could not roll up the usage record in {state.where}: {e}")
        else:
            if gone:
                log.info("usage: %d activities that ended over %g days ago rolled up per day", gone, days)

    async def roll_up_usage_hourly(self, state: HubState, days: float) -> None:
        """:meth:`roll_up_usage` every :data:`ROLL_UP_EVERY` seconds, until cancelled. On the event loop,
        as every write of the state: past the one at start, each rolls up at most a day's rows."""
        while True:
            await asyncio.sleep(ROLL_UP_EVERY)
            self.roll_up_usage(state, days)

    async def _write(self, peer: int, ws: Connection, outbox: Outbox) -> None:
        """Write what :meth:`_flush` could not write at once (waiting for the socket), and close."""
        while True:
            items = await outbox.take()
            frames = [item for item in items if isinstance(item, Send)]
            if frames:
                outbox.busy = True
                try:
                    await send_frames(ws, frames)
                except ConnectionClosed:
                    return
                finally:
                    outbox.busy = False
                streamed = sum(len(frame.data) for frame in frames if frame.binary)
                if streamed:
                    self._apply(self.core.delivered(peer, streamed))
            if isinstance(last := items[-1], Close):
                await ws.close(last.code, last.reason)
                return


def _describe(ws: ServerConnection) -> str:
    """How ``ws`` ended, once it has: the close frame its peer sent, or none."""
    said = ws.protocol.close_rcvd
    if said is None:
        return "connection lost without a close frame"
    return f"closed with code {said.code}" + (f" ({said.reason})" if said.reason else "")


DEFAULT_STORE_LIMIT: Final = 20 * 2**30


@asynccontextmanager
async def start(
    host: str = "127.0.0.1",
    port: int = 7465,
    *,
    token: str | None = None,
    data_dir: Path | None = None,
    db: str | None = None,
    advertise: str | None = None,
    store_limit: int = DEFAULT_STORE_LIMIT,
    max_image_size: int = DEFAULT_MAX_IMAGE,
    max_expansion: float = DEFAULT_MAX_EXPANSION,
    core: HubCore | None = None,
    create_timeout: float = CREATE_TIMEOUT,
    destroy_timeout: float = DESTROY_TIMEOUT,
    credit_timeout: float = CREDIT_TIMEOUT,
    max_activities: int = MAX_ACTIVITIES,
    grace: float = GRACE,
    ssl: ssl_module.SSLContext | None = None,
    per_address: int = PER_ADDRESS,
    waiting_per_address: int = WAITING_PER_ADDRESS,
    per_credential: int = PER_CREDENTIAL,
    failed_hellos: int = FAILED_HELLOS,
    usage_retention: float = USAGE_RETENTION,
    fee_ppm: int = 0,
    capture_interval: float = CAPTURE_INTERVAL,
    public_metrics: bool = False,
    publish_host: str | None = None,
    publish_port: int | None = None,
) -> AsyncIterator[Server]:
    """Serve a hub on ``host:port`` (0 picks a free port) while the context lasts.

    Its image store lives under ``data_dir`` (default: :func:`~kiln.hub.io.blobs.default_data_dir`)
    and keeps within ``store_limit`` bytes, counting each layer at the larger of its size and what
    it expands to; it takes no image that expands to more than ``max_image_size`` bytes, and no
    layer that expands to more than ``max_expansion`` times its size (past 64 MiB). A provider
    that leaves a create unanswered for ``create_timeout`` seconds (a destroy for ``destroy_timeout``) is dropped, and a
    requestor's stream toward a provider that grants it no credit for ``credit_timeout`` is
    aborted. A requestor holds at most ``max_activities`` activities per connection, and
    keeps them ``grace`` seconds after its connection drops or the hub restarts (for it to
    resume the session). One source address holds at most ``per_address`` connections, of
    which ``waiting_per_address`` before their hello, and has at most ``failed_hellos`` hellos
    refused a minute; one credential holds at most ``per_credential`` connections
    (:mod:`kiln.hub.gate`). The usage record keeps a row per activity for ``usage_retention``
    days, then one per day, requestor and provider. Of each payment to a provider, the hub's
    account takes ``fee_ppm`` parts per million (``kiln hub --fee``), captured from each priced
    activity's hold every ``capture_interval`` seconds (``kiln hub --capture-interval``). With ``ssl``
    (:func:`kiln.hub.io.tls.server_context`) it serves ``wss://`` only. Its credentials (``kiln token``)
    and its ledger (``kiln credit``, ``kiln ledger``) live in ``hub.db`` in ``data_dir``, or in the
    database ``db`` names (a ``postgresql://`` URL: hubs sharing it are one market, each reached
    by the others at ``advertise``, by default the address it listens on).

    The same port answers plain HTTP (:mod:`kiln.hub.io.http`): ``/healthz``, ``/metrics`` (an
    admin's, or anyone's with ``public_metrics``), the dashboard and its login. Published ports
    (1.7, :mod:`kiln.hub.io.published`) are served on ``publish_host:publish_port`` (by default
    ``host`` and ``port`` + 1, or a free port when ``port`` is 0), over TLS with ``ssl``.
    """
    if token == "":
        raise UsageError("an empty token would admit anyone: give a token, or none for an open hub")
    if not 0 <= usage_retention < math.inf:
        raise UsageError("the usage retention must be a number of days, 0 or more")
    gate = Gate(per_address, waiting_per_address, failed_hellos)
    data_dir = data_dir or default_data_dir()
    store = BlobStore(data_dir)
    catalog = await asyncio.to_thread(store.open, store_limit, max_image_size, max_expansion)
    state = await asyncio.to_thread(HubState.open, data_dir, db)
    reputations = await asyncio.to_thread(state.reputations)
    cluster = state if state.database.dialect == "postgresql" else None  # a hub alone needs no seat
    if core is None:
        core = HubCore(
            token=token,
            credentials=state,
            cluster=cluster,
            software=f"kiln-hub/{__version__}",
            buffer_bytes=limits.OUTBOX_BYTES,
            catalog=catalog,
            create_timeout=create_timeout,
            destroy_timeout=destroy_timeout,
            max_activities=max_activities,
            grace=grace,
            credit_timeout=credit_timeout,
            per_credential=per_credential,
            accounts=state,
            fee_ppm=fee_ppm,
            capture_interval=capture_interval,
            reputation=reputations,
        )
    else:
        core.catalog = core.market.catalog = catalog
        if core.credentials is None:
            core.credentials = state
        if core.cluster is None:
            core.cluster = cluster
        if core.ledger.accounts is None:
            core.ledger.accounts = state
    hub = HubServer(core, store=store, state=state, gate=gate)
    assert hub.images is not None
    if cluster is not None:  # the hubs of the database share their images
        hub.images.shared = SharedStore(state, store, catalog)
        await hub.images.shared.open()
    sessions, leases = await asyncio.to_thread(state.load)
    meters = await asyncio.to_thread(state.meters)
    hub._apply(core.restore(sessions, leases, meters))
    hub.roll_up_usage(state, usage_retention)
    log.info("image store: %s (%d images, %d bytes of %d)", store.root, len(catalog.images), catalog.used, store_limit)
    if state.required():
        needed = "every hello needs one" + (" or the shared token" if token else "")
    else:
        needed = "none: " + ("the shared token admits" if token else "the hub is open")
    log.info("credentials: %s (%s)", state.where, needed)
    # The TLS handshake comes before the WebSocket one, and gets as long (asyncio's default: 60 s).
    tls: dict[str, Any] = {} if ssl is None else {"ssl": ssl, "ssl_handshake_timeout": OPEN_TIMEOUT}
    front = Front(
        Metrics(core, lambda: hub.live.viewers),
        token=core.token,
        credentials=core.credentials,
        stopping=lambda: hub.stopping,
        public_metrics=public_metrics,
        tls=ssl is not None,
    )
    server = await serve(
        hub.handle,
        host,
        port,
        subprotocols=[SUBPROTOCOL],
        select_subprotocol=select_subprotocol,
        max_size=MAX_HELLO_BYTES,  # raised to max_frame_bytes once a peer is welcomed
        create_connection=connection_class(gate),
        max_queue=16,
        ping_interval=PING_INTERVAL,
        ping_timeout=PING_TIMEOUT,
        close_timeout=CLOSE_TIMEOUT,
        open_timeout=OPEN_TIMEOUT,
        compression=None,
        process_request=front.process_request,
        **tls,
    )
    hub.ports = PublishedFront(core, hub._apply)
    where = (publish_host or host, publish_port if publish_port is not None else port + 1 if port else 0)
    try:
        published = await asyncio.start_server(hub.ports.serve, *where, limit=HEAD_BYTES, **tls)
    except OSError as e:
        server.close()
        raise UsageError(f"cannot listen for published ports on {where[0]}:{where[1]} (--publish-listen): {e}") from e
    core.publish_base = publish_base(published.sockets[0].getsockname(), tls=ssl is not None)
    log.info("published ports are served at %s/s/...", core.publish_base)
    seat = None
    if state.database.dialect == "postgresql":
        bound = server.sockets[0].getsockname()
        seat = Seat(state, advertise or f"{'ws' if ssl is None else 'wss'}://{bound[0]}:{bound[1]}")
        seat.join()
        core.slot = seat.slot
        hub.links = Links(hub, state, seat)
        hub.router = Router(hub, state.hub, seat.slot)
        front.hubs = state.hub_of
        if hub.images.shared is not None:
            hub.images.shared.secret = seat.secret
            front.lending = hub.images.shared.holds
    try:
        async with server, asyncio.TaskGroup() as tg:
            heart = tg.create_task(seat.keep()) if seat is not None else None
            poll = tg.create_task(hub.links.poll()) if hub.links is not None else None
            shelf = tg.create_task(hub.images.shared.run()) if hub.images.shared is not None else None
            saver = tg.create_task(hub.images.run())
            expiry = tg.create_task(hub.expire())
            watcher = tg.create_task(hub.watch_credentials(state, front.logins))
            roller = tg.create_task(hub.roll_up_usage_hourly(state, usage_retention))
            sampler = tg.create_task(hub.live.sample())
            try:
                yield server
            finally:
                # Stopping is not an end of anything: no frame is taken any more (so nothing
                # new is told that was not written), and the peers about to be disconnected
                # are to be held for a restart, so their departures are not written.
                hub.stopping = True
                saver.cancel()
                expiry.cancel()
                watcher.cancel()
                roller.cancel()
                sampler.cancel()
                if heart is not None:
                    heart.cancel()
                if poll is not None:
                    poll.cancel()
                if shelf is not None:
                    shelf.cancel()
    finally:
        hub.ports.close()
        published.close()
        await hub.images.close()
        if hub.images.shared is not None:
            await hub.images.shared.close()
        if seat is not None:
            seat.leave()
        state.close()


def publish_base(address: tuple[Any, ...], *, tls: bool) -> str:
    """The base of published URLs on the listener bound to ``address``: its host (this machine's
    name when it listens on every address), in brackets when IPv6, and its port."""
    host, port = str(address[0]), int(address[1])
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


def raise_open_file_limit() -> int:
    """Let this process hold as many sockets as the system allows (one per peer); returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def run(host: str, port: int, **options: Any) -> None:
    """Serve until cancelled or sent SIGTERM or SIGINT (Ctrl-C), printing the address once
    listening (``wss://`` with ``ssl``). A signal is a clean stop: the store is saved, and this returns."""
    limit = raise_open_file_limit()
    log.info("serving up to %d open files (sockets)", limit)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with start(host, port, **options) as server:
        scheme = "ws" if options.get("ssl") is None else "wss"
        for sock in server.sockets:
            address = sock.getsockname()
            print(f"kiln hub listening on {scheme}://{address[0]}:{address[1]}", flush=True)
        await stop.wait()
    log.info("stopped")

"""Links between the hubs of one database: a requestor on this hub uses a provider connected to another.

Every hub sells every provider of the database. It learns of the others' from the database (the
``providers`` table: which hub holds each, and its offer), looked at every :data:`POLL_EVERY`
seconds, and sells each as a peer of its own core (:meth:`~kiln.hub.core.HubCore.remote`). What
its core sends such a provider goes over a *link*: a WebSocket this hub opens to the provider's
hub at ``/hub/link/<provider>`` (:class:`Links`), shown with this hub's token (its
:class:`~kiln.hub.io.seat.Seat`'s), opened when there is something to send and kept while the
provider holds this hub's leases.

The link carries the provider's own protocol, as the provider's hub would speak it, unchanged:
that hub passes what comes over a link to the provider's connection as it is, and routes what the
provider sends (:class:`Router`). A reply (``re``), a ``credit`` (``stream``) or a frame of a
stream goes to the hub whose id it carries: each hub numbers its requests to a provider from its
slot in steps of :data:`~kiln.hub.cluster.ID_STEP`, so the id alone names the hub. ``usage`` goes to
every hub (each keeps its own leases' part); the rest (offers, the provider's own requests) is its
own hub's. A link first says which connection of the provider it reaches and what that connection's
hello said it runs, so that the leases a hub held on it while the link was down come back
(:meth:`~kiln.hub.core.HubCore.remote_linked`).

Why a relay and not a redirect of the requestor to the provider's hub (as Redis Cluster's
``MOVED``): the clients stay as they are (one connection, one session, in all three), a session
keeps one hub that meters and budgets its jobs, and when a hub dies the requestor and the provider
may land on different hubs, which links join again. What it costs is measured in BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from kiln.hub.actions import Action, Send
from kiln.hub.cluster import ID_STEP, offer_of
from kiln.hub.io.connections import LINK_PATH, SUBPROTOCOL, LinkAsk, Outbox
from kiln.hub.io.state import HubState
from kiln.protocol import frames
from kiln.wire import TakesMessages

if TYPE_CHECKING:
    from kiln.hub.core import HubCore
    from kiln.hub.io.connections import HubConnection
    from kiln.hub.io.seat import Seat

__all__ = ["LINK_PATH", "LinkAsk", "LinkHost", "Links", "OnFrame", "Router"]

log = logging.getLogger("kiln.hub.io.links")

POLL_EVERY: Final = 0.5
"""Seconds between two looks at the database's providers (their hubs and offers)."""
REDIAL_EVERY: Final = 0.5
"""Seconds between two dials of a link that failed, while it is needed."""
LINK_TIMEOUT: Final = 5.0
"""Seconds a link's opening (and its first message) may take."""


class LinkConnection(TakesMessages, ClientConnection):
    """A link this hub opened, whose messages go to a callback as they are read."""


LINK_OPTIONS: Final[dict[str, Any]] = {
    "create_connection": LinkConnection,
    "subprotocols": [SUBPROTOCOL],
    "max_size": None,  # the provider's hub sends no more than its limits let the provider send it
    "ping_interval": 3,  # as a peer dials the hub: a hub silent for 7 s after a ping is gone
    "ping_timeout": 7,
    "close_timeout": 1,
    "compression": None,
}


@dataclass(slots=True)
class Remote:
    """A provider of another hub, as this hub sells it: its peer in the core, and its link."""

    peer: int
    name: str
    hub: str
    task: asyncio.Task[None] | None = None
    wanted: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the core has something to send it: the link is opened if it is not."""


class Links:
    """This hub's side: the providers of other hubs it sells, and the links it opens to reach them.

    ``server`` is the hub's :class:`~kiln.hub.io.server.HubServer` (its outboxes, its sockets, the
    way it applies the core's actions and takes a peer's frames).
    """

    def __init__(self, server: LinkHost, state: HubState, seat: Seat) -> None:
        self.server = server
        self.state = state
        self.seat = seat
        self.remotes: dict[str, Remote] = {}
        self.by_peer: dict[int, Remote] = {}
        self.hubs: dict[str, str] = {}  # the live hubs of the database: id -> address
        self._since = 0.0

    @property
    def core(self) -> HubCore:
        return self.server.core

    async def poll(self) -> None:
        """Look at the database every :data:`POLL_EVERY` seconds, until cancelled."""
        failing = False
        while True:
            try:
                self.look()
            except self.state.errors as e:
                if not failing:
                    log.error("cannot read the providers of other hubs from %s: %s", self.state.where, e)
                failing = True
            else:
                failing = False
            await asyncio.sleep(POLL_EVERY)

    def look(self) -> None:
        """Take the providers whose hub or offer changed since the last look; forget those whose
        hub is found dead (their leases wait for them to join another hub); sell again those a
        link that failed took off the market."""
        self.hubs = {hub: address for hub, address, _ in self.state.hubs()}
        for remote in [r for r in self.remotes.values() if r.hub not in self.hubs]:
            self._forget(remote, f"its hub {remote.hub} is gone")
        for remote in self.remotes.values():
            p = self.core.peers.get(remote.peer)
            if p is not None and p.offer is not None and remote.peer not in self.core.market:
                self.server.apply(self.core.remote(remote.peer, remote.name, remote.hub, p.minor, p.offer))
            if remote.task is None and self.core.absent(remote.name):  # a session adopted here holds its leases
                self.sent(remote.peer)
        self._since, rows = self.state.providers_changed(self._since)
        for row in rows:
            name, hub, text = row.name, row.hub, row.offer
            known = self.remotes.get(name)
            if hub is None or hub == self.state.hub or text is None:
                if known is not None:  # connected to none, or to this hub now: its leases wait for it
                    self._forget(known, "it left its hub" if hub is None else "it is connected here now")
                if hub == self.state.hub:
                    self.server.apply(self.core.elsewhere(name, row.elsewhere))
                continue
            read = offer_of(text)
            if read is None:
                log.warning("the offer of provider %r in the database cannot be read", name)
                continue
            minor, offer = read
            if known is None:
                known = Remote(self.server.new_peer(), name, hub)
                self.server.open_outbox(known.peer)
                self.remotes[name], self.by_peer[known.peer] = known, known
            elif known.hub != hub:
                known.hub = hub
                if known.task is not None:
                    known.wanted.set()  # dial its new hub now
            self.server.apply(self.core.remote(known.peer, name, hub, minor, offer))
            self.server.apply(self.core.elsewhere(name, row.elsewhere))
            if known.peer not in self.core.peers:  # connected here under another peer meanwhile
                self._drop(known)
            elif self.core.absent(name):  # leases wait for it: reach it at its hub now
                self.sent(known.peer)

    def sent(self, peer: int) -> None:
        """The core queued frames for ``peer``: if it is a remote provider, its link carries them."""
        remote = self.by_peer.get(peer)
        if remote is None:
            return
        remote.wanted.set()
        if remote.task is None:
            remote.task = asyncio.get_running_loop().create_task(self._keep(remote))

    def closed(self, peer: int) -> bool:
        """The core closes ``peer``: True if it is a remote provider, which is now forgotten. (A core
        that finds it unresponsive closes it as it would a connection here: it is sold no more.)"""
        remote = self.by_peer.get(peer)
        if remote is None:
            return False
        if peer in self.core.peers:
            self._forget(remote, "its hub's link closed by this hub")
        else:
            self._drop(remote)
        return True

    def _forget(self, remote: Remote, why: str) -> None:
        self.server.apply(self.core.remote_gone(remote.peer, f"provider {remote.name!r}: {why}"))
        self._drop(remote)

    def _drop(self, remote: Remote) -> None:
        self.remotes.pop(remote.name, None)
        self.by_peer.pop(remote.peer, None)
        if remote.task is not None:
            remote.task.cancel()
        self.server.close_outbox(remote.peer)

    async def _keep(self, remote: Remote) -> None:
        """Keep ``remote``'s link open while it is needed: dialled when the core has something for
        it, again when it breaks while the provider holds this hub's leases (they are absent meanwhile)."""
        while remote.peer in self.by_peer:
            await remote.wanted.wait()
            remote.wanted.clear()
            try:
                await self._link(remote)
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError, ConnectionClosed) as e:
                log.info("cannot link to provider %r at hub %s: %s", remote.name, remote.hub, e)
                # What waited for the link fails now (retryable), rather than at its timeout; the
                # provider is off this hub's market until the next look sells it again.
                self.server.apply(self.core.remote_unlinked(remote.peer, f"its hub {remote.hub} cannot be reached"))
            p = self.core.peers.get(remote.peer)
            if p is not None and (p.activities or self.core.absent(remote.name)):
                await asyncio.sleep(REDIAL_EVERY)
                remote.wanted.set()

    async def _link(self, remote: Remote) -> None:
        address = self.hubs.get(remote.hub)
        if address is None:
            raise OSError(f"hub {remote.hub} is not alive")
        url = address.rstrip("/") + LINK_PATH + quote(remote.name, safe="")
        headers = [("Authorization", f"Bearer {self.seat.secret}")]
        async with asyncio.timeout(LINK_TIMEOUT):
            ws = await connect(url, additional_headers=headers, open_timeout=LINK_TIMEOUT, **LINK_OPTIONS)
        assert isinstance(ws, LinkConnection)
        try:
            first: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

            def greeted(data: bytes, text: bool) -> None:
                if not first.done():
                    first.set_result(data)

            ws.take_messages(greeted)
            async with asyncio.timeout(LINK_TIMEOUT):
                said = orjson.loads(await first)
            incarnation, running = str(said["incarnation"]), [str(a) for a in said["activities"]]
            ws.pause_taking()
            log.info("linked to provider %r at hub %s (%s)", remote.name, remote.hub, incarnation)
            self.server.apply(self.core.remote_linked(remote.peer, incarnation, running))
            await self.server.carry(remote.peer, ws)
        finally:
            await ws.close()
        self.server.apply(self.core.remote_unlinked(remote.peer, f"the link to its hub {remote.hub} ended"))


class LinkHost:
    """What :class:`Links` and :class:`Router` need of the hub's server (:class:`~kiln.hub.io.server.HubServer`)."""

    core: HubCore

    def new_peer(self) -> int:
        raise NotImplementedError

    def open_outbox(self, peer: int) -> Outbox:
        raise NotImplementedError

    def close_outbox(self, peer: int) -> None:
        raise NotImplementedError

    def apply(self, actions: list[Action]) -> None:
        raise NotImplementedError

    async def carry(self, peer: int, ws: LinkConnection | HubConnection, on_message: OnFrame | None = None) -> None:
        """Write ``peer``'s outbox to ``ws`` and hand what it reads to ``on_message`` (the core's
        :meth:`take` when None), until the connection ends."""
        raise NotImplementedError


OnFrame = Callable[[bytes, bool], None]


class Router:
    """The provider's hub's side: the links other hubs opened to providers connected here, and the
    routing of what those providers send (see the module's text)."""

    def __init__(self, server: LinkHost, hub: str, slot: int) -> None:
        self.server = server
        self.hub = hub
        self.slot = slot
        self.links: dict[int, dict[int, int]] = {}  # provider peer -> the slot of a hub -> the link's peer

    async def serve(self, ws: HubConnection, ask: LinkAsk) -> None:
        """Carry a link from hub ``ask.hub`` to provider ``ask.provider`` until either ends."""
        core = self.server.core
        provider = core.providers.get(ask.provider)
        p = core.peers.get(provider) if provider is not None else None
        if p is None or p.hub is not None or provider is None:
            await ws.close(4404, f"provider {ask.provider!r} is not connected to this hub")
            return
        link = self.server.new_peer()
        self.server.open_outbox(link)
        routes = self.links.setdefault(provider, {})
        old = routes.get(ask.slot)
        if old is not None:
            self.server.close_outbox(old)  # a link the same hub opened before: this one replaces it
        routes[ask.slot] = link
        said = {"type": "linked", "incarnation": f"{self.hub}:{provider}", "activities": p.running}
        self.server.apply([Send(link, orjson.dumps(said))])
        log.info("hub %s linked to provider %r", ask.hub, ask.provider)

        def to_provider(data: bytes, text: bool) -> None:
            if text:
                self._track(p.running, data)
            self.server.apply([Send(provider, data, binary=not text)])

        try:
            await self.server.carry(link, ws, to_provider)
        finally:
            if self.links.get(provider, {}).get(ask.slot) == link:
                del self.links[provider][ask.slot]
                if not self.links[provider]:
                    del self.links[provider]
            self.server.close_outbox(link)

    @staticmethod
    def _track(running: list[str], data: bytes) -> None:
        """Keep ``running`` (what the provider's hello listed) what it runs as links create and
        destroy: a hub linking later (after its restart) learns which of its leases are still there.
        A create that fails leaves a name no hub holds, which each passes over."""
        if not (data.startswith(b'{"type":"create"') or data.startswith(b'{"type":"destroy"')):
            return
        try:
            activity = orjson.loads(data).get("activity")
        except (orjson.JSONDecodeError, AttributeError):
            return
        if not isinstance(activity, str):
            return
        if data.startswith(b'{"type":"create"'):
            if activity not in running:
                running.append(activity)
        elif activity in running:
            running.remove(activity)

    def route(self, peer: int, data: bytes, text: bool) -> bool:
        """Send on what provider ``peer`` sent if it is for another hub (True); False: it is this hub's."""
        routes = self.links.get(peer)
        if not routes:
            return False
        if not text:
            if len(data) < frames.HEADER.size:
                return False
            stream = frames.HEADER.unpack_from(data)[1]
            return self._to(routes, stream, data, binary=True)
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(message, dict):
            return False
        kind = message.get("type")
        if kind == "usage":
            for link in routes.values():
                self.server.apply([Send(link, data)])
            return False  # this hub's too
        key = message.get("stream") if kind == "credit" else message.get("re")
        return isinstance(key, int) and self._to(routes, key, data, binary=False)

    def _to(self, routes: dict[int, int], key: int, data: bytes, *, binary: bool) -> bool:
        slot = key % ID_STEP
        if slot == self.slot:
            return False
        link = routes.get(slot)
        if link is not None:
            self.server.apply([Send(link, data, binary=binary)])
        return True  # another hub's (one whose link is gone drops it)

    def gone(self, peer: int) -> None:
        """Provider ``peer`` left this hub: its links end (their hubs find it again through the database)."""
        for link in self.links.pop(peer, {}).values():
            self.server.close_outbox(link)

"""The provider service: dial the hub, offer capacity, serve its requests, dial again when it is lost.

:class:`ProviderRuntime` holds the provider's session with the hub and its reconnects; it
serves requests with :class:`~kiln_provider.handlers.Handlers` and gets images with
:class:`~kiln_provider.image_supply.ImageSupply` (the package's docstring names the rest).

Every session starts with an offer: the resources asked for (never more than the host has),
the images the operator allows (``--images`` patterns, the ``org.kiln.offer`` label) and,
apart (``Offer.cached``, 1.4), those loaded from the hub's store; it is offered again
whenever they change. A ``wss://`` hub is verified against ``--ca`` (else the system's trust
store); one whose certificate is not trusted is dialled again, and the log says why.

When the connection drops, every request under way is cancelled, and the provider dials
again: the hub it was on first, then, given several hubs of one market (``--hub A --hub B``),
each other in turn, with backoff between rounds in which none answered
(:meth:`ProviderRuntime._connections`). Its containers stay, for up to
``grace`` seconds: a hub that restarted holds their leases for their requestors, and the
provider's ``hello`` (1.3) lists them, so the hub keeps those it holds and has the
provider destroy the rest. A hub that was not dialled back in time, or that speaks
below 1.3, gets no list: the containers are removed.

A hub that speaks 1.6 is told what the containers use (``usage``, from their cgroups) every
:data:`USAGE_SECONDS` while there are any, and once, empty, after the last one went. With
``--metrics-port`` the provider serves its own metrics (:mod:`kiln_provider.metrics`) for as
long as it runs, whether a hub is connected or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Iterator
from functools import partial
from typing import Any, Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.client import backoff, process_exception
from websockets.frames import CloseCode

from kiln.connection import WEBSOCKET_OPTIONS, Connection, HubRing, dial_error, tls_options
from kiln.protocol.codes import ErrorCode
from kiln.protocol.errors import KilnError, Unauthorized, UnsupportedVersion, UsageError
from kiln.protocol.messages import MAX_OFFERED, MAX_REPORTED, MAX_USAGE_ACTIVITIES, Offer, Resources, Usage
from kiln.protocol.money import format_price
from kiln_provider.config import ProviderConfig
from kiln_provider.docker_adapter import DockerAdapter
from kiln_provider.handlers import Handlers
from kiln_provider.image_supply import ImageSupply
from kiln_provider.metrics import MetricsServer, MetricsSource, Snapshot, Tallies, measure, serve_metrics, usage_entries
from kiln_provider.threads import Pools

log = logging.getLogger("kiln.provider")

IMAGE_REFRESH_SECONDS: Final = 5.0
RECONNECT_DELAYS: Final = partial(backoff, initial_delay=0.5, min_delay=0.25, max_delay=5.0, factor=2.0)
"""Dialling again: at once after a lost session, then within 0.5 s, then 0.25 s doubling up to 5 s
(between two rounds of dials, each of every hub given)."""
REFUSED_RETRY_SECONDS: Final = 2.0
"""How long to wait after a hub refused us for a reason that passes (our old session still seen, say)."""
USAGE_SECONDS: Final = 5.0
"""How often a hub that speaks 1.6 is told what the containers use."""


class ProviderRuntime:
    """Serves a hub (one of those given at a time) until cancelled. Call :meth:`run`."""

    def __init__(self, config: ProviderConfig, adapter: DockerAdapter) -> None:
        self.config = config
        self.adapter = adapter
        self.offer_resources = self._capacity()
        # Volumes are made only within the offer: a hub that sells more gets refusals, not disk.
        adapter.volumes.bound(self.offer_resources.storage, config.max_containers)
        self.arch = adapter.host_info().arch
        self._pools = Pools()
        self.tallies = Tallies()
        self.images = ImageSupply(config, adapter, self._pools, self.tallies)
        self.handlers = Handlers(config, adapter, self._pools, self.images, self.tallies)
        self._offered: tuple[list[str], list[str]] = ([], [])  # (images, cached) of the last offer
        self._dial_failures: dict[str, str] = {}  # why the last dial of each hub failed, once told
        self._hub_minor = 0  # the minor version the last welcome spoke
        self._keeping: asyncio.Task[None] | None = None  # removes the containers kept if no hub comes in time
        self._keep_until = 0.0  # when the containers kept since the hub was lost are to go

    def _capacity(self) -> Resources:
        """What to offer: what was asked for, never more than the host has (storage: the free
        space of the disk where containers' volumes live)."""
        host = self.adapter.host_info()
        free_disk = self.adapter.storage_free()
        want = self.config
        cpus = min(want.cpus if want.cpus is not None else float(host.cpus), float(host.cpus))
        memory = min(want.memory if want.memory is not None else host.memory * 3 // 4, host.memory)
        storage = min(want.storage if want.storage is not None else 10 * 2**30, free_disk)
        asked_and_got = (("cpus", want.cpus, cpus), ("memory", want.memory, memory), ("storage", want.storage, storage))
        for label, asked, got in asked_and_got:
            if asked is not None and asked > got:
                log.warning("asked to offer %s=%s but the host has only %s; offering %s", label, asked, got, got)
        return Resources(cpus=cpus, memory=memory, storage=storage)

    async def run(self) -> None:
        """Dial a hub, serve, and dial again whenever the connection ends.

        Raises :class:`~kiln.protocol.errors.Unauthorized` or ``UnsupportedVersion`` when the
        hub refuses us for good, and :class:`~kiln.protocol.errors.UsageError` for a URL that is
        not a hub's or when another provider keeps our name for longer than ``name_wait``.
        Cancelled (the provider stops), it says goodbye to the hub (close code 1001, going
        away: the hub logs a clean departure), then removes its containers.
        """
        hubs = HubRing(self.config.hubs)
        tls = {url: tls_options(url, self.config.ca) for url in hubs.urls}  # a bad --ca fails before any dial
        metrics = self._serve_metrics()
        try:
            await self._serve(hubs, tls)
        finally:
            if metrics is not None:
                await asyncio.to_thread(metrics.close)

    def _serve_metrics(self) -> MetricsServer | None:
        """Start serving the metrics, if asked to (UsageError if it cannot listen); the log says where."""
        host, port = self.config.metrics_host, self.config.metrics_port
        if port is None:
            return None
        source = MetricsSource(asyncio.get_running_loop(), self._snapshot, self.adapter.volumes.usage)
        try:
            server = serve_metrics(source, host, port)
        except OSError as e:
            raise UsageError(f"cannot serve the metrics on {host}:{port}: {e.strerror or e}") from e
        bound_host, bound_port = server.address
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        log.info("serving metrics on http://%s:%d/metrics", shown, bound_port)
        return server

    def _snapshot(self) -> Snapshot:
        """What a scrape reads of the provider's state (on the event loop, where it changes)."""
        tallies = self.tallies
        return Snapshot(
            probes=self.handlers.probes(),
            ended_cpu_seconds=tallies.ended_cpu_seconds,
            image_pulls=dict(tallies.image_pulls),
            image_pull_bytes=tallies.image_pull_bytes,
            agent_channel_errors=tallies.agent_channel_errors,
            image_cache_bytes=self.images.cache.total,
            outbound_allowed=tallies.outbound_allowed,
            outbound_refused=dict(tallies.outbound_refused),
        )

    async def _connections(self, hubs: HubRing, tls: dict[str, dict[str, Any]]) -> AsyncGenerator[ClientConnection]:
        """WebSocket connections to the hubs, one after the other, each closed once the caller is
        done with it. Each round dials the hub it was on first, then the others in turn; the next
        round comes at once after a connection, else after a delay (:data:`RECONNECT_DELAYS`).

        Raises what no dial again can mend (websockets' :func:`~websockets.client.process_exception`).
        """
        delays: Iterator[float] | None = None
        while True:
            for url in hubs.order():
                try:
                    ws = await connect(url, **tls[url], **WEBSOCKET_OPTIONS)
                except Exception as e:  # as websockets' own reconnecting iterator judges them
                    fatal = self._dial_failed(url, e)
                    if fatal is e:
                        raise
                    if fatal is not None:
                        raise fatal from e
                    continue
                self._dial_failures.pop(url, None)
                hubs.moved(url)
                delays = None
                async with ws:
                    yield ws
                break
            else:
                delays = delays or RECONNECT_DELAYS()
                await asyncio.sleep(next(delays))

    async def _serve(self, hubs: HubRing, tls: dict[str, dict[str, Any]]) -> None:
        """:meth:`run`'s sessions, once the settings are checked."""
        name_taken_since: float | None = None
        await self.images.tidy()
        containers = self.handlers.containers
        ws: ClientConnection | None = None
        connections = self._connections(hubs, tls)
        try:
            async for ws in connections:
                # No removal may run while the hello lists what is kept: the timer stops here
                # (what is past its time goes now), and starts again if the hub refuses us.
                await self._stop_keeping()
                # Only a hub that spoke 1.3 knows the list (an older one would refuse the hello).
                # As many as a hello may list: the rest are removed when the hub welcomes us.
                running = self.handlers.running()[:MAX_REPORTED] if self._hub_minor >= 3 else []
                try:
                    conn = await Connection.handshake(
                        ws,
                        role="provider",
                        name=self.config.name,
                        token=self.config.token,
                        on_event=self.handlers.on_event,
                        activities=running or None,
                    )
                except (Unauthorized, UnsupportedVersion):
                    raise
                except KilnError as e:
                    self._keep()
                    if e.code == ErrorCode.BAD_MESSAGE:
                        self._hub_minor = 0  # a hub rolled back below 1.3: dial again without the list
                    if e.code == ErrorCode.NAME_TAKEN:
                        # Our own earlier session, not yet seen gone by the hub (or by another hub of
                        # its database, which holds us still: the next hub is tried); or another provider.
                        hubs.skip()
                        name_taken_since = name_taken_since or time.monotonic()
                        if time.monotonic() - name_taken_since > self.config.name_wait:
                            raise UsageError(
                                f"another provider named {self.config.name!r} is connected to the hub; "
                                "start this one with another --name",
                                ErrorCode.NAME_TAKEN,
                            ) from e
                    log.warning("the hub did not take us (%s); trying again in %g s", e.message, REFUSED_RETRY_SECONDS)
                    await asyncio.sleep(REFUSED_RETRY_SECONDS)
                    continue
                name_taken_since = None
                self._hub_minor = conn.session.minor
                # The hub now holds the list: it keeps what it holds, and sends a destroy for the
                # rest. Containers not on it are nobody's (and those of an earlier run of ours).
                for activity in [a for a in containers if a not in running]:
                    await self.handlers.remove(activity)
                log.info("joined the hub at %s", hubs.current)
                if running:
                    log.info("reported %d activities still running to the hub", len(running))
                keep = {container.id for container in containers.values()}
                removed = await self._pools.lifecycle_call(self.adapter.remove_stale, keep)
                if removed:
                    log.info("removed %d containers left by an earlier session", removed)
                started = time.monotonic()
                await self._session(conn)
                log.warning(
                    "lost the hub at %s after %.1f s; dialling again, keeping %d containers for %g s",
                    hubs.current,
                    time.monotonic() - started,
                    len(containers),
                    self.config.grace,
                )
                self._keep_until = time.monotonic() + self.config.grace
                self._keep()
        finally:
            # Left on purpose: said so, before the dialling ends (its cleanup would close with 1000).
            if ws is not None:
                await ws.close(CloseCode.GOING_AWAY, "the provider stops")
            await connections.aclose()
            # Stopped for good (or refused for good): nothing is kept for a hub any more. Not the
            # grace period's end, so not its warning: what it holds goes now, and the log says so.
            await self._stop_keeping(expire=False)
            if containers:
                log.info("stopping: removing %d containers", len(containers))
            for activity in list(containers):
                await self.handlers.remove(activity)

    def _keep(self) -> None:
        """Keep the containers until ``_keep_until``, then remove them (unless a hub takes them first)."""
        if self._keeping is None and self.handlers.containers:
            self._keeping = asyncio.create_task(self._expire_kept())

    async def _stop_keeping(self, *, expire: bool = True) -> None:
        """Stop the timer, waiting for a removal under way; with ``expire``, remove now what is past its time."""
        if self._keeping is not None:
            self._keeping.cancel()
            await asyncio.gather(self._keeping, return_exceptions=True)
            self._keeping = None
        if expire and self.handlers.containers and time.monotonic() >= self._keep_until:
            await self._expire_kept(0)

    async def _expire_kept(self, wait: float | None = None) -> None:
        """No hub took the containers back within the grace period: remove them."""
        await asyncio.sleep(max(self._keep_until - time.monotonic(), 0) if wait is None else wait)
        containers = self.handlers.containers
        if containers:
            log.warning("no hub came back within %g s; removing %d containers", self.config.grace, len(containers))
        for activity in list(containers):
            await self.handlers.remove(activity)

    def _dial_failed(self, url: str, error: Exception) -> Exception | None:
        """websockets' choice (dial again, or give up with ``error``), and a warning saying why,
        once for each new reason of each hub: an untrusted certificate is told, not retried in silence."""
        fatal = process_exception(error)
        reason = dial_error(url, error).message
        if fatal is None and reason != self._dial_failures.get(url):
            log.warning("%s; dialling again", reason)
        self._dial_failures[url] = reason
        return fatal

    async def _session(self, conn: Connection) -> None:
        """Serve one connection until it ends; every request still under way is then halted."""
        try:
            async with asyncio.TaskGroup() as tg:
                self.handlers.attach(conn, tg)
                reader = tg.create_task(conn.run())
                helpers = [tg.create_task(self._refresh_offer(conn))]
                if conn.session.minor >= 6:
                    helpers.append(tg.create_task(self._report_usage(conn)))
                await reader
                for helper in helpers:
                    helper.cancel()
                self.handlers.halt()
        finally:
            self.handlers.detach()

    async def _refresh_offer(self, conn: Connection) -> None:
        """Offer now (every session starts with one), then again whenever the local images change."""
        self._offered = ([], [])
        while True:
            self.images.changed.clear()
            images, cached = await self.images.offered()
            if conn.session.minor < 4:
                # A hub before 1.4 matches every rent against images alone (it knew no other
                # list): what was loaded from its store goes there, as before.
                images, cached = sorted({*images, *cached}), []
            offered = (images[:MAX_OFFERED], cached[:MAX_OFFERED])  # the protocol's limit of each
            if offered != self._offered:
                self._offered = offered
                offer = Offer(
                    type="offer",
                    id=conn.new_id(),
                    resources=self.offer_resources,
                    arch=self.arch,
                    labels=self.config.labels,
                    images=offered[0],
                    cached=offered[1] or None,
                    root=True if self.config.allow_root and conn.session.minor >= 2 else None,
                    price=self.config.price if conn.session.minor >= 5 else None,
                    outbound=self.config.outbound.rules if conn.session.minor >= 7 else None,
                )
                await conn.request(offer)
                log.info(
                    "offered %s with %d images (%d loaded from the hub's store) at %s",
                    self.offer_resources,
                    len(offered[0]),
                    len(offered[1]),
                    format_price(offer.price),
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IMAGE_REFRESH_SECONDS):
                    await self.images.changed.wait()  # set after a load or an eviction

    async def _report_usage(self, conn: Connection) -> None:
        """Tell the hub what the containers use (1.6): every :data:`USAGE_SECONDS` while there are
        any, and once, empty, as soon as the last one went."""
        told = False  # the last usage sent listed containers
        while True:
            early = True  # wake before the tick to say the last container went
            probes = self.handlers.probes()
            if probes or told:
                usage = await self._pools.lifecycle_call(measure, probes)
                self.handlers.measured(usage)
                try:
                    sent = conn.notify(Usage(type="usage", activities=usage_entries(usage, MAX_USAGE_ACTIVITIES)))
                except KilnError:
                    if conn.session.closed is None:
                        raise
                    return  # the connection ended: the reader ends the session
                if sent:
                    told = bool(usage)
                else:
                    early = False  # the socket is backed up: the next tick tries again
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(USAGE_SECONDS):
                    # At once if the last one went while we read, else when it goes.
                    while not (early and told and not self.handlers.containers):
                        self.handlers.removed.clear()
                        await self.handlers.removed.wait()

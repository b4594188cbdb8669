"""The provider service: dial the hub, offer capacity, run each activity as a container.

One activity is one hardened container (see :mod:`kiln_provider.docker_adapter`). The hub
sends ``create``, ``exec``, ``upload``, ``download``, ``cancel`` and ``destroy``; each request
runs as a task of the session's task group and ends with exactly one reply.

It offers only the images its operator allows (``--images`` patterns, the ``org.kiln.offer``
label) and, apart (``Offer.cached``, 1.4), those it loaded from the hub's store
(:mod:`kiln_provider.offering`); a ``create`` without a manifest that names anything else is
answered as if Docker lacked the image.

A ``create`` that brings a ``manifest`` (the hub stores the image, protocol 1.1) for an image
Docker lacks is answered first with ``want``: the blobs Docker lacks, which then come on the
create's stream and go straight into ``docker load`` (:mod:`kiln_provider.image_archive`).
One image loads once at a time; creates of it meanwhile wait for that load. What was loaded
is recorded (:mod:`kiln_provider.image_cache`) and evicted, least recently used first, past
the ``--image-cache`` budget. With ``--pull``, a create naming an image Docker lacks (and no
manifest) pulls it from its registry. A ``wss://`` hub is verified against ``--ca`` (else the
system's trust store); one whose certificate is not trusted is dialled again, and the log
says why.

When the connection drops, every request under way is cancelled, and the provider dials
again (websockets' reconnecting iterator, with backoff). Its containers stay, for up to
``grace`` seconds: a hub that restarted holds their leases for their requestors, and the
provider's ``hello`` (1.3) lists them, so the hub keeps those it holds and has the
provider destroy the rest. A hub that was not dialled back in time, or that speaks
below 1.3, gets no list: the containers are removed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.client import backoff, process_exception
from websockets.frames import CloseCode

from kiln.connection import (
    WEBSOCKET_OPTIONS,
    Connection,
    Incoming,
    Outgoing,
    check_hub_url,
    dial_error,
    tls_options,
)
from kiln.protocol import limits
from kiln.protocol.codes import ErrorCode
from kiln.protocol.errors import (
    Cancelled,
    ConnectionClosed,
    KilnError,
    Unauthorized,
    UnsupportedVersion,
    UsageError,
)
from kiln.protocol.messages import (
    MAX_OFFERED,
    MAX_REPORTED,
    Blob,
    Create,
    Destroy,
    Done,
    Download,
    DownloadInfo,
    Exec,
    ExecResult,
    Offer,
    Resources,
    Upload,
    Want,
)
from kiln.protocol.session import CancelRequested, Event, Notified, Reply, Requested
from kiln.protocol.sizes import format_size
from kiln_provider.agent import AgentChannel
from kiln_provider.docker_adapter import ContainerSpec, DockerAdapter, DownloadStream, ImageFacts, Started
from kiln_provider.errors import DockerFailed, ImageMissing, ImageTooLarge, ProviderError, TransferBroken, error_reply
from kiln_provider.image_archive import LoadArchive, held_layers, wanted
from kiln_provider.image_cache import DEFAULT_BUDGET, ImageCache, default_data_dir, write_atomically
from kiln_provider.offering import Allowed
from kiln_provider.volume import MAX_VOLUMES

log = logging.getLogger("kiln.provider")

T = TypeVar("T")

MAX_OPS_PER_ACTIVITY: Final = 32
IMAGE_REFRESH_SECONDS: Final = 5.0
HAND_OFF_CHUNKS: Final = 8
"""Most chunks of an upload or image passed to Docker's thread at once (2 MiB beyond the window)."""
RECONNECT_DELAYS: Final = partial(backoff, initial_delay=0.5, min_delay=0.25, max_delay=5.0, factor=2.0)
"""Dialling again: at once after a lost session, then within 0.5 s, then 0.25 s doubling up to 5 s."""
REFUSED_RETRY_SECONDS: Final = 2.0
"""How long to wait after a hub refused us for a reason that passes (our old session still seen, say)."""


@dataclass(frozen=True)
class ProviderConfig:
    hub: str
    name: str
    cpus: float | None = None
    memory: int | None = None
    storage: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    pids_limit: int = 256
    stream_idle_timeout: float = 30.0
    """A transfer that moves nothing for this long is aborted and its Docker stream closed."""
    name_wait: float = 30.0
    """How long to keep trying while the hub says another provider holds our name."""
    image_cache: int = DEFAULT_BUDGET
    """Bytes of images loaded for requestors to keep; past it the least recently used go."""
    data_dir: Path | None = None
    """Where the record of loaded images lives (default: :func:`default_data_dir`)."""
    pull: bool = False
    """Pull an image Docker lacks from its registry when a create names it without a manifest."""
    allow_root: bool = False
    """Let a requestor that asks for it run its commands as root (uid 0, still without capabilities)."""
    ca: Path | None = None
    """The PEM file of the CA that signed a ``wss://`` hub's certificate (None: the system's trust store)."""
    grace: float = 120.0
    """How long containers outlive a lost hub connection, for a restarted hub to hand them back."""
    max_containers: int = MAX_VOLUMES
    """The most containers (each with a volume, a loop device) at once; a create past it is refused."""
    images: tuple[str, ...] = ()
    """Patterns (fnmatch) of the tags of local images to offer, besides labelled ones (``org.kiln.offer``)."""


@dataclass(eq=False)
class Operation:
    """One request being served: its task, and how to unblock it before cancelling (a create
    that starts receiving an image sets ``stop`` then)."""

    task: asyncio.Task[None]
    stop: Callable[[], None]

    def halt(self) -> None:
        self.stop()
        self.task.cancel()


@dataclass
class Container:
    id: str
    agent: AgentChannel
    env: dict[str, str]
    """The environment every command starts from (the image's), under the request's own."""
    uid: int
    gid: int
    """Who its commands run as (the image's USER, else nobody), and who owns what is uploaded."""
    operations: set[Operation] = field(default_factory=set)
    archive: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by an upload or download for its whole Docker stream.

    Docker locks a container while one of its archives streams: every other archive call
    and every exec on it blocks in dockerd meanwhile. Waiting here instead, in the event
    loop, holds no thread, so a stalled stream costs its own activity time and nothing else.
    """


class Pools:
    """Threads for blocking Docker calls, by kind, so that no kind can starve another.

    Lifecycle calls (create, remove, stats, images) are short and must never wait behind
    transfers; a command holds a thread only to start and to collect its end; a transfer
    holds one only while bytes move (never while it waits for the other side).
    """

    def __init__(self) -> None:
        self.lifecycle = ThreadPoolExecutor(max_workers=8, thread_name_prefix="kiln-lifecycle")
        self.commands = ThreadPoolExecutor(max_workers=32, thread_name_prefix="kiln-command")
        self.transfers = ThreadPoolExecutor(max_workers=128, thread_name_prefix="kiln-transfer")


class ProviderRuntime:
    """Serves one hub until cancelled. Call :meth:`run`."""

    def __init__(self, config: ProviderConfig, adapter: DockerAdapter) -> None:
        self.config = config
        self.adapter = adapter
        self.offer_resources = self._capacity()
        # Volumes are made only within the offer: a hub that sells more gets refusals, not disk.
        adapter.volumes.bound(self.offer_resources.storage, config.max_containers)
        self.arch = adapter.host_info().arch
        self._conn: Connection | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._containers: dict[str, Container] = {}
        self._by_request: dict[int, Operation] = {}
        self._allowed = Allowed(config.images)
        self._offered: tuple[list[str], list[str]] = ([], [])  # (images, cached) of the last offer
        self._images_changed = asyncio.Event()
        self._pools = Pools()
        self.cache = ImageCache.open(config.data_dir or default_data_dir(config.name), config.image_cache)
        self._image_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._pinned: Counter[str] = Counter()  # images creates are about to use: never evicted
        self._loading = 0  # bytes of the image cache's budget that loads in progress hold
        self._evicting = asyncio.Lock()
        self._saving = asyncio.Lock()
        self._dial_failure: str | None = None  # why the last dial failed, once told
        self._hub_minor = 0  # the minor version the last welcome spoke
        self._keeping: asyncio.Task[None] | None = None  # removes the containers kept if no hub comes in time
        self._keep_until = 0.0  # when the containers kept since the hub was lost are to go

    async def _on(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking Docker call on one of the pools."""
        return await asyncio.get_running_loop().run_in_executor(pool, partial(fn, *args))

    async def _docker(self, fn: Callable[..., T], *args: object) -> T:
        """Run a short Docker call (create, remove, stats, images) on the lifecycle threads."""
        return await self._on(self._pools.lifecycle, fn, *args)

    def _capacity(self) -> Resources:
        """What to offer: what was asked for, never more than the host has (storage: the free
        space of the disk where containers' volumes live)."""
        host = self.adapter.host_info()
        free_disk = self.adapter.storage_free()
        want = self.config
        cpus = min(want.cpus if want.cpus is not None else float(host.cpus), float(host.cpus))
        memory = min(want.memory if want.memory is not None else host.memory * 3 // 4, host.memory)
        storage = min(want.storage if want.storage is not None else 10 * 2**30, free_disk)
        for label, asked, got in (("cpus", want.cpus, cpus), ("memory", want.memory, memory),
                                  ("storage", want.storage, storage)):  # fmt: skip
            if asked is not None and asked > got:
                log.warning("asked to offer %s=%s but the host has only %s; offering %s", label, asked, got, got)
        return Resources(cpus=cpus, memory=memory, storage=storage)

    async def run(self) -> None:
        """Dial the hub, serve, and dial again whenever the connection ends.

        Raises :class:`~kiln.protocol.errors.Unauthorized` or ``UnsupportedVersion`` when the
        hub refuses us for good, and :class:`~kiln.protocol.errors.UsageError` for a URL that is
        not a hub's or when another provider keeps our name for longer than ``name_wait``.
        Cancelled (the provider stops), it says goodbye to the hub (close code 1001, going
        away: the hub logs a clean departure), then removes its containers.
        """
        name_taken_since: float | None = None
        check_hub_url(self.config.hub)
        tls = tls_options(self.config.hub, self.config.ca)  # a bad --ca fails before any dial
        await self._tidy_cache()
        ws: ClientConnection | None = None
        try:
            async for ws in connect(self.config.hub, reconnect_delays=RECONNECT_DELAYS,
                                    process_exception=self._dial_failed, **tls, **WEBSOCKET_OPTIONS):  # fmt: skip
                self._dial_failure = None
                # No removal may run while the hello lists what is kept: the timer stops here
                # (what is past its time goes now), and starts again if the hub refuses us.
                await self._stop_keeping()
                # Only a hub that spoke 1.3 knows the list (an older one would refuse the hello).
                running = self._running() if self._hub_minor >= 3 else []
                try:
                    conn = await Connection.handshake(
                        ws, role="provider", name=self.config.name, token=self.config.token, on_event=self._on_event,
                        activities=running or None,
                    )  # fmt: skip
                except (Unauthorized, UnsupportedVersion):
                    raise
                except KilnError as e:
                    self._keep()
                    if e.code == ErrorCode.BAD_MESSAGE:
                        self._hub_minor = 0  # a hub rolled back below 1.3: dial again without the list
                    if e.code == ErrorCode.NAME_TAKEN:
                        # Our own earlier session, not yet seen gone by the hub; or another provider.
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
                for activity in [a for a in self._containers if a not in running]:
                    await self._remove(activity)
                if running:
                    log.info("reported %d activities still running to the hub", len(running))
                keep = {container.id for container in self._containers.values()}
                removed = await self._docker(self.adapter.remove_stale, keep)
                if removed:
                    log.info("removed %d containers left by an earlier session", removed)
                started = time.monotonic()
                await self._session(conn)
                log.warning("lost the hub after %.1f s; dialling again, keeping %d containers for %g s",
                            time.monotonic() - started, len(self._containers), self.config.grace)  # fmt: skip
                self._keep_until = time.monotonic() + self.config.grace
                self._keep()
        finally:
            # Left on purpose: said so, not left to websockets' iterator (its cleanup closes with 1011).
            if ws is not None:
                await ws.close(CloseCode.GOING_AWAY, "the provider stops")
            # Stopped for good (or refused for good): nothing is kept for a hub any more. Not the
            # grace period's end, so not its warning: what it holds goes now, and the log says so.
            await self._stop_keeping(expire=False)
            if self._containers:
                log.info("stopping: removing %d containers", len(self._containers))
            for activity in list(self._containers):
                await self._remove(activity)

    def _running(self) -> list[str]:
        """The activities whose containers still run (a broken one is no one's: removed later), as
        many as a hello may list (the rest are removed when the hub welcomes us)."""
        return sorted(a for a, container in self._containers.items() if container.agent.broken is None)[:MAX_REPORTED]

    def _keep(self) -> None:
        """Keep the containers until ``_keep_until``, then remove them (unless a hub takes them first)."""
        if self._keeping is None and self._containers:
            self._keeping = asyncio.create_task(self._expire_kept())

    async def _stop_keeping(self, *, expire: bool = True) -> None:
        """Stop the timer, waiting for a removal under way; with ``expire``, remove now what is past its time."""
        if self._keeping is not None:
            self._keeping.cancel()
            await asyncio.gather(self._keeping, return_exceptions=True)
            self._keeping = None
        if expire and self._containers and time.monotonic() >= self._keep_until:
            await self._expire_kept(0)

    async def _expire_kept(self, wait: float | None = None) -> None:
        """No hub took the containers back within the grace period: remove them."""
        await asyncio.sleep(max(self._keep_until - time.monotonic(), 0) if wait is None else wait)
        if self._containers:
            log.warning("no hub came back within %g s; removing %d containers", self.config.grace,
                        len(self._containers))  # fmt: skip
        for activity in list(self._containers):
            await self._remove(activity)

    async def _remove(self, activity: str) -> None:
        """Remove the container of ``activity`` (untracked first; once begun, finished even if cancelled)."""
        container = self._containers.pop(activity, None)
        if container is not None:
            await asyncio.shield(self._remove_container(container))

    async def _remove_container(self, container: Container) -> None:
        await container.agent.close()
        await self._docker(self.adapter.remove, container.id)

    def _dial_failed(self, error: Exception) -> Exception | None:
        """websockets' choice (dial again, or give up with ``error``), and a warning saying why,
        once for each new reason: an untrusted certificate is told, not retried in silence."""
        fatal = process_exception(error)
        reason = dial_error(self.config.hub, error).message
        if fatal is None and reason != self._dial_failure:
            log.warning("%s; dialling again", reason)
        self._dial_failure = reason
        return fatal

    async def _session(self, conn: Connection) -> None:
        self._conn = conn
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                reader = tg.create_task(conn.run())
                refresher = tg.create_task(self._refresh_offer(conn))
                await reader
                refresher.cancel()
                for operation in list(self._by_request.values()):
                    operation.halt()
        finally:
            self._tg = None
            self._by_request.clear()

    async def _refresh_offer(self, conn: Connection) -> None:
        """Offer now (every session starts with one), then again whenever the local images change."""
        self._offered = ([], [])
        while True:
            self._images_changed.clear()
            images, cached = self._allowed.offer(await self._docker(self.adapter.images), self.cache.loaded)
            if conn.session.minor < 4:
                # A hub before 1.4 matches every rent against images alone (it knew no other
                # list): what was loaded from its store goes there, as before.
                images, cached = sorted({*images, *cached}), []
            offered = (images[:MAX_OFFERED], cached[:MAX_OFFERED])  # the protocol's limit of each
            if offered != self._offered:
                self._offered = offered
                offer = Offer(
                    type="offer", id=conn.new_id(), resources=self.offer_resources,
                    arch=self.arch, labels=self.config.labels, images=offered[0], cached=offered[1] or None,
                    root=True if self.config.allow_root and conn.session.minor >= 2 else None,
                )  # fmt: skip
                await conn.request(offer)
                log.info("offered %s with %d images (%d loaded from the hub's store)", self.offer_resources,
                         len(offered[0]), len(offered[1]))  # fmt: skip
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IMAGE_REFRESH_SECONDS):
                    await self._images_changed.wait()  # set after a load or an eviction

    # --- dispatch (called by the connection's reader: must not block) ------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Requested):
            self._take(event.message)
        elif isinstance(event, CancelRequested):
            operation = self._by_request.get(event.request)
            if operation is not None:
                operation.halt()
        elif isinstance(event, Notified):
            log.warning("the hub reports %s: %s", event.message.code, getattr(event.message, "message", ""))

    def _take(self, message: Create | Destroy | Exec | Upload | Download) -> None:
        if isinstance(message, Create):
            self._spawn(message.id, None, self._create(message))
        elif isinstance(message, Destroy):
            self._cancel_activity(message.activity)
            self._spawn(message.id, None, self._destroy(message))
        elif isinstance(message, Exec):
            stdin = self._c.incoming(message.id, self._upload_window) if message.stdin else None
            output = self._c.outgoing(message.id) if message.stream else None

            def stop_exec() -> None:
                for end in (stdin, output):
                    if end is not None:
                        end.fail(Cancelled("exec cancelled"))

            self._spawn(message.id, message.activity, self._exec(message, stdin, output), stop_exec)
        elif isinstance(message, Upload):
            incoming = self._c.incoming(message.id, self._upload_window)
            stop_upload = partial(incoming.fail, Cancelled("upload cancelled"))
            self._spawn(message.id, message.activity, self._upload(message, incoming), stop_upload)
        else:
            outgoing = self._c.outgoing(message.id)
            stop_download = partial(outgoing.fail, Cancelled("download cancelled"))
            self._spawn(message.id, message.activity, self._download(message, outgoing), stop_download)

    @property
    def _upload_window(self) -> int:
        return min(limits.WINDOW_CHUNKS, self._c.session.limits.max_window)

    @property
    def _image_window(self) -> int:
        # The widest window the hub allows (64 chunks, 16 MiB held here at most): docker load
        # takes the bytes faster than half of 16 chunks' credit makes the round trip through
        # the hub, so the narrower window of uploads halved a 200 MiB pull's throughput
        # (benchmarks/images.py). The hub still passes on only the credit it can buffer.
        return min(limits.MAX_WINDOW, self._c.session.limits.max_window)

    @property
    def _c(self) -> Connection:
        assert self._conn is not None
        return self._conn

    def _spawn(
        self,
        request_id: int,
        activity: str | None,
        work: Awaitable[Reply],
        stop: Callable[[], None] = lambda: None,
    ) -> None:
        assert self._tg is not None
        container = self._containers.get(activity) if activity is not None else None
        if activity is not None and container is None:
            self._refuse(request_id, work, ErrorCode.UNKNOWN_ACTIVITY, f"no container for activity {activity}")
            return
        if container is not None and len(container.operations) >= MAX_OPS_PER_ACTIVITY:
            text = f"more than {MAX_OPS_PER_ACTIVITY} operations at once on activity {activity}"
            self._refuse(request_id, work, ErrorCode.TOO_MANY, text)
            return
        task = self._tg.create_task(self._serve(request_id, work))
        operation = self._by_request[request_id] = Operation(task, stop)
        if container is not None:
            container.operations.add(operation)
            task.add_done_callback(lambda _: container.operations.discard(operation))

    def _refuse(self, request_id: int, work: Awaitable[Reply], code: ErrorCode, text: str) -> None:
        """Answer a request with an error without starting its work."""
        assert self._tg is not None
        if isinstance(work, Coroutine):
            work.close()
        self._tg.create_task(self._send_quietly(error_reply(request_id, ProviderError(text, code))))

    async def _serve(self, request_id: int, work: Awaitable[Reply]) -> None:
        """Run one request to its one reply; a failure becomes an ``error`` reply."""
        try:
            reply: Reply = await work
        except KilnError as e:
            reply = error_reply(request_id, e)
        except asyncio.CancelledError as e:
            await self._send_quietly(error_reply(request_id, e))
            raise
        except Exception as e:  # the request boundary: a bug must not take the provider down
            log.exception("request %d failed unexpectedly", request_id)
            reply = error_reply(request_id, e)
        finally:
            self._by_request.pop(request_id, None)
        await self._send_quietly(reply)

    async def _send_quietly(self, message: Reply) -> None:
        try:
            await self._c.reply(message)
        except ConnectionClosed:
            pass  # the hub already reported our loss to whoever waited
        except KilnError as e:  # a reply the session refuses is a bug here, not a reason to stop serving
            log.error("could not answer request %s: %s", message.re, e.message)

    def _cancel_activity(self, activity: str) -> None:
        container = self._containers.get(activity)
        if container is None:
            return
        for operation in list(container.operations):
            operation.halt()

    # --- the requests -----------------------------------------------------------------------

    async def _create(self, message: Create) -> Reply:
        if message.user == "root" and not self.config.allow_root:
            raise Unauthorized(f"provider {self.config.name!r} does not let commands run as root (no --allow-root)")
        async with self._image_for(message) as (image, received):
            spec = ContainerSpec(
                activity=message.activity,
                image=image.id,
                cpus=message.resources.cpus,
                memory=message.resources.memory,
                # An older hub sends 0 for a rent that named no storage (and reserved nothing): the default.
                storage=message.resources.storage or limits.DEFAULT_STORAGE,
                pids_limit=self.config.pids_limit,
                root=message.user == "root",
            )
            try:
                started = await self._start(spec)
            except ImageMissing as e:
                raise ImageMissing(
                    f"provider {self.config.name!r} lost the image {message.image!r}: {e.message}"
                ) from e
        container_id = started.id
        agent = AgentChannel(started.channel, f"{message.activity} ({container_id[:12]})", started.uid, started.gid)
        try:
            await agent.open()
        except BaseException:
            await agent.close()
            await self._docker(self.adapter.remove, container_id)
            raise
        self._containers[message.activity] = Container(container_id, agent, started.env, started.uid, started.gid)
        log.info("activity %s: container %s of %s", message.activity, container_id[:12], message.image)
        if self.cache.touch(image.id):
            await self._save_cache()
        return Done(type="done", re=message.id, bytes=received)

    async def _start(self, spec: ContainerSpec) -> Started:
        """``adapter.create`` on a lifecycle thread. Cancelled (the hub gone, say), the create
        runs on in its thread: what it makes is removed once it is done, volume and all."""
        future = asyncio.get_running_loop().run_in_executor(self._pools.lifecycle, self.adapter.create, spec)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(self._discard)
            raise

    def _discard(self, future: asyncio.Future[Started]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        started = future.result()
        started.channel.close()  # the agent sees its channel close, and ends
        self._pools.lifecycle.submit(self.adapter.remove, started.id)

    # --- images -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _image_for(self, message: Create) -> AsyncIterator[tuple[ImageFacts, int | None]]:
        """The create's image, in Docker (loaded from the hub's blobs, or pulled, if need be), and
        the image bytes received for it; never evicted until the block ends."""
        self._pinned[message.image] += 1
        pinned = [message.image]
        try:
            if message.manifest is not None:
                self._pinned[message.manifest.config.digest] += 1
                pinned.append(message.manifest.config.digest)
                image, received = await self._provide(message)
            else:
                image, received = await self._local_or_pulled(message.image), None
            self._pinned[image.id] += 1
            pinned.append(image.id)
            yield image, received
        finally:
            self._pinned.subtract(pinned)
            self._pinned += Counter()  # drops what fell to zero

    async def _local_or_pulled(self, ref: str) -> ImageFacts:
        """The image a create without a manifest names: one this provider offers, or (``--pull``)
        one Docker lacks, pulled. An image on the host that it does not offer is never run (nor
        its tag pulled over): it is missing, in the same words."""
        missing = ImageMissing(
            f"provider {self.config.name!r} does not offer the image {ref!r} (its operator allows images with "
            "--images or the label org.kiln.offer=<its name>; started with --pull it pulls what Docker lacks)"
        )
        found = await self._docker(self.adapter.image, ref)
        if found is not None:
            if self._allowed.lets_run(ref, found.local, self.cache.loaded):
                return found
            raise missing
        if not self.config.pull:
            raise missing
        async with self._image_lock(ref):
            found = await self._docker(self.adapter.image, ref)
            if found is not None:  # pulled by another create meanwhile, or put there by someone else
                if self._allowed.lets_run(ref, found.local, self.cache.loaded):
                    return found
                raise missing
            before = {image.id for image in await self._docker(self.adapter.images)}
            log.info("pulling %s", ref)
            started = time.monotonic()
            pulled = await self._on(self._pools.transfers, self.adapter.pull, ref)
            log.info("pulled %s (%s) in %.1f s", ref, pulled.id[:19], time.monotonic() - started)
            if pulled.id not in before:  # an image that was here already (under another tag) is not ours
                await self._loaded(pulled, pulled=True)
            return pulled

    async def _provide(self, message: Create) -> tuple[ImageFacts, int]:
        """Make Docker hold the image of a create that brings a manifest: (it, bytes received)."""
        assert message.manifest is not None
        image_id = message.manifest.config.digest
        if (found := await self._docker(self.adapter.image, image_id)) is not None:
            return found, 0
        # One load per image: a second create waits for it, then finds the image (or, if
        # that load failed, loads it itself).
        async with self._image_lock(image_id):
            if (found := await self._docker(self.adapter.image, image_id)) is not None:
                return found, 0
            return await self._load(message)

    @contextlib.asynccontextmanager
    async def _image_lock(self, image: str) -> AsyncIterator[None]:
        lock, users = self._image_locks.get(image, (asyncio.Lock(), 0))
        self._image_locks[image] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._image_locks[image]
            if users == 1:
                del self._image_locks[image]
            else:
                self._image_locks[image] = (lock, users - 1)

    async def _load(self, message: Create) -> tuple[ImageFacts, int]:
        """Ask the hub for the blobs Docker lacks (``want``) and feed them to ``docker load``."""
        manifest = message.manifest
        assert manifest is not None
        chains = await self._docker(self.adapter.layer_chains)
        held = held_layers([layer.digest for layer in manifest.layers], chains)
        blobs = wanted(manifest, held)
        declared = sum(layer.expanded or 0 for layer in blobs[1:])  # the hub's measure (1.4), if it sent one
        # Loads at once share the budget: each holds what the hub declared (its layers may not
        # pass it) and may extract at most what the others leave.
        room = self.cache.budget - self._loading
        if declared > room:
            loading = f" ({format_size(self._loading)} of it held by loads in progress)" if self._loading else ""
            raise ImageTooLarge(
                f"provider {self.config.name!r} keeps {format_size(self.cache.budget)} of images{loading}; this one "
                f"takes {format_size(declared)} once extracted"
            )
        self._loading += declared
        try:
            return await self._load_within(message, blobs, held, room)
        finally:
            self._loading -= declared

    async def _load_within(self, message: Create, blobs: list[Blob], held: int, room: int) -> tuple[ImageFacts, int]:
        """:meth:`_load` once the image's room is held: ``room`` bytes at most are extracted."""
        manifest = message.manifest
        assert manifest is not None
        await self._c.reply(Want(type="want", re=message.id, blobs=[blob.digest for blob in blobs]))
        incoming = self._c.incoming(message.id, self._image_window)
        if (operation := self._by_request.get(message.id)) is not None:
            operation.stop = partial(incoming.fail, Cancelled("create cancelled"))
        loop = asyncio.get_running_loop()
        idle = self.config.stream_idle_timeout
        total = sum(blob.size for blob in blobs)
        log.info("activity %s: loading %s, %d bytes in %d blobs (%d layers here already)",
                 message.activity, manifest.config.digest[:19], total, len(blobs), held)  # fmt: skip
        started = time.monotonic()
        # Credit is granted (and the data invited) only now; until its first chunk comes, the
        # load holds no thread and no Docker connection.
        first = await _next_within(incoming, idle, "image")
        # Metered again on the way in: whatever the hub said, no more than the cache budget is extracted.
        chunks = _chunks_in_thread(first, incoming, idle, "image", loop)
        archive = LoadArchive(manifest, blobs, chunks, limit=room)
        await self._on(self._pools.transfers, self.adapter.load, archive)
        image = await self._docker(self.adapter.image, manifest.config.digest)
        if image is None:
            raise DockerFailed(f"docker load took the image {manifest.config.digest} but Docker does not hold it")
        seconds = time.monotonic() - started
        log.info("loaded %s: %d bytes in %.1f s (%.0f MB/s)", image.id[:19], archive.received, seconds,
                 archive.received / 1e6 / max(seconds, 1e-3))  # fmt: skip
        await self._loaded(image, archive.expanded)
        return image, archive.received

    async def _loaded(self, image: ImageFacts, expanded: int = 0, *, pulled: bool = False) -> None:
        """Record an image loaded for requestors (from the hub's store, or ``pulled``), at the larger
        of Docker's size for it and what its layers were metered to take; make room for it, and offer it."""
        self.cache.add(image.id, max(image.size, expanded), image.tags, pulled=pulled)
        self._images_changed.set()
        await self._evict()

    async def _evict(self) -> None:
        """Remove recorded images, least recently used first, until they fit the budget; never one
        a container uses or a create is about to. Saves the record."""
        async with self._evicting:
            in_use = await self._docker(self.adapter.images_in_use)
            for image_id in self.cache.victims(in_use, keep=set(self._pinned)):
                recorded = self.cache.images[image_id]
                found = await self._docker(self.adapter.image, image_id)
                if found is None:
                    self.cache.forget(image_id)  # removed by someone else
                elif not set(found.tags) <= set(recorded.tags):
                    log.info("image %s was tagged %s here: the operator's now, not evicted",
                             image_id[:19], ", ".join(found.tags))  # fmt: skip
                    self.cache.forget(image_id)
                elif await self._docker(self.adapter.remove_image, image_id, found.tags):
                    log.info("evicted image %s (%d bytes, last used %s)", image_id[:19], recorded.size,
                             time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(recorded.last_used)))  # fmt: skip
                    self.cache.forget(image_id)
                    self._images_changed.set()
            await self._save_cache()
        if self.cache.total > self.cache.budget:
            log.warning("the images loaded here take %d bytes, past the budget of %d: the rest are in use",
                        self.cache.total, self.cache.budget)  # fmt: skip

    async def _tidy_cache(self) -> None:
        """At start: forget recorded images Docker no longer holds, then evict past the budget."""
        for image_id in list(self.cache.images):
            if await self._docker(self.adapter.image, image_id) is None:
                self.cache.forget(image_id)
        await self._evict()

    async def _save_cache(self) -> None:
        async with self._saving:  # one writer at a time, each writing the record as it is now
            await self._on(self._pools.lifecycle, write_atomically, self.cache.path, self.cache.snapshot())

    async def _destroy(self, message: Destroy) -> Reply:
        container = self._containers.pop(message.activity, None)
        if container is None:
            return Done(type="done", re=message.id)
        cpu: float | None = None
        try:
            if container.operations:
                await asyncio.wait([operation.task for operation in container.operations], timeout=5)
            try:
                cpu = await self._docker(self.adapter.cpu_seconds, container.id)
            except KilnError:
                pass  # the container died on its own; removing it is what matters
        finally:
            # Untracked from here on, so removed whatever happens (even when cancelled).
            await asyncio.shield(self._remove_container(container))
        log.info("activity %s: container removed (%.2f CPU-seconds)", message.activity, cpu or 0.0)
        return Done(type="done", re=message.id, cpu_seconds=cpu)

    def _container(self, activity: str) -> Container:
        return self._containers[activity]

    async def _exec(self, message: Exec, stdin: Incoming | None, output: Outgoing | None) -> Reply:
        container = self._container(message.activity)
        idle = self.config.stream_idle_timeout

        async def sink(fd: int, data: bytes) -> None:
            assert output is not None
            try:
                async with asyncio.timeout(idle):
                    await output.send(bytes((fd,)), data)  # one DATA frame: the sink's pieces fit one
            except TimeoutError:
                raise TransferBroken(f"no credit for the output for {idle:g} s: the exec was abandoned") from None

        # Through the container's agent: no docker exec, no thread, and a timeout or a cancel
        # kills the command's whole tree (even what left its session).
        outcome = await container.agent.run(
            message.argv,
            {**container.env, **message.env},
            message.workdir,
            message.timeout,
            self._c.session.limits.max_output_bytes,
            stdin=stdin,
            sink=sink if output is not None else None,
            sink_chunk=self._c.session.limits.chunk_bytes - 1,
        )
        if output is not None:
            await output.end()
        return ExecResult(
            type="exec_result",
            re=message.id,
            exit_code=outcome.exit_code,
            timed_out=outcome.timed_out,
            stdout=base64.b64encode(outcome.stdout).decode(),
            stderr=base64.b64encode(outcome.stderr).decode(),
            stdout_truncated=outcome.stdout_truncated,
            stderr_truncated=outcome.stderr_truncated,
            duration=outcome.duration,
        )

    async def _upload(self, message: Upload, incoming: Incoming) -> Reply:
        container = self._container(message.activity)
        loop = asyncio.get_running_loop()
        idle = self.config.stream_idle_timeout
        async with container.archive:
            # Credit is granted (and the data invited) only now; until its first chunk comes,
            # the upload holds no thread and no Docker connection.
            first = await _next_within(incoming, idle, "upload")
            written = await self._on(
                self._pools.transfers, self.adapter.put_file, container.id, message.path, message.size,
                message.mode, _chunks_in_thread(first, incoming, idle, "upload", loop), (container.uid, container.gid),
            )  # fmt: skip
        return Done(type="done", re=message.id, bytes=written)

    async def _download(self, message: Download, outgoing: Outgoing) -> Reply:
        container = self._container(message.activity)
        pool = self._pools.transfers
        idle = self.config.stream_idle_timeout
        async with container.archive:
            stream = await self._on(pool, self.adapter.open_download, container.id, message.path)
            reading: Future[bytes | None] | None = None
            total = 0
            try:
                info = DownloadInfo(type="download_info", re=message.id, kind=stream.kind, size=stream.size,
                                    mode=stream.mode & 0o7777)  # fmt: skip
                await self._c.reply(info)
                while True:
                    # A thread only while Docker hands over a chunk; waiting for credit takes none.
                    reading = pool.submit(next, stream.chunks, None)
                    chunk = await asyncio.wrap_future(reading)
                    if chunk is None:
                        break
                    try:
                        async with asyncio.timeout(idle):
                            await outgoing.write(chunk)
                    except TimeoutError:
                        raise TransferBroken(f"no credit for {idle:g} s: the download was abandoned") from None
                    total += len(chunk)
            finally:
                # Closed in a thread once no thread is inside the generator: that closes the
                # archive Docker holds open (and the container's lock with it).
                await self._on(pool, _close_after, reading, stream)
        await outgoing.end()
        return Done(type="done", re=message.id, bytes=total)


def _close_after(reading: Future[bytes | None] | None, stream: DownloadStream) -> None:
    if reading is not None:
        with contextlib.suppress(BaseException):
            reading.result()
    stream.close()


async def _next_within(incoming: Incoming, seconds: float, what: str) -> memoryview | None:
    """The next chunk of an upload (or image), None at its end; TransferBroken when nothing comes for ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            return await anext(incoming)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise TransferBroken(f"no data for {seconds:g} s: the {what} was abandoned") from None


async def _ready_chunks(incoming: Incoming, seconds: float, what: str) -> list[memoryview]:
    """The next chunk (see :func:`_next_within`) and those that came with it, at most
    :data:`HAND_OFF_CHUNKS` in all; [] at the stream's end."""
    chunk = await _next_within(incoming, seconds, what)
    batch = [] if chunk is None else [chunk]
    while batch and incoming.ready and len(batch) < HAND_OFF_CHUNKS:
        if (chunk := await _next_within(incoming, seconds, what)) is None:
            break
        batch.append(chunk)
    return batch


def _chunks_in_thread(
    first: memoryview | None, incoming: Incoming, seconds: float, what: str, loop: asyncio.AbstractEventLoop
) -> Iterator[memoryview]:
    """The chunks of an upload (or image) for a thread (Docker's blocking calls): ``first``, then
    the rest, taken from the event loop in batches (one hand-off between threads per batch,
    not per chunk: a load spent more time passing chunks than hashing them)."""
    if first is None:
        return
    yield first
    while batch := asyncio.run_coroutine_threadsafe(_ready_chunks(incoming, seconds, what), loop).result():
        yield from batch


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)

"""The provider service: dial the hub, offer capacity, run each activity as a container.

One activity is one hardened container (see :mod:`kiln_provider.docker_adapter`). The hub
sends ``create``, ``exec``, ``upload``, ``download``, ``cancel`` and ``destroy``; each request
runs as a task of the session's task group and ends with exactly one reply. When the
connection drops, every task is cancelled, every container removed, and the provider
dials again (websockets' reconnecting iterator, with backoff): the hub has already told
the requestors their activities are lost.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Final, TypeVar

from websockets.asyncio.client import connect
from websockets.client import backoff
from websockets.exceptions import InvalidURI

from kiln.connection import WEBSOCKET_OPTIONS, Connection, Incoming, Outgoing
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
)
from kiln.protocol.session import CancelRequested, Event, Notified, Reply, Requested
from kiln_provider.docker_adapter import ContainerSpec, DockerAdapter, DownloadStream
from kiln_provider.errors import ImageMissing, ProviderError, TransferBroken, error_reply

log = logging.getLogger("kiln.provider")

T = TypeVar("T")

MAX_OPS_PER_ACTIVITY: Final = 32
IMAGE_REFRESH_SECONDS: Final = 5.0
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


@dataclass(eq=False)
class Operation:
    """One request being served: its task, and how to unblock it before cancelling."""

    task: asyncio.Task[None]
    stop: Callable[[], None]

    def halt(self) -> None:
        self.stop()
        self.task.cancel()


@dataclass
class Container:
    id: str
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
        self.arch = adapter.host_info().arch
        self._conn: Connection | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._containers: dict[str, Container] = {}
        self._by_request: dict[int, Operation] = {}
        self._images: list[str] = []
        self._pools = Pools()

    async def _on(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking Docker call on one of the pools."""
        return await asyncio.get_running_loop().run_in_executor(pool, partial(fn, *args))

    async def _docker(self, fn: Callable[..., T], *args: object) -> T:
        """Run a short Docker call (create, remove, stats, images) on the lifecycle threads."""
        return await self._on(self._pools.lifecycle, fn, *args)

    def _capacity(self) -> Resources:
        """What to offer: what was asked for, never more than the host has."""
        host = self.adapter.host_info()
        free_disk = self.adapter.storage_free()
        want = self.config
        cpus = min(want.cpus if want.cpus is not None else float(host.cpus), float(host.cpus))
        memory = min(want.memory if want.memory is not None else host.memory * 3 // 4, host.memory)
        storage = min(want.storage if want.storage is not None else 10 * 2**30, free_disk)
        for label, asked, got in (("cpus", want.cpus, cpus), ("memory", want.memory, memory)):
            if asked is not None and asked > got:
                log.warning("asked to offer %s=%s but the host has only %s; offering %s", label, asked, got, got)
        return Resources(cpus=cpus, memory=memory, storage=storage)

    async def run(self) -> None:
        """Dial the hub, serve, and dial again whenever the connection ends.

        Raises :class:`~kiln.protocol.errors.Unauthorized` or ``UnsupportedVersion`` when the
        hub refuses us for good, and :class:`~kiln.protocol.errors.UsageError` when another
        provider keeps our name for longer than ``name_wait``.
        """
        name_taken_since: float | None = None
        try:
            async for ws in connect(self.config.hub, reconnect_delays=RECONNECT_DELAYS, **WEBSOCKET_OPTIONS):
                try:
                    conn = await Connection.handshake(
                        ws, role="provider", name=self.config.name, token=self.config.token, on_event=self._on_event
                    )
                except (Unauthorized, UnsupportedVersion):
                    raise
                except KilnError as e:
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
                # Welcomed under our name, so no other live provider holds it: whatever runs
                # under it belongs to activities the hub has written off.
                removed = await self._docker(self.adapter.remove_stale)
                if removed:
                    log.info("removed %d containers left by an earlier session", removed)
                started = time.monotonic()
                await self._session(conn)
                log.warning("lost the hub after %.1f s; dialling again", time.monotonic() - started)
        except InvalidURI as e:
            raise UsageError(f"not a hub address: {self.config.hub!r} (write e.g. ws://127.0.0.1:7465)") from e

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
            containers, self._containers = self._containers, {}
            for container in containers.values():
                await self._docker(self.adapter.remove, container.id)

    async def _refresh_offer(self, conn: Connection) -> None:
        """Offer now (every session starts with one), then again whenever the local images change."""
        self._images = []
        while True:
            images = sorted(await self._docker(self.adapter.images))
            if images != self._images:
                self._images = images
                offer = Offer(
                    type="offer", id=conn.new_id(), resources=self.offer_resources,
                    arch=self.arch, labels=self.config.labels, images=images,
                )  # fmt: skip
                await conn.request(offer)
                log.info("offered %s with %d images", self.offer_resources, len(images))
            await asyncio.sleep(IMAGE_REFRESH_SECONDS)

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
            self._spawn(message.id, message.activity, self._exec(message))
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
        spec = ContainerSpec(
            activity=message.activity,
            image=message.image,
            cpus=message.resources.cpus,
            memory=message.resources.memory,
            pids_limit=self.config.pids_limit,
        )
        try:
            container_id = await self._docker(self.adapter.create, spec)
        except ImageMissing as e:
            raise ImageMissing(
                f"provider {self.config.name!r} does not hold the image {message.image!r} "
                "(providers do not pull images yet; build or load it there first)"
            ) from e
        self._containers[message.activity] = Container(container_id)
        log.info("activity %s: container %s of %s", message.activity, container_id[:12], message.image)
        return Done(type="done", re=message.id)

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
            await self._docker(self.adapter.remove, container.id)
        log.info("activity %s: container removed (%.2f CPU-seconds)", message.activity, cpu or 0.0)
        return Done(type="done", re=message.id, cpu_seconds=cpu)

    def _container(self, activity: str) -> Container:
        return self._containers[activity]

    async def _exec(self, message: Exec) -> Reply:
        container = self._container(message.activity)
        async with container.archive:
            pass  # Docker would hold the exec back while an archive streams: wait here, holding no thread
        process = await self._on(
            self._pools.commands,
            self.adapter.start_exec,
            container.id,
            message.argv,
            message.env,
            message.workdir,
            self._c.session.limits.max_output_bytes,
        )
        loop = asyncio.get_running_loop()
        ended = loop.create_future()
        process.when_output_ends(lambda: loop.call_soon_threadsafe(_settle, ended))
        try:
            # No thread is held while the command runs: only for the short wait once its
            # output ended, or once its timeout passed (then wait() kills it).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended, message.timeout)
            outcome = await self._on(self._pools.commands, process.wait, message.timeout)
        except asyncio.CancelledError:
            process.kill()
            raise
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
            first = await _next_within(incoming, idle)

            def chunks() -> Iterator[memoryview]:
                chunk = first
                while chunk is not None:
                    yield chunk
                    chunk = asyncio.run_coroutine_threadsafe(_next_within(incoming, idle), loop).result()

            written = await self._on(
                self._pools.transfers, self.adapter.put_file, container.id, message.path, message.size,
                message.mode, chunks(),
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


async def _next_within(incoming: Incoming, seconds: float) -> memoryview | None:
    """The next chunk of an upload, None at its end; TransferBroken when nothing comes for ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            return await anext(incoming)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise TransferBroken(f"no data for {seconds:g} s: the upload was abandoned") from None


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)

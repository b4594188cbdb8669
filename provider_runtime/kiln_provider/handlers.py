"""The hub's requests, served: ``create``, ``exec``, ``connect``, ``upload``, ``download``, ``meter`` and ``destroy``.

The connection's reader hands every event to :meth:`Handlers.on_event` (it must not block):
each request then runs as a task of the session's task group and ends with exactly one reply
(a failure becomes an ``error`` reply: :func:`~kiln_provider.errors.error_reply`), and a
``cancel`` from the hub halts the request it names. One activity is one container
(:class:`Container`); a request about an activity that has none is answered
``unknown_activity``, and one past :data:`MAX_OPS_PER_ACTIVITY` at once ``too_many``.

- ``create``: the image (:mod:`kiln_provider.image_supply`), then a hardened container
  (:meth:`~kiln_provider.docker_adapter.DockerAdapter.create`) and its agent's hello; with
  ``outbound`` (1.7), its proxy (:mod:`kiln_provider.proxy`) and the environment that points there;
- ``exec``: a command through the container's agent (:mod:`kiln_provider.agent`), its
  ``stdin`` and ``stream`` as streams of the hub;
- ``connect`` (1.7): a TCP connection to a port of the container's loopback, made in its network
  namespace (:mod:`kiln_provider.netns`) and carried both ways (:mod:`kiln_provider.ports`);
- ``upload``: written into the container's volume on the host (:func:`kiln_provider.volume.put_file`);
- ``download``: Docker's archive stream, read a chunk at a time;
- ``meter`` (1.5): the CPU time the container used so far, for the hub to bill a priced activity;
- ``destroy``: the container removed, volume and all, with the CPU time it used.

What the containers use is read from their cgroups (:meth:`Handlers.probes`, then
:func:`~kiln_provider.metrics.measure` on a thread) for the hub's ``usage`` and the metrics;
the CPU time of those removed goes to the provider's :class:`~kiln_provider.metrics.Tallies`.

Transfers cross between the event loop and Docker's threads in :mod:`kiln_provider.threads`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Final

from kiln.connection import Connection, Incoming, Outgoing
from kiln.protocol import limits
from kiln.protocol.codes import ErrorCode
from kiln.protocol.errors import Cancelled, ConnectionClosed, KilnError, Unauthorized
from kiln.protocol.messages import (
    ActivityUsage,
    Connect,
    Cost,
    Create,
    Destroy,
    Done,
    Download,
    DownloadInfo,
    Exec,
    ExecResult,
    Meter,
    Upload,
    Want,
)
from kiln.protocol.money import format_credits
from kiln.protocol.outbound import covers
from kiln.protocol.session import CancelRequested, Event, Notified, Reply, Requested
from kiln_provider.agent import AgentChannel
from kiln_provider.config import ProviderConfig
from kiln_provider.docker_adapter import ContainerSpec, DockerAdapter, Started
from kiln_provider.errors import ImageMissing, ProviderError, TransferBroken, error_reply
from kiln_provider.image_supply import ImageSupply
from kiln_provider.metrics import Probe, Tallies
from kiln_provider.netns import NetNamespace
from kiln_provider.outbound import proxy_env
from kiln_provider.ports import carry, open_port
from kiln_provider.procfs import Cgroup
from kiln_provider.proxy import OutboundProxy
from kiln_provider.threads import Pools, ThreadChunks, chunks_for_thread, next_chunk
from kiln_provider.volume import Volume, put_file

log = logging.getLogger("kiln.provider")

MAX_OPS_PER_ACTIVITY: Final = 32


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
    volume: Volume
    """Its ``/golem`` and ``/tmp``, where uploads are written."""
    cgroup: Cgroup
    """Where its CPU time and memory are read."""
    netns: NetNamespace
    """Its network namespace, where connections to its ports are made."""
    proxy: OutboundProxy | None = None
    """Its outbound proxy, when its rent asked for outbound access (PROTOCOL.md §5.2)."""
    cpu_seconds: float = 0.0
    """The CPU time it had used when last read."""
    operations: set[Operation] = field(default_factory=set)
    archive: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by an upload or download for its whole stream.

    Docker locks a container while one of its archives streams: every other archive call
    and every exec on it blocks in dockerd meanwhile. Waiting here instead, in the event
    loop, holds no thread, so a stalled stream costs its own activity time and nothing else.
    (An upload goes to the volume, not through Docker, but is held here all the same: one
    transfer at a time per container.)
    """


class Handlers:
    """Serves the requests of one provider's sessions, and holds its containers (by activity).

    Call :meth:`attach` at the start of each session, with its connection and task group;
    :meth:`halt` when its connection ends.
    """

    def __init__(
        self, config: ProviderConfig, adapter: DockerAdapter, pools: Pools, images: ImageSupply, tallies: Tallies
    ) -> None:
        self.config = config
        self.adapter = adapter
        self.pools = pools
        self.images = images
        self.tallies = tallies
        self.containers: dict[str, Container] = {}
        self.removed = asyncio.Event()
        """Set when a container was removed (the hub's ``usage`` then tells of one fewer)."""
        self._by_request: dict[int, Operation] = {}
        self._conn: Connection | None = None
        self._tg: asyncio.TaskGroup | None = None

    def attach(self, conn: Connection, tg: asyncio.TaskGroup) -> None:
        """Serve the requests that come on ``conn`` as tasks of ``tg``."""
        self._conn, self._tg = conn, tg

    def halt(self) -> None:
        """Halt every request under way (the session's connection ended)."""
        for operation in list(self._by_request.values()):
            operation.halt()

    def detach(self) -> None:
        """The session's task group is done: no request is under way any more."""
        self._tg = None
        self._by_request.clear()

    def running(self) -> list[str]:
        """The activities whose containers still run (a broken one is no one's: removed later)."""
        return sorted(a for a, container in self.containers.items() if container.agent.broken is None)

    def probes(self) -> list[Probe]:
        """Every container, as :func:`~kiln_provider.metrics.measure` reads it (on a thread)."""
        return [Probe(activity, c.cgroup, c.cpu_seconds) for activity, c in self.containers.items()]

    def measured(self, usage: list[ActivityUsage]) -> None:
        """Keep what :func:`~kiln_provider.metrics.measure` read, for when a cgroup is gone."""
        for entry in usage:
            container = self.containers.get(entry.activity)
            if container is not None:
                container.cpu_seconds = max(container.cpu_seconds, entry.cpu_seconds)

    async def remove(self, activity: str) -> None:
        """Remove the container of ``activity`` (untracked first; once begun, finished even if cancelled)."""
        container = self.containers.pop(activity, None)
        if container is not None:
            await asyncio.shield(self._remove_container(container))

    async def _remove_container(self, container: Container, cpu: float | None = None) -> None:
        """Remove an untracked container; its CPU time (``cpu``, else read now, else as last
        read) goes to the tallies."""
        if cpu is None:
            cpu = await self.pools.lifecycle_call(container.cgroup.cpu_seconds)
        self.tallies.ended_cpu_seconds += max(cpu or 0.0, container.cpu_seconds)
        for operation in list(container.operations):
            operation.halt()  # its connections (PROTOCOL.md §5.1) close with it
        container.netns.close()
        try:
            if container.proxy is not None:
                await container.proxy.close()
            await container.agent.close()
            await self.pools.lifecycle_call(self.adapter.remove, container.id)
        finally:
            self.removed.set()

    # --- dispatch (called by the connection's reader: must not block) ------------------------

    def on_event(self, event: Event) -> None:
        if isinstance(event, Requested):
            self._take(event.message)
        elif isinstance(event, CancelRequested):
            operation = self._by_request.get(event.request)
            if operation is not None:
                operation.halt()
        elif isinstance(event, Notified):
            news = event.message
            if isinstance(news, Cost):
                what = "in all" if news.final else "so far"
                log.info(
                    "activity %s: owes %s credits %s (before the hub's fee)",
                    news.activity,
                    format_credits(news.due),
                    what,
                )
            else:
                log.warning("the hub reports %s: %s", news.code, getattr(news, "message", ""))

    def _take(self, message: Create | Destroy | Exec | Connect | Upload | Download | Meter) -> None:
        if isinstance(message, Connect):
            inward = self._c.incoming(message.id, self._upload_window)
            outward = self._c.outgoing(message.id)

            def stop_connect() -> None:
                for end in (inward, outward):
                    end.fail(Cancelled("connect cancelled"))

            self._spawn(message.id, message.activity, self._connect(message, inward, outward), stop_connect)
        elif isinstance(message, Meter):
            self._spawn(message.id, message.activity, self._meter(message))
        elif isinstance(message, Create):
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
        container = self.containers.get(activity) if activity is not None else None
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
        container = self.containers.get(activity)
        if container is None:
            return
        for operation in list(container.operations):
            operation.halt()

    # --- the requests -----------------------------------------------------------------------

    async def _create(self, message: Create) -> Reply:
        if message.user == "root" and not self.config.allow_root:
            raise Unauthorized(f"provider {self.config.name!r} does not let commands run as root (no --allow-root)")
        if message.outbound and not covers(self.config.outbound.rules, message.outbound):
            raise Unauthorized(f"provider {self.config.name!r} does not let containers reach all of {message.outbound}")
        async with self.images.image_for(message, partial(self._receive_image, message)) as (image, received):
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
        name = f"{message.activity} ({container_id[:12]})"
        agent = AgentChannel(started.channel, name, started.uid, started.gid, self.tallies.agent_failed)
        netns: NetNamespace | None = None
        proxy: OutboundProxy | None = None
        env = dict(started.env)
        try:
            await agent.open()
            netns = await self.pools.lifecycle_call(NetNamespace.of_process, started.pid, name)
            if message.outbound:
                proxy = OutboundProxy(message.outbound, self.config.outbound, self.tallies, name)
                await proxy.start(netns)
                env |= proxy_env()  # under each exec's own env, which may set them otherwise
        except BaseException:
            if proxy is not None:
                await proxy.close()
            if netns is not None:
                netns.close()
            await agent.close()
            await self.pools.lifecycle_call(self.adapter.remove, container_id)
            raise
        self.containers[message.activity] = Container(
            container_id, agent, env, started.uid, started.gid, started.volume, started.cgroup, netns, proxy
        )
        log.info("activity %s: container %s of %s", message.activity, container_id[:12], message.image)
        await self.images.used(image.id)
        return Done(type="done", re=message.id, bytes=received)

    async def _receive_image(self, message: Create, blobs: list[str]) -> Incoming:
        """Ask the hub for the image's ``blobs`` (``want``); the create's stream they come on,
        failed when the create is cancelled."""
        await self._c.reply(Want(type="want", re=message.id, blobs=blobs))
        incoming = self._c.incoming(message.id, self._image_window)
        if (operation := self._by_request.get(message.id)) is not None:
            operation.stop = partial(incoming.fail, Cancelled("create cancelled"))
        return incoming

    async def _start(self, spec: ContainerSpec) -> Started:
        """``adapter.create`` on a lifecycle thread. Cancelled (the hub gone, say), the create
        runs on in its thread: what it makes is removed once it is done, volume and all."""
        future = asyncio.get_running_loop().run_in_executor(self.pools.lifecycle, self.adapter.create, spec)
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
        self.pools.lifecycle.submit(self.adapter.remove, started.id)

    async def _destroy(self, message: Destroy) -> Reply:
        container = self.containers.pop(message.activity, None)
        if container is None:
            return Done(type="done", re=message.id)
        cpu: float | None = None
        try:
            if container.operations:
                await asyncio.wait([operation.task for operation in container.operations], timeout=5)
            try:
                cpu = await self.pools.lifecycle_call(self.adapter.cpu_seconds, container.id)
            except KilnError:
                pass  # the container died on its own; removing it is what matters
        finally:
            # Untracked from here on, so removed whatever happens (even when cancelled).
            await asyncio.shield(self._remove_container(container, cpu))
        log.info("activity %s: container removed (%.2f CPU-seconds)", message.activity, cpu or 0.0)
        return Done(type="done", re=message.id, cpu_seconds=cpu)

    async def _connect(self, message: Connect, inward: Incoming, outward: Outgoing) -> Reply:
        """A TCP connection to the port, carried until both ways end (:mod:`kiln_provider.ports`).

        Iterating ``inward`` grants its first credit: only once connected, as the hub's
        requestor waits for that sign.
        """
        container = self.containers[message.activity]
        sock = await open_port(container.netns, message.port)
        sent = await carry(sock, inward, outward, self._c.session.limits.chunk_bytes)
        return Done(type="done", re=message.id, bytes=sent)

    async def _meter(self, message: Meter) -> Reply:
        """The CPU seconds the activity's container used so far (its cgroup's, as :meth:`_destroy` reads)."""
        container = self.containers[message.activity]
        cpu = await self.pools.lifecycle_call(self.adapter.cpu_seconds, container.id)
        container.cpu_seconds = max(container.cpu_seconds, cpu)
        return Done(type="done", re=message.id, cpu_seconds=cpu)

    async def _exec(self, message: Exec, stdin: Incoming | None, output: Outgoing | None) -> Reply:
        container = self.containers[message.activity]
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
        container = self.containers[message.activity]
        idle = self.config.stream_idle_timeout
        async with container.archive:
            # Credit is granted (and the data invited) only now; until its first chunk comes,
            # the upload holds no thread.
            first = await next_chunk(incoming, idle, "upload")
            chunks = chunks_for_thread(first, incoming, idle, "upload", asyncio.get_running_loop())
            owner = (container.uid, container.gid)
            written = await self.pools.transfer_call(
                put_file, container.volume, message.path, message.size, message.mode, chunks, owner
            )
        return Done(type="done", re=message.id, bytes=written)

    async def _download(self, message: Download, outgoing: Outgoing) -> Reply:
        container = self.containers[message.activity]
        idle = self.config.stream_idle_timeout
        async with container.archive:
            stream = await self.pools.transfer_call(self.adapter.open_download, container.id, message.path)
            # A thread only while Docker hands over a chunk; waiting for credit takes none.
            chunks = ThreadChunks(self.pools.transfers, stream.chunks, stream.close)
            total = 0
            try:
                mode = stream.mode & 0o7777
                info = DownloadInfo(type="download_info", re=message.id, kind=stream.kind, size=stream.size, mode=mode)
                await self._c.reply(info)
                while (chunk := await chunks.next()) is not None:
                    try:
                        async with asyncio.timeout(idle):
                            await outgoing.write(chunk)
                    except TimeoutError:
                        raise TransferBroken(f"no credit for {idle:g} s: the download was abandoned") from None
                    total += len(chunk)
            finally:
                # That closes the archive Docker holds open (and the container's lock with it).
                await chunks.close()
        await outgoing.end()
        return Done(type="done", re=message.id, bytes=total)

"""Many simulated providers in one process, for scale tests and benchmarks of the hub.

Each is a real connection speaking kiln.v1 through the session core: it offers capacity
and an image, says yes to every ``create`` and ``destroy`` at once, answers every
``exec`` with an empty result (or, a liar, with ``LIE`` as its stdout), and serves
downloads from a table it is given (truthfully or not: a rogue provider for tests of the
requestor). It may offer a price (``price=``, 1.5)
and answers the hub's ``meter`` with the CPU seconds an activity "used": ``cpu_per_second``
times the seconds since its create (0 unless told; a value above the CPUs rented plays a
provider that over-reports). A ``connect`` (1.7) reaches an echo server on every port (what
comes back is what went in; a half-close is echoed too), but :data:`HTTP_PORT`, where a tiny web
server answers each request with its own head, and :data:`REFUSED_PORT`, where nothing listens.
No Docker is involved, so thousands fit on one machine::

    async with simulated_providers(url, 5000) as names:
        ...  # rent, map, market against a hub that sees 5000 providers

Given several hub URLs (hubs on one database), each stays connected to one of them as ``kiln
provider --hub A --hub B`` does: when its hub dies it dials the next, listing what it runs, and a
hub that refuses it (its name still held by the dead hub, not yet found dead) is dialled again a
little later.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final, Literal, TypedDict, Unpack

from websockets.client import backoff

from kiln.connection import Connection, HubRing, Incoming, Outgoing
from kiln.hub.io.server import raise_open_file_limit
from kiln.protocol import limits
from kiln.protocol.codes import ErrorCode
from kiln.protocol.errors import ConnectionLost, KilnError
from kiln.protocol.messages import (
    Connect,
    Create,
    Destroy,
    Done,
    Download,
    DownloadInfo,
    Error,
    Exec,
    ExecResult,
    Message,
    Meter,
    Offer,
    Price,
    Resources,
    Upload,
    clip,
)
from kiln.protocol.outbound import Policy
from kiln.protocol.session import CancelRequested, Event, Requested

LIE: Final = "a lie\n"
"""What a lying provider's every command prints."""
DIAL_AT_ONCE: Final = 200
"""Connections opened concurrently: a burst the hub's listen backlog takes."""
HTTP_PORT: Final = 80
"""The port where a simulated container answers HTTP: ``200``, the request's head as the body, then it closes."""
REFUSED_PORT: Final = 1
"""The port where nothing listens in a simulated container (``connection_refused``)."""
HTTP_HEAD: Final = 16 * 1024
"""The most of a request's head the simulated web server reads."""
REFUSED_RETRY: Final = 2.0
"""Seconds before a hub that refused the hello is dialled again (as ``kiln provider`` waits)."""
RECONNECT_DELAYS: Final = partial(backoff, initial_delay=0.5, min_delay=0.25, max_delay=5.0, factor=2.0)
"""The waits between two rounds of dials in which no hub answered (as ``kiln provider``'s)."""


@dataclass(frozen=True)
class Served:
    """What a simulated provider sends for a download of one path: honest, or not."""

    kind: Literal["file", "dir"]
    data: bytes
    announced: int | None = None
    """The size told in download_info (None: the true size; a rogue provider may lie)."""


class SimulatedProvider:
    """One provider that answers at once, without containers; downloads come from ``files``."""

    def __init__(
        self,
        name: str,
        files: dict[str, Served] | None = None,
        *,
        stuck: bool = False,
        hoard: bool = False,
        lie: bool = False,
        cpu_per_second: float = 0.0,
        uploads: bool = False,
    ) -> None:
        self.name = name
        self.cpu_per_second = cpu_per_second
        """CPU seconds each activity reports per second it has run (``meter``, and ``destroy``'s done)."""
        self._created: dict[str, float] = {}  # activity -> when its create came (monotonic)
        self.files = files or {}
        self.stuck = stuck
        """Never answer a create or destroy (as a provider whose Docker hangs), while the connection lives."""
        self.hoard = hoard
        """Take uploads and never grant them credit nor answer them (a provider that sits on a requestor's stream)."""
        self.lie = lie
        """Answer every exec with :data:`LIE` as stdout (a provider whose results are wrong)."""
        self.uploads = uploads
        """Take uploads, counting their bytes and keeping none (otherwise an upload is refused)."""
        self.url: str | None = None
        """The hub it is connected to (:meth:`stay`), None while it dials."""
        self.joined_at = 0.0
        """When a hub last took its hello (monotonic)."""
        self.refused = 0
        """Hellos refused so far (:meth:`stay`: its name held at another hub)."""
        self.conn: Connection | None = None
        self.offered: asyncio.Future[Message] | None = None  # the hub's reply to its offer
        self._replies: set[asyncio.Task[None]] = set()
        self._connects: dict[int, asyncio.Task[None]] = {}  # a connect's id -> the task carrying it
        self.running: set[str] = set()
        """The activities it was told to create and not yet to destroy (what it reports when it dials again)."""

    @property
    def offering(self) -> bool:
        """Connected, and its offer taken by the hub."""
        offered = self.offered
        return self.url is not None and offered is not None and offered.done() and offered.exception() is None

    def on_event(self, event: Event) -> None:
        if isinstance(event, CancelRequested) and (task := self._connects.get(event.request)) is not None:
            task.cancel()
            return
        if not isinstance(event, Requested) or self.conn is None:
            return
        message = event.message
        if isinstance(message, Connect):
            self._connect(message)
            return
        # Answers at once go out with the reader's next write; only a download's takes a task.
        if isinstance(message, Upload) and self.hoard:
            return
        if isinstance(message, Upload) and self.uploads:
            window = min(limits.WINDOW_CHUNKS, self.conn.session.limits.max_window)
            self._spawn(self._take(message, self.conn.incoming(message.id, window)))
            return
        if isinstance(message, Exec):
            self.conn.reply_soon(
                ExecResult(
                    type="exec_result",
                    re=message.id,
                    exit_code=0,
                    timed_out=False,
                    stdout=LIE if self.lie else "",
                    stderr="",
                    duration=0.0,
                )
            )
            return
        if isinstance(message, Meter):
            self.conn.reply_soon(Done(type="done", re=message.id, cpu_seconds=self.cpu_seconds(message.activity)))
            return
        if isinstance(message, Create | Destroy):
            if self.stuck:
                return
            cpu: float | None = None
            if isinstance(message, Create):
                self.running.add(message.activity)
                self._created[message.activity] = time.monotonic()
            else:
                self.running.discard(message.activity)
                cpu = self.cpu_seconds(message.activity) if self.cpu_per_second else None
                self._created.pop(message.activity, None)
            self.conn.reply_soon(Done(type="done", re=message.id, cpu_seconds=cpu))
            return
        if not isinstance(message, Download) or message.path not in self.files:
            text = clip(f"simulated: no {message.type} here")
            self.conn.reply_soon(Error(type="error", re=message.id, code="file_not_found", message=text))
            return
        self._spawn(self._serve(message, self.files[message.path], self.conn.outgoing(message.id)))

    def _spawn(self, work: Coroutine[None, None, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)  # owned: kept until done, awaited on close
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)
        return task

    def _connect(self, message: Connect) -> None:
        """Carry a connect (1.7) to the simulated container's port (see the module's docstring)."""
        assert self.conn is not None
        if message.port == REFUSED_PORT:
            text = f"simulated: nothing listens on port {message.port}"
            self.conn.reply_soon(Error(type="error", re=message.id, code="connection_refused", message=text))
            return
        window = min(limits.WINDOW_CHUNKS, self.conn.session.limits.max_window)
        incoming, outgoing = self.conn.incoming(message.id, window), self.conn.outgoing(message.id)
        serve = self._http if message.port == HTTP_PORT else self._echo
        task = self._spawn(self._carry(message, serve(incoming, outgoing)))
        self._connects[message.id] = task
        task.add_done_callback(lambda _: self._connects.pop(message.id, None))

    async def _carry(self, message: Connect, serving: Coroutine[None, None, int]) -> None:
        """Answer the connect once ``serving`` ended both ways (``done`` with the bytes it sent), or failed."""
        assert self.conn is not None
        try:
            sent = await serving
        except asyncio.CancelledError:
            await self.conn.reply(Error(type="error", re=message.id, code="cancelled", message="connect cancelled"))
        except KilnError as e:
            await self.conn.reply(Error(type="error", re=message.id, code=e.code, message=clip(e.message)))
        else:
            await self.conn.reply(Done(type="done", re=message.id, bytes=sent))

    @staticmethod
    async def _echo(incoming: Incoming, outgoing: Outgoing) -> int:
        """Send back what comes, until the requestor's half-close; then close this side too."""
        sent = 0
        async for chunk in incoming:
            await outgoing.write(chunk)
            sent += len(chunk)
        await outgoing.end()
        return sent

    @staticmethod
    async def _http(incoming: Incoming, outgoing: Outgoing) -> int:
        """Answer one HTTP request with its head as the body, close, and drop what else comes."""
        head = b""
        async for chunk in incoming:
            head += chunk
            if b"\r\n\r\n" in head or len(head) > HTTP_HEAD:
                break
        body = head.partition(b"\r\n\r\n")[0][:HTTP_HEAD]
        answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
        data = answer % (len(body), body)
        await outgoing.write(data)
        await outgoing.end()
        async for _ in incoming:  # until the requestor's half-close
            pass
        return len(data)

    @property
    def carrying(self) -> int:
        """The connects (1.7) it carries now."""
        return len(self._connects)

    def cpu_seconds(self, activity: str) -> float:
        """What ``activity`` reports having used so far: :attr:`cpu_per_second` times the seconds it ran."""
        created = self._created.get(activity)
        return 0.0 if created is None else self.cpu_per_second * (time.monotonic() - created)

    async def _serve(self, message: Download, served: Served, outgoing: Outgoing) -> None:
        assert self.conn is not None
        size = len(served.data) if served.announced is None else served.announced
        await self.conn.reply(
            DownloadInfo(
                type="download_info", re=message.id, kind=served.kind, size=size if served.kind == "file" else None
            )
        )
        try:
            await outgoing.write(served.data)
            await outgoing.end()
            await self.conn.reply(Done(type="done", re=message.id, bytes=len(served.data)))
        except KilnError as e:
            await self.conn.reply(Error(type="error", re=message.id, code=e.code, message=clip(e.message)))

    async def _take(self, message: Upload, incoming: Incoming) -> None:
        assert self.conn is not None
        size = 0
        try:
            async for chunk in incoming:
                size += len(chunk)
            await self.conn.reply(Done(type="done", re=message.id, bytes=size))
        except KilnError as e:
            await self.conn.reply(Error(type="error", re=message.id, code=e.code, message=clip(e.message)))

    async def join(self, url: str, offer: Offer, token: str | None = None) -> None:
        """Dial the hub at ``url`` (listing what it runs, to a hub that spoke 1.3 to it before) and offer."""
        known = self.conn is not None and self.conn.session.minor >= 3
        conn = await Connection.open(
            url,
            role="provider",
            name=self.name,
            token=token,
            on_event=self.on_event,
            activities=sorted(self.running) if known and self.running else None,
        )
        self.conn = conn
        self.offered = await conn.start(offer.model_copy(update={"id": conn.new_id()}))

    async def dial(self, hubs: HubRing, offer: Offer, token: str | None = None) -> None:
        """Join one of ``hubs`` as ``kiln provider`` does: each round dials the hub it was on, then the
        others in turn; after a hub refused the hello the next round comes :data:`REFUSED_RETRY` seconds
        later (from the next hub when its name was taken), and after a round in which none answered
        a wait (:data:`RECONNECT_DELAYS`)."""
        delays: Iterator[float] | None = None
        while True:
            for url in hubs.order():
                try:
                    await self.join(url, offer, token)
                except ConnectionLost:
                    continue
                except KilnError as e:
                    hubs.moved(url)
                    if e.code == ErrorCode.NAME_TAKEN:
                        hubs.skip()  # another hub of the database may hold it still: the next is tried
                    self.refused += 1
                    await asyncio.sleep(REFUSED_RETRY)
                    break
                hubs.moved(url)
                self.url, self.joined_at = url, time.monotonic()
                return
            else:
                delays = delays or RECONNECT_DELAYS()
                await asyncio.sleep(next(delays))

    async def stay(self, hubs: HubRing, offer: Offer, token: str | None = None) -> None:
        """Read the connection :meth:`dial` opened, and when it drops dial ``hubs`` again, until cancelled."""
        while True:
            assert self.conn is not None
            with contextlib.suppress(KilnError):
                await self.conn.run()
            self.url = None
            await self.dial(hubs, offer, token)

    async def close(self) -> None:
        if self._replies:
            await asyncio.gather(*self._replies, return_exceptions=True)
        if self.conn is not None:
            await self.conn.close()


def order(urls: Sequence[str], i: int) -> list[str]:
    """The order in which the ``i``-th provider given several hub URLs dials them: from the ``i``-th
    (modulo), then the others in turn, forward for some and backward for the next ones, so that
    the providers spread over the hubs and those of a hub that dies over the others."""
    n = len(urls)
    first = i % n
    step = 1 if (i // n) % 2 == 0 else -1
    return [urls[(first + step * k) % n] for k in range(n)]


class SimulatedOptions(TypedDict, total=False):
    """The keyword options of :func:`simulated` (and :func:`simulated_providers`), its defaults there."""

    images: tuple[str, ...]
    cpus: float
    memory: int
    storage: int
    prefix: str
    files: dict[str, Served] | None
    stuck: bool
    hoard: bool
    lie: bool
    uploads: bool
    labels: Callable[[int], dict[str, str]]
    token: str | None
    price: Price | Callable[[int], Price | None] | None
    cpu_per_second: float
    outbound: Policy | None


@contextlib.asynccontextmanager
async def simulated(
    url: str | Sequence[str],
    count: int,
    *,
    images: tuple[str, ...] = ("kiln-busybox:latest",),
    cpus: float = 4,
    memory: int = 8 * 2**30,
    storage: int = 2**40,
    prefix: str = "sim",
    files: dict[str, Served] | None = None,
    stuck: bool = False,
    hoard: bool = False,
    lie: bool = False,
    uploads: bool = False,
    labels: Callable[[int], dict[str, str]] = lambda i: {},
    token: str | None = None,
    price: Price | Callable[[int], Price | None] | None = None,
    cpu_per_second: float = 0.0,
    outbound: Policy | None = None,
) -> AsyncIterator[list[SimulatedProvider]]:
    """:func:`simulated_providers`, yielding the providers themselves (which hub each is on, when it joined).
    ``outbound`` (1.7) is what their offers say their containers may reach (none by default)."""
    raise_open_file_limit()
    providers = [
        SimulatedProvider(
            f"{prefix}-{i:05}", files, stuck=stuck, hoard=hoard, lie=lie, cpu_per_second=cpu_per_second, uploads=uploads
        )
        for i in range(count)
    ]
    urls = [url] if isinstance(url, str) else list(url)
    gate = asyncio.Semaphore(DIAL_AT_ONCE)

    async with asyncio.TaskGroup() as tg:
        readers: list[asyncio.Task[None]] = []

        async def join(i: int, provider: SimulatedProvider) -> None:
            offer = Offer(
                type="offer",
                id=1,
                resources=Resources(cpus=cpus, memory=memory, storage=storage),
                arch="amd64",
                images=list(images),
                labels=labels(i),
                price=price(i) if callable(price) else price,
                outbound=outbound,
            )
            hubs = HubRing(order(urls, i)) if len(urls) > 1 else None
            async with gate:
                if hubs is None:
                    await provider.join(urls[0], offer, token)
                else:
                    await provider.dial(hubs, offer, token)
            assert provider.conn is not None
            # Read at once, not once all have joined: the hub's pings (every 3 s, 7 s to answer)
            # go unanswered otherwise while thousands more dial, and the hub drops the first.
            reading = provider.conn.run() if hubs is None else provider.stay(hubs, offer, token)
            readers.append(tg.create_task(reading))

        try:
            async with asyncio.TaskGroup() as joining:
                for i, provider in enumerate(providers):
                    joining.create_task(join(i, provider))
            # In the market once the hub took their offers (a requestor's rent on another
            # connection may otherwise reach the hub first).
            if len(urls) == 1:
                await asyncio.gather(*(p.offered for p in providers if p.offered is not None))
            else:  # one dropped before its offer was taken dials again (stay): polled, as its offer changes
                while not all(p.offering for p in providers):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            yield providers
        finally:
            for reader in readers if len(urls) > 1 else ():
                reader.cancel()  # no dialling again as they leave
            for provider in providers:
                await provider.close()
            for reader in readers:
                reader.cancel()


@contextlib.asynccontextmanager
async def simulated_providers(
    url: str | Sequence[str], count: int, **options: Unpack[SimulatedOptions]
) -> AsyncIterator[list[str]]:
    """Connect ``count`` simulated providers to the hub at ``url`` (the ``i``-th offering
    ``labels(i)``, at ``price`` or ``price(i)``: none is free), with ``token`` in their hello;
    yields their names, disconnects on exit. ``cpu_per_second`` and ``uploads``: see
    :class:`SimulatedProvider`; ``outbound`` (1.7): what their offers let containers reach. With
    ``lie``, every one of them answers its commands wrongly (see :class:`SimulatedProvider`).

    ``url`` may be several hubs' (one database): each provider then stays connected to one of
    them (:meth:`SimulatedProvider.stay`), dialling them in :func:`order`, so that they spread
    over the hubs. :func:`simulated` yields the providers themselves."""
    async with simulated(url, count, **options) as providers:
        yield [p.name for p in providers]

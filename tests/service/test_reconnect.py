"""A requestor's own network blip: a real hub process, simulated providers, and a TCP proxy
between the SDK and the hub that cuts every connection and refuses new ones for a while."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import kiln
from kiln.connection import Connection
from kiln.testing import LocalCluster
from kiln.testing.simulated import simulated_providers

pytestmark = pytest.mark.timeout(120)

IMAGE = "kiln-busybox:latest"


class Proxy:
    """Relays TCP to ``target``; :meth:`cut` closes every connection and refuses new ones for a while."""

    def __init__(self, target: str) -> None:
        address = urlsplit(target)
        self.host, self.port = address.hostname or "127.0.0.1", address.port or 7465
        self.refusing_until = 0.0
        self.pipes: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Proxy]:
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with server:
            try:
                yield self
            finally:
                self._drop()
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self, seconds: float) -> None:
        self.refusing_until = time.monotonic() + seconds
        self._drop()

    def _drop(self) -> None:
        for writer in self.pipes:
            writer.transport.abort()  # as a network that fails: no close frame, no FIN
        self.pipes.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self.refusing_until:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self.pipes |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.transport.abort()


@pytest.fixture
def hub(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    grace = getattr(request, "param", 30)
    with LocalCluster(tmp_path) as cluster:
        yield cluster.start_hub("--grace", str(grace))


async def wait_until(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def free_cpus(url: str) -> float:
    async with kiln.connect(url, name="watcher") as watcher:
        [seller] = await watcher.market()
        return seller.free.cpus


async def test_a_requestor_cut_off_for_5_s_finds_its_activities_after_it_reconnects(hub: str) -> None:
    async with simulated_providers(hub, 1, cpus=4):
        async with Proxy(hub).serving() as proxy, kiln.connect(proxy.url, name="blip") as requestor:
            first = await requestor.rent(IMAGE)
            second = await requestor.rent(IMAGE)
            before = requestor.connection
            proxy.cut(5)
            await wait_until(lambda: requestor.reconnecting)
            assert await free_cpus(hub) == 2, "the hub holds them while the requestor is away"
            started = time.monotonic()
            result = await first.run(["true"])  # waits out the reconnect, then runs on the new connection
            assert result.exit_code == 0
            assert 4.5 < time.monotonic() - started < 15
            assert requestor.connection is not before and requestor.gone is None
            assert {a.id for a in requestor.activities} == {first.id, second.id}
            assert first.lost is None and second.lost is None
            assert (await second.run(["true"])).exit_code == 0
            await first.release()
            assert await free_cpus(hub) == 3
        assert await free_cpus(hub) == 4, "leaving connect released the rest at once"


@pytest.mark.parametrize("hub", [2], indirect=True)
async def test_a_requestor_away_past_the_grace_period_loses_its_activities(hub: str) -> None:
    async with (
        simulated_providers(hub, 1, cpus=4),
        Proxy(hub).serving() as proxy,
        kiln.connect(proxy.url, name="away") as requestor,
    ):
        act = await requestor.rent(IMAGE)
        proxy.cut(8)
        await wait_until(lambda: requestor.gone is not None)
        assert isinstance(requestor.gone, kiln.ConnectionLost)
        assert "no reconnect within 2 s" in requestor.gone.message
        assert act.lost is not None and requestor.activities == []
        with pytest.raises(kiln.ConnectionLost):
            await act.run(["true"])
        await act.release()  # a no-op: it is lost
        with pytest.raises(kiln.ConnectionLost):
            await requestor.market()
        deadline = time.monotonic() + 10
        while await free_cpus(hub) != 4:
            assert time.monotonic() < deadline, "the hub destroyed them after its grace period"
            await asyncio.sleep(0.2)


async def test_a_garbage_or_spent_resume_gets_a_fresh_session(hub: str) -> None:
    async with simulated_providers(hub, 1), Proxy(hub).serving() as proxy:
        conn = await Connection.open(hub, role="requestor", name="raw", resume="not-a-secret-of-this-hub")
        welcome = conn.session.welcome
        assert welcome is not None and welcome.resumed == [] and welcome.resume is not None
        await conn.close()
        async with kiln.connect(proxy.url, name="blip") as requestor:
            act = await requestor.rent(IMAGE)
            spent = requestor.connection.session.welcome
            assert spent is not None and spent.resume is not None
            proxy.cut(1)
            await wait_until(lambda: requestor.reconnecting)
            assert (await act.run(["true"])).exit_code == 0, "resumed, with a new secret"
            again = await Connection.open(hub, role="requestor", name="thief", resume=spent.resume)
            assert again.session.welcome is not None and again.session.welcome.resumed == []
            await again.close()
            assert (await act.run(["true"])).exit_code == 0, "still the requestor's"


async def test_a_job_goes_on_through_a_blip(hub: str) -> None:
    async with (
        simulated_providers(hub, 2),
        Proxy(hub).serving() as proxy,
        kiln.connect(proxy.url, name="job") as requestor,
    ):

        async def worker(act: kiln.Activity, item: int) -> int:
            await asyncio.sleep(0.1)
            result = await act.run(["true"])
            return item + result.exit_code

        async def blip() -> None:
            await asyncio.sleep(1)
            proxy.cut(3)

        cutter = asyncio.create_task(blip())
        results = await requestor.map(worker, range(60), image=IMAGE, max_providers=2, progress=False)
        await cutter
        assert results == list(range(60))

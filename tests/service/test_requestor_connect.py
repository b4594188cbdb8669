"""``act.connect`` and ``act.forward`` (1.7) against a real hub process and a simulated provider,
whose container echoes every port but :data:`HTTP_PORT` (a tiny web server) and
:data:`REFUSED_PORT` (nothing listens). No Docker: the streams, their flow control and their
ends, as the requestor sees them."""

from __future__ import annotations

import asyncio
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import kiln
from kiln.testing import LocalCluster
from kiln.testing.simulated import HTTP_PORT, REFUSED_PORT, simulated

pytestmark = pytest.mark.timeout(60)

ECHO_PORT = 7


def get(url: str) -> bytes:
    """The body of a GET of ``url`` (in a thread: the simulated provider shares the test's event loop)."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        return bytes(answer.read())


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[str]:
    with LocalCluster(tmp_path) as cluster:
        yield cluster.start_hub()


async def test_bytes_go_through_and_come_back_with_a_slow_reader_and_half_closes(hub: str) -> None:
    data = os.urandom(24 * 2**20)  # more than a window of chunks either way
    async with (
        simulated(hub, 1) as providers,
        kiln.connect(hub) as requestor,
        requestor.rent("kiln-busybox:latest") as act,
    ):
        reader, writer = await act.connect(ECHO_PORT, limit=2**16)
        assert writer.can_write_eof() and writer.get_extra_info("peername") == (act.id, ECHO_PORT)

        async def send() -> None:
            for start in range(0, len(data), 3 * 2**20):  # drain() waits for credit
                writer.write(data[start : start + 3 * 2**20])
                await writer.drain()
                assert writer.transport.get_write_buffer_size() <= 2**18
            writer.write_eof()

        sending = asyncio.create_task(send())
        transport = writer.transport
        assert isinstance(transport, asyncio.ReadTransport)
        async with asyncio.timeout(10):  # read nothing meanwhile: past twice its limit the reader pauses it
            while transport.is_reading():  # noqa: ASYNC110 - polled: asyncio tells no event
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert not sending.done() and not transport.is_reading(), "the echo stopped: no credit while paused"
        back = bytearray()
        while chunk := await reader.read(2**20):
            back += chunk
        await sending
        assert back == data and reader.at_eof()
        writer.close()
        await writer.wait_closed()

        # A connection closed early, with bytes still coming, or reset, is stopped at the provider.
        for reset in (False, True):
            reader, writer = await act.connect(ECHO_PORT)
            writer.write(b"x" * 16 * 2**20)  # more than the provider's window can hold: it waits on us
            assert await reader.readexactly(10) == b"x" * 10
            if reset:
                writer.transport.abort()
            else:
                writer.close()
            await writer.wait_closed()
        async with asyncio.timeout(5):
            while providers[0].carrying:  # noqa: ASYNC110 - polled: the provider tells no event
                await asyncio.sleep(0.01)
        reader, writer = await act.connect(ECHO_PORT)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        writer.close()


async def test_refused_and_lost_are_errors_of_connect_and_of_reads(hub: str) -> None:
    async with simulated(hub, 1) as providers, kiln.connect(hub) as requestor:
        act = await requestor.rent("kiln-busybox:latest")
        with pytest.raises(kiln.ConnectionRefused):
            await act.connect(REFUSED_PORT)
        with pytest.raises(kiln.UsageError):
            await act.connect(0)
        reader, writer = await act.connect(ECHO_PORT)
        writer.write(b"still here")
        assert await reader.readexactly(10) == b"still here"
        gone = providers[0].conn
        assert gone is not None
        await gone.close()  # the provider vanishes while the connection is open
        with pytest.raises(kiln.KilnError) as lost:
            await reader.read()
        assert lost.value.code == "provider_lost"
        writer.write(b"more")  # goes nowhere, as on a socket that broke
        with pytest.raises(kiln.KilnError):
            await writer.drain()


async def test_a_forward_carries_many_connections_at_once_each_its_own(hub: str) -> None:
    async with simulated(hub, 1), kiln.connect(hub) as requestor, requestor.rent("kiln-busybox:latest") as act:
        async with await act.forward(HTTP_PORT) as fwd:
            assert isinstance(fwd, kiln.Forward) and fwd.host == "127.0.0.1" and fwd.port > 0
            urls = [f"http://{fwd.host}:{fwd.port}/page/{i}" for i in range(8)]
            bodies = await asyncio.gather(*(asyncio.to_thread(get, url) for url in urls))
            assert [body.split(b" ")[:2] for body in bodies] == [[b"GET", f"/page/{i}".encode()] for i in range(8)]
            assert fwd.accepted == 8

        async with await act.forward(REFUSED_PORT) as refused:  # refused there: the local connection closes
            reader, writer = await asyncio.open_connection(refused.host, refused.port)
            assert await reader.read() == b""
            writer.close()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(fwd.host, fwd.port)  # closed: nothing listens any more


async def test_a_published_port_answers_at_its_url_until_revoked(hub: str) -> None:
    async with simulated(hub, 1), kiln.connect(hub) as requestor, requestor.rent("kiln-busybox:latest") as act:
        pub = await act.publish(HTTP_PORT)
        assert isinstance(pub, kiln.Publication) and pub.token in pub.url and pub.token not in repr(pub)
        assert (await asyncio.to_thread(get, pub.url + "some/page")).startswith(b"GET /some/page HTTP/1.1")
        await pub.revoke()
        with pytest.raises(urllib.error.HTTPError) as gone:
            await asyncio.to_thread(get, pub.url)
        gone.value.close()
        assert gone.value.code == 404
        with pytest.raises(kiln.ActivityError) as unknown:
            await act.unpublish(pub.token)
        assert unknown.value.code == "not_published"

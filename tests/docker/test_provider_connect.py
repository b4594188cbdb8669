"""``connect`` (protocol 1.7) at a real provider process: TCP connections to servers listening on
the loopback of a real container (busybox ``nc``), carried as two streams, against a hub the
test plays by hand (tests/scripted_hub.py) so that every frame is seen: the first credit only
once connected, echo both ways, a half-close, a port where nothing listens, many connections at
once, an ABORT, a cancel, and a destroy that closes what is open."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import subprocess
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kiln.protocol.frames import FrameKind, encode
from kiln.testing import LocalCluster
from tests.conftest import IMAGE, containers_of
from tests.scripted_hub import Provider, scripted_hub

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

ECHO, COUNT, HTTP, RESET = 8080, 8081, 8082, 8083
BODY = b"kiln\n" * 20_000
SERVERS = (
    f"nc -ll -p {ECHO} -e cat & nc -ll -p {COUNT} -e wc -c & nc -ll -p {RESET} -e sleep 0.2 & "
    f"mkdir /tmp/www && yes kiln | head -c {len(BODY)} >/tmp/www/body && httpd -f -p {HTTP} -h /tmp/www"
)
"""An echo server, one that answers with the count of bytes it read once its input ended (neither
takes many connections at once: busybox nc resets some), one that reads nothing and closes (a
reset, as data came that it did not read), and a web server."""


class Hub:
    """The test's side of one provider's connection: requests by id, replies and frames by stream."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.ids = itertools.count(100)
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = defaultdict(
            lambda: asyncio.get_running_loop().create_future()
        )
        self.frames: dict[int, asyncio.Queue[tuple[FrameKind, bytes]]] = defaultdict(asyncio.Queue)

    async def pump(self) -> None:
        """Route what the provider sends; grant a DATA frame's credit back as it is read."""

        async def replies() -> None:
            while True:
                message = await self.provider.receive(timeout=3600)
                if "re" in message:  # not a notification (usage)
                    self.replies[message["re"]].set_result(message)

        async def frames() -> None:
            while True:
                frame = await self.provider.frame(timeout=3600)
                if frame.kind is FrameKind.DATA:
                    await self.provider.send({"type": "credit", "stream": frame.stream, "chunks": 1})
                await self.frames[frame.stream].put((frame.kind, bytes(frame.payload)))

        async with asyncio.TaskGroup() as tg:
            tg.create_task(replies())
            tg.create_task(frames())

    async def reply(self, request: int, timeout: float = 30) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            return await asyncio.shield(self.replies[request])

    async def try_connect(self, port: int, activity: str = "a1") -> int | dict[str, Any]:
        """A connect's id once the provider granted its first credit (it is connected), or the
        error it answered instead."""
        request = next(self.ids)
        await self.provider.send({"type": "connect", "id": request, "activity": activity, "port": port, "window": 4})
        credited = asyncio.ensure_future(self.provider.wait_credit(request))
        answered = asyncio.ensure_future(self.reply(request))
        await asyncio.wait([credited, answered], return_when=asyncio.FIRST_COMPLETED)
        credited.cancel()
        answered.cancel()
        return answered.result() if answered.done() and not answered.cancelled() else request

    async def connect(self, port: int) -> int:
        connected = await self.try_connect(port)
        assert isinstance(connected, int), connected
        return connected

    async def read_all(self, stream: int) -> tuple[bytes, FrameKind]:
        """What comes on ``stream`` until its END or ABORT, and which of the two it was."""
        data = b""
        while True:
            async with asyncio.timeout(30):
                kind, payload = await self.frames[stream].get()
            if kind is not FrameKind.DATA:
                return data, kind
            data += payload


@pytest.fixture
async def hub(tmp_path: Path, busybox_image: str) -> AsyncIterator[Hub]:
    """A provider process with one container (``a1``) whose servers listen on ECHO and COUNT."""
    cluster = LocalCluster(tmp_path / "logs", suffix=f"-{secrets.token_hex(3)}")
    try:
        async with scripted_hub("1.7") as scripted:
            cluster.url = scripted.url
            cluster.start_provider("p", "--stream-idle-timeout", "1", cpus=1, memory="1GiB", wait=False)
            hub = Hub(await scripted.provider())
            pumping = asyncio.ensure_future(hub.pump())
            try:
                resources = {"cpus": 0.5, "memory": 64 * 2**20}
                await hub.provider.send(
                    {"type": "create", "id": 1, "activity": "a1", "image": IMAGE, "resources": resources}
                )
                assert (await hub.reply(1))["type"] == "done"
                await hub.provider.send({"type": "exec", "id": 2, "activity": "a1", "argv": ["sh", "-c", SERVERS]})
                for port in (ECHO, COUNT, HTTP):  # (RESET starts with them)
                    await listening(hub, port)
                yield hub
            finally:
                pumping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pumping
    finally:
        stopped_containers(cluster)


def stopped_containers(cluster: LocalCluster) -> None:
    """Stop the cluster's processes, and remove the containers a provider left."""
    cluster.stop()
    for name in cluster.providers:
        if ids := containers_of(name):
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)


async def listening(hub: Hub, port: int) -> None:
    """Until ``port`` takes connections (the servers start with the exec)."""
    async with asyncio.timeout(10):
        while isinstance(request := await hub.try_connect(port), dict):
            assert request["code"] == "connection_refused", request
            await asyncio.sleep(0.05)
    await hub.provider.send_data(request, b"")  # an END only: the server answers, and ends too
    answer, end = await hub.read_all(request)
    assert end is FrameKind.END
    assert await hub.reply(request) == {"type": "done", "re": request, "bytes": len(answer)}


async def test_echo_both_ways_then_half_closes(hub: Hub) -> None:
    request = await hub.connect(ECHO)
    await hub.provider.send_data(request, b"ping", end=False)
    kind, echoed = await hub.frames[request].get()
    assert (kind, echoed) == (FrameKind.DATA, b"ping")  # a round trip, the connection still open
    await hub.provider.send_data(request, b"pong")
    assert await hub.read_all(request) == (b"pong", FrameKind.END)
    assert await hub.reply(request) == {"type": "done", "re": request, "bytes": 8}


async def test_after_the_requestors_end_the_service_still_answers(hub: Hub) -> None:
    data = secrets.token_bytes(3 * 2**20 + 17)  # many chunks, several windows
    request = await hub.connect(COUNT)
    await hub.provider.send_data(request, data)  # then END: wc counts only once its input ended
    assert await hub.read_all(request) == (f"{len(data)}\n".encode(), FrameKind.END)
    assert (await hub.reply(request))["bytes"] == len(str(len(data))) + 1


async def test_a_port_where_nothing_listens_is_refused(hub: Hub) -> None:
    refused = await hub.try_connect(9)
    assert isinstance(refused, dict) and refused["code"] == "connection_refused", refused
    unknown = await hub.try_connect(ECHO, activity="nope")
    assert isinstance(unknown, dict) and unknown["code"] == "unknown_activity", unknown


async def test_many_connections_at_once(hub: Hub) -> None:
    async def one(index: int) -> None:
        request = await hub.connect(HTTP)
        await hub.provider.send_data(request, f"GET /body?{index} HTTP/1.0\r\n\r\n".encode())
        answer, end = await hub.read_all(request)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n" + BODY)
        assert end is FrameKind.END
        assert (await hub.reply(request))["bytes"] == len(answer)

    async with asyncio.TaskGroup() as tg:
        for index in range(24):
            tg.create_task(one(index))


async def test_abort_cancel_and_destroy_end_connections(hub: Hub) -> None:
    reset = await hub.connect(RESET)
    await hub.provider.send_data(reset, b"unread" * 1000, end=False)
    assert await hub.read_all(reset) == (b"", FrameKind.ABORT)
    assert (await hub.reply(reset))["code"] == "transfer_failed"
    aborted = await hub.connect(ECHO)
    await hub.provider.ws.send(encode(FrameKind.ABORT, aborted, b"changed my mind"))
    assert (await hub.reply(aborted))["code"] == "transfer_failed"
    cancelled = await hub.connect(ECHO)
    await hub.provider.send({"type": "cancel", "target": cancelled})
    assert (await hub.reply(cancelled))["code"] == "cancelled"
    # Idle connections: no timeout ends them (the provider's stream idle timeout is not theirs)...
    idle = [await hub.connect(ECHO) for _ in range(3)]
    await asyncio.sleep(2)  # twice the provider's --stream-idle-timeout
    assert not any(hub.replies[request].done() for request in idle)
    # ...but the activity's end does.
    await hub.provider.send({"type": "destroy", "id": 3, "activity": "a1"})
    assert (await hub.reply(3))["type"] == "done"
    for request in idle:
        assert (await hub.reply(request))["code"] == "cancelled"

"""Published ports (1.7) through a real hub's publish listener, to a simulated provider's services
(a tiny web server on port 80, an echo server elsewhere), read by raw HTTP clients."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from kiln.connection import client_context
from kiln.hub.io import published
from kiln.hub.io.published import HEAD_BYTES
from kiln.hub.io.server import start
from kiln.hub.io.tls import server_context
from kiln.testing.simulated import HTTP_PORT, REFUSED_PORT, SimulatedProvider, simulated
from tests.service.test_hub_connect import Raw, carries
from tests.tls import Certificates


@dataclass
class Hub:
    url: str
    provider: SimulatedProvider


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    async with start("127.0.0.1", 0, data_dir=tmp_path) as server:  # an open hub: no credentials
        url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"
        async with simulated(url, 1) as [provider]:
            yield Hub(url, provider)


async def publish(raw: Raw, activity: str, port: int, rid: int = 5) -> tuple[str, str]:
    published = await raw.ask({"type": "publish", "id": rid, "activity": activity, "port": port})
    assert published["type"] == "published", published
    return published["url"], published["token"]


async def fetch(url: str, head: bytes) -> bytes:
    """Send ``head`` (a request, its target relative to ``url``'s path) to the listener; all it answers."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(head.replace(b" ./", b" " + parts.path.encode()))
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


async def test_a_published_port_answers_http_with_its_prefix_stripped(hub: Hub) -> None:
    raw = await Raw.join(hub.url, "requestor", "alice")
    activity = await raw.rent()
    url, token = await publish(raw, activity, HTTP_PORT)
    assert url.startswith("http://127.0.0.1:") and url.endswith(f"/s/{token}/") and len(token) >= 43
    head = (
        b"GET ./a/b?x=1 HTTP/1.1\r\nHost: hub\r\nConnection: keep-alive\r\n"
        b"X-Forwarded-Prefix: /evil\r\nAccept: */*\r\n\r\n"
    )
    response = await fetch(url, head)
    assert status(response) == 200, response
    seen = response.partition(b"\r\n\r\n")[2].decode().split("\r\n")  # the service answers with what it was sent
    assert seen == [
        "GET /a/b?x=1 HTTP/1.1",
        "Host: hub",
        "Accept: */*",
        f"X-Forwarded-Prefix: /s/{token}",
        "Connection: close",
    ]
    bare = await fetch(url.rstrip("/"), b"GET ./ HTTP/1.1\r\n\r\n")  # the URL without its slash
    assert bare.partition(b"\r\n\r\n")[2].startswith(b"GET / HTTP/1.1\r\n")
    unreachable, _ = await publish(raw, activity, REFUSED_PORT, rid=6)
    answer = await fetch(unreachable, b"GET ./ HTTP/1.1\r\n\r\n")
    assert status(answer) == 502 and b"nothing listens" in answer, answer
    await raw.ws.close()


async def test_what_is_not_a_published_request_is_answered_by_the_listener(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = await Raw.join(hub.url, "requestor", "alice")
    activity = await raw.rent()
    url, token = await publish(raw, activity, HTTP_PORT)
    other = url.replace(token, "A" * len(token))
    assert status(await fetch(other, b"GET ./ HTTP/1.1\r\n\r\n")) == 404
    root = url.split("/s/")[0] + "/"
    assert status(await fetch(root, b"GET ./ HTTP/1.1\r\n\r\n")) == 404
    assert status(await fetch(url, b"hello there\r\n\r\n")) == 400
    huge = b"GET ./ HTTP/1.1\r\nX-Big: " + b"x" * HEAD_BYTES + b"\r\n\r\n"
    assert status(await fetch(url, huge)) == 431
    # A client that sends no head holds a place among the connections until its time is up.
    monkeypatch.setattr(published, "MAX_CONNECTIONS", 1)
    parts = urlsplit(url)
    _, silent = await asyncio.open_connection(parts.hostname, parts.port)
    await asyncio.sleep(0.05)
    assert status(await fetch(url, b"GET ./ HTTP/1.1\r\n\r\n")) == 503
    silent.close()
    await raw.ws.close()


async def test_an_upgrade_passes_raw_until_unpublished(hub: Hub) -> None:
    raw = await Raw.join(hub.url, "requestor", "alice")
    activity = await raw.rent()
    url, token = await publish(raw, activity, 8080)  # the echo server: what it is sent comes back
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = f"GET {parts.path}chat HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n".encode()
    writer.write(head + b"raw bytes")
    sent = (
        f"GET /chat HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Forwarded-Prefix: /s/{token}\r\n\r\n"
    ).encode() + b"raw bytes"
    assert await asyncio.wait_for(reader.readexactly(len(sent)), 5) == sent
    # Another session may not withdraw it; its own may, and the open connection closes at once.
    stranger = await Raw.join(hub.url, "requestor", "mallory")
    refused = await stranger.ask({"type": "unpublish", "id": 3, "token": token})
    assert (refused["code"], refused["re"]) == ("not_published", 3), refused
    assert await raw.ask({"type": "unpublish", "id": 7, "token": token}) == {"type": "done", "re": 7}
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await carries(hub.provider, 0)
    assert status(await fetch(url, b"GET ./ HTTP/1.1\r\n\r\n")) == 404
    again = await raw.ask({"type": "unpublish", "id": 8, "token": token})
    assert again["code"] == "not_published"
    # The end of the activity, and of the session, withdraw what they published.
    url, _ = await publish(raw, activity, HTTP_PORT, rid=9)
    assert (await raw.ask({"type": "release", "id": 10, "activity": activity}))["type"] == "done"
    assert status(await fetch(url, b"GET ./ HTTP/1.1\r\n\r\n")) == 404
    url, _ = await publish(raw, await raw.rent(id=11), HTTP_PORT, rid=12)
    assert status(await fetch(url, b"GET ./ HTTP/1.1\r\n\r\n")) == 200
    await raw.ws.close()
    await stranger.ws.close()
    for _ in range(100):
        if status(await fetch(url, b"GET ./ HTTP/1.1\r\n\r\n")) == 404:
            break
        await asyncio.sleep(0.01)
    assert status(await fetch(url, b"GET ./ HTTP/1.1\r\n\r\n")) == 404


async def test_the_listener_speaks_tls_when_the_hub_does(tmp_path: Path, tls: Certificates) -> None:
    with socket.socket() as s:  # a port free now, for the listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = server_context(tls.cert, tls.key)
    async with start("127.0.0.1", 0, data_dir=tmp_path, ssl=context, publish_port=port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(tls.ca))
        writer.write(b"GET /s/" + b"A" * 43 + b"/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status(await asyncio.wait_for(reader.read(), 5)) == 404
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # no TLS: nothing is answered
        writer.write(b"GET /s/x/ HTTP/1.1\r\n\r\n")
        assert not (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP")
        writer.close()

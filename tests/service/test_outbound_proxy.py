"""A container's outbound proxy (PROTOCOL.md §5.2) over real loopback sockets, without Docker: the
proxy listens on a port of this machine's loopback instead of the container's, and test names
map to 127.0.0.1 through the operator's hosts file. What is allowed reaches a real HTTP server
(CONNECT and absolute form); a name outside the rent's rules, outside the provider's policy, an
address that is private, a name rebound to one, a bad request and an oversized head are refused
as the spec says, and counted; a container flooding its proxy with silent connections meets its
bound (503) and the head timeout (408)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from prometheus_client import generate_latest

from kiln_provider.metrics import MetricsSource, Snapshot, Tallies, registry_of
from kiln_provider.outbound import MAX_HEAD, OutboundPolicy, parse_hosts
from kiln_provider.proxy import MAX_CONNECTIONS, OutboundProxy

pytestmark = pytest.mark.timeout(30)


@dataclass
class Setup:
    proxy_port: int
    site_port: int
    closed_port: int
    tallies: Tallies


async def _site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A web server that answers every request with the line it got."""
    line = await reader.readline()
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    body = b"you asked: " + line.strip()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    site = await asyncio.start_server(_site, "127.0.0.1", 0)
    site_port = site.sockets[0].getsockname()[1]
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]  # nothing listens there once closed
    hosts = parse_hosts("127.0.0.1 site.test rebound.test dead.test\n")
    policy = OutboundPolicy(
        rules=["*.test:*", "127.0.0.1:*"],
        private=frozenset({("site.test", site_port), ("dead.test", closed_port)}),
        hosts=hosts,
    )
    rent = [f"site.test:{site_port}", f"rebound.test:{site_port}", f"dead.test:{closed_port}"]
    rent += [f"127.0.0.1:{site_port}", "elsewhere.example:443"]
    tallies = Tallies()
    proxy = OutboundProxy(rent, policy, tallies, "test")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    await proxy.serve(listener)
    try:
        yield Setup(listener.getsockname()[1], site_port, closed_port, tallies)
    finally:
        await proxy.close()
        site.close()


async def ask(setup: Setup, head: bytes) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    """Send ``head`` to the proxy; its status line, and the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", setup.proxy_port)
    writer.write(head)
    await writer.drain()
    return await reader.readline(), reader, writer


async def refusal(setup: Setup, head: bytes) -> tuple[bytes, bytes]:
    """The proxy's status line and body for a request it refuses."""
    status, reader, writer = await ask(setup, head)
    rest = await reader.read()
    writer.close()
    return status, rest.partition(b"\r\n\r\n")[2]


async def test_an_allowed_site_is_reached_both_ways(setup: Setup) -> None:
    port = setup.site_port
    status, reader, writer = await ask(setup, b"CONNECT site.test:%d HTTP/1.1\r\nHost: x\r\n\r\n" % port)
    assert status == b"HTTP/1.1 200 Connection established\r\n"
    assert await reader.readline() == b"\r\n"
    writer.write(b"GET /tunnelled HTTP/1.1\r\nHost: site.test\r\n\r\n")
    assert (await reader.read()).endswith(b"you asked: GET /tunnelled HTTP/1.1")
    writer.close()
    head = b"GET http://site.test:%d/plain?x=1 HTTP/1.1\r\nHost: site.test\r\nProxy-Connection: keep-alive\r\n\r\n"
    status, reader, writer = await ask(setup, head % port)
    assert status == b"HTTP/1.1 200 OK\r\n"
    assert (await reader.read()).endswith(b"you asked: GET /plain?x=1 HTTP/1.1")  # in origin form upstream
    writer.close()
    assert setup.tallies.outbound_allowed == 2


async def test_what_is_not_allowed_is_refused_and_counted(setup: Setup) -> None:
    port = setup.site_port
    status, body = await refusal(setup, b"CONNECT other.test:%d HTTP/1.1\r\n\r\n" % port)
    assert status.startswith(b"HTTP/1.1 403 ") and b"not among the sites this rent may reach" in body
    status, body = await refusal(setup, b"CONNECT elsewhere.example:443 HTTP/1.1\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 403 ") and b"this provider lets containers reach" in body
    status, body = await refusal(setup, b"GET http://127.0.0.1:%d/ HTTP/1.1\r\n\r\n" % port)
    assert status.startswith(b"HTTP/1.1 403 ") and body == b"127.0.0.1 resolves to 127.0.0.1, a private address\n"
    # A name the rent allows, rebound to a loopback address: refused, as the operator allowed
    # only site.test (by name) to reach private addresses.
    status, body = await refusal(setup, b"CONNECT rebound.test:%d HTTP/1.1\r\n\r\n" % port)
    assert status.startswith(b"HTTP/1.1 403 ") and b"private address" in body
    assert setup.tallies.outbound_refused == {"rent": 1, "policy": 1, "private": 2}
    assert setup.tallies.outbound_allowed == 0
    # As the provider's metrics tell them.
    tallies = setup.tallies
    snapshot = Snapshot([], 0.0, {}, 0, 0, 0, tallies.outbound_allowed, dict(tallies.outbound_refused))
    source = MetricsSource(asyncio.get_running_loop(), lambda: snapshot, lambda: (0, 0))
    text = (await asyncio.to_thread(generate_latest, registry_of(source))).decode()
    assert 'kiln_provider_outbound_refused_total{reason="private"} 2.0' in text
    assert 'kiln_provider_outbound_refused_total{reason="busy"} 0.0' in text
    assert "kiln_provider_outbound_allowed_total 0.0" in text


async def test_bad_requests_and_unreachable_sites(setup: Setup) -> None:
    for head in (b"HELLO\r\n\r\n", b"GET /relative HTTP/1.1\r\n\r\n", b"CONNECT site.test HTTP/1.1\r\n\r\n"):
        status, _ = await refusal(setup, head)
        assert status.startswith(b"HTTP/1.1 400 "), head
    big = b"GET http://site.test/ HTTP/1.1\r\nX-Filler: " + b"a" * MAX_HEAD + b"\r\n\r\n"
    status, _ = await refusal(setup, big)
    assert status.startswith(b"HTTP/1.1 431 ")
    status, body = await refusal(setup, b"CONNECT dead.test:%d HTTP/1.1\r\n\r\n" % setup.closed_port)
    assert status.startswith(b"HTTP/1.1 502 ") and b"cannot connect" in body
    assert sum(setup.tallies.outbound_refused.values()) == 0  # counted are the 403s


async def test_a_container_that_floods_its_proxy_holds_only_its_own_bound(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Silent connections take the proxy's 64 places and no more: the next is 503 at once, each
    silent one is 408 once the head timeout passes, and then the proxy serves again."""
    monkeypatch.setattr("kiln_provider.proxy.HEAD_TIMEOUT", 1.0)
    silent = [await asyncio.open_connection("127.0.0.1", setup.proxy_port) for _ in range(MAX_CONNECTIONS)]
    await asyncio.sleep(0.2)  # every one accepted
    status, body = await refusal(setup, b"CONNECT site.test:%d HTTP/1.1\r\n\r\n" % setup.site_port)
    assert status.startswith(b"HTTP/1.1 503 ") and b"connections at once" in body
    answers = await asyncio.gather(*(reader.read() for reader, _ in silent))
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), {a[:20] for a in answers}
    for _, writer in silent:
        writer.close()
    assert setup.tallies.outbound_refused["busy"] == 1
    status, _, writer = await ask(setup, b"CONNECT site.test:%d HTTP/1.1\r\n\r\n" % setup.site_port)
    assert status == b"HTTP/1.1 200 Connection established\r\n"
    writer.close()

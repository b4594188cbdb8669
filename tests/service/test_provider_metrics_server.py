"""The provider's metrics server on a real socket, without Docker: it answers scrapes, serves at
most MAX_SCRAPES connections at once, and is gone once closed (the provider and its containers:
tests/docker/test_provider_metrics.py)."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request

import pytest

from kiln_provider.metrics import MAX_SCRAPES, MetricsSource, Snapshot, serve_metrics


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


async def test_it_serves_scrapes_within_its_bound_and_stops_when_closed() -> None:
    source = MetricsSource(asyncio.get_running_loop(), lambda: Snapshot([], 0.0, {}, 0, 0, 0), lambda: (0, 0))
    server = serve_metrics(source, "127.0.0.1", 0)
    host, port = server.address
    url = f"http://{host}:{port}/metrics"
    try:
        assert "kiln_provider_containers 0.0" in await asyncio.to_thread(get, url)
        idle = [socket.create_connection((host, port)) for _ in range(MAX_SCRAPES)]
        try:
            await asyncio.sleep(0.2)  # each is taken by a thread of its own, waiting for a request
            with pytest.raises((urllib.error.URLError, ConnectionError)):
                await asyncio.to_thread(get, url)  # one more is closed unanswered
        finally:
            for connection in idle:
                connection.close()
        await asyncio.sleep(0.2)  # their threads see them closed, and end
        assert "kiln_build_info" in await asyncio.to_thread(get, url)
    finally:
        await asyncio.to_thread(server.close)
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(get, url)

"""The provider's metrics server on a real socket, without Docker: it answers scrapes, serves at
most MAX_SCRAPES connections at once, and is gone once closed (the provider and its containers:
tests/docker/test_provider_metrics.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import urllib.error
import urllib.request

import pytest

from kiln_provider import metrics
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


async def test_a_client_that_trickles_its_request_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "SCRAPE_TIMEOUT", 0.5)  # the whole connection's deadline (the silence's stays)
    source = MetricsSource(asyncio.get_running_loop(), lambda: Snapshot([], 0.0, {}, 0, 0, 0), lambda: (0, 0))
    server = serve_metrics(source, "127.0.0.1", 0)
    try:

        def trickle() -> float:
            """Send a request's bytes one at a time, never silent for long; seconds until cut off."""
            started = time.monotonic()
            with socket.create_connection(server.address, timeout=5) as connection:
                for byte in b"GET /metrics HTTP/1.0\r\nX-Slow: " + b"x" * 100:
                    try:
                        connection.sendall(bytes([byte]))
                    except OSError:
                        break
                    if time.monotonic() - started > 4:
                        break
                    time.sleep(0.05)
                with contextlib.suppress(OSError):
                    connection.recv(1)
            return time.monotonic() - started

        assert await asyncio.to_thread(trickle) < 3
    finally:
        await asyncio.to_thread(server.close)

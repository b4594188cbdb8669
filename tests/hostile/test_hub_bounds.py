"""A real hub bounds what one peer can hold: a provider that leaves a create unanswered or
sits on an upload's credit does not hold a requestor for long, and connections that never say
hello cannot crowd out those that do. (The same bounds in the hub's core, on a fake clock:
tests/unit/test_hub_bounds.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

import kiln
from kiln.hub.io.server import MAX_UNWELCOMED, raise_open_file_limit
from kiln.testing import LocalCluster
from kiln.testing.simulated import simulated_providers

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def hub_url(tmp_path: Path) -> Iterator[str]:
    with LocalCluster(tmp_path) as cluster:
        yield cluster.start_hub("--create-timeout", "2")


async def test_a_stuck_provider_does_not_hold_a_rent(hub_url: str) -> None:
    async with simulated_providers(hub_url, 1, stuck=True, prefix="stuck"), kiln.connect(hub_url) as requestor:
        started = time.monotonic()
        with pytest.raises(kiln.ProviderLost, match="unanswered"):
            await requestor.rent("kiln-busybox:latest")
        assert time.monotonic() - started < 10
        assert await requestor.market() == [], "its capacity left the market"
        async with simulated_providers(hub_url, 1, prefix="well"), requestor.rent("kiln-busybox:latest") as act:
            assert act.provider.startswith("well")


async def test_a_provider_sitting_on_an_upload_does_not_hold_it_forever(tmp_path: Path) -> None:
    with LocalCluster(tmp_path) as cluster:
        url = cluster.start_hub("--credit-timeout", "2")
        async with (
            simulated_providers(url, 1, hoard=True),
            kiln.connect(url) as requestor,
            requestor.rent("kiln-busybox:latest") as act,
        ):
            started = time.monotonic()
            with pytest.raises(kiln.TransferFailed, match="no credit for 2 s"):
                await act.send_bytes(b"x" * 10, "/golem/input/x")
            waited = time.monotonic() - started
            assert (await act.run(["true"])).exit_code == 0, "the activity goes on"
        assert 1.5 < waited < 10, waited
    assert "without credit: aborted (no credit for 2 s)" in (cluster.hub.output() if cluster.hub else "")


async def test_idle_connections_cannot_crowd_out_peers_that_say_hello(hub_url: str) -> None:
    raise_open_file_limit()
    idle: list[ClientConnection] = []
    opened = time.monotonic()
    try:
        for n in range(8):  # 2,000 connections that never say hello, 250 from each of 8 addresses
            local = (f"127.0.0.{n + 2}", 0)  # within the waiting connections one address may hold (256)
            idle += await asyncio.gather(*(connect(hub_url, open_timeout=30, local_addr=local) for _ in range(250)))
        started = time.monotonic()
        async with (
            simulated_providers(hub_url, 2),
            kiln.connect(hub_url) as requestor,
            requestor.rent("kiln-busybox:latest") as act,
        ):
            assert (await act.run(["true"])).exit_code == 0
        assert time.monotonic() - started < 10
        still_open = sum(1 for ws in idle if ws.close_code is None)
        assert still_open <= MAX_UNWELCOMED < len(idle), (still_open, "the oldest silent connections made room")
        assert time.monotonic() - opened < 10, "measured before the hello timeout could close any"
    finally:
        await asyncio.gather(*(ws.close() for ws in idle), return_exceptions=True)

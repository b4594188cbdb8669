"""The requestor SDK's surface: the two ways to connect, how a worker's failures are told,
workers refused before anything is rented, and every name the docs use resolving in ``kiln``.
Against a real hub process and simulated providers (no Docker)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

import kiln
from kiln.testing import LocalCluster
from kiln.testing.simulated import simulated_providers

pytestmark = pytest.mark.timeout(60)

IMAGE = "kiln-busybox:latest"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[str]:
    with LocalCluster(tmp_path) as cluster:
        yield cluster.start_hub()


async def held(url: str) -> int:
    """The activities every provider of the hub holds now (from a fresh requestor's market)."""
    async with kiln.connect(url, name="watcher") as watcher:
        return sum(seller.activities for seller in await watcher.market())


def readers() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("kiln-reader-") and not t.done()]


async def test_await_connect_gives_a_connected_requestor_that_close_releases(hub: str) -> None:
    async with simulated_providers(hub, 1):
        requestor = await kiln.connect(hub, name="awaited")
        assert isinstance(requestor, kiln.Requestor)
        assert [t.get_name() for t in readers()] == ["kiln-reader-awaited"]
        act = await requestor.rent(IMAGE)
        assert (await act.run(["true"])).exit_code == 0
        assert await held(hub) == 1
        await requestor.close()
        assert readers() == [], "close() stops the reader"
        assert isinstance(requestor.gone, kiln.ConnectionClosed)
        assert act.released and requestor.activities == []
        assert await held(hub) == 0, "released at once, not held for the grace period"
        await requestor.close()  # a second close is harmless
        with pytest.raises(kiln.ConnectionClosed):
            await requestor.market()


async def test_async_with_connect_takes_the_same_path(hub: str) -> None:
    async with simulated_providers(hub, 1):
        async with kiln.connect(hub, name="block") as requestor:
            assert [t.get_name() for t in readers()] == ["kiln-reader-block"]
            await requestor.rent(IMAGE)
            assert await held(hub) == 1
        assert readers() == []
        assert isinstance(requestor.gone, kiln.ConnectionClosed)
        assert await held(hub) == 0

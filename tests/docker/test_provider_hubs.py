"""A provider given two hubs (``kiln provider --hub A --hub B``) moves to the second when its own
is SIGKILLed, and serves rents there. The hubs are SQLite ones, each its own market: that B hands
back the containers of A's activities needs the hubs to share a database (PostgreSQL); here the
provider only has to arrive. Requestors moving between hubs: tests/service/test_several_hubs.py."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import kiln
from tests.conftest import IMAGE, Cluster, containers_of, started

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

SMALL = kiln.Demand(cpus=0.1, memory="32MiB")


@pytest.fixture
def two(tmp_path: Path, busybox_image: str) -> Iterator[tuple[Cluster, Cluster]]:
    suffix = f"-{secrets.token_hex(3)}"
    with started(Cluster(tmp_path / "a", suffix=suffix)) as a, started(Cluster(tmp_path / "b", suffix=suffix)) as b:
        yield a, b


async def offered_at(url: str, name: str) -> bool:
    async with kiln.connect(url, name="watcher") as watcher:
        return any(p.name == name and IMAGE in p.images for p in await watcher.market())


async def test_a_provider_whose_hub_is_killed_joins_the_next_one(two: tuple[Cluster, Cluster]) -> None:
    a, b = two
    name = await asyncio.to_thread(a.start_provider, "mover", "--hub", b.url, cpus=1, memory="1GiB")
    assert not await offered_at(b.url, name), "on one hub at a time: the first given"
    assert a.hub is not None
    killed = time.monotonic()
    await asyncio.to_thread(a.hub.stop, signal.SIGKILL)
    while not await offered_at(b.url, name):
        assert time.monotonic() - killed < 30, a.providers[name].output()[-3000:]
        await asyncio.sleep(0.05)
    print(f"\nthe provider offered on the next hub {time.monotonic() - killed:.2f} s after its hub was killed")
    async with kiln.connect(b.url) as requestor, requestor.rent(IMAGE, SMALL) as activity:
        assert (await activity.run(["echo", "moved"])).stdout == "moved\n"
    log = a.providers[name].output()
    assert f"joined the hub at {a.url}" in log and f"joined the hub at {b.url}" in log
    assert f"lost the hub at {a.url}" in log


async def test_on_one_database_the_provider_and_the_requestor_move_on_and_the_activity_lives(
    tmp_path: Path, busybox_image: str, postgres_url: str
) -> None:
    """Hub a is SIGKILLed; the provider and the requestor join b, and the activity rented through a
    goes on with what it wrote. Hub b closes the requestor's resume with 1013 (dial again) until it
    finds a dead (DEAD_AFTER), then adopts its session."""
    suffix = f"-{secrets.token_hex(3)}"
    shared = ("--db", postgres_url, "--grace", "30")
    with (
        started(Cluster(tmp_path / "a", suffix=suffix), *shared) as a,
        started(Cluster(tmp_path / "b", suffix=suffix), *shared) as b,
    ):
        name = await asyncio.to_thread(a.start_provider, "kept", "--hub", b.url, cpus=1, memory="1GiB")
        async with kiln.connect([a.url, b.url], name="mover") as requestor:
            activity = await requestor.rent(IMAGE, SMALL)
            assert (await activity.run(["sh", "-c", "echo kept > /tmp/mark"])).exit_code == 0
            [container] = containers_of(name)
            assert a.hub is not None
            killed = time.monotonic()
            await asyncio.to_thread(a.hub.stop, signal.SIGKILL)
            while not requestor.reconnecting:  # a command sent before the drop is seen would be lost with it
                assert time.monotonic() - killed < 5
                await asyncio.sleep(0.01)
            result = await activity.run(["cat", "/tmp/mark"])  # waits out the reconnect, then through hub b
            print(f"\nthe activity answered through hub b {time.monotonic() - killed:.2f} s after hub a was killed")
            assert (result.exit_code, result.stdout) == (0, "kept\n"), result
            assert requestor.url == b.url and activity.lost is None
            assert containers_of(name) == [container], "the same container"
        log = a.providers[name].output()
        assert f"joined the hub at {b.url}" in log and "reported 1 activities still running" in log, log[-3000:]

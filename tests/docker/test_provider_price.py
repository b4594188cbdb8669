"""A real provider's price and meter (protocol 1.5): ``--price`` is in its offer and in the hub's
market (a bad one: tests/service/test_market_prices.py), and ``meter`` is answered with its
container's CPU seconds so far (a hub played by hand sends it, as a ledger hub would)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import kiln
from tests.conftest import IMAGE, Cluster
from tests.scripted_hub import ScriptedHub, scripted_hub

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

MiB = 2**20
PRICE = "start=0.01,cpu-hour=0.20,env-hour=0.05"
WIRE = {"start": 10_000, "cpu_hour": 200_000, "env_hour": 50_000}


@pytest.fixture
async def hub() -> AsyncIterator[ScriptedHub]:
    async with scripted_hub(version="1.5") as h:
        yield h


async def test_the_price_is_offered_and_meter_is_answered_with_cpu_seconds(
    hub: ScriptedHub, tmp_path: Path, busybox_image: str
) -> None:
    cluster = Cluster(tmp_path / "logs", suffix=f"-{os.urandom(3).hex()}")
    cluster.url = hub.url
    try:
        name = cluster.start_provider("p", "--price", PRICE, cpus=2, memory="1GiB", wait=False)
        provider = await hub.provider()
        assert provider.raw_offers[-1]["price"] == WIRE
        resources = {"cpus": 1, "memory": 64 * MiB, "storage": 16 * MiB}
        await provider.send({"type": "create", "id": 1, "activity": "a1", "image": IMAGE, "resources": resources})
        assert (await provider.receive(timeout=60))["type"] == "done"
        await provider.send({"type": "meter", "id": 2, "activity": "a1"})
        first = await provider.receive()
        assert first["type"] == "done" and first["re"] == 2 and first["cpu_seconds"] >= 0, first
        busy = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"
        await provider.send({"type": "exec", "id": 3, "activity": "a1", "argv": ["sh", "-c", busy], "timeout": 60})
        assert (await provider.receive(timeout=60))["exit_code"] == 0
        await provider.send({"type": "meter", "id": 4, "activity": "a1"})
        later = await provider.receive()
        assert later["cpu_seconds"] > first["cpu_seconds"], (first, later)
        await provider.send({"type": "cost", "activity": "a1", "seq": 1, "due": 50_000, "seconds": 3, "cpu_seconds": 1})
        await provider.send({"type": "meter", "id": 5, "activity": "nobody"})
        unknown = await provider.receive()
        assert unknown["type"] == "error" and unknown["code"] == "unknown_activity", unknown
        await provider.send({"type": "destroy", "id": 6, "activity": "a1"})
        gone = await provider.receive(timeout=60)
        assert gone["type"] == "done" and gone["cpu_seconds"] >= later["cpu_seconds"], gone
        log = cluster.providers[name].output()
        assert "owes 0.05 credits so far" in log and "start=0.01,cpu-hour=0.2,env-hour=0.05" in log, log
    finally:
        await asyncio.to_thread(cluster.stop)


async def test_the_market_lists_a_priced_provider_and_a_cap_below_it_finds_none(cluster: Cluster) -> None:
    name = await asyncio.to_thread(cluster.start_provider, "p", "--price", PRICE)
    async with kiln.connect(cluster.url) as requestor:
        (info,) = await requestor.market()
        assert info.name == name and info.price == kiln.Price(start=0.01, cpu_hour=0.2, env_hour=0.05)
        assert info.reputation == 0.5
        with pytest.raises(kiln.NoMatch, match="max_price"):
            await requestor.rent(IMAGE, kiln.Demand(cpus=0.1, memory="16MiB", max_price=kiln.Price(start=0.001)))
        cap = kiln.Price(start=0.01, cpu_hour=1, env_hour=1)
        async with requestor.rent(IMAGE, kiln.Demand(cpus=0.1, memory="16MiB", max_price=cap)) as act:
            assert act.provider == name
        (after,) = await requestor.market()
        assert after.reputation is not None and after.reputation > 0.5, "a rent that started counts for it"

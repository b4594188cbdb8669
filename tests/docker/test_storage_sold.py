"""Storage is sold once: a rent that names no storage gets a volume of the default size, and
the hub reserves that much for it; a provider makes no more volumes than its offer holds.

Found by a hostile test (issue 18, defect 5): a provider offering 512 MiB took 12 rents that
named no storage, each given a 256 MiB volume, and used 2,949 MiB of the host's disk while
the market still showed 512 MiB free.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import kiln
from kiln.protocol import limits
from tests.conftest import IMAGE, Cluster
from tests.scripted_hub import ScriptedHub, scripted_hub

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

MiB = 2**20
TINY = kiln.Demand(cpus=0.1, memory="16MiB")


def disk_used(folder: Path) -> int:
    """Bytes the files below ``folder`` take on the disk (their blocks, as ``du`` counts them)."""
    return sum(entry.stat().st_blocks * 512 for entry in folder.glob("*.img"))


async def test_rents_that_name_no_storage_fit_only_what_the_offer_holds(cluster: Cluster) -> None:
    name = await asyncio.to_thread(cluster.start_provider, "p", "--storage", "512MiB", cpus=2, memory="2GiB")
    volumes = cluster.logs / f"{name}.data" / "volumes"
    async with kiln.connect(cluster.url) as requestor:
        held: list[kiln.Activity] = []
        refused: list[kiln.NoMatch] = []
        for _ in range(12):
            try:
                held.append(await requestor.rent(IMAGE, TINY))
            except kiln.NoMatch as e:
                refused.append(e)
        try:
            assert len(held) == 2, f"{len(held)} rents of 256 MiB each on an offer of 512 MiB"
            assert all(act.resources.storage == limits.DEFAULT_STORAGE for act in held)
            assert "busy" in refused[0].message, refused[0].message
            (info,) = await requestor.market()
            assert info.free.storage == 0
            # Each fills what it may: the disk holds no more than what was sold.
            for act in held:
                result = await act.run(["sh", "-c", "dd if=/dev/zero of=/golem/work/fill bs=1M count=400"], timeout=60)
                assert result.exit_code != 0 and "No space left" in result.stderr, result
            assert disk_used(volumes) <= 512 * MiB, f"{disk_used(volumes) / MiB:.0f} MiB of disk for 512 MiB sold"
        finally:
            for act in held:
                await act.release()
        assert (await requestor.market())[0].free.storage == 512 * MiB


async def test_a_rent_past_the_default_is_named_in_the_refusal(cluster: Cluster) -> None:
    await asyncio.to_thread(cluster.start_provider, "p", "--storage", "100MiB", cpus=2, memory="2GiB")
    async with kiln.connect(cluster.url) as requestor:
        with pytest.raises(
            kiln.NoMatch,
            match=r"256MiB of storage \(most offered: 100MiB; a rent that names no storage is given 256MiB\)",
        ):
            await requestor.rent(IMAGE, TINY)
        async with requestor.rent(IMAGE, kiln.Demand(cpus=0.1, memory="16MiB", storage="64MiB")) as act:
            assert act.resources.storage == 64 * MiB


@pytest.fixture
async def hub() -> AsyncIterator[ScriptedHub]:
    async with scripted_hub() as h:
        yield h


def create(request: int, storage: int) -> dict[str, object]:
    return {
        "type": "create",
        "id": request,
        "activity": f"a{request}",
        "image": IMAGE,
        "resources": {"cpus": 0.1, "memory": 16 * MiB, "storage": storage},
    }


async def test_a_provider_makes_no_volume_past_its_offer_or_its_count(
    hub: ScriptedHub, tmp_path: Path, busybox_image: str
) -> None:
    # A hub that sells more than the offer (this one plays it by hand) gets refusals, not volumes.
    cluster = Cluster(tmp_path / "logs", suffix=f"-{os.urandom(3).hex()}")
    cluster.url = hub.url
    try:
        name = cluster.start_provider(
            "p", "--storage", "96MiB", "--max-containers", "3", cpus=2, memory="1GiB", wait=False
        )
        provider = await hub.provider()
        await provider.send(create(1, 64 * MiB))
        assert (await provider.receive(timeout=60))["type"] == "done"
        await provider.send(create(2, 64 * MiB))
        refused = await provider.receive(timeout=60)
        assert refused["code"] == "container_failed" and "offer" in refused["message"], refused
        await provider.send(create(3, 0))  # no storage named: the default, past what is left
        refused = await provider.receive(timeout=60)
        assert refused["code"] == "container_failed", refused
        for request in (4, 5):
            await provider.send(create(request, MiB))
            assert (await provider.receive(timeout=60))["type"] == "done"
        await provider.send(create(6, MiB))
        refused = await provider.receive(timeout=60)
        assert refused["code"] == "container_failed" and "3 containers" in refused["message"], refused
        volumes = cluster.logs / f"{name}.data" / "volumes"
        assert len(list(volumes.glob("*.img"))) == 3
    finally:
        await asyncio.to_thread(cluster.stop)

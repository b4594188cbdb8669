"""A hub with more providers than a rent may exclude (1,024), simulated in this process: jobs
and listings keep working and stay small. The timings are benchmarks/placement.py's."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import kiln
from kiln.testing import LocalCluster
from kiln.testing.simulated import simulated_providers

pytestmark = pytest.mark.timeout(180)

PROVIDERS = 1100
IMAGE = "kiln-busybox:latest"


async def test_a_job_past_1024_providers(tmp_path: Path) -> None:
    with LocalCluster(tmp_path) as cluster:
        url = cluster.start_hub()
        async with simulated_providers(url, PROVIDERS) as names, kiln.connect(url) as requestor:
            assert len(await requestor.market()) == 100, "a listing is limited (100 by default)"
            assert len(await requestor.market(limit=1000)) == 1000
            assert [p.name for p in await requestor.market(image="nothing-has-this:1")] == []

            events: list[kiln.JobEvent] = []

            async def worker(act: kiln.Activity, n: int) -> str:
                assert (await act.run(["true"])).exit_code == 0
                return act.provider

            # More slots than the hub lets one requestor have requests open (256): they wait their turn.
            used = await requestor.map(
                worker, range(600), image=IMAGE, max_providers=300, on_event=events.append, progress=False
            )
            rented = [e.provider for e in events if e.kind == "rented"]
            assert len(set(rented)) == len(rented) == 300, "one activity per provider, all distinct"
            assert set(used) <= set(names)
            assert requestor.activities == []
            async with requestor.rent("kiln-busybox:latest") as act:
                results = await asyncio.gather(*(act.run(["true"]) for _ in range(1000)))
            assert all(r.exit_code == 0 for r in results)

"""The hub killed (SIGKILL) and started again on the same data directory: real hub and
provider processes, real containers. Requestors and providers dial again; nothing a
requestor holds is lost, and a job finishes with every result right."""

from __future__ import annotations

import asyncio
import collections
import signal
import time

import pytest

import kiln
from kiln.requestor.executor import JobEvent
from tests.conftest import IMAGE, Cluster, containers_of

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

SMALL = kiln.Demand(cpus=0.5, memory="64MiB")


@pytest.mark.hub_args("--grace", "30")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
async def test_an_activity_keeps_its_container_through_a_hub_restart(cluster: Cluster, sig: int) -> None:
    await asyncio.to_thread(cluster.start_provider, "p1")
    async with kiln.connect(cluster.url, name="keeper") as requestor:
        act = await requestor.rent(IMAGE, SMALL)
        before = await act.run(["sh", "-c", "echo kept > /golem/work/note; hostname"])
        await asyncio.to_thread(cluster.restart_hub, sig, 1.0)
        # The same container: the note is there, under the same hostname.
        after = await act.run(["sh", "-c", "cat /golem/work/note; hostname"])
        assert after.stdout.split() == ["kept", before.stdout.strip()]
        await act.release()
    hub_log = cluster.hub.output() if cluster.hub else ""
    assert "restored 1 sessions holding 1 activities" in hub_log
    assert "1 activities kept, 0 lost" in hub_log


@pytest.mark.hub_args("--grace", "30")
async def test_a_job_finishes_with_every_result_right_through_a_hub_sigkill(cluster: Cluster) -> None:
    for name in ("p1", "p2"):
        await asyncio.to_thread(cluster.start_provider, name, wait=False)
    await asyncio.to_thread(cluster.wait_for_providers, {f"p1{cluster.suffix}", f"p2{cluster.suffix}"})
    events: list[JobEvent] = []
    done_once: collections.Counter[int] = collections.Counter()
    ten_done = asyncio.Event()

    async def square(act: kiln.Activity, x: int) -> int:
        result = await act.run(["sh", "-c", f"sleep 0.2; echo $(({x} * {x}))"])
        return int(result.stdout)

    def on_event(event: JobEvent) -> None:
        events.append(event)
        if event.kind == "task_done" and event.task is not None:
            done_once[event.task] += 1
            if sum(done_once.values()) >= 10:
                ten_done.set()

    async def kill_mid_job() -> float:
        await ten_done.wait()
        started = time.monotonic()
        await asyncio.to_thread(cluster.restart_hub, pause=0.5)
        return time.monotonic() - started

    async with kiln.connect(cluster.url, name="job") as requestor:
        killer = asyncio.create_task(kill_mid_job())
        results = await requestor.map(
            square, range(40), image=IMAGE, demand=SMALL, max_providers=2, retries=2, on_event=on_event
        )
        down = await killer
    assert results == [x * x for x in range(40)]
    assert sorted(done_once) == list(range(40)) and set(done_once.values()) == {1}, "each task counted once"
    kinds = collections.Counter(event.kind for event in events)
    assert kinds["task_failed"] == 0
    print(
        f"\n  hub killed after 10 tasks, back {down:.1f} s later; {kinds['rented']} rents, "
        f"{kinds['task_retry']} retries"
    )


@pytest.mark.hub_args("--grace", "30")
async def test_a_provider_removes_what_it_kept_when_no_hub_comes_back(cluster: Cluster) -> None:
    name = await asyncio.to_thread(cluster.start_provider, "p1", "--grace", "2")
    async with kiln.connect(cluster.url, name="r", reconnect=False) as requestor:
        await requestor.rent(IMAGE, SMALL)
        assert len(containers_of(name)) == 1
        assert cluster.hub is not None
        cluster.hub.stop(9)
        await asyncio.sleep(1)
        assert len(containers_of(name)) == 1, "kept while the hub may come back"
        assert await asyncio.to_thread(gone_within, 15, name)


def gone_within(seconds: float, provider: str) -> bool:
    deadline = time.monotonic() + seconds
    while containers_of(provider):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True

"""Chaos, bounded: 200 tasks of a ``map`` with retries while one provider is SIGKILLed and
started again every 10 s, and the hub is SIGKILLed and started again once, mid-job, on
the same data directory. Real hub and provider processes, real containers. Every result
must be right, none lost, and no task counted done twice; the test prints what happened."""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import time

import pytest

import kiln
from kiln.requestor.executor import JobEvent
from tests.conftest import IMAGE, Cluster

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

TASKS = 200
KILL_EVERY = 10.0


@pytest.mark.hub_args("--grace", "30")
async def test_a_job_survives_providers_and_the_hub_being_killed(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    names = [f"p{n}{cluster.suffix}" for n in (1, 2, 3, 4)]
    for name in ("p1", "p2", "p3", "p4"):
        await asyncio.to_thread(cluster.start_provider, name, wait=False)
    await asyncio.to_thread(cluster.wait_for_providers, set(names))
    victim = names[3]
    events: list[JobEvent] = []
    done: collections.Counter[int] = collections.Counter()
    chaos: collections.Counter[str] = collections.Counter()
    half_done = asyncio.Event()

    def on_event(event: JobEvent) -> None:
        events.append(event)
        if event.kind == "task_done" and event.task is not None:
            done[event.task] += 1
            if sum(done.values()) >= TASKS // 3:
                half_done.set()

    async def cube(act: kiln.Activity, x: int) -> int:
        result = await act.run(["sh", "-c", f"sleep 0.5; echo $(({x} * {x} * {x}))"], timeout=30)
        return int(result.stdout)

    async def kill_the_provider() -> None:
        while True:
            await asyncio.sleep(KILL_EVERY)
            cluster.providers[victim].stop(signal.SIGKILL)
            chaos["provider kills"] += 1
            await asyncio.to_thread(cluster.start_provider, "p4", wait=False)

    async def kill_the_hub() -> None:
        await half_done.wait()
        await asyncio.to_thread(cluster.restart_hub, pause=0.5)
        chaos["hub kills"] += 1

    caplog.set_level(logging.WARNING, logger="kiln")
    started = time.monotonic()
    async with kiln.connect(cluster.url, name="chaos") as requestor, asyncio.TaskGroup() as tg:
        killers = [tg.create_task(kill_the_provider()), tg.create_task(kill_the_hub())]
        demand = kiln.Demand(cpus=0.5, memory="64MiB")
        results = await requestor.map(
            cube, range(TASKS), image=IMAGE, demand=demand, max_providers=6, retries=8, on_event=on_event
        )
        for killer in killers:
            killer.cancel()
    took = time.monotonic() - started
    assert results == [x**3 for x in range(TASKS)], "every result right"
    assert sorted(done) == list(range(TASKS)), "none lost"
    assert set(done.values()) == {1}, "none counted done twice"
    assert chaos["hub kills"] == 1 and chaos["provider kills"] >= 1
    kinds = collections.Counter(event.kind for event in events)
    reconnects = sum("reconnected to the hub" in record.getMessage() for record in caplog.records)
    assert reconnects >= 1
    print(
        f"\n  chaos: {TASKS} tasks in {took:.1f} s; {chaos['provider kills']} provider kills, "
        f"{chaos['hub kills']} hub kill; {reconnects} reconnects of the requestor; {kinds['rented']} rents; "
        f"{kinds['task_retry']} retries; {kinds['provider_banned']} providers banned; "
        f"tasks per provider {dict(collections.Counter(e.provider for e in events if e.kind == 'task_done'))}"
    )

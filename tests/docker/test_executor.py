"""The task executor on a real hub, real providers and real containers."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import kiln
from tests.conftest import IMAGE, Cluster, containers_of

pytestmark = [pytest.mark.docker, pytest.mark.timeout(240)]

SMALL = kiln.Demand(cpus=0.5, memory="64MiB")


async def square(act: kiln.Activity, n: int) -> int:
    await act.send_bytes(str(n).encode(), "/golem/input/n")
    r = await act.run(["sh", "-c", "n=$(cat /golem/input/n); echo $((n * n))"])
    return int(r.stdout)


async def slow_square(act: kiln.Activity, n: int) -> int:
    r = await act.run(["sh", "-c", f"sleep 0.4; echo $(({n} * {n}))"])
    if r.exit_code != 0:
        raise RuntimeError(r.stderr)
    return int(r.stdout)


async def start(cluster: Cluster, *names: str, cpus: float = 2) -> list[str]:
    started = [cluster.start_provider(n, cpus=cpus, memory="1GiB", wait=False) for n in names]
    await asyncio.to_thread(cluster.wait_for_providers, set(started))
    return started


async def nothing_held(cluster: Cluster) -> None:
    async with kiln.connect(cluster.url) as requestor:
        for offer in await requestor.market():
            assert offer.free == offer.offered, offer
            assert offer.activities == 0
    for name in cluster.providers:
        assert containers_of(name) == []


async def test_fifty_tasks_on_three_providers(cluster: Cluster) -> None:
    names = await start(cluster, "p1", "p2", "p3")
    events: list[kiln.JobEvent] = []
    setups: list[str] = []

    async def setup(act: kiln.Activity) -> None:
        setups.append(act.provider)
        await act.send_bytes(b"shared", "/golem/input/shared.txt")

    teardowns: list[str] = []

    async def teardown(act: kiln.Activity) -> None:
        teardowns.append(act.provider)
        assert (await act.run(["cat", "/golem/input/shared.txt"])).stdout == "shared"

    async with kiln.connect(cluster.url) as requestor:
        job = requestor.job(
            square,
            range(50),
            image=IMAGE,
            demand=SMALL,
            max_providers=4,
            setup=setup,
            teardown=teardown,
            on_event=events.append,
        )
        results = await job.run()
    assert results == [n * n for n in range(50)]
    rented = [str(e.provider) for e in events if e.kind == "rented"]
    assert sorted(rented) == sorted(names), "one activity per provider, reused for many tasks"
    assert sorted(setups) == sorted(names)
    assert sorted(teardowns) == sorted(names)
    assert set(job.summary.tasks_per_provider) == set(names)
    assert sum(job.summary.tasks_per_provider.values()) == 50
    assert (job.summary.attempts, job.summary.retries) == (50, 0)
    assert set(job.summary.cpu_seconds) == set(names)
    assert all(seconds > 0 for seconds in job.summary.cpu_seconds.values())
    await nothing_held(cluster)


async def test_results_as_they_finish(cluster: Cluster) -> None:
    await start(cluster, "p1")
    async with kiln.connect(cluster.url) as requestor:
        seen = {i: v async for i, v in requestor.map_unordered(square, range(12), image=IMAGE, demand=SMALL)}
    assert seen == {n: n * n for n in range(12)}


async def test_a_provider_killed_mid_job(cluster: Cluster) -> None:
    names = await start(cluster, "p1", "p2", "p3")
    victim = names[0]
    events: list[kiln.JobEvent] = []

    def on_event(event: kiln.JobEvent) -> None:
        events.append(event)
        done_on_victim = sum(1 for e in events if e.kind == "task_done" and e.provider == victim)
        if done_on_victim == 3 and cluster.providers[victim].popen.poll() is None:
            cluster.providers[victim].popen.send_signal(signal.SIGKILL)

    async with kiln.connect(cluster.url) as requestor:
        job = requestor.job(slow_square, range(30), image=IMAGE, demand=SMALL, retries=2, on_event=on_event)
        results = await job.run()
    assert results == [n * n for n in range(30)]
    assert job.summary.retries >= 1
    assert any(e.kind == "task_retry" and e.provider == victim for e in events)
    assert job.summary.tasks_per_provider[victim] == 3
    assert sum(job.summary.tasks_per_provider.values()) == 30


async def test_a_task_that_always_fails(cluster: Cluster) -> None:
    await start(cluster, "p1", "p2")
    attempts: Counter[int] = Counter()

    async def flaky(act: kiln.Activity, n: int) -> int:
        attempts[n] += 1
        if n == 3:
            raise kiln.RetryTask(f"task {n} wants another go")
        return await square(act, n)

    async with kiln.connect(cluster.url) as requestor:
        with pytest.raises(kiln.TaskFailed) as failed:
            await requestor.map(flaky, range(6), image=IMAGE, demand=SMALL, retries=2)
    assert failed.value.index == 3
    assert len(failed.value.attempts) == 3
    assert attempts[3] == 3
    assert all(isinstance(e, kiln.RetryTask) for e in failed.value.attempts)
    await nothing_held(cluster)


async def test_worker_errors_fail_at_once_or_become_results(cluster: Cluster) -> None:
    await start(cluster, "p1")

    async def picky(act: kiln.Activity, n: int) -> int:
        if n == 2:
            raise ValueError("two is not allowed")
        return await square(act, n)

    async with kiln.connect(cluster.url) as requestor:
        with pytest.raises(kiln.TaskFailed, match="ValueError: two is not allowed") as failed:
            await requestor.map(picky, range(5), image=IMAGE, demand=SMALL)
        assert len(failed.value.attempts) == 1
        assert isinstance(failed.value.__cause__, ValueError) and failed.value.code == "task_failed"
        mixed: list[object] = list(
            await requestor.map(picky, range(5), image=IMAGE, demand=SMALL, return_exceptions=True)
        )
    assert [r for i, r in enumerate(mixed) if i != 2] == [0, 1, 9, 16]
    assert isinstance(mixed[2], kiln.TaskFailed)
    assert isinstance(mixed[2].__cause__, ValueError)
    await nothing_held(cluster)


async def test_a_provider_that_joins_mid_job_gets_work(cluster: Cluster) -> None:
    [first] = await start(cluster, "p1", cpus=0.5)
    joined: list[str] = []

    async def join_later() -> None:
        await asyncio.sleep(1.5)
        joined.extend(await start(cluster, "p2"))

    async with kiln.connect(cluster.url) as requestor, asyncio.TaskGroup() as tg:
        tg.create_task(join_later())
        job = requestor.job(slow_square, range(24), image=IMAGE, demand=SMALL, max_providers=2)
        results = await job.run()
    assert results == [n * n for n in range(24)]
    assert job.summary.tasks_per_provider[first] > 0
    assert job.summary.tasks_per_provider[joined[0]] > 0


async def test_waiting_for_a_provider_is_bounded(cluster: Cluster) -> None:
    await start(cluster, "p1")
    async with kiln.connect(cluster.url) as requestor:
        with pytest.raises(kiln.NoMatch, match="after 1 s: no provider offers 64GiB"):
            await requestor.map(square, range(3), image=IMAGE, demand=kiln.Demand(memory="64GiB"), start_timeout=1)


async def test_a_cancelled_job_leaves_nothing_behind(cluster: Cluster) -> None:
    names = await start(cluster, "p1", "p2")
    started = asyncio.Event()

    async def hang(act: kiln.Activity, n: int) -> None:
        started.set()
        await act.run(["sleep", "300"])

    async with kiln.connect(cluster.url) as requestor:
        job = asyncio.create_task(requestor.map(hang, range(8), image=IMAGE, demand=SMALL))
        await started.wait()
        await asyncio.sleep(0.5)
        assert all(containers_of(n) for n in names)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        await nothing_held(cluster)


async def test_events_and_the_progress_bar(cluster: Cluster) -> None:
    import io

    from rich.console import Console

    await start(cluster, "p1")
    screen = io.StringIO()
    async with kiln.connect(cluster.url) as requestor:
        job = requestor.job(square, range(10), image=IMAGE, demand=SMALL)
        view = kiln.ProgressView(job, console=Console(file=screen, force_terminal=True, width=160))
        assert view.enabled
        events = job.events()
        seen: list[kiln.JobEvent] = []

        async def follow() -> None:
            seen.extend([event async for event in events])

        async with asyncio.TaskGroup() as tg:
            tg.create_task(follow())
            await asyncio.sleep(0)  # the follower subscribes before the job starts
            with view:
                assert await job.run() == [n * n for n in range(10)]
    kinds = [e.kind for e in seen]
    assert kinds[0] == "job_started"
    assert kinds[-1] == "job_done"
    assert sorted(e.task for e in seen if e.kind == "task_done" and e.task is not None) == list(range(10))
    assert [e.elapsed for e in seen] == sorted(e.elapsed for e in seen)
    shown = screen.getvalue()
    assert "10/10" in shown
    assert "tasks 10: 10 done, 0 failed" in shown
    quiet = kiln.ProgressView(job, console=Console(file=io.StringIO()))
    assert not quiet.enabled, "no bar when the console is not a terminal"


async def test_ctrl_c_releases_everything(cluster: Cluster, tmp_path: Path) -> None:
    names = await start(cluster, "p1", "p2")
    script = tmp_path / "job.py"
    script.write_text(
        "import asyncio, kiln\n"
        "async def hang(act, n):\n"
        "    print('running', flush=True)\n"
        "    await act.run(['sleep', '300'])\n"
        "async def main():\n"
        f"    async with kiln.connect({cluster.url!r}) as r:\n"
        f"        await r.map(hang, range(6), image={IMAGE!r}, demand=kiln.Demand(cpus=0.5, memory='64MiB'))\n"
        "asyncio.run(main())\n"
    )
    job = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert job.stdout is not None
    assert (await job.stdout.readline()).strip() == b"running"
    await asyncio.sleep(1)
    assert all(containers_of(n) for n in names)
    job.send_signal(signal.SIGINT)
    _, stderr = await asyncio.wait_for(job.communicate(), 30)
    assert job.returncode != 0
    assert b"KeyboardInterrupt" in stderr
    await nothing_held(cluster)


async def test_a_provider_whose_tasks_succeed_elsewhere_gets_banned(cluster: Cluster) -> None:
    names = await start(cluster, "p1", "p2")
    bad = names[0]
    tried_on: Counter[str] = Counter()

    async def picky(act: kiln.Activity, n: int) -> int:
        tried_on[act.provider] += 1
        if act.provider == bad:
            await asyncio.sleep(0.3)  # computing a wrong answer
            raise kiln.RetryTask(f"{act.provider} gives wrong answers")
        # Not done before the bad provider has failed twice (an upload and a command take ms).
        await asyncio.sleep(0.1)
        return await square(act, n)

    async with kiln.connect(cluster.url) as requestor:
        job = requestor.job(picky, range(16), image=IMAGE, demand=SMALL, retries=2)
        assert await job.run() == [n * n for n in range(16)]
    assert job.summary.failed_providers == {bad}
    assert job.summary.tasks_per_provider == Counter({names[1]: 16})
    assert tried_on[bad] < 8, "banned once two of its tasks had succeeded elsewhere"
    assert job.summary.retries == tried_on[bad]


async def test_a_task_failing_everywhere_bans_no_provider(cluster: Cluster) -> None:
    await start(cluster, "p1", "p2")

    async def hopeless(act: kiln.Activity, n: int) -> int:
        raise kiln.RetryTask(f"task {n} cannot be done on {act.provider}")

    async with kiln.connect(cluster.url) as requestor:
        job = requestor.job(hopeless, range(2), image=IMAGE, demand=SMALL, retries=2, start_timeout=5)
        with pytest.raises(kiln.TaskFailed) as failed:
            await job.run()
    assert len(failed.value.attempts) == 3
    assert all(isinstance(e, kiln.RetryTask) for e in failed.value.attempts)
    assert job.summary.failed_providers == set()
    await nothing_held(cluster)


async def test_a_failing_teardown_still_releases(cluster: Cluster) -> None:
    await start(cluster, "p1")

    async def teardown(act: kiln.Activity) -> None:
        raise ValueError("teardown bug")

    async with kiln.connect(cluster.url) as requestor:
        assert await requestor.map(square, range(4), image=IMAGE, demand=SMALL, teardown=teardown) == [0, 1, 4, 9]
        assert requestor.activities == []
    await nothing_held(cluster)

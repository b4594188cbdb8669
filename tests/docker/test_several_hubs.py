"""Several hub processes on one PostgreSQL are one market, with real providers and containers: a
requestor on hub a rents a provider connected to hub b, runs commands, moves 50 MiB each way
through the two hubs and 50 MiB out of a connection to a port of the container, opens a URL the
hub published for that port (the latency and throughput printed beside those through hub b alone), and a
job whose hub is SIGKILLed mid-job, while its providers sit on the two other hubs, ends with every
result right and each told once. The same over simulated providers and in-process hubs:
tests/service/test_hub_links.py; a hub killed every 15 s: tests/hostile/test_chaos_hubs.py."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import secrets
import signal
import statistics
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import kiln
from kiln.requestor.executor import JobEvent
from tests.conftest import IMAGE, Cluster, containers_of, started

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

MiB = 2**20
SIZE = 50 * MiB
COMMANDS = 50


@contextlib.contextmanager
def hubs_on(db: str, root: Path, names: str, *hub_args: str) -> Iterator[list[Cluster]]:
    """A hub process per letter of ``names`` on the database ``db``, each with its own data folder
    (under ``root/<letter>``, with its logs); every process stopped and container removed after."""
    suffix = f"-{secrets.token_hex(3)}"
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(started(Cluster(root / name, suffix=suffix), "--db", db, *hub_args)) for name in names
        ]


def rows(db: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(db, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; their sha256 (hex)."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(size // MiB):
            block = os.urandom(MiB)
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def taken(path: Path) -> str:
    """The sha256 (hex) of the file at ``path``, which is then removed."""
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    path.unlink()
    return digest


async def served_through_ports(act: kiln.Activity, digest: str) -> None:
    """busybox httpd in the container serves the big file through ``act.connect`` (every byte checked),
    and a small one at a URL the requestor's hub publishes (1.7)."""
    await act.send_bytes(b"published\n", "/golem/input/small.txt")
    await act.run(["httpd", "-p", "8080", "-h", "/golem/input"], check=True)
    reader, writer = await act.connect(8080)
    writer.write(b"GET /big.bin HTTP/1.0\r\n\r\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0], head[:200]
    assert hashlib.sha256(body).hexdigest() == digest
    publication = await act.publish(8080)
    url = publication.url + "small.txt"
    page = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=30).read())
    assert page == b"published\n"
    await publication.revoke()


async def measured(url: str, source: Path, digest: str, back: Path) -> tuple[float, float, float, str]:
    """Rent the one provider through the hub at ``url``; run :data:`COMMANDS` commands and send
    ``source`` there and back, checking every byte. The median command's seconds, the upload's and
    the download's MiB/s, and the provider rented."""
    async with (
        kiln.connect(url) as requestor,
        requestor.rent(IMAGE, kiln.Demand(cpus=0.5, memory="128MiB", storage="128MiB")) as act,
    ):
        assert (await act.run(["echo", "through"])).stdout == "through\n"
        took = []
        for _ in range(COMMANDS):
            started = time.perf_counter()
            assert (await act.run(["true"])).exit_code == 0
            took.append(time.perf_counter() - started)
        started = time.perf_counter()
        await act.send_file(source, "/golem/input/big.bin")
        up = time.perf_counter() - started
        check = await act.run(["sha256sum", "/golem/input/big.bin"])
        assert check.stdout.split()[0] == digest, check
        started = time.perf_counter()
        await act.download_file("/golem/input/big.bin", back)
        down = time.perf_counter() - started
        await served_through_ports(act, digest)
        provider = act.provider
    assert await asyncio.to_thread(taken, back) == digest
    return statistics.median(took), SIZE / up / MiB, SIZE / down / MiB, provider


async def test_a_requestor_on_one_hub_runs_and_moves_50_mib_through_a_provider_on_another(
    tmp_path: Path, busybox_image: str, postgres_url: str
) -> None:
    with hubs_on(postgres_url, tmp_path, "ab", "--grace", "30") as (a, b):
        name = await asyncio.to_thread(b.start_provider, "far", cpus=1, memory="1GiB")
        await asyncio.to_thread(a.wait_for_providers, {name})  # hub a learns of it from the database
        source = tmp_path / "big.bin"
        digest = await asyncio.to_thread(random_file, source, SIZE)
        two = await measured(a.url, source, digest, tmp_path / "back.bin")
        one = await measured(b.url, source, digest, tmp_path / "back.bin")
        assert two[3] == one[3] == name
        assert rows(postgres_url, "SELECT name, hub FROM providers WHERE hub IS NOT NULL") == [
            (name, (b.logs / "hub-data" / "hub-id").read_text().strip())
        ], "the provider is held by hub b alone"
    print(
        f"\n  through two hubs (a -> b) vs one (b): a command {two[0] * 1000:.2f} vs {one[0] * 1000:.2f} ms "
        f"(median of {COMMANDS}, x{two[0] / one[0]:.2f}); 50 MiB up {two[1]:.0f} vs {one[1]:.0f} MiB/s "
        f"(x{two[1] / one[1]:.2f}), down {two[2]:.0f} vs {one[2]:.0f} MiB/s (x{two[2] / one[2]:.2f})"
    )


async def test_a_job_goes_on_when_its_hub_is_killed_and_its_providers_sit_on_the_others(
    tmp_path: Path, busybox_image: str, postgres_url: str
) -> None:
    tasks = 20
    with hubs_on(postgres_url, tmp_path, "abc", "--grace", "15") as (a, b, c):
        names = {
            await asyncio.to_thread(b.start_provider, "on-b", "--hub", c.url, wait=False),
            await asyncio.to_thread(c.start_provider, "on-c", "--hub", b.url, wait=False),
        }
        await asyncio.to_thread(a.wait_for_providers, names)
        done: collections.Counter[int] = collections.Counter()
        events: list[JobEvent] = []
        some_done = asyncio.Event()
        killed: list[float] = []

        def on_event(event: JobEvent) -> None:
            events.append(event)
            if event.kind == "task_done" and event.task is not None:
                done[event.task] += 1
                if sum(done.values()) >= tasks // 4:
                    some_done.set()

        async def square(act: kiln.Activity, x: int) -> int:
            result = await act.run(["sh", "-c", f"sleep 0.5; echo $(({x} * {x}))"], timeout=30)
            return int(result.stdout)

        async def kill_hub_a() -> None:
            await some_done.wait()
            assert a.hub is not None
            await asyncio.to_thread(a.hub.stop, signal.SIGKILL)
            killed.append(time.monotonic())

        started_at = time.monotonic()
        async with kiln.connect([a.url, b.url, c.url], name="moved") as requestor, asyncio.TaskGroup() as tg:
            assert requestor.url == a.url
            killer = tg.create_task(kill_hub_a())
            demand = kiln.Demand(cpus=0.5, memory="64MiB")
            results = await requestor.map(
                square, range(tasks), image=IMAGE, demand=demand, max_providers=2, retries=8, on_event=on_event
            )
            assert killer.done(), "hub a was killed before the job ended"
            assert requestor.url in (b.url, c.url)
        took = time.monotonic() - started_at
        assert results == [x * x for x in range(tasks)], "every result right"
        assert sorted(done) == list(range(tasks)) and set(done.values()) == {1}, "each result told once"
        deadline = time.monotonic() + 20
        for name in names:  # a lease given up has its container removed: none outlives the job
            while containers_of(name):
                assert time.monotonic() < deadline, f"containers of {name} left: {containers_of(name)}"
                await asyncio.sleep(0.2)
        logs = "".join(process.output() for cluster in (a, b, c) for process in cluster.providers.values())
        assert f"joined the hub at {a.url}" not in logs, "the providers never sat on hub a"
    kinds = collections.Counter(event.kind for event in events)
    assert kinds["rented"] == len(names), "the activities lived through the kill: none rented again"
    after = [e for e in events if e.kind == "task_done" and started_at + e.elapsed > killed[0]]
    print(
        f"\n  {tasks} tasks in {took:.1f} s, hub a killed after {killed[0] - started_at:.1f} s; {len(after)} tasks "
        f"done after the kill; {kinds['rented']} rents, {kinds['task_retry']} retries; tasks per provider "
        f"{dict(collections.Counter(e.provider for e in events if e.kind == 'task_done'))}"
    )

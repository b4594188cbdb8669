"""A hub watched: rents at 10,000 providers while ``/metrics`` is scraped every second and a dashboard
is open (goals: a rent's median under 5 ms, ``/metrics`` under 50 ms, the hub's memory under 30 KiB
a provider).

    python benchmarks/observe.py [--providers 10000] [--rents 300] [--scrapes 60]

A real hub process on loopback; the providers are simulated in this process (real connections
speaking kiln.v1, answering at once, no Docker). The rents (one at a time, each released before the
next) are timed twice: with nobody watching, then while another process scrapes ``/metrics`` every
second (with the hub's shared token, as Prometheus would with a bearer token) and times each scrape,
and a dashboard watches the Overview on the live feed (``/api/live``; how many pages it was sent is
printed, or why the feed closed).
Beside them, the hub's collector alone in this process (a core holding as many sellers, no socket),
and the hub's resident memory before and after the providers joined, per provider. Prints numbers;
asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing
import statistics
import tempfile
import time
import urllib.request
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

from measure import describe, rss
from prometheus_client import generate_latest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import kiln
from kiln.hub.core import HubCore
from kiln.hub.io.metrics import Metrics
from kiln.hub.peers import Peer
from kiln.protocol.messages import Demand, Offer, Release, Rent, Rented, Resources
from kiln.testing import LocalCluster
from kiln.testing.simulated import simulated_providers

IMAGE = "kiln-busybox:latest"
TOKEN = "observe-t0ken"
BATCH = 1000
ATTEMPTS = 5


def scrape(base: str, ready: Event, stop: Event, every: float, results: Connection) -> None:
    """Scrape ``base``'s ``/metrics`` every ``every`` seconds until ``stop`` (``ready`` once the first is
    done), each after a ``/healthz`` (what any request to the hub takes: its event loop's delay); send the
    seconds each took. In its own process, so that the providers simulated in the benchmark's do not
    slow the timing down."""
    metrics = urllib.request.Request(base + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    scraped: list[float] = []
    health: list[float] = []
    size = 0
    while not stop.is_set():
        started = time.perf_counter()
        with urllib.request.urlopen(base + "/healthz", timeout=10) as reply:
            reply.read()
        health.append(time.perf_counter() - started)
        asked = time.perf_counter()
        with urllib.request.urlopen(metrics, timeout=10) as reply:
            size = len(reply.read())
        scraped.append(time.perf_counter() - asked)
        ready.set()
        stop.wait(max(0.0, every - (time.perf_counter() - started)))
    results.send((scraped, health, size))


async def watch(url: str, received: list[int]) -> str:
    """A dashboard on the live feed's Overview (as a browser's, with a bearer token instead of the
    login's cookie) until cancelled, counting in ``received`` the messages it is sent; how it ended."""
    live = url + "/api/live"
    try:
        async with connect(live, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            await ws.send(json.dumps({"page": "overview", "filter": "", "job": None}))
            async for _ in ws:
                received[0] += 1
    except ConnectionClosed as e:
        return f"closed ({e})"
    except InvalidStatus as e:
        return f"refused ({e.response.status_code})"
    return "ended"


async def rents(requestor: kiln.Requestor, count: int) -> list[float]:
    """Rent and release, one at a time: the time from the rent to its ``rented``."""
    conn = await requestor.connected()
    demand = Demand(cpus=1, memory="256MiB")
    samples = []
    for _ in range(count):
        rent = Rent(type="rent", id=conn.new_id(), image=IMAGE, demand=demand)
        started = time.perf_counter()
        rented = await conn.request(rent)
        samples.append(time.perf_counter() - started)
        assert isinstance(rented, Rented)
        await conn.request(Release(type="release", id=conn.new_id(), activity=rented.activity))
    return samples


def collector_alone(providers: int, runs: int) -> list[float]:
    """The time to read and write the hub's metrics (what its event loop does; not the process's, read in a
    thread) of a core holding ``providers`` sellers, in this process."""
    core = HubCore()
    offer = Offer(type="offer", id=1, resources=Resources(cpus=4, memory=8 * 2**30, storage=2**40), arch="amd64")
    for peer in range(1, providers + 1):
        name = f"sim-{peer:05}"
        core.peers[peer] = Peer(id=peer, role="provider", name=name)
        core.providers[name] = peer
        core.market.update(peer, name, offer)
    metrics = Metrics(core, lambda: 0)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        generate_latest(metrics.hub)
        samples.append(time.perf_counter() - started)
    return samples


async def join(stack: contextlib.AsyncExitStack, url: str, providers: int) -> None:
    """Connect ``providers`` simulated providers, :data:`BATCH` at a time: a batch whose dials time out
    (a machine busy with more than the benchmark) is dialled again."""
    for start in range(0, providers, BATCH):
        for attempt in itertools.count(1):
            batch = simulated_providers(url, min(BATCH, providers - start), token=TOKEN, prefix=f"sim{start}")
            try:
                await stack.enter_async_context(batch)
                break
            except* kiln.ConnectionLost:
                if attempt == ATTEMPTS:
                    raise
                print(f"         providers {start} to {start + BATCH}: dials timed out, again", flush=True)


async def measure(url: str, hub_pid: int, providers: int, count: int, scrapes: int) -> None:
    idle = rss(hub_pid)
    joined = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        await join(stack, url, providers)
        joining = time.perf_counter() - joined
        await asyncio.sleep(2)  # the joins' garbage collected and buffers settled before the hub is weighed
        full = rss(hub_pid)
        async with kiln.connect(url, name="bench", token=TOKEN) as requestor:
            await rents(requestor, 20)  # warm up
            quiet = await rents(requestor, count)
            context = multiprocessing.get_context("spawn")
            ready, stop = context.Event(), context.Event()
            ours, theirs = context.Pipe(duplex=False)
            base = url.replace("ws://", "http://")
            scraper = context.Process(target=scrape, args=(base, ready, stop, 1.0, theirs))
            scraper.start()
            await asyncio.to_thread(ready.wait, 60)
            received = [0]
            dashboard = asyncio.create_task(watch(url, received))
            watched: list[float] = []
            started = time.perf_counter()
            # At least ``scrapes`` scrapes' worth of rents, so that every rent has scrapes around it.
            while time.perf_counter() - started < scrapes or len(watched) < count:
                watched += await rents(requestor, count)
            stop.set()
            if dashboard.done():
                ended = dashboard.result()
            else:
                ended = "open"
                dashboard.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dashboard
            scraped, health, size = await asyncio.to_thread(ours.recv)
            scraper.join()
    print(f"{providers:>6} providers (joined in {joining:.1f} s)")
    print(f"         rent, nobody watching: {describe(quiet)}")
    print(f"         rent, /metrics scraped every second, a dashboard live: {describe(watched)}")
    print(f"         the dashboard's live feed: {received[0]} messages, {ended} at the end")
    print(f"         GET /metrics (from another process, {size} bytes): {describe(scraped)}")
    print(f"         GET /healthz just before each: {describe(health)}")
    per = (full - idle) / providers
    weight = f"{idle / 2**20:.0f} MiB idle, {full / 2**20:.0f} MiB with them"
    print(f"         hub RSS: {weight}: {per / 1024:.1f} KiB a provider")
    goals = (
        ("rent median < 5 ms while scraped", statistics.median(watched) < 0.005),
        ("/metrics median < 50 ms", statistics.median(scraped) < 0.050),
        ("hub memory < 30 KiB a provider", per < 30 * 1024),
    )
    for goal, met in goals:
        print(f"         goal: {goal}: {'met' if met else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", type=int, nargs="+", default=[10_000])
    parser.add_argument("--rents", type=int, default=300)
    parser.add_argument("--scrapes", type=int, default=60, help="seconds of rents while /metrics is scraped")
    args = parser.parse_args()
    for providers in args.providers:
        alone = describe(collector_alone(providers, 50))
        print(
            f"{providers:>6} sellers: the hub's metrics (no process_*) read alone, in this process: {alone}",
            flush=True,
        )
        with tempfile.TemporaryDirectory() as logs, LocalCluster(Path(logs)) as cluster:
            # Every simulated provider dials from 127.0.0.1: the hub's cap per address must let them all in.
            room = str(providers + 100)
            url = cluster.start_hub(
                "--token", TOKEN, "--max-connections-per-address", room, "--max-waiting-per-address", room
            )
            assert cluster.hub is not None
            asyncio.run(measure(url, cluster.hub.pid, providers, args.rents, args.scrapes))


if __name__ == "__main__":
    main()

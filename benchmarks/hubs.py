"""Several hubs on one PostgreSQL, one market: what the relay between two hubs costs, rents and memory
at 3 hubs x 10,000 providers, and a hub SIGKILLed under 10,000 providers (goals: a command through
two hubs under 2x one hub's latency and a transfer at least 0.7x its throughput; a rent's median
under 5 ms from any hub; a hub under 30 KiB a provider; every provider of a killed hub connected to
the others within 10 s).

    python benchmarks/hubs.py [--providers 10000] [--hubs 3] [--rents 200] [--commands 500] [--mib 200]

Real hub processes (``kiln hub --db postgresql://...``, each its own data directory) on a PostgreSQL
of their own (``LocalPostgres``, synced to disk as a deployment's would be), all on loopback.

- The relay: hubs A and B; one simulated provider on B serving a file and taking uploads. A
  requestor on B (one hub), then one on A (two hubs: its hub relays to B over a link) rents it and
  times ``run(["true"])`` (``--commands`` of them) and a download and an upload of ``--mib`` MiB.
- The scale: ``--hubs`` hubs; ``--providers`` simulated providers per hub, given every hub's URL
  (each stays on one, dialling the others when it drops), in as many processes as hubs, spread over
  the hubs (``kiln.testing.simulated.order``). Each hub sells all of them (its own and, over links,
  the others'). A requestor on each hub rents (``--rents``, each released before the next) a
  provider on its own hub, then one on another (by a label naming the hub each dials first); each
  hub's resident memory is weighed before and after, per provider connected to it and per provider
  in its market.
- The SIGKILL: the first hub is killed; its providers dial the others, which refuse them while the
  dead hub still holds their names (until its heartbeat is ``DEAD_AFTER`` seconds old), then take
  them. Printed: the seconds until every one is connected again, and each hub's handshakes (hellos
  taken and refused) a second, from its own ``/metrics``.

Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import re
import signal
import statistics
import tempfile
import time
import urllib.request
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path

from measure import describe, rss

import kiln
from kiln.protocol.messages import Demand, Release, Rent, Rented
from kiln.testing import LocalCluster
from kiln.testing.postgres import LocalPostgres
from kiln.testing.simulated import Served, order, simulated

IMAGE = "kiln-busybox:latest"
SETTLE = 3.0
"""Seconds for the joins' garbage and buffers to settle before a hub is weighed."""
SOLD_TIMEOUT = 300.0
"""Seconds for every hub to sell every provider (its own and the others', read from the database)."""
BACK_TIMEOUT = 180.0
"""Seconds for the providers of a killed hub to be connected again before the benchmark gives up."""


def metrics(url: str) -> dict[str, float]:
    """A hub's ``/metrics`` (``--public-metrics``): each sample's value by its name and labels."""
    with urllib.request.urlopen(url.replace("ws://", "http://") + "/metrics", timeout=30) as reply:
        text = reply.read().decode()
    samples = {}
    for line in text.splitlines():
        if match := re.fullmatch(r"(kiln_[a-z_]+(?:\{[^}]*\})?) (\S+)", line):
            samples[match.group(1)] = float(match.group(2))
    return samples


def hub(db: str, root: Path, name: str, most: int) -> LocalCluster:
    """Start hub ``name`` on the database at URL ``db`` (its logs and data in ``root/name``), taking ``most``
    connections from loopback; the cluster whose hub it is (stopped on leaving it)."""
    cluster = LocalCluster(root / name)
    cluster.start_hub(
        "--db",
        db,
        "--public-metrics",
        "--max-connections-per-address",
        str(most),
        "--max-waiting-per-address",
        str(most),
    )
    return cluster


async def commands(act: kiln.Activity, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await act.run(["true"])
        samples.append(time.perf_counter() - started)
    return samples


async def through(url: str, count: int, data: bytes) -> tuple[list[float], float, float]:
    """From a requestor on ``url``: command latencies, then download and upload throughput (MiB/s)."""
    async with kiln.connect(url, name="bench") as r, r.rent(IMAGE, Demand(cpus=1, memory="64MiB")) as act:
        await commands(act, 20)  # warm up (the link opened)
        latencies = await commands(act, count)
        started = time.perf_counter()
        got = await act.download_bytes("/out/big", max_bytes=len(data))
        down = len(data) / 2**20 / (time.perf_counter() - started)
        assert got == data
        started = time.perf_counter()
        await act.send_bytes(data, "/in/big")
        up = len(data) / 2**20 / (time.perf_counter() - started)
    return latencies, down, up


async def sold(url: str, count: int, timeout: float) -> float:
    """Wait until the hub at ``url`` sells ``count`` providers; the seconds it took."""
    started = time.perf_counter()
    async with asyncio.timeout(timeout):
        while (await asyncio.to_thread(metrics, url)).get("kiln_market_providers", 0) < count:  # noqa: ASYNC110  # over HTTP
            await asyncio.sleep(0.5)
    return time.perf_counter() - started


async def relay(pg: LocalPostgres, root: Path, count: int, mib: int) -> None:
    """The relay's cost: one provider on hub B, used from B and from A."""
    data = os.urandom(2**20) * mib
    db = pg.create_database("relay")
    with hub(db, root, "relay-a", 100) as a, hub(db, root, "relay-b", 100) as b:
        files = {"/out/big": Served("file", data)}
        async with simulated(b.url, 1, prefix="far", files=files, uploads=True):
            await sold(a.url, 1, 30)
            one = await through(b.url, count, data)
            two = await through(a.url, count, data)
    print(f"the relay: one simulated provider on hub B, {count} commands, {mib} MiB each way")
    for what, (latencies, down, up) in (("one hub (requestor on B)", one), ("two hubs (requestor on A)", two)):
        print(f"   {what}: run(['true']) {describe(latencies)}; download {down:.0f} MiB/s, upload {up:.0f} MiB/s")
    ratio = statistics.median(two[0]) / statistics.median(one[0])
    print(
        f"   two hubs / one hub: latency {ratio:.2f}x (goal < 2x), "
        f"download {two[1] / one[1]:.2f}x, upload {two[2] / one[2]:.2f}x (goal >= 0.7x)",
        flush=True,
    )


def providers(urls: list[str], count: int, prefix: str, pipe: Connection) -> None:
    """A process of ``count`` simulated providers over the hubs at ``urls``, told what to do through ``pipe``
    (what broke it, if anything, is sent as a string)."""
    try:
        asyncio.run(serve(urls, count, prefix, pipe))
    except Exception as e:  # noqa: BLE001  # told to the benchmark, which stops
        pipe.send(f"{prefix}: {type(e).__name__}: {e}")


async def serve(urls: list[str], count: int, prefix: str, pipe: Connection) -> None:
    started = time.perf_counter()
    # Labelled with the hub each dials first (where it stays while that hub lives): a rent may ask for either.
    first = {url: str(i) for i, url in enumerate(urls)}
    async with simulated(urls, count, prefix=prefix, labels=lambda i: {"home": first[order(urls, i)[0]]}) as fleet:
        pipe.send((time.perf_counter() - started, Counter(p.url for p in fleet)))
        while (ask := await asyncio.to_thread(pipe.recv)) is not None:
            dead, killed = ask  # a hub's URL, and when it was killed (time.monotonic: one clock for the machine)
            moving = [p for p in fleet if p.url == dead or (p.url is None and p.joined_at < killed)]
            refused = sum(p.refused for p in fleet)
            deadline = time.monotonic() + BACK_TIMEOUT
            while any(p.url is None or p.url == dead for p in moving) and time.monotonic() < deadline:  # noqa: ASYNC110  # polled
                await asyncio.sleep(0.02)
            back = [(p.joined_at - killed, p.url) for p in moving if p.url is not None and p.url != dead]
            pipe.send((len(moving), back, sum(p.refused for p in fleet) - refused))


async def rents(url: str, count: int, home: int) -> list[float]:
    """Rent a provider whose first hub is hub ``home`` and release it, from a requestor on ``url``, one
    at a time: the time from each rent to its ``rented``."""
    async with kiln.connect(url, name="bench") as requestor:
        conn = await requestor.connected()
        demand = Demand(cpus=1, memory="256MiB", labels={"home": str(home)})
        samples = []
        for _ in range(20 + count):  # the first 20 warm up
            rent = Rent(type="rent", id=conn.new_id(), image=IMAGE, demand=demand)
            started = time.perf_counter()
            rented = await conn.request(rent)
            samples.append(time.perf_counter() - started)
            assert isinstance(rented, Rented)
            await conn.request(Release(type="release", id=conn.new_id(), activity=rented.activity))
    return samples[20:]


async def scale(pg: LocalPostgres, root: Path, hubs: int, per_hub: int, count: int) -> None:
    """``hubs`` hubs x ``per_hub`` providers: joins, rents and memory, then the first hub SIGKILLed."""
    total = hubs * per_hub
    db = pg.create_database("scale")
    with contextlib.ExitStack() as stack:
        clusters = [stack.enter_context(hub(db, root, f"hub-{i}", total + 100)) for i in range(hubs)]
        urls = [c.url for c in clusters]
        pids = [c.hub.pid for c in clusters if c.hub is not None]
        idle = [rss(pid) for pid in pids]
        context = multiprocessing.get_context("spawn")
        pipes, workers = [], []
        for i in range(hubs):
            ours, theirs = context.Pipe()
            worker = context.Process(target=providers, args=(urls, per_hub, f"w{i}", theirs))
            worker.start()
            pipes.append(ours)
            workers.append(worker)
        try:
            joined = [await asyncio.to_thread(pipe.recv) for pipe in pipes]
            if broken := [str(j) for j in joined if isinstance(j, str)]:
                raise RuntimeError(f"simulated providers failed: {'; '.join(broken)}")
            print(f"{hubs} hubs x {per_hub} simulated providers ({hubs} processes of {per_hub}, over every hub)")
            on = sum((where for _, where in joined), Counter[str | None]())
            print(
                f"   joined in {max(seconds for seconds, _ in joined):.1f} s; "
                f"on each hub: {', '.join(str(on[url]) for url in urls)}"
            )
            waits = await asyncio.gather(*(sold(url, total, SOLD_TIMEOUT) for url in urls))
            print(f"   every hub sells all {total} (its own and the others'): {max(waits):.1f} s more", flush=True)
            await asyncio.sleep(SETTLE)
            for i, (url, pid, before) in enumerate(zip(urls, pids, idle, strict=True)):
                here = await rents(url, count, i)
                there = await rents(url, count, (i + 1) % hubs)
                print(f"   hub {i}: rent of a provider on this hub {describe(here)}, on another {describe(there)}")
                after = rss(pid)
                grown = after - before
                print(
                    f"          RSS {before / 2**20:.0f} MiB idle, "
                    f"{after / 2**20:.0f} MiB with them: {grown / max(1, on[url]) / 1024:.1f} KiB a provider connected "
                    f"to it ({on[url]}), {grown / total / 1024:.1f} KiB a provider in its market ({total})",
                    flush=True,
                )
            await kill(clusters[0], urls, pipes)
        finally:
            for pipe in pipes:
                pipe.send(None)
            for worker in workers:
                await asyncio.to_thread(worker.join, 60)


async def kill(victim: LocalCluster, urls: list[str], pipes: list[Connection]) -> None:
    """SIGKILL ``victim``'s hub: how long until its providers are connected to the others, and at what rate."""
    dead, others = urls[0], urls[1:]
    before = [await asyncio.to_thread(metrics, url) for url in others]
    assert victim.hub is not None
    killed = time.monotonic()
    os.kill(victim.hub.pid, signal.SIGKILL)
    for pipe in pipes:
        pipe.send((dead, killed))
    told = [await asyncio.to_thread(pipe.recv) for pipe in pipes]
    after = [await asyncio.to_thread(metrics, url) for url in others]
    moving = sum(n for n, _, _ in told)
    back = sorted((seconds, url) for _, moved, _ in told for seconds, url in moved)
    refused = sum(r for _, _, r in told)
    print(f"   hub 0 SIGKILLed holding {moving} providers:")
    if len(back) < moving:
        print(f"   only {len(back)} connected again within {BACK_TIMEOUT:g} s")
    if not back:
        return
    first, last = back[0][0], back[-1][0]
    print(
        f"   every one connected again after {last:.2f} s (goal < 10 s; the first after {first:.2f} s, "
        f"half after {back[len(back) // 2][0]:.2f} s); {refused} hellos refused meanwhile (the name still held)"
    )
    for i, (url, was, now) in enumerate(zip(others, before, after, strict=True), start=1):
        times = [seconds for seconds, at in back if at == url]
        welcomed = now.get('kiln_connections_total{role="provider"}', 0) - was.get(
            'kiln_connections_total{role="provider"}', 0
        )
        turned = sum(v for k, v in now.items() if k.startswith("kiln_connections_refused")) - sum(
            v for k, v in was.items() if k.startswith("kiln_connections_refused")
        )
        span = (times[-1] - times[0]) if len(times) > 1 else 0.0
        rate = f"{len(times) / span:.0f} a second" if span > 0 else "n/a"
        print(
            f"   hub {i}: took {len(times)} in {span:.2f} s from its first ({rate}); its /metrics: "
            f"{welcomed:.0f} providers welcomed, {turned:.0f} hellos refused"
        )


async def measure(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, LocalPostgres(Path(tmp) / "pg", durable=True) as pg:
        root = Path(tmp)
        if args.mib:
            await relay(pg, root, args.commands, args.mib)
        if args.providers:
            await scale(pg, root, args.hubs, args.providers, args.rents)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", type=int, default=10_000, help="providers per hub (0: no scale run)")
    parser.add_argument("--hubs", type=int, default=3)
    parser.add_argument("--rents", type=int, default=200)
    parser.add_argument("--commands", type=int, default=500)
    parser.add_argument("--mib", type=int, default=200, help="MiB moved each way through the relay (0: no relay run)")
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()

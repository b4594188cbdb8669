"""What a job's rents cost as the market grows: 100, 1,000 and 10,000 providers connected.

    python benchmarks/placement.py [--providers 100 1000 10000] [--rents 200] [--tasks 64]

A real hub process on loopback; the providers are simulated in this process (real
connections speaking kiln.v1, answering at once, no Docker), so only placement and relay
are measured. Every tenth provider carries the label zone=z3. For each market size it
prints the hub's memory per provider, the latency of a rent in a job's group, of a
command's round trip, of a job of trivial tasks spread over 16 providers, of market
listings (all, and filtered by a label), and the goals of a market of 10,000.
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import kiln
from kiln.testing import LocalCluster
from kiln.testing.simulated import simulated_providers

IMAGE = "kiln-busybox:latest"


def describe(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(len(ordered) * 0.9)]
    return f"median {statistics.median(ordered) * 1000:.2f} ms, p90 {p90 * 1000:.2f} ms"


async def rents(requestor: kiln.Requestor, count: int) -> list[float]:
    """Rent and release, one at a time, in one group: the path of every rent of a job."""
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        act = await requestor.rent(IMAGE, kiln.Demand(cpus=1, memory="256MiB"), group="bench")
        samples.append(time.perf_counter() - started)
        await act.release()
    return samples


async def commands(requestor: kiln.Requestor, count: int) -> list[float]:
    """Commands on one activity: the relay's own round trip (the provider answers at once)."""
    samples = []
    async with requestor.rent(IMAGE) as act:
        for _ in range(count):
            started = time.perf_counter()
            await act.run(["true"])
            samples.append(time.perf_counter() - started)
    return samples


async def job(requestor: kiln.Requestor, tasks: int) -> float:
    async def trivial(act: kiln.Activity, n: int) -> int:
        await act.run(["true"])
        return n

    started = time.perf_counter()
    results = await requestor.map(trivial, range(tasks), image=IMAGE, max_providers=16, progress=False)
    assert results == list(range(tasks))
    return time.perf_counter() - started


async def listings(requestor: kiln.Requestor, count: int, limit: int, **query: Any) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await requestor.market(limit=limit, **query)
        samples.append(time.perf_counter() - started)
    return samples


def rss(pid: int) -> int:
    """The resident memory of process ``pid``, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def measure(url: str, hub_pid: int, providers: int, count: int, tasks: int) -> None:
    before = rss(hub_pid)
    joined = time.perf_counter()
    async with simulated_providers(url, providers, labels=lambda i: {"zone": f"z{i % 10}"}):
        joining = time.perf_counter() - joined
        per_provider = (rss(hub_pid) - before) / providers
        async with kiln.connect(url, name="bench") as requestor:
            await rents(requestor, 20)  # warm up
            rent = await rents(requestor, count)
            command = describe(await commands(requestor, count))
            wall = await job(requestor, tasks)
            small = describe(await listings(requestor, 20, 100))
            large = describe(await listings(requestor, 5, 1000))
            filtered = await listings(requestor, 50, 100, labels={"zone": "z3"})
    print(f"{providers:>6} providers (joined in {joining:.1f} s)")
    print(f"         hub memory per provider: {per_provider / 1024:.1f} KiB")
    print(f"         rent in a group: {describe(rent)}")
    print(f"         a command's round trip through the hub: {command}")
    print(f"         job of {tasks} tasks on 16 providers: {wall * 1000:.0f} ms")
    print(f"         market listing of 100: {small}; of 1000: {large}")
    print(f"         market listing of 100 filtered by a label (1 in 10 carry it): {describe(filtered)}")
    if providers >= 10_000:
        goals = [
            ("memory per provider < 30 KiB", per_provider < 30 * 1024),
            ("rent median < 5 ms", statistics.median(rent) < 0.005),
            ("filtered market median < 10 ms", statistics.median(filtered) < 0.010),
        ]
        print("         goals: " + "; ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in goals))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--rents", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=64)
    args = parser.parse_args()
    for providers in args.providers:
        with tempfile.TemporaryDirectory() as logs, LocalCluster(Path(logs)) as cluster:
            url = cluster.start_hub(
                "--max-connections-per-address", str(providers + 100), "--max-waiting-per-address", str(providers + 100)
            )
            assert cluster.hub is not None
            asyncio.run(measure(url, cluster.hub.pid, providers, args.rents, args.tasks))


if __name__ == "__main__":
    main()

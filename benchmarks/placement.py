"""What a job's rents cost as the market grows: 20 against 5,000 providers connected.

    python benchmarks/placement.py [--providers 20 5000] [--rents 200] [--tasks 64]

A real hub process on loopback; the providers are simulated in this process (real
connections speaking kiln.v1, answering at once, no Docker), so only placement and relay
are measured. For each market size it prints the latency of a rent in a job's group, of
a command's round trip, of a job of trivial tasks spread over 16 providers, and of a
market listing.
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

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


async def listing(requestor: kiln.Requestor, limit: int) -> float:
    started = time.perf_counter()
    await requestor.market(limit=limit)
    return time.perf_counter() - started


async def measure(url: str, providers: int, count: int, tasks: int) -> None:
    joined = time.perf_counter()
    async with simulated_providers(url, providers):
        joining = time.perf_counter() - joined
        async with kiln.connect(url, name="bench") as requestor:
            await rents(requestor, 20)  # warm up
            rent = describe(await rents(requestor, count))
            command = describe(await commands(requestor, count))
            wall = await job(requestor, tasks)
            small = await listing(requestor, 100)
            large = await listing(requestor, 1000)
    print(f"{providers:>6} providers (joined in {joining:.1f} s)")
    print(f"         rent in a group: {rent}")
    print(f"         a command's round trip through the hub: {command}")
    print(f"         job of {tasks} tasks on 16 providers: {wall * 1000:.0f} ms")
    print(f"         market listing of 100: {small * 1000:.1f} ms; of 1000: {large * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", type=int, nargs="+", default=[20, 5000])
    parser.add_argument("--rents", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=64)
    args = parser.parse_args()
    for providers in args.providers:
        with tempfile.TemporaryDirectory() as logs, LocalCluster(Path(logs)) as cluster:
            url = cluster.start_hub()
            asyncio.run(measure(url, providers, args.rents, args.tasks))


if __name__ == "__main__":
    main()

"""The executor's own cost: trivial tasks a second on 16 providers, and a requestor's memory
over a generator of a million items.

    python benchmarks/executor.py [--tasks 20000] [--providers 16] [--items 1000000]
                                  [--memory-slots hub|in-process] [--skip-memory]

Prints numbers; asserts nothing. Three measures:

- **through the hub**: a real hub process on loopback and 16 simulated providers
  (``kiln.testing.simulated``: real connections answering every ``exec`` at once, in this
  process, as ``benchmarks/placement.py`` runs them); the requestor maps a worker that runs
  ``true`` over ``--tasks`` items. Hub, providers and requestor share the machine's cores:
  this is the relay's cost as much as the executor's.
- **in-process slots**: the same job against 16 simulated activities in this process (a rent
  and a command answered at once, no connection): the executor's own cost per task.
- **memory**: ``map_unordered`` over a generator of ``--items`` items in a child process
  (the requestor alone), its peak resident memory (``ru_maxrss``) at the end; its slots are
  the hub's simulated providers (``--memory-slots hub``, a few minutes for a million on two
  cores) or in-process ones (``--memory-slots in-process``, seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import kiln
from kiln.testing import LocalCluster
from kiln.testing.simulated import simulated_providers

IMAGE = "kiln-busybox:latest"


async def trivial(act: kiln.Activity, n: int) -> int:
    await act.run(["true"])
    return n


class _Activity:
    """A simulated activity in this process: a command answers at once."""

    def __init__(self, provider: str, number: int) -> None:
        self.provider = provider
        self.id = f"{provider}-a{number}"
        self.pulled = 0
        self.lost: kiln.KilnError | None = None
        self.released = False
        self.cpu_seconds: float | None = None
        self.cost: object = None  # no hub, no captures
        self.on_cost: object = None
        self.moved = 0

    async def run(self, argv: list[str]) -> None:
        await asyncio.sleep(0)  # a reply comes back through the event loop

    async def release(self) -> None:
        self.released = True


class InProcess:
    """A renter of simulated activities on ``providers`` distinct providers, in this process."""

    def __init__(self, providers: int) -> None:
        self.free = [f"sim-{i:05}" for i in range(providers)]
        self.rents = 0

    def rent(self, image: str, demand: kiln.Demand | None = None, **options: Any) -> Awaitable[kiln.Activity]:
        return self._rent(set(options.get("exclude", ())))

    async def _rent(self, exclude: set[str]) -> kiln.Activity:
        await asyncio.sleep(0)
        able = [p for p in self.free if p not in exclude]
        if not able:
            raise kiln.NoMatch("every simulated provider is busy")
        self.free.remove(able[0])
        self.rents += 1
        return cast(kiln.Activity, _Activity(able[0], self.rents))

    async def reconnected(self) -> bool:
        return False

    async def report_verdict(self, lost: str, agreed: Sequence[str]) -> None:
        pass  # no verification in the benchmark

    def report_task(self, group: str, task: int, attempt: int, state: str, **details: Any) -> None:
        pass  # no hub to tell


def generator(count: int) -> Iterator[int]:
    yield from range(count)


async def timed_job(renter: Any, items: Iterable[int], providers: int) -> float:
    job: kiln.Job[int, int] = kiln.Job(renter, trivial, items, image=IMAGE, max_providers=providers)
    started = time.perf_counter()
    results = await job.run()
    wall = time.perf_counter() - started
    assert len(results) == job.summary.succeeded
    return wall


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of process ``pid``, or of this one."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def through_hub(url: str, hub: int, tasks: int, providers: int) -> tuple[list[float], float, float]:
    """The walls of three runs, and the CPU per task of the hub and of this process (requestor and providers)."""
    async with simulated_providers(url, providers), kiln.connect(url, name="bench") as requestor:
        await timed_job(requestor, range(min(tasks, 1000)), providers)  # warm up
        hub_before, here_before = cpu_seconds(hub), cpu_seconds()
        walls = [await timed_job(requestor, range(tasks), providers) for _ in range(3)]
        done = 3 * tasks
        return walls, (cpu_seconds(hub) - hub_before) / done, (cpu_seconds() - here_before) / done


async def in_process(tasks: int, providers: int) -> list[float]:
    await timed_job(InProcess(providers), range(min(tasks, 1000)), providers)
    return [await timed_job(InProcess(providers), range(tasks), providers) for _ in range(3)]


async def unordered(url: str | None, items: int, providers: int) -> tuple[int, float]:
    """The child: map_unordered over a generator; how many results came and how long it took."""
    started = time.perf_counter()
    count = 0
    if url is None:
        renter = InProcess(providers)
        job: kiln.Job[int, int] = kiln.Job(renter, trivial, generator(items), image=IMAGE, max_providers=providers)
        async for _ in job.results():
            count += 1
    else:
        async with kiln.connect(url, name="bench-memory") as requestor:
            results = requestor.map_unordered(
                trivial, generator(items), image=IMAGE, max_providers=providers, progress=False
            )
            async for _ in results:
                count += 1
    return count, time.perf_counter() - started


def child(url: str | None, items: int, providers: int) -> None:
    count, wall = asyncio.run(unordered(url, items, providers))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"{count} {wall:.3f} {peak}")


async def memory(url: str | None, items: int, providers: int) -> tuple[int, float, int]:
    argv = [sys.executable, __file__, "--child", url or "-", "--items", str(items), "--providers", str(providers)]
    if url is None:
        done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, check=True)
    else:
        async with simulated_providers(url, providers):
            done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, check=True)
    count, wall, peak = done.stdout.split()
    return int(count), float(wall), int(peak)


def rates(tasks: int, walls: list[float]) -> str:
    per_second = sorted(tasks / wall for wall in walls)
    return f"{', '.join(f'{r:,.0f}' for r in per_second)} tasks/s (median {per_second[len(per_second) // 2]:,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--providers", type=int, default=16)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--memory-slots", choices=["hub", "in-process"], default="hub")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(None if args.child == "-" else args.child, args.items, args.providers)
        return
    n, p = args.tasks, args.providers
    with tempfile.TemporaryDirectory() as logs, LocalCluster(Path(logs)) as cluster:
        url = cluster.start_hub()
        if not args.skip_throughput:
            print(f"{n:,} trivial tasks on {p} providers, three runs each")
            assert cluster.hub is not None
            walls, hub_cpu, here_cpu = asyncio.run(through_hub(url, cluster.hub.pid, n, p))
            print(f"  through the hub (simulated providers, kiln.testing.simulated): {rates(n, walls)}")
            print(
                f"    CPU per task: the hub {hub_cpu * 1e6:.0f} µs, this process (requestor and providers) "
                f"{here_cpu * 1e6:.0f} µs"
            )
            local = rates(n, asyncio.run(in_process(n, p)))
            print(f"  in-process simulated slots (no hub, no connection): {local}")
        if not args.skip_memory:
            via = url if args.memory_slots == "hub" else None
            count, wall, peak = asyncio.run(memory(via, args.items, p))
            slots = "the hub's simulated providers" if via else "in-process simulated slots"
            print(
                f"map_unordered over a generator of {args.items:,} items on {p} {slots}: {count:,} results "
                f"in {wall:.1f} s ({count / wall:,.0f} tasks/s); the requestor's peak RSS {peak / 2**20:.0f} MiB"
            )


if __name__ == "__main__":
    main()

"""How long a hub killed with SIGKILL takes to be whole again, with many providers and activities.

    python benchmarks/restart.py [--providers 1000] [--activities 1000] [--grace 60]

A real hub process on loopback; the providers are simulated in this process (real
connections speaking kiln.v1, answering at once, no Docker), and one requestor holds the
activities, spread over them. The hub is SIGKILLed and started again on the same data
directory; every provider dials again listing what it runs, and the requestor resumes.
It prints how long a rent and a release take with the database written before each
reply, the size of the database, how long the hub took to start again, how long the
providers took to be back, and how long until a command had run on every activity again.
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
import time
from pathlib import Path

import kiln
from kiln.protocol.messages import Offer, Resources
from kiln.testing import LocalCluster
from kiln.testing.simulated import DIAL_AT_ONCE, SimulatedProvider

IMAGE = "kiln-busybox:latest"
RENTS_AT_ONCE = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def join_all(url: str, providers: list[SimulatedProvider], offer: Offer) -> list[asyncio.Task[None]]:
    """Dial every provider (DIAL_AT_ONCE at a time); returns their readers."""
    gate = asyncio.Semaphore(DIAL_AT_ONCE)

    async def join(provider: SimulatedProvider) -> None:
        async with gate:
            await provider.join(url, offer)

    await asyncio.gather(*(join(p) for p in providers))
    readers = []
    for provider in providers:
        assert provider.conn is not None
        readers.append(asyncio.create_task(provider.conn.run()))
    return readers


async def measure(count: int, activities: int, grace: float) -> None:
    resources = Resources(cpus=4, memory=8 * 2**30, storage=2**40)
    offer = Offer(type="offer", id=1, resources=resources, arch="amd64", images=[IMAGE])
    providers = [SimulatedProvider(f"sim-{i:05}") for i in range(count)]
    with tempfile.TemporaryDirectory() as tmp, LocalCluster(Path(tmp)) as cluster:
        url = cluster.start_hub("--grace", str(grace), port=free_port())
        readers = await join_all(url, providers, offer)
        async with kiln.connect(url, name="holder") as requestor:
            gate = asyncio.Semaphore(RENTS_AT_ONCE)
            rent_times: list[float] = []

            async def rent() -> kiln.Activity:
                async with gate:
                    started = time.perf_counter()
                    act = await requestor.rent(IMAGE, kiln.Demand(cpus=0.1, memory="64MiB"))
                    rent_times.append(time.perf_counter() - started)
                    return act

            acts = await asyncio.gather(*(rent() for _ in range(activities)))
            release_times = []
            for _ in range(20):
                act = await requestor.rent(IMAGE, kiln.Demand(cpus=0.1, memory="64MiB"))
                started = time.perf_counter()
                await act.release()
                release_times.append(time.perf_counter() - started)
            db = Path(tmp) / "hub-data" / "hub.db"
            wal = db.with_name("hub.db-wal")
            print(
                f"{count} providers, {activities} activities held: rent median "
                f"{statistics.median(rent_times) * 1000:.2f} ms ({RENTS_AT_ONCE} at once), release median "
                f"{statistics.median(release_times) * 1000:.2f} ms; hub.db {db.stat().st_size // 1024} KiB "
                f"+ WAL {wal.stat().st_size // 1024 if wal.exists() else 0} KiB"
            )

            killed = time.perf_counter()
            await asyncio.to_thread(cluster.restart_hub)
            listening = time.perf_counter()
            await asyncio.gather(*readers, return_exceptions=True)  # each saw its connection drop
            readers = await join_all(url, providers, offer)
            providers_back = time.perf_counter()
            await asyncio.gather(*(act.run(["true"]) for act in acts))
            all_ran = time.perf_counter()
            assert cluster.hub is not None
            restored = [line for line in cluster.hub.output().splitlines() if "restored" in line]
            what = restored[0].split(" INFO ")[-1] if restored else "nothing restored"
            print(f"  SIGKILL -> listening again {listening - killed:.2f} s (a new Python process; {what})")
            print(
                f"  listening -> {count} providers back, reporting {activities} activities: "
                f"{providers_back - listening:.2f} s"
            )
            print(f"  SIGKILL -> a command run on every activity again: {all_ran - killed:.2f} s")
        for reader in readers:
            reader.cancel()
        for provider in providers:
            await provider.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--providers", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--activities", type=int, default=1000)
    parser.add_argument("--grace", type=float, default=60)
    args = parser.parse_args()
    for count in args.providers:
        await measure(count, args.activities, args.grace)


if __name__ == "__main__":
    asyncio.run(main())

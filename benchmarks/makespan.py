"""Makespan of 64 one-second tasks on 4 providers, against the ideal 16 s.

    python benchmarks/makespan.py [--tasks 64] [--providers 4] [--seconds 1]

Prints numbers; asserts nothing. Each provider offers one CPU slot (cpus=0.5 demanded,
0.5 offered), so the ideal is tasks x seconds / providers.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import kiln
from kiln.testing import LocalCluster


async def job(url: str, tasks: int, providers: int, seconds: float) -> tuple[float, kiln.JobSummary]:
    async def sleep(act: kiln.Activity, _: int) -> None:
        await act.run(["sleep", str(seconds)])

    async with kiln.connect(url, name="makespan") as requestor:
        demand = kiln.Demand(cpus=0.5, memory="64MiB")
        j = requestor.job(sleep, range(tasks), image="kiln-busybox:latest", demand=demand, max_providers=providers)
        started = time.monotonic()
        await j.run()
        return time.monotonic() - started, j.summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--providers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as logs, LocalCluster(Path(logs)) as cluster:
        url = cluster.start_hub()
        names = {f"bench-p{i}" for i in range(args.providers)}
        for name in names:
            cluster.start_provider(name, cpus=0.5, memory="512MiB", wait=False)
        cluster.wait_for_providers(names)
        makespan, summary = asyncio.run(job(url, args.tasks, args.providers, args.seconds))
    ideal = args.tasks * args.seconds / args.providers
    ratio = f", ratio {makespan / ideal:.3f}" if ideal else ""
    per_task = (makespan - ideal) / (args.tasks / args.providers) * 1000
    print(
        f"{args.tasks} tasks x {args.seconds:g} s on {args.providers} providers: makespan {makespan:.2f} s, "
        f"ideal {ideal:.2f} s{ratio}; overhead {per_task:.0f} ms per task and provider"
    )
    print("\n".join(summary.lines()))


if __name__ == "__main__":
    main()

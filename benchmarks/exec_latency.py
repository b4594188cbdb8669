"""Latency of one command through the hub, against docker exec straight on the engine.

    python benchmarks/exec_latency.py [--runs 100]

Prints medians and 90th percentiles; asserts nothing.
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
from kiln_provider.docker_adapter import ContainerSpec, DockerAdapter


def describe(label: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(len(ordered) * 0.9)]
    return f"{label}: median {statistics.median(ordered) * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms"


async def through_hub(url: str, runs: int) -> list[float]:
    samples = []
    async with kiln.connect(url, name="latency") as requestor, requestor.rent("kiln-busybox:latest") as act:
        for _ in range(runs):
            started = time.perf_counter()
            await act.run(["true"])
            samples.append(time.perf_counter() - started)
    return samples


def direct(runs: int) -> list[float]:
    adapter = DockerAdapter("bench-direct")
    container = adapter.create(ContainerSpec("direct", "kiln-busybox:latest", cpus=1, memory=256 * 2**20))
    try:
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            adapter.start_exec(container, ["true"], {}, None, 1024).wait(None)
            samples.append(time.perf_counter() - started)
        return samples
    finally:
        adapter.remove(container)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    print(describe("docker exec via docker-py", direct(args.runs)))
    with tempfile.TemporaryDirectory() as logs, LocalCluster(Path(logs)) as cluster:
        url = cluster.start_hub()
        cluster.start_provider("bench-latency", cpus=1, memory="512MiB", wait=False)
        cluster.wait_for_providers({"bench-latency"})
        print(describe("run through the hub     ", asyncio.run(through_hub(url, args.runs))))


if __name__ == "__main__":
    main()

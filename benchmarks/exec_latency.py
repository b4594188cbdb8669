"""Latency of one command through the hub (the container's agent), against docker exec straight
on the engine; how many commands one activity runs a second when they are pipelined; and
a command's streams (protocol 1.2): how soon its first output arrives, and how fast its
output and its input move.

    python benchmarks/exec_latency.py [--runs 100] [--pipelined 2000] [--stream-mb 200] [--stream-runs 3]
    python benchmarks/exec_latency.py --streams-only      # make bench-streams

Prints medians and 90th percentiles, and the ratio of a streamed command's output to the
same bytes through a pipe inside the container; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import docker

import kiln
from kiln.testing import LocalCluster

IN_FLIGHT = 32


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
    """``docker exec`` of ``true`` through the Docker API (docker-py), in a plain container."""
    api = docker.from_env().api
    container = api.create_container(
        "kiln-busybox:latest", ["sleep", "infinity"], name=f"kiln-bench-exec-{time.time_ns()}"
    )
    api.start(container)
    try:
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            exec_id = api.exec_create(container, ["true"])["Id"]
            api.exec_start(exec_id)
            api.exec_inspect(exec_id)  # the exit code, as a provider must read it
            samples.append(time.perf_counter() - started)
        return samples
    finally:
        api.remove_container(container, force=True)


async def pipelined(url: str, count: int) -> float:
    """Commands a second for ``count`` runs of ``true`` on one activity, ``IN_FLIGHT`` at a time
    (a provider takes at most 32 operations at once on one activity)."""
    async with kiln.connect(url, name="pipelined") as requestor, requestor.rent("kiln-busybox:latest") as act:
        await act.run(["true"])
        room = asyncio.Semaphore(IN_FLIGHT)

        async def one() -> kiln.Result:
            async with room:
                return await act.run(["true"])

        started = time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(count)))
        elapsed = time.perf_counter() - started
    assert all(r.exit_code == 0 for r in results)
    return count / elapsed


async def streams(url: str, runs: int, megabytes: int, repeats: int) -> None:
    """First output of ``echo`` through stream(); then, ``repeats`` times each, the output of
    ``head -c`` through stream(), the same bytes into ``run(stdin=)``, and the same bytes through
    a pipe inside the container (``head -c | wc -c``, the ceiling): medians and the ratio."""
    size = megabytes * 1_000_000
    async with kiln.connect(url, name="streams") as requestor, requestor.rent("kiln-busybox:latest") as act:
        first = []
        for _ in range(runs):
            started = time.perf_counter()
            async for _event in act.stream(["echo", "hi"]):
                first.append(time.perf_counter() - started)
                break
        print(describe("stream: first output    ", first))
        out, into, pipe = [], [], []
        for _ in range(repeats):
            started, total = time.perf_counter(), 0
            async for event in act.stream(["head", "-c", str(size), "/dev/zero"]):
                total += len(event.data)
            out.append(time.perf_counter() - started)
            assert total == size
            started = time.perf_counter()
            result = await act.run(["wc", "-c"], stdin=bytes(size))
            into.append(time.perf_counter() - started)
            assert int(result.stdout) == size
            started = time.perf_counter()
            await act.run(["sh", "-c", f"head -c {size} /dev/zero | wc -c"])
            pipe.append(time.perf_counter() - started)

        def rate(samples: list[float]) -> str:
            each = " ".join(f"{s:.2f}" for s in samples)
            return f"{size / statistics.median(samples) / 1e6:.0f} MB/s ({each} s)"

        print(f"stream: {megabytes} MB of output through stream(): {rate(out)}")
        print(f"stdin:  {megabytes} MB of input through run(stdin=): {rate(into)}")
        print(f"pipe:   {megabytes} MB through a pipe inside the container: {rate(pipe)}")
        ratio = statistics.median(pipe) / statistics.median(out)
        print(f"streamed output vs the in-container pipe: {ratio:.2f}x the throughput (goal >= 0.7)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--pipelined", type=int, default=2000)
    parser.add_argument("--stream-mb", type=int, default=200)
    parser.add_argument("--stream-runs", type=int, default=3, help="repeats of each bulk stream (medians)")
    parser.add_argument("--streams-only", action="store_true", help="only the streams (no docker exec, no pipelining)")
    args = parser.parse_args()
    if not args.streams_only:
        docker_exec = direct(args.runs)
        print(describe("docker exec via docker-py", docker_exec))
    with tempfile.TemporaryDirectory() as logs, LocalCluster(Path(logs)) as cluster:
        url = cluster.start_hub()
        cluster.start_provider("bench-latency", cpus=1, memory="512MiB", wait=False)
        cluster.wait_for_providers({"bench-latency"})
        if not args.streams_only:
            hub = asyncio.run(through_hub(url, args.runs))
            print(describe("run through the hub     ", hub))
            print(f"run through the hub is {statistics.median(docker_exec) / statistics.median(hub):.1f}x faster")
            rate = asyncio.run(pipelined(url, args.pipelined))
            print(f"pipelined runs on one activity: {rate:,.0f} commands a second", end=" ")
            print(f"({args.pipelined} runs, {IN_FLIGHT} in flight)")
        asyncio.run(streams(url, args.runs, args.stream_mb, args.stream_runs))


if __name__ == "__main__":
    main()

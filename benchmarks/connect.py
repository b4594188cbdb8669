"""Connections to a port of a container (protocol 1.7): the bytes of a file through ``act.connect``
(busybox ``httpd`` in the container serving it) against the same file through
``download_file`` on the same activity; and the round trip of 1 byte through a connection to
an echo server in the container (``nc -e cat``).

    python benchmarks/connect.py [--mb 100] [--runs 3] [--pings 1000]

Prints medians, the ratio (goal: at least 0.5x a download's throughput) and the round trip
(goal: under 3 ms); asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import kiln
from kiln.testing import LocalCluster, listening

HTTP_PORT = 8080
ECHO_PORT = 9000


@contextlib.asynccontextmanager
async def serving(act: kiln.Activity, argv: list[str], port: int) -> AsyncIterator[None]:
    """``argv`` running in the container (killed on the way out), once it listens on ``port``."""
    server = act.stream(argv)
    running = asyncio.create_task(anext(server))
    try:
        await listening(act, port)
        yield
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await running
        await server.aclose()


async def fetch(act: kiln.Activity, path: str) -> int:
    """GET ``path`` from the container's httpd through act.connect; the bytes that came, head included."""
    reader, writer = await act.connect(HTTP_PORT)
    writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    writer.write_eof()
    total = 0
    while chunk := await reader.read(2**20):
        total += len(chunk)
    writer.close()
    return total


async def measure(url: str, megabytes: int, runs: int, pings: int) -> None:
    size = megabytes * 1_000_000
    demand = kiln.Demand(cpus=1, memory="512MiB", storage=f"{2 * megabytes + 64}MB")
    async with (
        kiln.connect(url, name="bench-connect") as requestor,
        requestor.rent("kiln-busybox:latest", demand) as act,
    ):
        await act.run(["sh", "-c", f"mkdir -p /golem/www && head -c {size} /dev/urandom > /golem/www/blob"], check=True)
        httpd = ["busybox", "httpd", "-f", "-p", f"127.0.0.1:{HTTP_PORT}", "-h", "/golem/www"]
        echo = ["busybox", "nc", "-ll", "-p", str(ECHO_PORT), "-e", "cat"]
        async with serving(act, httpd, HTTP_PORT), serving(act, echo, ECHO_PORT):
            downloads, connects = [], []
            with tempfile.TemporaryDirectory() as local:
                for _ in range(runs):
                    started = time.perf_counter()
                    await act.download_file("/golem/www/blob", Path(local) / "blob")
                    downloads.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    got = await fetch(act, "/blob")
                    connects.append(time.perf_counter() - started)
                    assert got > size, f"httpd sent {got} bytes for a file of {size}"

            reader, writer = await act.connect(ECHO_PORT)
            samples = []
            for i in range(pings + 10):
                started = time.perf_counter()
                writer.write(b"x")
                await reader.readexactly(1)
                if i >= 10:  # the first ones warm up the path
                    samples.append(time.perf_counter() - started)
            writer.close()

    def rate(samples: list[float]) -> str:
        each = " ".join(f"{s:.2f}" for s in samples)
        return f"{size / statistics.median(samples) / 1e6:.0f} MB/s ({each} s)"

    print(f"download_file: {megabytes} MB: {rate(downloads)}")
    print(f"act.connect:   {megabytes} MB from httpd: {rate(connects)}")
    ratio = statistics.median(downloads) / statistics.median(connects)
    print(f"connect vs download_file: {ratio:.2f}x the throughput (goal >= 0.5)")
    ordered = sorted(samples)
    p90 = ordered[int(len(ordered) * 0.9)]
    median = statistics.median(ordered)
    print(f"1-byte round trip through act.connect: median {median * 1000:.2f} ms, p90 {p90 * 1000:.2f} ms (goal < 3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=100, help="the size of the file, in MB")
    parser.add_argument("--runs", type=int, default=3, help="repeats of each transfer (medians)")
    parser.add_argument("--pings", type=int, default=1000, help="1-byte round trips")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as logs, LocalCluster(Path(logs)) as cluster:
        url = cluster.start_hub()
        cluster.start_provider("bench-connect", cpus=1, memory="1GiB", wait=False)
        cluster.wait_for_providers({"bench-connect"})
        asyncio.run(measure(url, args.mb, args.runs, args.pings))


if __name__ == "__main__":
    main()

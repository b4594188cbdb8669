"""An image of ~200 MiB through the hub's store, against ``docker save`` and ``docker load``.

    python benchmarks/images.py [--mib 200] [--runs 3]

Builds ``FROM kiln-busybox`` plus a layer of ``--mib`` MiB of random bytes (made here: no
registry), then measures, ``--runs`` times each, on this machine's one Docker engine:

- ``docker save -o`` of the image, and ``docker load -i`` of that file while the image is
  absent (removed first): together what ``docker save | docker load`` costs between two
  engines (the two run one after the other here: one engine cannot hold and lack an image);
- ``push_image`` (the SDK) from the engine (``docker save`` read as it comes, each blob sent
  once its bytes are there), and from the saved file, each to a hub that lacks the image's layers;
- a first rent on a provider that lacks the image: the pull from the hub and ``docker
  load``, until ``rented``; a second rent on that provider (it holds the image now); and a
  rent of ``kiln-busybox:latest``, an image the provider held from the start (the rent of
  before the store).

Prints medians (and every sample), the throughput in MiB/s and two ratios: push + first rent
against ``docker save`` + ``docker load``, and the first rent against a bare ``docker load``;
asserts nothing. ``make bench-images`` runs it. The image
it built (and the provider loaded) is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import kiln
from kiln.testing import LocalCluster

MIB = 2**20
DEMAND = kiln.Demand(cpus=0.5, memory="64MiB")


def docker(*args: str) -> str:
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the classic builder: FROM a local image, no registry
    done = subprocess.run(["docker", *args], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def present(image_id: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image_id], capture_output=True, check=False).returncode == 0


def build(folder: Path, tag: str, mib: int) -> str:
    """Build ``tag`` (``FROM kiln-busybox`` plus ``mib`` MiB of random bytes); returns its id."""
    context = folder / "context"
    context.mkdir()
    with (context / "random.bin").open("wb") as f:
        for _ in range(mib):
            f.write(secrets.token_bytes(MIB))
    (context / "Dockerfile").write_text("FROM kiln-busybox:latest\nCOPY random.bin /data/random.bin\n")
    docker("build", "--quiet", "--tag", tag, str(context))
    (context / "random.bin").unlink()
    return docker("image", "inspect", "--format", "{{.Id}}", tag)


def timed(samples: list[float], action: Callable[[], object]) -> None:
    started = time.perf_counter()
    action()
    samples.append(time.perf_counter() - started)


async def atimed(samples: list[float], action: Callable[[], Awaitable[object]]) -> None:
    started = time.perf_counter()
    await action()
    samples.append(time.perf_counter() - started)


class Bench:
    def __init__(self, folder: Path, mib: int) -> None:
        self.folder = folder
        self.mib = mib
        self.tag = f"kiln-bench-image-{secrets.token_hex(4)}:1"
        self.archive = folder / "image.tar"
        self.image_id = ""
        self.samples: dict[str, list[float]] = {}
        self.bytes: dict[str, int] = {}

    def sample(self, what: str) -> list[float]:
        return self.samples.setdefault(what, [])

    def docker_round(self) -> None:
        """save to a file; remove the image; load the file (the image absent)."""
        self.archive.unlink(missing_ok=True)
        timed(self.sample("docker save"), lambda: docker("save", "-o", str(self.archive), self.tag))
        docker("rmi", self.image_id)
        assert not present(self.image_id)
        timed(self.sample("docker load"), lambda: docker("load", "--quiet", "-i", str(self.archive)))
        assert present(self.tag)  # the archive names it
        self.bytes["docker"] = self.archive.stat().st_size

    async def push_round(self, requestor: kiln.Requestor) -> None:
        """push from the engine, then (the hub emptied) from the saved file; the hub keeps it."""
        pushed = None

        async def from_engine() -> None:
            nonlocal pushed
            pushed = await requestor.push_image(self.tag)

        async def from_file() -> None:
            nonlocal pushed
            pushed = await requestor.push_image(path=self.archive)

        with contextlib.suppress(kiln.ImageNotFound):  # stored by the run before
            await requestor.remove_image(self.tag)
        await atimed(self.sample("push from the engine"), from_engine)
        assert pushed is not None and pushed.skipped_bytes == 0, pushed
        await requestor.remove_image(pushed.digest)
        await atimed(self.sample("push from a file"), from_file)
        assert pushed is not None and pushed.skipped_bytes == 0, pushed
        self.bytes["push"] = pushed.sent_bytes

    async def rent_round(self, requestor: kiln.Requestor) -> None:
        """a rent on a provider lacking the image (it loads it), a second (it holds it), and one of kiln-busybox."""
        docker("rmi", self.tag)
        assert not present(self.image_id)

        async def rent(what: str, image: str) -> int:
            """Rent ``image`` (timed until ``rented``), release it; the bytes the provider pulled."""
            started = time.perf_counter()
            act = await requestor.rent(image, DEMAND)
            self.sample(what).append(time.perf_counter() - started)
            await act.release()
            return act.pulled

        self.bytes["pull"] = await rent("first rent (pull + load)", self.tag)
        pulled = await rent("second rent (cached)", self.tag)
        assert pulled == 0, pulled
        await rent("rent of a provider-held image", "kiln-busybox:latest")
        docker("tag", self.image_id, self.tag)


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def report(bench: Bench) -> None:
    s = bench.samples
    row = "{:<34} {:>9} {:>11}   {}"
    print(row.format("", "median", "MiB/s", "samples (s)"))

    def line(what: str, size: int | None) -> None:
        m = median(s[what])
        rate = f"{size / MIB / m:.0f}" if size else ""
        print(row.format(what, f"{m:.2f} s", rate, " ".join(f"{x:.2f}" for x in s[what])))

    image = bench.bytes["docker"]
    line("docker save", image)
    line("docker load", image)
    pipe = median([a + b for a, b in zip(s["docker save"], s["docker load"], strict=True)])
    print(row.format("docker save | docker load", f"{pipe:.2f} s", f"{image / MIB / pipe:.0f}", "(save + load)"))
    line("push from the engine", bench.bytes["push"])
    line("push from a file", bench.bytes["push"])
    line("first rent (pull + load)", bench.bytes["pull"])
    line("second rent (cached)", None)
    line("rent of a provider-held image", None)
    kiln_path = median(s["push from the engine"]) + median(s["first rent (pull + load)"])
    print(row.format("push + first rent", f"{kiln_path:.2f} s", f"{image / MIB / kiln_path:.0f}", ""))
    print(
        f"\nimage {image / MIB:.1f} MiB (docker save archive); pushed {bench.bytes['push'] / MIB:.1f} MiB, "
        f"pulled {bench.bytes['pull'] / MIB:.1f} MiB"
    )
    print(f"push + first rent vs docker save | docker load: {pipe / kiln_path:.2f}x the throughput (goal >= 0.9)")
    load = median(s["docker load"]) / median(s["first rent (pull + load)"])
    print(f"provider load (first rent) vs a bare docker load: {load:.2f}x the throughput")
    cached, today = median(s["second rent (cached)"]), median(s["rent of a provider-held image"])
    print(f"cached rent vs a provider-held image's: {cached * 1000:.0f} ms vs {today * 1000:.0f} ms")


async def measure(bench: Bench, url: str, runs: int) -> None:
    async with kiln.connect(url, name="bench-images") as requestor:
        for _ in range(runs):
            await asyncio.to_thread(bench.docker_round)
            await bench.push_round(requestor)
            await bench.rent_round(requestor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=200, help="MiB of random bytes in the image's top layer")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-images-") as folder:
        bench = Bench(Path(folder), args.mib)
        bench.image_id = build(bench.folder, bench.tag, args.mib)
        try:
            with LocalCluster(Path(folder) / "logs") as cluster:
                url = cluster.start_hub()
                cluster.start_provider("bench-images", cpus=1, memory="1GiB")
                asyncio.run(measure(bench, url, args.runs))
        finally:
            subprocess.run(["docker", "rmi", "--force", bench.image_id], capture_output=True, check=False)
        report(bench)


if __name__ == "__main__":
    main()

"""What bounding a container's storage costs: making and removing a volume (mkfs.ext4 and a
loop mount) at several sizes; starting a task container with its volume against the same
hardened container started without one; and an upload written into the volume on the host
against the same bytes through Docker's archive API.

    python benchmarks/storage.py [--runs 20] [--sizes 64MiB 1GiB 10GiB]

Needs root, loop devices, the Docker engine and ``kiln-busybox:latest`` (``make image``).
Prints medians (and 90th percentiles); asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker

from kiln.protocol.sizes import format_size, parse_size
from kiln_provider.docker_adapter import AGENT_IN_CONTAINER, ContainerSpec, DockerAdapter
from kiln_provider.volume import Volumes, put_file

IMAGE = "kiln-busybox:latest"
MIB = 2**20


def describe(label: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(len(ordered) * 0.9)]
    return f"{label:<58} median {statistics.median(ordered) * 1000:7.1f} ms, p90 {p90 * 1000:7.1f} ms"


def timed(action: Callable[..., Any], *args: Any) -> float:
    started = time.perf_counter()
    action(*args)
    return time.perf_counter() - started


class TimedVolumes(Volumes):
    """Volumes that note how long each make took (the volume's share of a container's start)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.makes: list[float] = []

    def make(self, name: str, size: int, folders: Any = ()) -> Any:
        started = time.perf_counter()
        try:
            return super().make(name, size, folders)
        finally:
            self.makes.append(time.perf_counter() - started)


def volumes_alone(root: Path, sizes: list[int], runs: int) -> None:
    volumes = Volumes(root / "alone")
    for size in sizes:
        made, removed = [], []
        for _ in range(runs):
            made.append(timed(volumes.make, "bench", size))
            removed.append(timed(volumes.remove, "bench"))
        print(describe(f"make a {format_size(size)} volume (mkfs.ext4, mount)", made))
        print(describe(f"remove a {format_size(size)} volume (unmount, delete)", removed))


def containers(root: Path, runs: int) -> None:
    adapter = DockerAdapter(f"bench-{uuid.uuid4().hex[:6]}", volumes=root / "containers")
    timed_volumes = TimedVolumes(adapter.volumes.root)
    adapter.volumes = timed_volumes
    api = docker.from_env().api
    with_volume, removal, bare = [], [], []
    for n in range(runs):
        spec = ContainerSpec(activity=f"a{n}", image=IMAGE, cpus=1.0, memory=128 * MIB, storage=parse_size("1GiB"))
        started = time.perf_counter()
        box = adapter.create(spec)
        with_volume.append(time.perf_counter() - started)
        box.channel.close()
        removal.append(timed(adapter.remove, box.id))
        started = time.perf_counter()
        plain, channel = plain_container(api, adapter.agent)
        bare.append(time.perf_counter() - started)
        channel.close()
        api.remove_container(plain, force=True)
    print(describe("start a task container with a 1 GiB volume (adapter.create)", with_volume))
    print(describe("  of which making its volume", timed_volumes.makes))
    print(describe("start the same hardened container without one", bare))
    print(describe("remove a task container and its volume (adapter.remove)", removal))


def plain_container(api: Any, agent: str) -> tuple[str, Any]:
    """What ``create`` did before volumes: the same hardened container, its root filesystem writable."""
    host_config = api.create_host_config(
        network_mode="none",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=256,
        mem_limit=128 * MIB,
        memswap_limit=128 * MIB,
        nano_cpus=1_000_000_000,
        auto_remove=True,
        binds={agent: {"bind": AGENT_IN_CONTAINER, "mode": "ro"}},
    )
    created = api.create_container(
        IMAGE,
        user="65534:65534",
        entrypoint=[AGENT_IN_CONTAINER],
        command=[],
        stdin_open=True,
        host_config=host_config,
        name=f"kiln-bench-{uuid.uuid4().hex}",
    )
    socket = api.attach_socket(created["Id"], params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    api.start(created["Id"])
    api.inspect_container(created["Id"])
    return str(created["Id"]), socket


def uploads(root: Path, runs: int) -> None:
    adapter = DockerAdapter(f"bench-{uuid.uuid4().hex[:6]}", volumes=root / "uploads")
    api = docker.from_env().api
    spec = ContainerSpec(activity="up", image=IMAGE, cpus=1.0, memory=128 * MIB, storage=parse_size("1GiB"))
    box = adapter.create(spec)
    try:
        for size in (5, 64 * MIB):
            data = bytes(size)
            pieces = [data[i : i + 256 * 1024] for i in range(0, size, 256 * 1024)] or [b""]
            host = [
                timed(put_file, box.volume, "/golem/input/f", size, 0o644, iter(pieces), (65534, 65534))
                for _ in range(runs)
            ]
            archive = io.BytesIO()
            with tarfile.open(fileobj=archive, mode="w") as tar:
                info = tarfile.TarInfo("f")
                info.size = size
                tar.addfile(info, io.BytesIO(data))
            body = archive.getvalue()
            through_docker = [timed(api.put_archive, box.id, "/golem/input", body) for _ in range(runs)]
            print(describe(f"upload {format_size(size)}: written into the volume on the host", host))
            print(describe(f"upload {format_size(size)}: Docker's archive API (put_archive)", through_docker))
    finally:
        box.channel.close()
        adapter.remove(box.id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--sizes", nargs="+", default=["64MiB", "1GiB", "10GiB"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-storage-") as folder:
        root = Path(folder)
        try:
            volumes_alone(root, [parse_size(size) for size in args.sizes], args.runs)
            containers(root, args.runs)
            uploads(root, max(args.runs // 4, 3))
        finally:
            for used in root.iterdir():
                Volumes(used).sweep()


if __name__ == "__main__":
    main()

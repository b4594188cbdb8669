"""Fixtures that start real things: a hub process on a free port, provider processes on
the real Docker engine, and the busybox test image built FROM scratch."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import kiln

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "kiln-busybox:latest"
START_TIMEOUT = 30.0


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Cluster:
    """A hub process and the provider processes a test starts against it."""

    tmp: Path
    hub: Process | None = None
    url: str = ""
    providers: dict[str, Process] = field(default_factory=dict)
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))

    def _spawn(self, name: str, *args: str) -> Process:
        log = self.tmp / f"{name}.log"
        handle = log.open("wb")
        popen = subprocess.Popen(
            [sys.executable, "-m", "kiln.cli", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=self.tmp,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        handle.close()
        return Process(name, popen, log)

    def start_hub(self, *extra: str) -> str:
        self.hub = self._spawn("hub", "hub", "--host", "127.0.0.1", "--port", "0", *extra)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            match = re.search(r"listening on (ws://\S+)", self.hub.output())
            if match:
                self.url = match.group(1)
                return self.url
            if self.hub.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the hub did not start:\n{self.hub.output()}")

    def start_provider(self, name: str, *, cpus: float = 2, memory: str = "2GiB", wait: bool = True,
                       labels: dict[str, str] | None = None) -> str:  # fmt: skip
        full = f"{name}-{self.suffix}"
        args = ["provider", "--hub", self.url, "--name", full, "--cpus", str(cpus), "--memory", memory]
        for key, value in (labels or {}).items():
            args += ["--label", f"{key}={value}"]
        self.providers[full] = self._spawn(full, *args)
        if wait:
            self.wait_for_providers({full})
        return full

    def wait_for_providers(self, names: set[str], image: str = IMAGE) -> None:
        async def ready() -> bool:
            async with kiln.connect(self.url, name="probe") as r:
                offers = {p.name: p for p in await r.market()}
            return all(n in offers and image in offers[n].images for n in names)

        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if asyncio.run(ready()):
                return
            time.sleep(0.1)
        logs = "\n".join(self.providers[n].output() for n in names if n in self.providers)
        raise RuntimeError(f"providers {names} did not offer {image} in time:\n{logs}")

    def stop(self) -> None:
        for process in self.providers.values():
            process.kill(signal.SIGTERM)
        if self.hub is not None:
            self.hub.kill(signal.SIGTERM)


def containers_of(provider: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=kiln.provider={provider}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.split()


@pytest.fixture(scope="session")
def busybox_image() -> str:
    """The test image, built FROM scratch with Debian's static busybox (no registry needed)."""
    from kiln_provider.docker_adapter import DockerAdapter

    try:
        DockerAdapter("tests").build_busybox_image(IMAGE)
    except Exception as e:  # noqa: BLE001 - turn any failure into one clear message
        pytest.fail(f"cannot build {IMAGE}: is the Docker engine running (scripts/ensure-docker.sh)? {e}")
    return IMAGE


@pytest.fixture
def cluster(tmp_path: Path, busybox_image: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    c.start_hub()
    try:
        yield c
    finally:
        c.stop()
        for name in c.providers:
            ids = containers_of(name)
            if ids:
                subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)


def run_async(coro_fn: Callable[..., Any], *args: Any) -> Any:
    return asyncio.run(coro_fn(*args))

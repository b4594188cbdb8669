"""A hub and providers on this machine, as real processes: for demos, benchmarks and tests.

::

    with LocalCluster(Path(".demo")) as cluster:
        cluster.start_hub()
        cluster.start_provider("p1", cpus=1, memory="1GiB")
        cluster.wait_for_providers({"p1"})
        ...  # kiln.connect(cluster.url)

Leaving the block stops every process it started (SIGINT, then SIGKILL after 15 s).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final
from urllib.parse import urlsplit

from kiln.protocol.errors import KilnError
from kiln.requestor.client import connect

DEFAULT_IMAGE: Final = "kiln-busybox:latest"
START_TIMEOUT: Final = 30.0


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class LocalCluster:
    """Processes started with ``python -m kiln.cli``; logs go to ``logs/<name>.log``."""

    logs: Path
    hub: Process | None = None
    url: str = ""
    providers: dict[str, Process] = field(default_factory=dict)
    suffix: str = ""
    """Appended to every provider name: clusters sharing one Docker engine keep apart."""
    ca: Path | None = None
    """The CA that signed the certificate of a hub started with ``--tls-cert``: what the
    cluster's own probes trust (providers get ``--ca`` only when ``extra`` says so)."""
    token: str | None = None
    """What :meth:`wait_for_providers` joins the hub with (a hub with credentials needs one)."""
    _hub_args: tuple[str, ...] = ()
    _hub_runs: int = 0

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def spawn(self, name: str, *args: str) -> Process:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            popen = subprocess.Popen(
                [sys.executable, "-m", "kiln.cli", *args], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        return Process(name, popen, log)

    def start_hub(self, *extra: str, port: int = 0) -> str:
        """Start a hub on loopback (port 0: a free one); returns (and remembers) its URL.

        Its image store is ``logs/hub-data`` unless ``extra`` names a ``--data-dir``.
        """
        if "--data-dir" not in extra:
            extra = (*extra, "--data-dir", str(self.logs / "hub-data"))
        self._hub_args = extra
        self._hub_runs += 1
        name = "hub" if self._hub_runs == 1 else f"hub-{self._hub_runs}"
        self.hub = self.spawn(name, "hub", "--host", "127.0.0.1", "--port", str(port), *extra)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if match := re.search(r"listening on (wss?://\S+)", self.hub.output()):
                self.url = match.group(1)
                return self.url
            if self.hub.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise KilnError(f"the hub did not start:\n{self.hub.output()}")

    def restart_hub(self, sig: int = signal.SIGKILL, pause: float = 0.0) -> str:
        """Stop the hub with ``sig`` (default: killed, as by a crash), wait ``pause`` seconds, and
        start it again on the same port and data directory; returns its URL."""
        assert self.hub is not None, "no hub started"
        self.hub.stop(sig)
        time.sleep(pause)
        return self.start_hub(*self._hub_args, port=urlsplit(self.url).port or 0)

    def start_provider(
        self,
        name: str,
        *extra: str,
        cpus: float = 2,
        memory: str = "2GiB",
        labels: dict[str, str] | None = None,
        wait: bool = True,
    ) -> str:
        """Start provider ``name`` + :attr:`suffix` (``extra``: more command-line flags); with ``wait``,
        until it offers the image. Returns its name."""
        full = f"{name}{self.suffix}"
        args = ["provider", "--hub", self.url, "--name", full, "--cpus", str(cpus), "--memory", memory, *extra]
        if "--data-dir" not in extra:  # its record of images with the logs, not in the home folder
            args += ["--data-dir", str(self.logs / f"{full}.data")]
        for key, value in (labels or {}).items():
            args += ["--label", f"{key}={value}"]
        self.providers[full] = self.spawn(full, *args)
        if wait:
            self.wait_for_providers({full})
        return full

    def wait_for_providers(self, names: set[str], image: str = DEFAULT_IMAGE, timeout: float = START_TIMEOUT) -> None:
        """Block until every provider in ``names`` offers ``image`` (call from a thread in async code)."""

        async def ready() -> set[str]:
            async with connect(self.url, name="local-probe", ssl=self.ca, token=self.token) as requestor:
                return {p.name for p in await requestor.market() if image in p.images}

        deadline = time.monotonic() + timeout
        missing = set(names)
        while time.monotonic() < deadline:
            missing = names - asyncio.run(ready())
            if not missing:
                return
            time.sleep(0.1)
        logs = "\n".join(self.providers[n].output() for n in missing if n in self.providers)
        raise KilnError(f"providers {sorted(missing)} did not offer {image} within {timeout:g} s:\n{logs}")

    def stop(self) -> None:
        for process in self.providers.values():
            process.stop()
        if self.hub is not None:
            self.hub.stop()

"""``kiln doctor``: what a provider needs on this machine, checked one thing at a time.

Each check says ``ok``, ``FAIL`` or ``skip``, what it found and, when it fails, what to do::

    ok    docker           Docker 24.0.7 (API 1.43) at unix:///var/run/docker.sock, amd64, 8 CPUs, 31GiB
    FAIL  loop devices     no /dev/loop-control; do: load the loop module (modprobe loop) ...

The checks are those the provider makes at its start, or would fail on later: the Docker
engine, root, loop devices and mkfs.ext4 (for the volumes that bound what containers
write), CPU accounting in the cgroup (read as the provider reads it), the agent binary for
this architecture (:func:`kiln_provider.agent_binary.find_agent`), free disk under the
data folder, and the hub with the given token and CA (each hub, one line each, when several
are given). The hub is dialled as a requestor named ``kiln-doctor``, never as the provider
(which could make a hub waiting for that provider drop what it holds for it); with no hub
given anywhere it is skipped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from kiln.cli.output import print_json
from kiln.cli.settings import DoctorSettings
from kiln.hub.access import PROVIDER_AS_REQUESTOR
from kiln.protocol.errors import ConnectionLost, KilnError, Unauthorized
from kiln.protocol.sizes import format_size

Status = Literal["ok", "fail", "skip"]
MIN_FREE: Final = 2**30
"""Less free disk than this under the data folder fails: images and volumes would not fit."""
HUB_TIMEOUT: Final = 10.0


@dataclass(frozen=True)
class Check:
    check: str
    status: Status
    found: str
    fix: str | None = None

    def line(self) -> str:
        shown = {"ok": "ok", "fail": "FAIL", "skip": "skip"}[self.status]
        return f"{shown:5} {self.check:16} {self.found}" + (f"; do: {self.fix}" if self.fix else "")


def _ok(check: str, found: str) -> Check:
    return Check(check, "ok", found)


def _fail(check: str, found: str, fix: str) -> Check:
    return Check(check, "fail", found, fix)


async def run(settings: DoctorSettings, *, as_json: bool) -> int:
    """Run every check and print one line each (or one JSON document); 1 when any failed."""
    checks = [
        await asyncio.to_thread(docker),
        root(),
        loop_devices(),
        mkfs(),
        cpu_accounting(),
        agent(),
        disk(settings),
        *await hubs(settings),
    ]
    failed = any(c.status == "fail" for c in checks)
    if as_json:
        print_json({"ok": not failed, "checks": checks})
    else:
        for c in checks:
            print(c.line(), flush=True)
    return 1 if failed else 0


def docker() -> Check:
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        from kiln_provider.docker_adapter import DockerAdapter
    except ModuleNotFoundError:
        return _fail("docker", "no Docker client library (docker-py)", "pip install 'kiln[provider]'")
    try:
        adapter = DockerAdapter("kiln-doctor")
        engine, host = adapter.engine(), adapter.host_info()
    except KilnError as e:
        fix = "start it (systemctl start docker), or point DOCKER_HOST at it"
        return _fail("docker", f"cannot reach the Docker engine at {where}: {e.message}", fix)
    machine = f"{host.arch}, {host.cpus} CPUs, {format_size(host.memory)}"
    return _ok("docker", f"Docker {engine.version} (API {engine.api_version}) at {where}, {machine}")


def root() -> Check:
    uid = os.geteuid()
    if uid == 0:
        return _ok("root", "running as root")
    fix = "run the provider as root (sudo, or its systemd unit): it loop-mounts each container's volume"
    return _fail("root", f"running as uid {uid}", fix)


def loop_devices() -> Check:
    control = Path("/dev/loop-control")
    fix = "load the loop module (modprobe loop); in a container, run it --privileged"
    if not control.exists():
        return _fail("loop devices", f"no {control}", fix)
    if not control.is_char_device():
        return _fail("loop devices", f"{control} is not a device", fix)
    if not os.access(control, os.R_OK | os.W_OK):
        return _fail("loop devices", f"{control} is not readable and writable here", "run the provider as root")
    return _ok("loop devices", f"{control} (each container's volume is a loop-mounted ext4 file)")


def mkfs() -> Check:
    found = shutil.which("mkfs.ext4")
    if found is None:
        return _fail("mkfs.ext4", "not on PATH", "install e2fsprogs (apt-get install e2fsprogs)")
    return _ok("mkfs.ext4", found)


def cpu_accounting() -> Check:
    try:
        from kiln_provider.procfs import cgroup_cpu_file
    except ModuleNotFoundError:
        return _fail("cpu accounting", "the provider's dependencies are not installed", "pip install 'kiln[provider]'")
    found = cgroup_cpu_file(os.getpid())
    if found is None:
        files = "cgroup v2 cpu.stat or v1 cpuacct.usage under /sys/fs/cgroup"
        fix = (
            "mount the cgroup hierarchy at /sys/fs/cgroup (v2, or v1 with the cpuacct controller); "
            "else each activity's CPU seconds come from docker stats, once a second at most"
        )
        return _fail("cpu accounting", f"no readable CPU time in this process's cgroup ({files})", fix)
    version, path = found
    return _ok("cpu accounting", f"cgroup {version}: {path}")


def agent() -> Check:
    try:
        from kiln_provider.agent_binary import find_agent, machine_arch
    except ModuleNotFoundError:
        return _fail("agent", "the provider's dependencies are not installed", "pip install 'kiln[provider]'")
    try:
        path = find_agent()  # the provider's own choice: a static ELF for this machine, or why none is
    except KilnError as e:
        fix = "pip install 'kiln[provider]' (its wheel holds the agent), or name one in $KILN_AGENT"
        return _fail("agent", e.message, fix)
    return _ok("agent", f"{path} (static, {machine_arch()})")


def disk(settings: DoctorSettings) -> Check:
    from kiln_provider.image_cache import default_data_dir

    folder = settings.data_dir or (default_data_dir(settings.name) if settings.name else default_data_dir("x").parent)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == folder and not folder.is_dir():
        return _fail("disk", f"{folder} is a file, not a folder", "give --data-dir a folder")
    if not os.access(existing, os.W_OK):
        fix = "run as root, or give --data-dir a folder it can write"
        return _fail("disk", f"{existing} is not writable here", fix)
    free = shutil.disk_usage(existing).free
    found = f"{format_size(free)} free under {folder}"
    if free < MIN_FREE:
        fix = (
            f"free at least {format_size(MIN_FREE)} there (images and container volumes land there), "
            "or give --data-dir another disk's folder"
        )
        return _fail("disk", found, fix)
    return _ok("disk", found)


async def hubs(settings: DoctorSettings) -> list[Check]:
    """Dial each hub given, one after the other (a skip when none is)."""
    if settings.hub is None:
        return [Check("hub", "skip", "no hub given (--hub, $KILN_HUB or hub in --config): not dialled")]
    return [await hub(url, settings) for url in settings.hub]


async def hub(url: str, settings: DoctorSettings) -> Check:
    from kiln.connection import Connection

    try:
        conn = await Connection.open(
            url, role="requestor", name="kiln-doctor", token=settings.token, ssl=settings.ca, open_timeout=HUB_TIMEOUT
        )
    except Unauthorized as e:
        if PROVIDER_AS_REQUESTOR in e.message:
            found = f"{url} answered; the token is a live provider credential's"
            return _ok("hub", f"{found} (the hub checks its name when the provider joins)")
        fix = "give the token of a credential the hub holds (kiln token create --role provider --name N)"
        return _fail("hub", f"{url}: {e.message}", fix)
    except ConnectionLost as e:
        return _fail("hub", e.message, "start the hub, or check --hub (and --ca for a wss:// hub)")
    except KilnError as e:
        return _fail("hub", f"{url}: {e.message}", "check --hub, --token and --ca")
    welcome = conn.session.welcome
    await conn.close()
    assert welcome is not None
    joined = "with the token" if settings.token is not None else "without a token"
    return _ok("hub", f"{url} answered and took us {joined} (protocol {welcome.version}, {welcome.software})")
